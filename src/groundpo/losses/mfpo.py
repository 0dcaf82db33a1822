r"""MFPO (Jiang et al., "Modality-Fair Preference Optimization for Trustworthy MLLM Alignment", seed
paper 004, Eq. 5-7). m is the original image, m' the image with diffusion noise on the key regions
(made by the data side, not here).

    L_text   = −log σ(β log[πθ(y_w|t,m)/πref(y_w|t,m)] − β log[πθ(y_l|t,m)/πref(y_l|t,m)])    (Eq. 5)
    L_image  = −log σ(β log[πθ(y_w|t,m)/πref(y_w|t,m)] − β log[πθ(y_w|t,m')/πref(y_w|t,m')])  (Eq. 6)
    L_margin = −log σ(β log[πθ(y_w|t,m)/πref(y_w|t,m)] − η)                                   (Eq. 7)
    L        = w_t·L_text + w_i·L_image + w_m·L_margin

The paper's total is the unweighted sum, L_text + L_image + L_margin; its Tab. 6 ablates the ratio
w_t : w_i : w_m and finds 1:1:1 best, and Tab. 5 finds η = 0 best: those are the defaults.
The policy log-prob under m' keeps its gradient; every reference input is detached.
With ``weights=(1, 0, 0)`` the loss is ``dpo_loss``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .common import DPO_REWARD_METRICS, dpo_reward_metrics, log_ratio

# per-row metrics this loss returns (the stage's fixed metric keys; a key may hold no rows in a batch)
METRICS = DPO_REWARD_METRICS + ("mfpo/l_text", "mfpo/l_image", "mfpo/l_margin", "mfpo/rewards_perturbed")


def mfpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    reference_chosen_logps: torch.Tensor,
    reference_rejected_logps: torch.Tensor,
    policy_chosen_perturbed_logps: torch.Tensor,
    reference_chosen_perturbed_logps: torch.Tensor,
    *,
    beta: float = 0.1,
    margin_eta: float = 0.0,
    weights: tuple[float, float, float] = (1.0, 1.0, 1.0),
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Per-sample MFPO loss and metrics; every input is a [B] tensor of summed log-probs.

    ``*_perturbed_logps`` are log π(y_w | t, m') for the perturbed image m'. ``weights`` is
    (w_text, w_image, w_margin). The three ``reference_*`` inputs are detached here. Metrics are
    detached per-sample tensors: the DPO rewards, the three terms before weighting (``mfpo/l_text``,
    ``mfpo/l_image``, ``mfpo/l_margin``) and the chosen reward under m' (``mfpo/rewards_perturbed``).
    """
    if len(weights) != 3:
        raise ValueError(f"weights must be (w_text, w_image, w_margin), got {weights!r}.")
    w_text, w_image, w_margin = weights
    reference_chosen_logps = reference_chosen_logps.detach()
    reference_rejected_logps = reference_rejected_logps.detach()
    reference_chosen_perturbed_logps = reference_chosen_perturbed_logps.detach()

    chosen_clean = policy_chosen_logps - reference_chosen_logps  # log πθ(y_w|t,m) − log πref(y_w|t,m)
    chosen_perturbed = policy_chosen_perturbed_logps - reference_chosen_perturbed_logps  # ... under m'

    dpo_logits = log_ratio(policy_chosen_logps, policy_rejected_logps) - log_ratio(
        reference_chosen_logps, reference_rejected_logps
    )
    l_text = -F.logsigmoid(beta * dpo_logits)
    l_image = -F.logsigmoid(beta * chosen_clean - beta * chosen_perturbed)
    l_margin = -F.logsigmoid(beta * chosen_clean - margin_eta)
    losses = w_text * l_text + w_image * l_image + w_margin * l_margin

    metrics = dpo_reward_metrics(
        policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, beta
    )
    metrics.update(
        {
            "mfpo/l_text": l_text.detach(),
            "mfpo/l_image": l_image.detach(),
            "mfpo/l_margin": l_margin.detach(),
            "mfpo/rewards_perturbed": beta * chosen_perturbed.detach(),
        }
    )
    return losses, metrics
