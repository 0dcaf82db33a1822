"""Shared media encodings: within a step, each distinct media input goes through a tower once.

A step of a multi-view stage runs the same media through the vision and audio encoders many
times: the clean clip for the policy and for the reference, the clean audio again in the view that
corrupts only the video, and so on. When a tower is frozen (LLaMA-Factory's default) its output
depends on its input alone, so :class:`SharedEncodings` keeps, for the duration of one step, each
tower output with the input that produced it, and serves a call with an equal input (same shapes,
same values, same keyword arguments) from it:

- a frozen tower's outputs are shared by every pass, with and without gradient, and by policy and
  reference when the reference's tower is the same module (LoRA: the policy with adapters off) or
  an identical frozen copy (full tuning: checked once, weight by weight);
- a trained tower (``freeze_vision_tower: false``) shares only between no-grad calls of the same
  model: its outputs with gradient are always computed.

Under several processes every rank must call each tower the same number of times (ZeRO-3 gathers
a tower's weights inside the call), so a cached output is used only when it is cached on every rank
(``agree``), otherwise all ranks compute.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Callable, Iterator

import torch

# attribute names of the media towers of the supported families (Qwen2.5-Omni, Qwen2-VL, LLaVA, ...)
TOWER_NAMES = ("visual", "audio_tower", "vision_tower")


def find_towers(model) -> dict[str, torch.nn.Module]:
    """name -> tower module of ``model`` (searched through DDP / DeepSpeed / PEFT wrappers)."""
    found: dict[str, torch.nn.Module] = {}
    for name, module in model.named_modules():
        last = name.rsplit(".", 1)[-1]
        if last in TOWER_NAMES and last not in found and not any(name.startswith(f"{n}.") for n in found.values()):
            found[last] = module
    return found


def is_frozen(module: torch.nn.Module) -> bool:
    return not any(p.requires_grad for p in module.parameters())


def _local(param: torch.Tensor) -> torch.Tensor:
    """A parameter's values on this rank: ZeRO-3 keeps them in ``ds_tensor`` (``data`` is a placeholder)."""
    return getattr(param, "ds_tensor", param)


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    pa, pb = [_local(p) for p in a.parameters()], [_local(p) for p in b.parameters()]
    return len(pa) == len(pb) and all(x.shape == y.shape and torch.equal(x, y) for x, y in zip(pa, pb))


def _equal(a: Any, b: Any) -> bool:
    if torch.is_tensor(a) or torch.is_tensor(b):
        return (torch.is_tensor(a) and torch.is_tensor(b) and a.shape == b.shape and a.dtype == b.dtype
                and a.device == b.device and torch.equal(a, b))
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    return a == b


class SharedEncodings:
    """Tower outputs of one step, shared between the passes of ``models`` (policy first, then reference)."""

    def __init__(self, models: list, agree: Callable[[bool], bool] = lambda hit: hit) -> None:
        self.agree = agree
        self.hits = 0
        self.calls = 0
        self._entries: dict[Any, list[tuple[tuple, dict, Any]]] = {}
        self._patched: list[tuple[torch.nn.Module, Any]] = []
        self._groups = self._group_towers([m for m in models if m is not None])

    @staticmethod
    def _group_towers(models: list) -> list[tuple[torch.nn.Module, Any, bool]]:
        """(tower, cache group, frozen) for each distinct tower module of ``models``."""
        out: list[tuple[torch.nn.Module, Any, bool]] = []
        seen: dict[int, Any] = {}
        for index, model in enumerate(models):
            for name, tower in find_towers(model).items():
                if id(tower) in seen:
                    continue
                frozen = is_frozen(tower)
                group: Any = (name, index, id(tower))
                if frozen:  # an identical frozen copy (the reference of full tuning) shares the policy's group
                    for other, other_group, other_frozen in out:
                        if other_frozen and other_group[0] == name and _same_weights(other, tower):
                            group = other_group
                            break
                seen[id(tower)] = group
                out.append((tower, group, frozen))
        return out

    @property
    def towers(self) -> int:
        return len(self._groups)

    def _cached_forward(self, forward, group, frozen: bool):
        def call(*args, **kwargs):
            self.calls += 1
            grad = torch.is_grad_enabled()
            key = group if frozen else (group, grad)
            shareable = frozen or not grad
            found = None
            if shareable:
                for entry_args, entry_kwargs, output in self._entries.get(key, ()):
                    if _equal(entry_args, args) and _equal(entry_kwargs, kwargs):
                        found = output
                        break
            if self.agree(found is not None):
                self.hits += 1
                return found
            output = forward(*args, **kwargs)
            if shareable:
                self._entries.setdefault(key, []).append((args, kwargs, output))
            return output

        return call

    @contextmanager
    def step(self) -> Iterator["SharedEncodings"]:
        """Share tower outputs inside the block; forget them (and unpatch the towers) when it ends."""
        for tower, group, frozen in self._groups:
            self._patched.append((tower, tower.__dict__.get("forward")))
            tower.forward = self._cached_forward(tower.forward, group, frozen)
        try:
            yield self
        finally:
            for tower, previous in reversed(self._patched):
                if previous is None:
                    tower.__dict__.pop("forward", None)
                else:
                    tower.forward = previous
            self._patched.clear()
            self._entries.clear()
