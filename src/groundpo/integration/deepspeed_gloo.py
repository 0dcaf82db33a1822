"""DeepSpeed ZeRO-3 on gloo (several CPU processes): gathers that end before their caller goes on.

``GatheredParameters`` (which transformers uses to load a checkpoint into a ZeRO-3 model, one
module at a time, rank 0 writing) gathers its parameters with DeepSpeed's
``Init._allgather_params_coalesced``. That function starts one asynchronous all-gather per
parameter and waits only for the last one: on NCCL the gathers run in order on one stream, so the
last one done means all are done. Gloo runs asynchronous work on two threads, in any order, so an
earlier gather can land after the function returned, after rank 0 has copied the checkpoint into
that parameter, and overwrite it with the parameter's not-yet-loaded partition. A few parameters of
the loaded model, different ones each run, then hold whatever memory was there: garbage that
trains to NaN on some machines, zeros on others (DeepSpeed 0.18.4, torch 2.11).

The fix: while that function runs under gloo, each all-gather it starts is waited for before it
returns its handle, so the gathers complete in order. Nothing changes on NCCL or elsewhere in
DeepSpeed. The symbols are checked when ``deepspeed.runtime.zero.partition_parameters`` loads.
"""

from __future__ import annotations

import functools
import threading
from types import ModuleType

from .upstream import require

EXPECTED_DEEPSPEED = "0.18.4"
_state = threading.local()


def _in_order_on_gloo(collective):
    """``collective`` (async all-gather of deepspeed.comm), waited for at once inside the patched gather."""

    @functools.wraps(collective)
    def call(*args, **kwargs):
        work = collective(*args, **kwargs)
        if getattr(_state, "active", False) and kwargs.get("async_op") and work is not None and _is_gloo(kwargs.get("group")):
            work.wait()
        return work

    call.__groundpo_in_order__ = True
    return call


def _is_gloo(group) -> bool:
    import torch.distributed as torch_dist

    return torch_dist.is_initialized() and torch_dist.get_backend(group) == "gloo"


def patch(partition_parameters: ModuleType) -> None:
    """Make ``Init._allgather_params_coalesced`` complete every gather it starts when the group is gloo."""
    init_cls, comm = require(partition_parameters, "Init", "dist", package="deepspeed", expected=EXPECTED_DEEPSPEED)
    (gather_coalesced,) = require(init_cls, "_allgather_params_coalesced", package="deepspeed", expected=EXPECTED_DEEPSPEED)
    require(comm, "all_gather_into_tensor", "all_gather", package="deepspeed", expected=EXPECTED_DEEPSPEED)
    if getattr(gather_coalesced, "__groundpo_in_order__", False):
        return

    for name in ("all_gather_into_tensor", "all_gather"):
        if not getattr(getattr(comm, name), "__groundpo_in_order__", False):
            setattr(comm, name, _in_order_on_gloo(getattr(comm, name)))

    @functools.wraps(gather_coalesced)
    def in_order(self, *args, **kwargs):
        _state.active = True
        try:
            return gather_coalesced(self, *args, **kwargs)
        finally:
            _state.active = False

    in_order.__groundpo_in_order__ = True
    init_cls._allgather_params_coalesced = in_order
