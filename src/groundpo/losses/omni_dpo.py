r"""OmniDPO (Chen et al. 2025, arXiv 2509.00723; a baseline of MoD-DPO, arXiv 2603.03192). No public code.

DPO on the response pair plus one conditional-preference term per corrupted modality, each of which
prefers the chosen response y_w under the clean input over y_w under a corrupted one:

    L_DPO = −log σ(β[(log πθ(y_w|a,v) − log πref(y_w|a,v)) − (log πθ(y_l|a,v) − log πref(y_l|a,v))])
    L_vis = −log σ(β[(log πθ(y_w|a,v) − log πref(y_w|a,v)) − (log πθ(y_w|a,v') − log πref(y_w|a,v'))])
    L_aud = −log σ(β[(log πθ(y_w|a,v) − log πref(y_w|a,v)) − (log πθ(y_w|a',v) − log πref(y_w|a',v))])
    L     = L_DPO + λ_V·L_vis + λ_A·L_aud

with v' the corrupted video and a' the corrupted audio; every π(·) is a summed response log-prob.

Gradient choice: the policy is trained under the corrupted views too, so gradient flows through BOTH
the clean policy terms and the corrupted policy terms (log πθ(y_w|a,v') and log πθ(y_w|a',v)); only
the reference tensors are detached. This is what separates OmniDPO from MoD-DPO, whose corrupted
policy terms are stop-gradient; the MoD-DPO paper's compute table (Tab. 7) counts 4 policy backward
passes per iteration for OmniDPO (y_w, y_l, v', a') against 2 for MoD-DPO, consistent with this.
λ_V = λ_A = 1 by default (an unweighted sum); with λ_V = λ_A = 0 the loss is ``dpo_loss``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .common import DPO_REWARD_METRICS, dpo_reward_metrics, log_ratio

# per-row metrics this loss returns (the stage's fixed metric keys; a key may hold no rows in a batch)
METRICS = DPO_REWARD_METRICS + (
    "omni_dpo/l_dpo", "omni_dpo/l_vis", "omni_dpo/l_aud", "omni_dpo/rewards_vcorrupt", "omni_dpo/rewards_acorrupt",
)


def omni_dpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    reference_chosen_logps: torch.Tensor,
    reference_rejected_logps: torch.Tensor,
    policy_chosen_vcorrupt_logps: torch.Tensor,
    reference_chosen_vcorrupt_logps: torch.Tensor,
    policy_chosen_acorrupt_logps: torch.Tensor,
    reference_chosen_acorrupt_logps: torch.Tensor,
    *,
    beta: float = 0.1,
    lambda_v: float = 1.0,
    lambda_a: float = 1.0,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Per-sample OmniDPO loss and metrics; every input is a [B] tensor of summed log-probs.

    The four ``reference_*`` inputs are detached here; the four ``policy_*`` inputs keep their gradient
    (clean and corrupted alike). Metrics are detached per-sample tensors: the DPO rewards, the three
    terms before weighting (``omni_dpo/l_dpo``, ``omni_dpo/l_vis``, ``omni_dpo/l_aud``) and the
    implicit rewards of y_w under each corrupted view (``omni_dpo/rewards_vcorrupt``, ``.../rewards_acorrupt``).
    """
    reference_chosen_logps = reference_chosen_logps.detach()
    reference_rejected_logps = reference_rejected_logps.detach()
    reference_chosen_vcorrupt_logps = reference_chosen_vcorrupt_logps.detach()
    reference_chosen_acorrupt_logps = reference_chosen_acorrupt_logps.detach()

    chosen_clean = policy_chosen_logps - reference_chosen_logps  # log πθ(y_w|a,v) − log πref(y_w|a,v)
    chosen_vcorrupt = policy_chosen_vcorrupt_logps - reference_chosen_vcorrupt_logps  # ... under v'
    chosen_acorrupt = policy_chosen_acorrupt_logps - reference_chosen_acorrupt_logps  # ... under a'

    dpo_logits = log_ratio(policy_chosen_logps, policy_rejected_logps) - log_ratio(
        reference_chosen_logps, reference_rejected_logps
    )
    l_dpo = -F.logsigmoid(beta * dpo_logits)
    l_vis = -F.logsigmoid(beta * (chosen_clean - chosen_vcorrupt))
    l_aud = -F.logsigmoid(beta * (chosen_clean - chosen_acorrupt))
    losses = l_dpo + lambda_v * l_vis + lambda_a * l_aud

    metrics = dpo_reward_metrics(
        policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, beta
    )
    metrics.update(
        {
            "omni_dpo/l_dpo": l_dpo.detach(),
            "omni_dpo/l_vis": l_vis.detach(),
            "omni_dpo/l_aud": l_aud.detach(),
            "omni_dpo/rewards_vcorrupt": beta * chosen_vcorrupt.detach(),
            "omni_dpo/rewards_acorrupt": beta * chosen_acorrupt.detach(),
        }
    )
    return losses, metrics
