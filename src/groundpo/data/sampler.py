"""Samplers: modality-homogeneous alternating batches (MoD-DPO) and easy-to-hard thirds (MFPO).

Modality-homogeneous batches that alternate visual and audio prompts (MoD-DPO, Sec. 4):

The sampler orders row indices in *steps*: blocks of ``per_device_batch_size × world_size`` rows of
one modality. Upstream's trainer cuts the order into per-device batches and accelerate hands the
i-th batch to rank i mod world_size, so at every step every rank sees the same modality, and
every rank runs the same forward passes (required by ZeRO-3 and FSDP, which deadlock otherwise).

Steps cycle through the modalities present: visual, audio, audiovisual, visual, audio, ...;
audiovisual rows form their own batches. Each modality's rows are shuffled per epoch (seeded) and
padded to a whole number of steps by repeating some of its rows.
"""

from __future__ import annotations

from typing import Callable, Iterator, Sequence

import torch
from torch.utils.data import Sampler

ORDER = ("visual", "audio", "audiovisual")


class ModalityBatchSampler(Sampler[int]):
    def __init__(
        self,
        modalities: Sequence[str | None],
        per_device_batch_size: int,
        world_size: int = 1,
        seed: int = 0,
        shuffle: bool = True,
    ) -> None:
        self.block = per_device_batch_size * world_size
        self.seed = seed
        self.shuffle = shuffle
        self.epoch = 0
        self.groups: dict[str, list[int]] = {}
        for index, modality in enumerate(modalities):
            self.groups.setdefault(modality or "unknown", []).append(index)
        self.keys = [m for m in ORDER if m in self.groups] + sorted(set(self.groups) - set(ORDER))

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _blocks(self, indices: list[int], gen: torch.Generator) -> list[list[int]]:
        if self.shuffle:
            indices = [indices[i] for i in torch.randperm(len(indices), generator=gen).tolist()]
        short = -len(indices) % self.block
        if short:
            picks = torch.randint(len(indices), (short,), generator=gen).tolist()
            indices = indices + [indices[i] for i in picks]
        return [indices[i : i + self.block] for i in range(0, len(indices), self.block)]

    def steps(self) -> list[list[int]]:
        """The epoch's steps, each a list of row indices of one modality."""
        gen = torch.Generator().manual_seed(self.seed + self.epoch)
        queues = {key: self._blocks(self.groups[key], gen) for key in self.keys}
        order: list[list[int]] = []
        while any(queues.values()):
            for key in self.keys:
                if queues[key]:
                    order.append(queues[key].pop(0))
        return order

    def __iter__(self) -> Iterator[int]:
        for step in self.steps():
            yield from step

    def __len__(self) -> int:
        return sum(-(-len(v) // self.block) * self.block for v in self.groups.values())


class CurriculumSampler(Sampler[int]):
    """MFPO's easy-to-hard schedule: rows sorted by difficulty, cut into thirds, trained in order.

    Each epoch visits the easiest third, then the middle, then the hardest; rows are shuffled
    (seeded per epoch) inside their third. ``difficulty`` is a list of scores or a callable that
    returns it when iteration starts: the trainer scores rows once the model is wrapped for
    training (ZeRO-3, FSDP), which happens after the dataloader was built.
    """

    def __init__(
        self,
        difficulty: Sequence[float] | Callable[[], Sequence[float] | None],
        size: int | None = None,
        seed: int = 0,
        shuffle: bool = True,
        parts: int = 3,
    ) -> None:
        self.difficulty = difficulty
        self.size = len(difficulty) if size is None else size
        self.parts = parts
        self.seed = seed
        self.shuffle = shuffle
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    @property
    def thirds(self) -> list[list[int]]:
        scores = self.difficulty() if callable(self.difficulty) else self.difficulty
        if scores is None or len(scores) != self.size:
            raise RuntimeError("The curriculum has no difficulty scores for the training rows yet.")
        order = sorted(range(len(scores)), key=lambda i: (scores[i], i))
        bounds = [round(k * len(order) / self.parts) for k in range(self.parts + 1)]
        return [order[bounds[k] : bounds[k + 1]] for k in range(self.parts)]

    def __iter__(self) -> Iterator[int]:
        gen = torch.Generator().manual_seed(self.seed + self.epoch)
        for part in self.thirds:
            if self.shuffle:
                part = [part[i] for i in torch.randperm(len(part), generator=gen).tolist()]
            yield from part

    def __len__(self) -> int:
        return self.size
