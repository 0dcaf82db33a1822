r"""MoD-DPO and MoD-DPO++ (Chaubey et al., arXiv 2603.03192, Eq. 5-12 and Supp. A).

For a prompt about modality m, with lr(view) = log π(y_w | view) − log π(y_l | view):

    margin = τ·lr_θ(clean) − β·lr_ref(clean) − β_inv·lr_θ'(inv) + β_sens·lr_θ'(sens) − γ_LPD·lr_ref(text)
    L      = −log σ(margin)

- clean: πθ(y | a, v, x), the only term with gradient;
- inv:   π'θ(y | irrelevant modality corrupted), stop-gradient (Eq. 6, invariance KL);
- sens:  π'θ(y | relevant modality corrupted), stop-gradient (Eq. 7, sensitivity KL);
- ref:   πref(y | a, v, x);
- text:  πref(y | x), all media removed (Eq. 11, language-prior debiasing, MoD-DPO++).

Visual prompts corrupt audio for inv and video for sens; audio prompts swap the roles (Supp. A.4).
Audiovisual prompts (Supp. A.5) have no invariance term: sens corrupts both modalities and β_inv
leaves τ.

The paper contradicts itself twice; both readings are implemented:

τ (``tau``)
    ``"paper"`` (default): τ = β + β_inv + β_sens, as Eq. 8 states.
    ``"derived"``: τ = β + β_inv − β_sens. The objective (Eq. 13) *adds* +β_sens·KL, so the
    stationary condition (Eq. 15) gives −(β + β_inv − β_sens) as the coefficient of log πθ, and the
    paper's own constant in Eq. 16, (λ − β − β_inv + β_sens), agrees with the minus sign.
LPD placement
    Eq. 11 adds γ·r_LPD with r_LPD = −log π_text(y|x) to the reward, i.e. *inside* the sigmoid, which
    is what this function does. Eq. 12 writes it outside the log-sigmoid, where it is a constant
    (πref is frozen) with zero gradient: that reading cannot change training, so it is not offered.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

from .common import DPO_REWARD_METRICS, dpo_reward_metrics, log_ratio

# per-row metrics this loss returns (the stage's fixed metric keys; a key may hold no rows in a batch)
METRICS = DPO_REWARD_METRICS + (
    "mod/margin", "mod/lr_sens", "mod/reliance_relevant", "mod/lr_inv", "mod/reliance_irrelevant", "mod/lr_text",
)


def mod_dpo_tau(
    beta: float, beta_inv: float, beta_sens: float, tau: Literal["paper", "derived"] = "paper"
) -> float:
    """Coefficient τ of the policy log-ratio: Eq. 8 ("paper") or Eq. 13-16 ("derived")."""
    if tau == "paper":
        return beta + beta_inv + beta_sens
    if tau == "derived":
        return beta + beta_inv - beta_sens
    raise ValueError(f"tau must be 'paper' or 'derived', got {tau!r}.")


def mod_dpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    reference_chosen_logps: torch.Tensor,
    reference_rejected_logps: torch.Tensor,
    sens_chosen_logps: torch.Tensor,
    sens_rejected_logps: torch.Tensor,
    inv_chosen_logps: torch.Tensor | None = None,
    inv_rejected_logps: torch.Tensor | None = None,
    text_chosen_logps: torch.Tensor | None = None,
    text_rejected_logps: torch.Tensor | None = None,
    *,
    beta: float = 0.1,
    beta_inv: float = 0.02,
    beta_sens: float = 0.05,
    gamma_lpd: float = 0.0,
    tau: Literal["paper", "derived"] = "paper",
    inv_mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Per-sample MoD-DPO loss and metrics.

    Every tensor is [B] of summed response log-probs. ``inv_*`` is None for audiovisual prompts
    (no invariance term; β_inv leaves τ). ``text_*`` is needed only when ``gamma_lpd > 0``.
    ``inv_mask`` (bool [B], optional) marks the rows that have an invariance term when a batch
    mixes audiovisual rows with others; rows outside it are treated as audiovisual.
    Every input except the two policy tensors is detached here. Metrics are detached per-sample
    tensors (``mod/lr_inv`` and ``mod/reliance_irrelevant`` only over rows with an invariance term).
    """
    lr_policy = log_ratio(policy_chosen_logps, policy_rejected_logps)
    lr_ref = log_ratio(reference_chosen_logps, reference_rejected_logps).detach()
    lr_sens = log_ratio(sens_chosen_logps, sens_rejected_logps).detach()

    if inv_chosen_logps is None:
        has_inv = torch.zeros_like(lr_ref, dtype=torch.bool)
        lr_inv = torch.zeros_like(lr_ref)
    else:
        lr_inv = log_ratio(inv_chosen_logps, inv_rejected_logps).detach()
        has_inv = torch.ones_like(lr_ref, dtype=torch.bool) if inv_mask is None else inv_mask.to(torch.bool)
        lr_inv = torch.where(has_inv, lr_inv, torch.zeros_like(lr_inv))

    if gamma_lpd > 0:
        if text_chosen_logps is None or text_rejected_logps is None:
            raise ValueError("gamma_lpd > 0 needs the text-only reference log-probs (text_*_logps).")
        lr_text = log_ratio(text_chosen_logps, text_rejected_logps).detach()
    else:
        lr_text = torch.zeros_like(lr_ref)

    tau_with_inv = mod_dpo_tau(beta, beta_inv, beta_sens, tau)
    tau_without_inv = mod_dpo_tau(beta, 0.0, beta_sens, tau)
    tau_per_row = torch.where(
        has_inv, torch.full_like(lr_ref, tau_with_inv), torch.full_like(lr_ref, tau_without_inv)
    )

    margin = (
        tau_per_row * lr_policy
        - beta * lr_ref
        - beta_inv * lr_inv
        + beta_sens * lr_sens
        - gamma_lpd * lr_text
    )
    losses = -F.logsigmoid(margin)

    metrics = dpo_reward_metrics(
        policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, beta
    )
    policy_chosen = policy_chosen_logps.detach()
    metrics.update(
        {
            "mod/margin": margin.detach(),
            "mod/lr_sens": lr_sens,
            "mod/reliance_relevant": policy_chosen - sens_chosen_logps.detach(),
        }
    )
    if inv_chosen_logps is not None:  # only rows that have an invariance term
        metrics["mod/lr_inv"] = lr_inv[has_inv]
        metrics["mod/reliance_irrelevant"] = (policy_chosen - inv_chosen_logps.detach())[has_inv]
    if text_chosen_logps is not None:
        metrics["mod/lr_text"] = log_ratio(text_chosen_logps, text_rejected_logps).detach()
    return losses, metrics
