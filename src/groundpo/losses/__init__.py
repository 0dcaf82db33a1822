"""Preference objectives as pure functions of summed response log-probabilities.

One file per method. Each function takes tensors of shape [B] (log π(y | view) summed over the
response tokens; JoMPO takes [B, 3, 2], one entry per image view and response), returns
``(losses[B], metrics)`` and detaches every input that must carry no gradient, so a caller cannot
get the stop-gradients wrong. Each is tested against a float64 hand computation of the paper's
equation (``tests/test_losses*.py``).
"""

from .acpo import acpo_loss
from .dpo import dpo_loss
from .jompo import jompo_loss
from .mdpo import mdpo_loss
from .mfpo import mfpo_loss
from .mod_dpo import mod_dpo_loss, mod_dpo_tau
from .omni_dpo import omni_dpo_loss

__all__ = [
    "acpo_loss",
    "dpo_loss",
    "jompo_loss",
    "mdpo_loss",
    "mfpo_loss",
    "mod_dpo_loss",
    "mod_dpo_tau",
    "omni_dpo_loss",
]
