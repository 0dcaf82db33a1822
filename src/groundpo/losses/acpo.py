r"""ACPO ("Don't Let the Video Speak: Audio-Contrastive Preference Optimization for Audio-Visual
Language Models", arXiv 2026, seed paper 002). Only the abstract and project page are public, so the
objective below is our reading of them; there are no equations or code to check it against.

Both pair types are DPO pairs over a winning (w) and losing (l) (input, response) combination:

    L_pair = −log σ(β[(log πθ(w) − log πref(w)) − (log πθ(l) − log πref(l))])

- output-contrastive rows (audio attribution): one input (with swapped audio) and two responses;
  w = (input, true audio description), l = (input, visually driven description);
- input-contrastive rows (audio sensitivity): one response (the original audio-visual caption) and
  two inputs; w = (aligned audio, caption), l = (mismatched audio, caption).

    L = λ_out · L_pair   on output-contrastive rows
        λ_in  · L_pair   on input-contrastive rows

So the "chosen"/"rejected" tensors hold log π(w)/log π(l) whichever axis the pair contrasts; the caller
computes the input-contrastive rejected log-prob under the swapped audio. Every reference input is
detached; both policy inputs keep their gradient.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .common import DPO_REWARD_METRICS, dpo_reward_metrics, log_ratio

# per-row metrics this loss returns (the stage's fixed metric keys; a key may hold no rows in a batch)
METRICS = DPO_REWARD_METRICS + ("acpo/loss_output", "acpo/loss_input")


def acpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    reference_chosen_logps: torch.Tensor,
    reference_rejected_logps: torch.Tensor,
    input_contrastive: torch.Tensor,
    *,
    beta: float = 0.1,
    lambda_output: float = 1.0,
    lambda_input: float = 1.0,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Per-sample ACPO loss and metrics; the log-prob inputs are [B] tensors of summed log-probs.

    ``input_contrastive`` (bool [B]) is True on rows that compare one response under aligned (chosen)
    vs swapped (rejected) audio, False on rows that compare two responses under one input. The two
    ``reference_*`` inputs are detached here. Metrics are detached per-sample tensors: the DPO rewards
    over all rows, and ``acpo/loss_output`` / ``acpo/loss_input``, the pair loss before its λ weight,
    only over the rows of that type (so their length is the number of such rows, possibly 0).
    """
    if input_contrastive.shape != policy_chosen_logps.shape:
        raise ValueError(
            f"input_contrastive must be a bool [B] mask like the log-probs {list(policy_chosen_logps.shape)}, "
            f"got {list(input_contrastive.shape)}."
        )
    is_input = input_contrastive.detach().to(device=policy_chosen_logps.device, dtype=torch.bool)
    reference_chosen_logps = reference_chosen_logps.detach()
    reference_rejected_logps = reference_rejected_logps.detach()

    dpo_logits = log_ratio(policy_chosen_logps, policy_rejected_logps) - log_ratio(
        reference_chosen_logps, reference_rejected_logps
    )
    pair_losses = -F.logsigmoid(beta * dpo_logits)
    weight = torch.where(
        is_input, torch.full_like(pair_losses, lambda_input), torch.full_like(pair_losses, lambda_output)
    ).detach()
    losses = weight * pair_losses

    metrics = dpo_reward_metrics(
        policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, beta
    )
    pair_losses = pair_losses.detach()
    metrics.update(
        {
            "acpo/loss_output": pair_losses[~is_input],
            "acpo/loss_input": pair_losses[is_input],
        }
    )
    return losses, metrics
