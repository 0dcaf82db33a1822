"""Patch of ``llamafactory.train.callbacks.LogCallback``: our metrics in ``trainer_log.jsonl``.

Upstream's ``LogCallback.on_log`` writes a fixed set of keys (loss, lr, accuracy, ...) to
``trainer_log.jsonl``, which LlamaBoard reads. For callbacks that our trainer marked
(``groundpo_metrics = True``), every metric of the log entry (``rewards/*``, ``logps/*``,
``mod/*``, ...) is added to the line upstream writes for the same step. Upstream's own stages are
untouched: their callbacks are never marked.
"""

from __future__ import annotations

from types import ModuleType

from .upstream import require

MARK = "groundpo_metrics"


def mark_log_callbacks(callbacks) -> None:
    """Mark the ``LogCallback`` instances among ``callbacks`` (called by our trainer)."""
    from llamafactory.train.callbacks import LogCallback

    for callback in callbacks:
        if isinstance(callback, LogCallback):
            setattr(callback, MARK, True)


def patch(callbacks: ModuleType) -> None:
    (log_callback,) = require(callbacks, "LogCallback")
    on_log, write_log = require(log_callback, "on_log", "_write_log")

    def _on_log(self, args, state, control, **kwargs):
        if getattr(self, MARK, False) and state.log_history:
            entry = state.log_history[-1]
            extra = {k: v for k, v in entry.items() if "/" in k and isinstance(v, (int, float))}
            self.__dict__.setdefault("_groundpo_pending", []).append((state.global_step, extra))
        return on_log(self, args, state, control, **kwargs)

    def _write_log(self, output_dir, logs):
        pending = self.__dict__.get("_groundpo_pending")
        if pending:
            while pending and pending[0][0] < logs.get("current_steps", 0):
                pending.pop(0)
            if pending and pending[0][0] == logs.get("current_steps"):
                logs = {**logs, **pending.pop(0)[1]}
        return write_log(self, output_dir, logs)

    _on_log.__wrapped__ = on_log
    _write_log.__wrapped__ = write_log
    log_callback.on_log = _on_log
    log_callback._write_log = _write_log
