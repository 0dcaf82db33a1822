"""Summed response log-probabilities of a collated batch, and the token entropy of MFPO's curriculum.

Log-probs are sums over response tokens (labels != -100, shifted by one as in causal LM training),
as in upstream DPO. Every objective of groundpo is a function of these sums.

Memory: a forward returns logits [N, L, V]; on Qwen's 150k vocabulary a float32 copy of the whole
batch is the largest tensor of a step. Without gradient, log-probs and entropies are computed one
row at a time, so at most one row's float32 logits exist at once. With gradient, the whole batch
is used (autograd keeps what the backward needs either way).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

IGNORE_INDEX = -100


@dataclass
class SequenceLogps:
    logps: torch.Tensor  # [N] summed log π(y | x) over response tokens
    tokens: torch.Tensor  # [N] number of response tokens
    logits_mean: torch.Tensor | None = None  # [N] mean logit (upstream's logits/* metrics), detached


def _shift(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    labels = labels[:, 1:]
    mask = labels != IGNORE_INDEX
    return logits[:, :-1], labels.masked_fill(~mask, 0), mask


def response_logps(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(Σ_t log π(y_t | y_<t, x) over response tokens [N], response token counts [N])."""
    logits, targets, mask = _shift(logits, labels)
    if torch.is_grad_enabled() and logits.requires_grad:
        picked = torch.gather(logits, -1, targets.unsqueeze(-1)).squeeze(-1).float()
        per_token = picked - torch.logsumexp(logits.float(), dim=-1)
        return (per_token * mask).sum(-1), mask.sum(-1)
    sums = []
    for row in range(logits.shape[0]):  # one row of float32 logits at a time
        row_logits = logits[row].float()
        picked = torch.gather(row_logits, -1, targets[row].unsqueeze(-1)).squeeze(-1)
        per_token = picked - torch.logsumexp(row_logits, dim=-1)
        sums.append((per_token * mask[row]).sum())
    return torch.stack(sums), mask.sum(-1)


@torch.no_grad()
def response_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean entropy of the next-token distribution over response positions, per row [N] (MFPO's difficulty)."""
    logits, _, mask = _shift(logits, labels)
    out = []
    for row in range(logits.shape[0]):
        logprobs = torch.log_softmax(logits[row].float(), dim=-1)
        entropy = -(logprobs.exp() * logprobs).sum(-1)
        out.append((entropy * mask[row]).sum() / mask[row].sum().clamp(min=1))
    return torch.stack(out)


def model_inputs(batch: dict) -> tuple[dict, torch.Tensor]:
    """The forward's keyword arguments (labels removed; MiniCPM-o's nested ``data`` kept) and the labels."""
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    if "data" in inputs:
        inputs["data"] = {k: v for k, v in inputs["data"].items() if k != "labels"}
    return inputs, batch["labels"]


def forward_logits(model, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    batch = {k: (v.detach().clone() if torch.is_tensor(v) else v) for k, v in batch.items()}
    inputs, labels = model_inputs(batch)
    return model(**inputs, return_dict=True, use_cache=False).logits, labels


def sequence_logps(model, batch: dict, with_logits_mean: bool = False) -> SequenceLogps:
    """One forward of ``model`` on ``batch``: summed response log-probs per row (grad follows the caller)."""
    logits, labels = forward_logits(model, batch)
    logps, tokens = response_logps(logits, labels)
    mean = logits.detach().float().mean(dim=(1, 2)) if with_logits_mean else None
    return SequenceLogps(logps, tokens, mean)
