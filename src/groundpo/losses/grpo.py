r"""MBPO's objective: GRPO over a hybrid batch of offline pairs and online groups (seed 003, Eq. 1-3, 7).

The seed's equations were stripped in extraction; ``../shared/notes/equations.md`` reconstructs
them from the text (Sec. 3 and 4.3). Per response o of a group with advantage A:

    ρ_t  = π_θ(o_t | q, o_<t) / π_old(o_t | q, o_<t) = exp(log π_θ − log π_old)        (Eq. 1)
    k3_t = π_ref/π_θ − log(π_ref/π_θ) − 1 = exp(ref − policy) − (ref − policy) − 1      (Eq. 3)
    L(o) = −(1/|o|) Σ_t [ min(ρ_t·A, clip(ρ_t, 1−ε, 1+ε)·A) − β_KL·k3_t ]

and the advantage of response j in its group (Eq. 2), with std unbiased as in TRL's GRPOTrainer:

    A_j = (r_j − mean(r)) / (std(r) + eps)

The hybrid batch (Eq. 7): B = N_off + N_on rows. An offline row is a group of two responses,
y_w and y_l, with fixed rewards (``mbpo_reward_chosen`` = 1, ``mbpo_reward_rejected`` = 0, so
A = ±0.7070 with the default eps); an online row is a group of G responses sampled from the
current policy and scored by :func:`groundpo.rewards.verified_reward`. Eq. 7 averages the
responses inside each row and the rows of the batch:

    L = 1/B [ Σ_{i ∈ off} 1/2 Σ_{j ∈ {w, l}} L(o_ij) + Σ_{i ∈ on} 1/G Σ_{j=1..G} L(o_ij) ]

(:func:`hybrid_batch_loss` with ``aggregation="row"``, the default of ``mbpo_loss_aggregation``).
``"response"`` weighs every response alike instead: 1/(2·N_off + G·N_on) Σ L(o), so an online row
counts G/2 times as much as an offline pair (the per-sequence mean of TRL's ``loss_type: grpo``).

With one policy update per generation (μ = 1, ``mbpo_num_iterations``) π_old is π_θ itself
(detached): ρ = 1 and only the gradient of ρ remains, as in TRL. With μ > 1 the same responses are
reused for μ updates and the clip bounds the ratio.
"""

from __future__ import annotations

from typing import Literal

import torch

# the loss's per-response metrics
LOSS_METRICS = ("mbpo/kl", "mbpo/clip_ratio", "mbpo/clip_ratio_low", "mbpo/clip_ratio_high")
# what the mbpo trainer adds per step: rewards per source (mean and std), how many online groups
# carry no signal, online response lengths, IIG of the offline responses (Fig. 4), policy log-probs
ROLLOUT_METRICS = (
    "mbpo/reward_offline",
    "mbpo/reward_offline_std",
    "mbpo/reward_online",
    "mbpo/reward_online_std",
    "mbpo/frac_reward_zero_std",
    "mbpo/response_length",
    "mbpo/truncated",
    "mbpo/iig_chosen",
    "mbpo/iig_rejected",
)
# the stage's fixed metric keys (groundpo.train.metrics)
METRICS = LOSS_METRICS + ROLLOUT_METRICS
AGGREGATIONS = ("row", "response")


def group_advantages(rewards: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """Eq. 2: (r − mean over the group) / (std over the group + eps) for rewards [N, G].

    The std is ``torch.std`` (unbiased, as TRL's GRPOTrainer); a group whose rewards are all equal
    gets advantage 0 for every response. G must be at least 2.
    """
    if rewards.dim() != 2 or rewards.shape[1] < 2:
        raise ValueError(f"rewards must be [N, G] with G >= 2, got shape {tuple(rewards.shape)}")
    mean = rewards.mean(dim=1, keepdim=True)
    std = rewards.std(dim=1, keepdim=True)
    return (rewards - mean) / (std + eps)


def grpo_loss(
    policy_logps: torch.Tensor,
    old_logps: torch.Tensor,
    reference_logps: torch.Tensor | None,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    *,
    epsilon: float = 0.2,
    beta_kl: float = 0.04,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Per-response GRPO loss (Eq. 1 with the k3 KL of Eq. 3).

    ``policy_logps``, ``old_logps``, ``reference_logps``: per-token log-probs [B, T];
    ``advantages``: [B]; ``response_mask``: [B, T] (bool), True on the response's tokens.
    ``old_logps`` and ``reference_logps`` are detached here. ``reference_logps`` may be None only
    when ``beta_kl`` is 0 (no reference model is loaded then).

    Returns the losses [B] and per-response metrics [B]: ``mbpo/kl`` (mean k3 over the response),
    ``mbpo/clip_ratio_low`` / ``_high`` (share of tokens where the clip is active: ρ < 1−ε with
    A < 0, ρ > 1+ε with A > 0) and their sum ``mbpo/clip_ratio``.
    """
    mask = response_mask.to(policy_logps.dtype)
    tokens = mask.sum(dim=1).clamp(min=1.0)
    old_logps = old_logps.detach()
    advantages = advantages.detach().to(policy_logps.dtype).unsqueeze(1)

    ratio = torch.exp(policy_logps - old_logps)
    clipped = torch.clamp(ratio, 1.0 - epsilon, 1.0 + epsilon)
    objective = torch.min(ratio * advantages, clipped * advantages)
    if beta_kl != 0.0:
        if reference_logps is None:
            raise ValueError("grpo_loss: reference_logps are needed when beta_kl != 0")
        delta = reference_logps.detach() - policy_logps
        k3 = torch.exp(delta) - delta - 1.0
        objective = objective - beta_kl * k3
    else:
        k3 = None
    losses = -(objective * mask).sum(dim=1) / tokens

    with torch.no_grad():
        low = ((ratio < 1.0 - epsilon) & (advantages < 0)).to(mask.dtype)
        high = ((ratio > 1.0 + epsilon) & (advantages > 0)).to(mask.dtype)
        metrics = {
            "mbpo/clip_ratio_low": (low * mask).sum(dim=1) / tokens,
            "mbpo/clip_ratio_high": (high * mask).sum(dim=1) / tokens,
        }
        metrics["mbpo/clip_ratio"] = metrics["mbpo/clip_ratio_low"] + metrics["mbpo/clip_ratio_high"]
        if k3 is not None:
            metrics["mbpo/kl"] = (k3.detach() * mask).sum(dim=1) / tokens
    return losses, metrics


def hybrid_batch_loss(
    losses: torch.Tensor, groups: torch.Tensor, aggregation: Literal["row", "response"] = "row"
) -> torch.Tensor:
    """The batch loss of Eq. 7 from per-response ``losses`` [N] and their row index ``groups`` [N].

    ``"row"``: the mean over the responses of each row (2 for an offline pair, G for an online
    prompt), then the mean over the rows. ``"response"``: the mean over all responses.
    """
    if aggregation == "response":
        return losses.mean()
    if aggregation != "row":
        raise ValueError(f"aggregation must be one of {', '.join(AGGREGATIONS)}, got {aggregation!r}")
    rows = int(groups.max()) + 1
    sums = torch.zeros(rows, dtype=losses.dtype, device=losses.device).index_add(0, groups, losses)
    sizes = torch.zeros(rows, dtype=losses.dtype, device=losses.device).index_add(0, groups, torch.ones_like(losses))
    present = sizes > 0
    return (sums[present] / sizes[present]).mean()
