"""Preference objectives as pure functions of summed response log-probabilities.

One file per method. Each function takes tensors of shape [B] (log π(y | view) summed over the
response tokens), returns ``(losses[B], metrics)`` and detaches every input that must carry no
gradient, so a caller cannot get the stop-gradients wrong. Each is tested against a float64 hand
computation of the paper's equation (``tests/test_losses*.py``).
"""

from .dpo import dpo_loss
from .mod_dpo import mod_dpo_loss, mod_dpo_tau

__all__ = ["dpo_loss", "mod_dpo_loss", "mod_dpo_tau"]
