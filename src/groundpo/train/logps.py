"""Summed response log-probabilities of a collated batch, and the token entropy of MFPO's curriculum.

Log-probs are sums over response tokens, as in upstream DPO; every objective of groundpo is a
function of these sums. Where each response sits in the model's batch (its own row, or its part of
a packed row [prompt, y_w, y_l]) is a :class:`~groundpo.data.packing.ResponseLayout`: the row, the
positions whose logits predict its tokens, and the tokens. One forward, then
:func:`score_responses` gathers only those positions.

Memory: a forward returns logits [N, L, V]; on Qwen's 150k vocabulary a float32 copy of a whole
batch would be the largest tensor of a step. Only the predicting positions of the responses are
turned to float32: all at once with gradient ([P, S, T, V]), one response at a time without.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..data.packing import FIRST, SECOND, SEGMENTS, ResponseLayout

IGNORE_INDEX = -100


def _shift(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    labels = labels[:, 1:]
    mask = labels != IGNORE_INDEX
    return logits[:, :-1], labels.masked_fill(~mask, 0), mask


@torch.no_grad()
def response_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean entropy of the next-token distribution over response positions, per row [N] (MFPO's difficulty).

    Only the positions that predict response tokens are read: the rest of a row (the prompt,
    padding, the fake media tokens upstream's collator appends to row 0) never enters the mean.
    A row without response tokens scores 0.
    """
    logits, _, mask = _shift(logits, labels)
    out = []
    for row in range(logits.shape[0]):
        logprobs = torch.log_softmax(logits[row][mask[row]].float(), dim=-1)
        entropy = -(logprobs.exp() * logprobs).sum(-1)
        out.append(entropy.mean() if entropy.numel() else entropy.new_zeros(()))
    return torch.stack(out)


def model_inputs(batch: dict) -> tuple[dict, torch.Tensor]:
    """The forward's keyword arguments (labels removed; MiniCPM-o's nested ``data`` kept) and the labels."""
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    if "data" in inputs:
        inputs["data"] = {k: v for k, v in inputs["data"].items() if k != "labels"}
    return inputs, batch["labels"]


BLOCK_MASK_ATTENTION = ("sdpa", "eager")  # attention implementations that take a 4D mask as given


def block_attention_mask(segments: torch.Tensor, implementation: str, dtype: torch.dtype) -> torch.Tensor:
    """The 4D attention mask [N, 1, L, L] of rows whose tokens carry segment ids (``groundpo.data.packing``).

    Causal, padding (segment 0) never attended, and the second response (segment 3) never sees the
    first (segment 2): in a packed row [prompt, y_w, y_l] both responses continue from the prompt
    alone. Every query also sees itself, so no row of the mask is empty (padding queries). SDPA
    takes the boolean mask (True = attend); eager attention the additive one.
    """
    length = segments.shape[1]
    index = torch.arange(length, device=segments.device)
    causal = index[None, :] <= index[:, None]
    allowed = causal[None] & (segments[:, None, :] != 0)
    allowed &= ~((segments[:, :, None] == SECOND) & (segments[:, None, :] == FIRST))
    allowed |= torch.eye(length, dtype=torch.bool, device=segments.device)[None]
    if implementation == "eager":
        mask = torch.zeros(allowed.shape, dtype=dtype, device=segments.device)
        return mask.masked_fill(~allowed, torch.finfo(dtype).min)[:, None]
    return allowed[:, None]


def attention_implementation(model) -> str:
    """The attention implementation of ``model`` (unwrapped from DDP / DeepSpeed / PEFT wrappers)."""
    config = getattr(model, "config", None)
    inner = model
    while config is None and hasattr(inner, "module"):
        inner = inner.module
        config = getattr(inner, "config", None)
    return getattr(config, "_attn_implementation", None) or "eager"


def forward_logits(model, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    batch = {k: (v.detach().clone() if torch.is_tensor(v) else v) for k, v in batch.items()}
    segments = batch.pop(SEGMENTS, None)
    inputs, labels = model_inputs(batch)
    if segments is not None:  # packed rows: block attention instead of the 2D padding mask
        dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
        inputs["attention_mask"] = block_attention_mask(segments, attention_implementation(model), dtype)
    return model(**inputs, return_dict=True, use_cache=False).logits, labels


def _upcast(logits: torch.Tensor) -> torch.Tensor:
    """bf16/fp16 logits to float32 for the log-softmax; float32 and float64 stay as they are."""
    return logits.to(torch.promote_types(logits.dtype, torch.float32))


@dataclass
class ScoredResponses:
    logps: torch.Tensor  # [P, S] summed log π(y | x) of each response (S = 2: chosen, rejected; 1: chosen only)
    tokens: torch.Tensor  # [P, S] scored tokens
    logits_mean: torch.Tensor  # [P, S] mean logit over the positions that predict the response, detached


def score_responses(logits: torch.Tensor, layout: ResponseLayout) -> ScoredResponses:
    """Σ_t log softmax(logits[row, predictor_t])[target_t] for every response of ``layout``.

    Only the predicting positions are gathered and turned to float32, so the largest extra tensor is
    [P, S, T, V] over the responses' T tokens, never the whole sequence. Without gradient one
    response at a time.
    """
    layout = layout.to(logits.device)
    pairs, sides, width = layout.targets.shape
    rows = layout.rows[:, :, None].expand(pairs, sides, width)
    if torch.is_grad_enabled() and logits.requires_grad:
        picked = _upcast(logits[rows, layout.predictors])  # [P, S, T, V]
        per_token = picked.gather(-1, layout.targets[..., None]).squeeze(-1) - torch.logsumexp(picked, dim=-1)
        logps = (per_token * layout.mask).sum(-1)
        means = (picked.detach().mean(-1) * layout.mask).sum(-1)
    else:
        dtype = torch.promote_types(logits.dtype, torch.float32)
        logps = torch.zeros(pairs, sides, device=logits.device, dtype=dtype)
        means = torch.zeros(pairs, sides, device=logits.device, dtype=dtype)
        for i in range(pairs):
            for j in range(sides):
                picked = _upcast(logits[layout.rows[i, j], layout.predictors[i, j]])  # [T, V]
                token = picked.gather(-1, layout.targets[i, j, :, None]).squeeze(-1) - torch.logsumexp(picked, dim=-1)
                logps[i, j] = (token * layout.mask[i, j]).sum()
                means[i, j] = (picked.mean(-1) * layout.mask[i, j]).sum()
    tokens = layout.mask.sum(-1)
    return ScoredResponses(logps, tokens, means / tokens.clamp(min=1))


def layout_logps(model, batch: dict, layout: ResponseLayout) -> ScoredResponses:
    """One forward of ``model`` on ``batch`` and the responses of ``layout`` scored (grad follows the caller)."""
    logits, _ = forward_logits(model, batch)
    return score_responses(logits, layout)
