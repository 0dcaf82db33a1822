"""Stage registry: a stage name maps to everything LLaMA-Factory needs to run it.

A :class:`StageSpec` says which YAML keys a stage takes (argument dataclasses from
``groundpo.hparams``), which workflow trains it, which objective it optimises, which views of a
row it needs, and which controls LlamaBoard shows for it. ``groundpo.integration`` reads this
registry to extend upstream's argument parser, training dispatch and web UI; nothing there is
written per stage.

Adding a method = a loss file + a :func:`register_stage` call + a dataset example + tests.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field, fields
from typing import Any, Callable, Literal

LANGS = ("en", "ru", "zh", "ko", "ja")


@dataclass(frozen=True)
class Control:
    """One LlamaBoard control bound to one YAML key."""

    key: str
    kind: Literal["slider", "number", "dropdown", "checkbox"]
    label: dict[str, str]
    info: dict[str, str] = field(default_factory=dict)
    minimum: float | None = None
    maximum: float | None = None
    step: float | None = None
    choices: tuple[str, ...] = ()


@dataclass(frozen=True)
class StageSpec:
    """Everything that defines a training stage of groundpo."""

    name: str
    label: dict[str, str]  # readable name per LlamaBoard language; "en" is required
    paper: str  # where the objective comes from
    workflow: str = "groundpo.train.workflow:run_preference"  # "module:function", upstream's run_* signature
    objective: str | None = None  # "module:function" of the pure loss
    arguments: tuple[type, ...] = ()  # dataclasses from groundpo.hparams: the stage's own YAML keys
    plan: Callable[[Any], Any] | None = None  # finetuning_args -> groundpo.views.StagePlan
    inputs: Callable[..., dict] | None = None  # (log-prob table, batch info, finetuning_args) -> loss kwargs
    uses_reference: bool | Callable[[Any], bool] = True  # or finetuning_args -> bool (MBPO: only when β_KL > 0)
    pairwise: bool = True  # takes ranking (chosen/rejected) datasets
    prompt_data: bool = False  # also takes prompt datasets ("ranking": false): MBPO's online rows
    default_beta: float | None = None  # the paper's β, used when a config does not set `pref_beta`
    reads_beta: bool = True  # its objective reads `pref_beta` (MBPO's does not: its KL weight is a key of its own)

    @property
    def keys(self) -> frozenset[str]:
        """The YAML keys of groundpo that this stage accepts."""
        return frozenset(f.name for cls in self.arguments for f in fields(cls))

    @property
    def controls(self) -> tuple[Control, ...]:
        """LlamaBoard's controls for this stage, derived from its keys (``groundpo.webui.controls``).

        Controls are defined per YAML key in one place; a stage shows β (``pref_beta``) and one
        control per key of its argument dataclasses.
        """
        from .webui.controls import controls_for

        return controls_for(self)

    @property
    def metric_keys(self) -> tuple[str, ...]:
        """The fixed keys this stage logs: the engine's and the ``METRICS`` its loss module declares."""
        from .train.metrics import ENGINE_METRICS

        declared = ()
        if self.objective:
            declared = getattr(importlib.import_module(self.objective.partition(":")[0]), "METRICS", ())
        return tuple(dict.fromkeys(ENGINE_METRICS + tuple(declared)))

    def load_workflow(self) -> Callable[..., Any]:
        return _load(self.workflow)

    def load_objective(self) -> Callable[..., Any] | None:
        return _load(self.objective) if self.objective else None


class UnknownStageError(ValueError):
    pass


_STAGES: dict[str, StageSpec] = {}
_builtin_loaded = False


def _load(path: str) -> Callable[..., Any]:
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


def register_stage(spec: StageSpec, *, replace: bool = False) -> StageSpec:
    if "en" not in spec.label:
        raise ValueError(f"Stage {spec.name!r} needs an English label.")
    if spec.name in upstream_stages():
        raise ValueError(f"Stage {spec.name!r} is an upstream LLaMA-Factory stage; pick another name.")
    if spec.name in _STAGES and not replace:
        raise ValueError(f"Stage {spec.name!r} is already registered.")
    _STAGES[spec.name] = spec
    return spec


def unregister_stage(name: str) -> None:
    """Remove a stage (for plugins and tests); built-in stages can be replaced with ``replace=True``."""
    _ensure_builtin()
    _STAGES.pop(name, None)


def get_stage(name: str) -> StageSpec:
    _ensure_builtin()
    if name not in _STAGES:
        raise UnknownStageError(unknown_stage_message(name))
    return _STAGES[name]


def is_registered(name: str) -> bool:
    _ensure_builtin()
    return name in _STAGES


def stage_names() -> list[str]:
    """groundpo's stages, in registration order (MoD-DPO first)."""
    _ensure_builtin()
    return list(_STAGES)


def stages() -> list[StageSpec]:
    _ensure_builtin()
    return list(_STAGES.values())


def upstream_stages() -> tuple[str, ...]:
    """The stages of LLaMA-Factory itself, read from its ``FinetuningArguments.stage`` annotation."""
    from typing import get_args, get_type_hints

    from llamafactory.hparams.finetuning_args import FinetuningArguments

    return tuple(get_args(get_type_hints(FinetuningArguments)["stage"]))


def all_stage_names() -> list[str]:
    return list(upstream_stages()) + stage_names()


def all_keys() -> frozenset[str]:
    """Every YAML key that groundpo adds to LLaMA-Factory's training arguments."""
    from . import hparams

    return frozenset(f.name for cls in hparams.STAGE_ARGUMENTS for f in fields(cls))


def unknown_stage_message(name: str) -> str:
    _ensure_builtin()
    ours = ", ".join(f"{s.name} ({s.label['en']})" for s in _STAGES.values())
    return (
        f"Unknown stage {name!r}. LLaMA-Factory stages: {', '.join(upstream_stages())}. "
        f"groundpo stages: {ours}."
    )


def _ensure_builtin() -> None:
    """Register the built-in stages (``groundpo.stages``) on first use of the registry."""
    global _builtin_loaded
    if not _builtin_loaded:
        _builtin_loaded = True
        importlib.import_module("groundpo.stages")
