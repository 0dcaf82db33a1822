"""DPO (Rafailov et al. 2023), sigmoid form: the baseline of every seed paper.

    L = −log σ(β[(log πθ(y_w) − log πref(y_w)) − (log πθ(y_l) − log πref(y_l))])

Equal to upstream's ``stage: dpo`` with ``pref_loss: sigmoid`` and no label smoothing
(``tests/test_losses.py`` checks it against TRL's implementation).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .common import DPO_REWARD_METRICS, dpo_reward_metrics, log_ratio

# per-row metrics this loss returns (the stage's fixed metric keys; a key may hold no rows in a batch)
METRICS = DPO_REWARD_METRICS


def dpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    reference_chosen_logps: torch.Tensor,
    reference_rejected_logps: torch.Tensor,
    *,
    beta: float = 0.1,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Per-sample sigmoid DPO loss; every input is a [B] tensor of summed log-probs."""
    reference_chosen_logps = reference_chosen_logps.detach()
    reference_rejected_logps = reference_rejected_logps.detach()
    logits = log_ratio(policy_chosen_logps, policy_rejected_logps) - log_ratio(
        reference_chosen_logps, reference_rejected_logps
    )
    losses = -F.logsigmoid(beta * logits)
    metrics = dpo_reward_metrics(
        policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, beta
    )
    return losses, metrics
