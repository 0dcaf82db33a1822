"""Patch of ``llamafactory.hparams.parser``: our stages and keys in the training arguments.

Upstream parses training configs with ``HfArgumentParser(_TRAIN_ARGS)``, where ``_TRAIN_ARGS``
holds ``FinetuningArguments``. We wrap ``_parse_train_args`` so that, on each call,

1. ``GroundpoFinetuningArguments`` (upstream's class plus our keys, ``groundpo.hparams``) stands
   in ``_TRAIN_ARGS`` in place of upstream's class, so our YAML keys parse and our stages validate;
2. a groundpo key given with a stage that does not take it is a clear error;
3. a stage's paper β (``StageSpec.default_beta``) fills ``pref_beta`` when the config omits it.

Upstream stages parse exactly as before: our keys keep their defaults and are rejected if given.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

from .upstream import require


class StageKeyError(ValueError):
    pass


def given_keys(args: dict[str, Any] | list[str] | None) -> set[str]:
    """The keys a config (dict) or command line (list of flags) sets."""
    if isinstance(args, dict):
        return set(args)
    keys = set()
    for item in args or []:
        if item.startswith("--"):
            keys.add(item[2:].split("=", 1)[0].replace("-", "_"))
    return keys


def given_stage(args: dict[str, Any] | list[str] | None) -> str:
    if isinstance(args, dict):
        return str(args.get("stage", "sft"))
    args = list(args or [])
    for i, item in enumerate(args):
        if item.startswith("--stage="):
            return item.split("=", 1)[1]
        if item == "--stage" and i + 1 < len(args):
            return args[i + 1]
    return "sft"


def check_stage_keys(args: dict[str, Any] | list[str] | None) -> None:
    """Raise :class:`StageKeyError` if ``args`` set groundpo keys that its stage does not take."""
    from groundpo.registry import all_keys, get_stage, is_registered

    stage = given_stage(args)
    ours = given_keys(args) & all_keys()
    accepted = get_stage(stage).keys if is_registered(stage) else frozenset()
    rejected = sorted(ours - accepted)
    if rejected:
        owners = _owners(rejected)
        raise StageKeyError(
            f"Stage {stage!r} does not take {', '.join(f'`{k}`' for k in rejected)}"
            f" ({owners}). Remove them or change `stage`."
        )


# What our stages need where upstream's defaults fail them, set unless the config says otherwise.
# - use_reentrant_gc: false (without DeepSpeed). Reentrant checkpointing re-runs the forward inside the
#   backward; DDP with find_unused_parameters then marks parameters ready twice ("Expected to mark a
#   variable ready only once"). Under DeepSpeed ZeRO-3 upstream's reentrant default stays: non-reentrant
#   recomputation sees ZeRO-3's partitioned parameters with other shapes (CheckpointError with LoRA).
# - ddp_find_unused_parameters: true (full and freeze tuning). A step of a multimodal stage may leave a
#   tower unused (no audio in a batch, a text-only view) and Qwen2.5-Omni never uses
#   `audio_bos_eos_token`; plain DDP then fails. LoRA keeps upstream's False: only adapters train.
STAGE_RUNTIME_DEFAULTS = {"use_reentrant_gc": False}
FULL_TUNING_DEFAULTS = {"ddp_find_unused_parameters": True}


def _given_value(args, key: str, default=None):
    if isinstance(args, dict):
        return args.get(key, default)
    args = list(args or [])
    for i, item in enumerate(args):
        if item.startswith(f"--{key}="):
            return item.split("=", 1)[1]
        if item == f"--{key}" and i + 1 < len(args):
            return args[i + 1]
    return default


def with_stage_defaults(args: dict[str, Any] | list[str] | None) -> dict[str, Any] | list[str] | None:
    """``args`` with our stages' defaults where the config does not set them.

    The stage's paper β as ``pref_beta``; non-reentrant gradient checkpointing; and, for full or
    freeze tuning, ``ddp_find_unused_parameters`` (see ``STAGE_RUNTIME_DEFAULTS``).
    """
    from groundpo.registry import get_stage, is_registered

    stage = given_stage(args)
    if not is_registered(stage):
        return args
    given = given_keys(args)
    defaults = dict(STAGE_RUNTIME_DEFAULTS) if not _given_value(args, "deepspeed") else {}
    if _given_value(args, "finetuning_type", "lora") != "lora":
        defaults.update(FULL_TUNING_DEFAULTS)
    if get_stage(stage).default_beta is not None:
        defaults["pref_beta"] = get_stage(stage).default_beta
    missing = {k: v for k, v in defaults.items() if k not in given}
    if not missing:
        return args
    if isinstance(args, dict):
        return {**args, **missing}
    return [*(args or []), *(item for k, v in missing.items() for item in (f"--{k}", str(v).lower() if isinstance(v, bool) else str(v)))]


def _owners(keys: list[str]) -> str:
    from groundpo.registry import stages

    parts = []
    for key in keys:
        names = [s.name for s in stages() if key in s.keys]
        parts.append(f"`{key}` belongs to stage {' / '.join(names)}")
    return "; ".join(parts)


def patch(parser: ModuleType) -> None:
    train_args, parse_train_args, finetuning_cls, _ = require(
        parser, "_TRAIN_ARGS", "_parse_train_args", "FinetuningArguments", "read_args"
    )
    if finetuning_cls not in train_args:
        from .upstream import UpstreamMismatch

        raise UpstreamMismatch("llamafactory.hparams.parser._TRAIN_ARGS no longer holds FinetuningArguments.")
    index = train_args.index(finetuning_cls)

    def _parse_train_args(args=None):
        from groundpo.hparams import GroundpoFinetuningArguments

        args = parser.read_args(args)
        train_args[index] = GroundpoFinetuningArguments
        check_stage_keys(args)
        return parse_train_args(with_stage_defaults(args))

    _parse_train_args.__wrapped__ = parse_train_args
    _parse_train_args.__doc__ = parse_train_args.__doc__
    parser._parse_train_args = _parse_train_args
