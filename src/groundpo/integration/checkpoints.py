"""Resuming multi-process CPU runs: ``torch.load`` learns the ``cpu:N`` device strings.

With several CPU processes (torchrun + gloo), accelerate gives each process the device
``torch.device("cpu", local_rank)``, and transformers' ``Trainer`` resumes the optimizer with
``torch.load(..., map_location=args.device)`` when ``world_size > 1``. torch's default restore
knows ``"cpu"`` but not ``"cpu:0"``, so resuming from any checkpoint fails with "don't know how
to restore data location ... (tagged with cpu:0)", for upstream's stages as for ours. GPU runs
(``cuda:N``) are unaffected.

The fix uses torch's public extension point for storage locations: a deserializer that keeps a
storage on the CPU for a ``cpu:N`` location. It changes nothing for any other location.
"""

from __future__ import annotations

_registered = False


def _untag(obj) -> None:  # torch asks every registered tagger; this one tags nothing
    return None


def _restore_cpu_index(obj, location: str):
    """A storage loaded for ``cpu:N`` stays where torch.load read it: on the CPU."""
    if location.startswith("cpu:") and location[4:].isdigit():
        return obj
    return None


def register_cpu_index_locations() -> None:
    """Teach ``torch.load`` the ``cpu:N`` map locations of multi-process CPU runs (idempotent)."""
    global _registered
    if _registered:
        return
    import torch.serialization

    torch.serialization.register_package(11, _untag, _restore_cpu_index)
    _registered = True
