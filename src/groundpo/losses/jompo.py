r"""JoMPO (Kim & Yoon, "Joint Multimodal Preference Optimization for Fine-Grained Visual-Textual
Alignment", seed paper 001, Eq. 5-8). No public code.

Score of a response y under image view m (Eq. 7's s, the DPO implicit reward without β log Z):

    s(m, y) = β (log πθ(y | x, m) − log πref(y | x, m))

Plackett–Luce negative log-likelihood of a ranking (m_1 ≻ m_2 ≻ m_3) of views for a fixed y (Eq. 6-7):

    PL(y; m_1 ≻ m_2 ≻ m_3) = −Σ_{k=1..3} [ s(m_k, y) − log Σ_{j≥k} exp s(m_j, y) ]   (the k = 3 term is 0)

Symmetric objective (Eq. 8), with m_w the aligned image, m_none no image and m_l the misaligned one:

    L = −log σ(s(m_w, y_w) − s(m_w, y_l))          L_DPO(m_w, x, y_w, y_l)
        −log σ(s(m_l, y_l) − s(m_l, y_w))          L_DPO(m_l, x, y_l, y_w)
        + PL(y_w; m_w ≻ m_none ≻ m_l)               L_V-RPO(x, y_w; {m_w, m_none, m_l})
        + PL(y_l; m_l ≻ m_none ≻ m_w)               L_V-RPO(x, y_l; {m_l, m_none, m_w})

The suffix log-sum-exps are computed with ``torch.logcumsumexp`` over the reversed ranking. β = 0.05
is the paper's setting (Sec. 5.1.4, App. C.1-C.2). All six reference log-probs are detached; all six
policy log-probs keep their gradient.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .common import DPO_REWARD_METRICS, dpo_reward_metrics

# Axis 1 of the [B, 3, 2] inputs (image view) and axis 2 (response).
M_W, M_NONE, M_L = 0, 1, 2
Y_W, Y_L = 0, 1

# per-row metrics this loss returns (the stage's fixed metric keys; a key may hold no rows in a batch)
METRICS = DPO_REWARD_METRICS + ("jompo/dpo_w", "jompo/dpo_l", "jompo/pl_w", "jompo/pl_l")


def plackett_luce_nll(ranked_scores: torch.Tensor) -> torch.Tensor:
    """−Σ_k [s_k − log Σ_{j≥k} exp s_j] over the last axis, whose entries are in ranked order (best first)."""
    suffix_logsumexp = torch.logcumsumexp(ranked_scores.flip(-1), dim=-1).flip(-1)
    return -(ranked_scores - suffix_logsumexp).sum(-1)


def _check_shape(name: str, tensor: torch.Tensor) -> None:
    if tensor.dim() != 3 or tuple(tensor.shape[1:]) != (3, 2):
        raise ValueError(
            f"jompo_loss expects {name} of shape [B, 3, 2] (batch, image view (m_w, m_none, m_l), "
            f"response (y_w, y_l)); got {list(tensor.shape)}."
        )


def jompo_loss(
    policy_logps: torch.Tensor,
    reference_logps: torch.Tensor,
    *,
    beta: float = 0.05,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Per-sample JoMPO loss and metrics.

    ``policy_logps`` and ``reference_logps`` are [B, 3, 2] summed response log-probs: axis 1 is the
    image view (m_w, m_none, m_l), axis 2 the response (y_w, y_l). ``reference_logps`` is detached
    here. Metrics are detached per-sample tensors: the four terms (``jompo/dpo_w``, ``jompo/dpo_l``,
    ``jompo/pl_w``, ``jompo/pl_l``) and the DPO reward metrics with s(m_w, y_w) as the chosen and
    s(m_w, y_l) as the rejected reward.
    """
    _check_shape("policy_logps", policy_logps)
    _check_shape("reference_logps", reference_logps)
    if policy_logps.shape != reference_logps.shape:
        raise ValueError(
            f"jompo_loss: policy_logps {list(policy_logps.shape)} and reference_logps "
            f"{list(reference_logps.shape)} must have the same shape."
        )
    reference_logps = reference_logps.detach()
    s = beta * (policy_logps - reference_logps)  # s[:, m, y]

    dpo_w = -F.logsigmoid(s[:, M_W, Y_W] - s[:, M_W, Y_L])
    dpo_l = -F.logsigmoid(s[:, M_L, Y_L] - s[:, M_L, Y_W])
    pl_w = plackett_luce_nll(s[:, [M_W, M_NONE, M_L], Y_W])
    pl_l = plackett_luce_nll(s[:, [M_L, M_NONE, M_W], Y_L])
    losses = dpo_w + dpo_l + pl_w + pl_l

    metrics = dpo_reward_metrics(
        policy_logps[:, M_W, Y_W],
        policy_logps[:, M_W, Y_L],
        reference_logps[:, M_W, Y_W],
        reference_logps[:, M_W, Y_L],
        beta,
    )
    metrics.update(
        {
            "jompo/dpo_w": dpo_w.detach(),
            "jompo/dpo_l": dpo_l.detach(),
            "jompo/pl_w": pl_w.detach(),
            "jompo/pl_l": pl_l.detach(),
        }
    )
    return losses, metrics
