"""Logged metrics as (sum, count) per key: every rank logs the same keys, weighted by the rows that exist.

Upstream's DPO trainer stores one batch mean per metric and, at logging time, averages the stored
lists *by position* across ranks. When ranks hold different kinds of rows (ACPO's output and input
pairs, MoD-DPO rows with and without an invariance term, any eval batch) their key lists differ in
order or length: values of different metrics get averaged together, and lists of different
lengths can hang the all-reduce.

Here a stage has a fixed key set (``StageSpec.metric_keys``: the engine's keys and the ``METRICS``
its loss module declares). Each batch adds, per key, the sum of its per-row values and the number
of rows that have the metric (0 when a batch has no row of that kind). At logging time one
[keys, 2] tensor is summed across ranks, in the same key order on every rank, and the logged value
is sum / count: the mean over all rows that exist, across ranks and accumulated batches. A key
that no row of any rank had since the last log is not logged (on every rank alike).
"""

from __future__ import annotations

from typing import Callable, Iterable

import torch

SPLITS = ("train", "eval")
# what the engine logs for every stage, from the clean policy pass
ENGINE_METRICS = ("logps/chosen", "logps/rejected", "logits/chosen", "logits/rejected")


class UndeclaredMetricError(RuntimeError):
    pass


class MetricStore:
    def __init__(self, keys: Iterable[str]) -> None:
        self.keys = tuple(dict.fromkeys(keys))
        self._index = {key: i for i, key in enumerate(self.keys)}
        self._totals = {split: torch.zeros(len(self.keys), 2, dtype=torch.float64) for split in SPLITS}

    def add(self, split: str, name: str, values: torch.Tensor) -> None:
        """Add the per-row ``values`` ([n] or a scalar for one row) of metric ``name``."""
        if name not in self._index:
            raise UndeclaredMetricError(
                f"metric `{name}` is not declared for this stage (declared: {', '.join(self.keys)}); "
                "add it to the METRICS of the stage's loss module"
            )
        values = values.detach().reshape(-1).to(device="cpu", dtype=torch.float64)
        row = self._totals[split][self._index[name]]
        row[0] += values.sum()
        row[1] += values.numel()

    def add_all(self, split: str, metrics: dict[str, torch.Tensor]) -> None:
        for name, values in metrics.items():
            self.add(split, name, values)

    def batch_means(self, metrics: dict[str, torch.Tensor]) -> dict[str, float]:
        """Per-batch means of the metrics that have rows (what TRL's prediction_step reads)."""
        return {k: float(v.detach().float().mean()) for k, v in metrics.items() if v.numel() > 0}

    def pop(self, split: str, all_reduce_sum: Callable[[torch.Tensor], torch.Tensor]) -> dict[str, float]:
        """Means over rows since the last call, summed across ranks by ``all_reduce_sum``; resets ``split``."""
        totals = all_reduce_sum(self._totals[split].clone())
        self._totals[split].zero_()
        totals = totals.to(device="cpu", dtype=torch.float64)
        return {key: float(totals[i, 0] / totals[i, 1]) for i, key in enumerate(self.keys) if totals[i, 1] > 0}
