r"""mDPO (Wang et al. 2024, "mDPO: Conditional Preference Optimization for Multimodal Large Language
Models", EMNLP 2024, arXiv 2406.11839; code: luka-group/mDPO).

Three terms, with lr(y_w, y_l | m) = log π(y_w|m) − log π(y_l|m) and m' the corrupted image:

    L_DPO  = −log σ(β[lr_θ(y_w, y_l | m) − lr_ref(y_w, y_l | m)])                          (standard DPO)
    L_CoPO = −log σ(β[(log πθ(y_w|m) − log πref(y_w|m)) − (log πθ(y_w|m') − log πref(y_w|m'))])
    L_AncPO = −log σ(β(log πθ(y_w|m) − log πref(y_w|m)) − δ)
    L      = L_DPO + L_CoPO + L_AncPO

- CoPO (conditional preference): the same chosen response is preferred under the full image m over
  m', an image whose random 1-20 % area crop was resized back (the crop is made by the data side, not
  here);
- AncPO (anchored preference): keeps the chosen reward above δ (``anchor_delta``, 0 in the authors'
  code) so that DPO cannot push both responses' likelihoods down.

The policy log-prob under m' keeps its gradient (the authors' trainer runs that forward on the
policy with gradient); every reference input is detached. With the two extra terms removed the loss
is ``dpo_loss``; ``anchor_delta`` only shifts the anchor term.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .common import DPO_REWARD_METRICS, dpo_reward_metrics, log_ratio

# per-row metrics this loss returns (the stage's fixed metric keys; a key may hold no rows in a batch)
METRICS = DPO_REWARD_METRICS + (
    "mdpo/l_dpo", "mdpo/l_copo", "mdpo/l_ancpo", "mdpo/rewards_corrupt", "mdpo/accuracies_corrupt",
)


def mdpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    reference_chosen_logps: torch.Tensor,
    reference_rejected_logps: torch.Tensor,
    policy_chosen_corrupt_logps: torch.Tensor,
    reference_chosen_corrupt_logps: torch.Tensor,
    *,
    beta: float = 0.1,
    anchor_delta: float = 0.0,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Per-sample mDPO loss and metrics; every input is a [B] tensor of summed log-probs.

    ``*_corrupt_logps`` are log π(y_w | x, m') for the cropped image m'. The three ``reference_*``
    inputs are detached here. Metrics are detached per-sample tensors: the DPO rewards, the three
    terms (``mdpo/l_dpo``, ``mdpo/l_copo``, ``mdpo/l_ancpo``) and the chosen reward under m'
    (``mdpo/rewards_corrupt``) with its accuracy against the clean chosen reward.
    """
    reference_chosen_logps = reference_chosen_logps.detach()
    reference_rejected_logps = reference_rejected_logps.detach()
    reference_chosen_corrupt_logps = reference_chosen_corrupt_logps.detach()

    chosen_clean = policy_chosen_logps - reference_chosen_logps  # log πθ(y_w|m) − log πref(y_w|m)
    chosen_corrupt = policy_chosen_corrupt_logps - reference_chosen_corrupt_logps  # ... under m'

    dpo_logits = log_ratio(policy_chosen_logps, policy_rejected_logps) - log_ratio(
        reference_chosen_logps, reference_rejected_logps
    )
    l_dpo = -F.logsigmoid(beta * dpo_logits)
    l_copo = -F.logsigmoid(beta * (chosen_clean - chosen_corrupt))
    l_ancpo = -F.logsigmoid(beta * chosen_clean - anchor_delta)
    losses = l_dpo + l_copo + l_ancpo

    metrics = dpo_reward_metrics(
        policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, beta
    )
    rewards_corrupt = beta * chosen_corrupt.detach()
    metrics.update(
        {
            "mdpo/l_dpo": l_dpo.detach(),
            "mdpo/l_copo": l_copo.detach(),
            "mdpo/l_ancpo": l_ancpo.detach(),
            "mdpo/rewards_corrupt": rewards_corrupt,
            "mdpo/accuracies_corrupt": (metrics["rewards/chosen"] > rewards_corrupt).to(rewards_corrupt.dtype),
        }
    )
    return losses, metrics
