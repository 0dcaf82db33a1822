"""Pieces shared by the objectives: implicit DPO rewards and the metrics every stage logs."""

from __future__ import annotations

import torch


DPO_REWARD_METRICS = ("rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins")


def log_ratio(chosen: torch.Tensor, rejected: torch.Tensor) -> torch.Tensor:
    """lr = log π(y_w | ·) − log π(y_l | ·)."""
    return chosen - rejected


def dpo_reward_metrics(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    reference_chosen_logps: torch.Tensor,
    reference_rejected_logps: torch.Tensor,
    beta: float,
) -> dict[str, torch.Tensor]:
    """Upstream DPO's reward metrics: r = β(log πθ − log πref), per sample, detached."""
    chosen = beta * (policy_chosen_logps - reference_chosen_logps).detach()
    rejected = beta * (policy_rejected_logps - reference_rejected_logps).detach()
    return {
        "rewards/chosen": chosen,
        "rewards/rejected": rejected,
        "rewards/accuracies": (chosen > rejected).to(chosen.dtype),
        "rewards/margins": chosen - rejected,
    }
