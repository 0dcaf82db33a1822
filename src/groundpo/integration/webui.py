"""Patches of LlamaBoard (``llamafactory.webui``): every registered stage, with its controls.

Nothing here is written per stage or per key: stages come from ``groundpo.registry`` and their
controls from ``StageSpec.controls`` (``groundpo.webui.controls``). What each patch does:

``llamafactory.webui.control`` (:func:`patch_control`)
    Adds each registered stage to upstream's ``TRAINING_STAGES`` (label -> stage; the Train
    tab's stage dropdown, ``Runner`` and ``change_stage`` read it) under its English label, after
    upstream's own stages, MoD-DPO first; adds pairwise stages to ``STAGES_USE_PAIR_DATA`` so the
    dataset list offers ranking datasets for them. Both tables are mutated in place: the webui
    modules imported them by name. Upstream's entries are left as they are. Wraps
    ``list_datasets``: a stage that also takes prompt datasets (MBPO's online rows) lists both kinds.
``llamafactory.webui.components.train`` (:func:`patch_train_tab`)
    Wraps ``create_train_tab``. Before upstream builds the tab, one accordion per stage is
    prepared (its components unrendered) and handed to upstream as part of the tab's input
    elements, so "Preview command", "Save arguments", "Start" take their values and "Load
    arguments" restores them. After upstream built the tab, the accordions are rendered, moved
    to just below upstream's RLHF accordion, registered in the Manager as
    ``train.groundpo_<stage>_<key>`` / ``train.groundpo_<stage>_tab``, shown only while their
    stage is selected, and their β is kept in step with upstream's ``pref_beta`` slider.
``llamafactory.webui.runner`` (:func:`patch_runner`)
    Wraps ``Runner._parse_train_args``: for a groundpo stage, the keys of that stage (and β as
    ``pref_beta``) are added with the values set in its accordion; other stages' keys never are;
    upstream stages get exactly upstream's arguments. Wraps the module's ``load_args`` so a saved
    configuration that names controls of a stage no longer registered still loads.
``llamafactory.webui.engine`` (:func:`patch_engine`)
    Wraps ``Engine.change_lang``: the stage dropdown shows each groundpo stage's label in the
    chosen language (its value stays the English label, the key of ``TRAINING_STAGES``), and our
    accordions and controls get their titles, labels and info texts.
``llamafactory.webui.common`` (:func:`patch_common`)
    Wraps ``_clean_cmd`` (used by the command preview and by the YAML the run is started with),
    which drops every ``False`` value: a groundpo key switched off (``False``) is kept, otherwise
    the run would silently use a ``True`` default.
"""

from __future__ import annotations

import logging
from types import ModuleType
from typing import Any

from .upstream import UpstreamMismatch, require

logger = logging.getLogger("groundpo")

TAB_PREFIX = "groundpo_"  # element names of ours in the Manager: train.groundpo_<stage>_<key>
DOM_PREFIX = "groundpo-"  # HTML ids of ours: groundpo-<stage>-<key>, groundpo-<stage>-tab

# labels of TRAINING_STAGES that we added -> our stage name
_OUR_LABELS: dict[str, str] = {}


def elem_name(stage: str, key: str) -> str:
    """The Manager name (``train.<name>``) of the control for ``key`` in ``stage``'s accordion."""
    return f"{TAB_PREFIX}{stage}_{key}"


def tab_name(stage: str) -> str:
    return f"{TAB_PREFIX}{stage}_tab"


def dom_id(stage: str, key: str) -> str:
    return f"{DOM_PREFIX}{stage}-{key}"


def _constants():
    import sys

    return sys.modules["llamafactory.extras.constants"]


def stage_label(spec, training_stages: dict[str, str]) -> str:
    """The ``TRAINING_STAGES`` label of a groundpo stage: its English label, unique among the labels."""
    label = spec.label["en"]
    taken = {k for k, v in training_stages.items() if v != spec.name}
    return label if label not in taken else f"{label} ({spec.name})"


def sync_stages() -> None:
    """Make ``TRAINING_STAGES`` / ``STAGES_USE_PAIR_DATA`` list exactly the registered stages of ours."""
    from groundpo.registry import stages

    training_stages, pair_stages = require(_constants(), "TRAINING_STAGES", "STAGES_USE_PAIR_DATA")
    registered = {spec.name: spec for spec in stages()}
    for label, name in list(_OUR_LABELS.items()):  # stages unregistered since (plugins, tests)
        if name not in registered or stage_label(registered[name], training_stages) != label:
            training_stages.pop(label, None)
            pair_stages.discard(name)
            del _OUR_LABELS[label]
    for spec in registered.values():
        label = stage_label(spec, training_stages)
        training_stages[label] = spec.name
        _OUR_LABELS[label] = spec.name
        if spec.pairwise:
            pair_stages.add(spec.name)
        else:
            pair_stages.discard(spec.name)


def _our_stage(label: str | None) -> str | None:
    name = _OUR_LABELS.get(label or "")
    from groundpo.registry import is_registered

    return name if name and is_registered(name) else None


# ---------------------------------------------------------------- llamafactory.webui.control
def patch_control(control: ModuleType) -> None:
    constants = _constants()
    training_stages, pair_stages = require(constants, "TRAINING_STAGES", "STAGES_USE_PAIR_DATA")
    ours_in_control = require(control, "TRAINING_STAGES", "STAGES_USE_PAIR_DATA", "change_stage", "list_datasets")
    if ours_in_control[0] is not training_stages or ours_in_control[1] is not pair_stages:
        raise UpstreamMismatch(
            "llamafactory.webui.control no longer shares TRAINING_STAGES / STAGES_USE_PAIR_DATA with "
            "llamafactory.extras.constants; groundpo cannot add its stages to LlamaBoard."
        )
    sync_stages()

    list_datasets = ours_in_control[3]
    (load_dataset_info,) = require(control, "load_dataset_info")

    def _list_datasets(dataset_dir: str | None = None, training_stage: str | None = None):
        """A stage that also takes prompt datasets (MBPO) lists ranking and prompt datasets alike."""
        from groundpo.registry import get_stage

        stage = _our_stage(training_stage)
        if stage is None or not get_stage(stage).prompt_data:
            return list_datasets(dataset_dir, training_stage) if training_stage is not None else list_datasets(dataset_dir)
        import gradio as gr

        return gr.Dropdown(choices=list(load_dataset_info(dataset_dir if dataset_dir is not None else control.DEFAULT_DATA_DIR)))

    _list_datasets.__wrapped__ = list_datasets
    control.list_datasets = _list_datasets


# ---------------------------------------------------------------- llamafactory.webui.components.train
class _StageBoard:
    """The accordions of our stages: components per (stage, key), built before upstream's tab."""

    def __init__(self) -> None:
        import gradio as gr

        from groundpo.registry import stages

        self.specs = stages()
        self.components: dict[str, dict[str, Any]] = {}  # stage -> key -> component
        for spec in self.specs:
            self.components[spec.name] = {c.key: _component(gr, c, spec) for c in spec.controls}
        self.accordions: dict[str, Any] = {}

    def all_components(self) -> set:
        return {comp for per_key in self.components.values() for comp in per_key.values()}

    def render(self, anchor) -> None:
        """Render one accordion per stage just below ``anchor`` (upstream's RLHF accordion)."""
        import gradio as gr

        from groundpo.webui import controls as C

        for spec in self.specs:
            per_key = self.components[spec.name]
            with gr.Accordion(
                C.accordion_title(spec, "en"), open=True, visible=False, elem_id=f"{DOM_PREFIX}{spec.name}-tab"
            ) as accordion:
                for row in _rows(spec.controls, per_key):
                    with gr.Row():
                        for comp in row:
                            comp.render()
            self.accordions[spec.name] = accordion

        parent = getattr(anchor, "parent", None)
        children = getattr(parent, "children", None)
        ours = list(self.accordions.values())
        if isinstance(children, list) and anchor in children and all(acc in children for acc in ours):
            for acc in ours:
                children.remove(acc)
            at = children.index(anchor) + 1
            children[at:at] = ours
        else:  # layout differs from 0.9.5's: the accordions stay at the end of the Train tab
            logger.warning("groundpo: could not place the stage accordions below LlamaBoard's RLHF accordion.")

    def elems(self) -> dict[str, Any]:
        elems: dict[str, Any] = {}
        for name, per_key in self.components.items():
            elems[tab_name(name)] = self.accordions[name]
            for key, comp in per_key.items():
                elems[elem_name(name, key)] = comp
        return elems


def _component(gr, control, spec):
    from groundpo.webui import controls as C

    value = C.initial_value(control, spec)
    common = {
        "label": C.label(control, "en"),
        "info": C.info(control, "en"),
        "render": False,
        "elem_id": dom_id(spec.name, control.key),
    }
    if control.kind == "slider":
        return gr.Slider(
            minimum=control.minimum if control.minimum is not None else 0,
            maximum=control.maximum if control.maximum is not None else 1,
            step=control.step,
            value=value,
            **common,
        )
    if control.kind == "number":
        is_int = C._split_optional(C.value_type(control.key, spec))[0] is int
        return gr.Number(
            value=value,
            minimum=control.minimum,
            maximum=control.maximum,
            step=control.step or 1,
            precision=0 if is_int else None,
            **common,
        )
    if control.kind == "dropdown":
        return gr.Dropdown(choices=list(C.choices_of(control, spec)), value=value, **common)
    if control.kind == "checkbox":
        return gr.Checkbox(value=bool(value), **common)
    raise ValueError(f"Control of `{control.key}` has an unknown kind {control.kind!r}.")


def _rows(controls, per_key, width: int = 5) -> list[list]:
    """Value controls in rows of ``width`` (as upstream's accordions), checkboxes in a last row."""
    values = [per_key[c.key] for c in controls if c.kind != "checkbox"]
    boxes = [per_key[c.key] for c in controls if c.kind == "checkbox"]
    rows = [values[i : i + width] for i in range(0, len(values), width)]
    return rows + ([boxes] if boxes else [])


def patch_train_tab(train: ModuleType) -> None:
    (create_train_tab,) = require(train, "create_train_tab")

    def _create_train_tab(engine):
        import gradio as gr

        sync_stages()
        board = _StageBoard()
        manager = engine.manager
        base_elems = manager.get_base_elems
        # upstream's input elements = base elements + its own; ours join them for this tab only
        manager.get_base_elems = lambda: base_elems() | board.all_components()
        try:
            elem_dict = create_train_tab(engine)
        finally:
            manager.__dict__.pop("get_base_elems", None)

        for name in ("training_stage", "rlhf_tab", "pref_beta"):
            if name not in elem_dict:
                raise UpstreamMismatch(f"LlamaBoard's Train tab has no `{name}` element any more.")
        board.render(anchor=elem_dict["rlhf_tab"])
        _wire(gr, board, elem_dict)
        elem_dict.update(board.elems())
        return elem_dict

    _create_train_tab.__wrapped__ = create_train_tab
    _create_train_tab.__doc__ = create_train_tab.__doc__
    train.create_train_tab = _create_train_tab


def _wire(gr, board: _StageBoard, elem_dict: dict[str, Any]) -> None:
    """Show a stage's accordion only while it is selected; keep every β equal to ``pref_beta``."""
    names = list(board.accordions)
    accordions = [board.accordions[n] for n in names]

    def show_accordion(label):
        selected = _our_stage(label)
        updates = [gr.Accordion(visible=(name == selected)) for name in names]
        return updates if len(updates) > 1 else updates[0]

    elem_dict["training_stage"].change(show_accordion, [elem_dict["training_stage"]], accordions, queue=False)

    from groundpo.webui.controls import COMMON_KEYS

    upstream_beta = elem_dict["pref_beta"]
    if "pref_beta" not in COMMON_KEYS:
        return
    betas = [board.components[n]["pref_beta"] for n in names if "pref_beta" in board.components[n]]
    linked = [upstream_beta] + betas
    for source in linked:
        targets = [t for t in linked if t is not source]
        if targets:
            source.input(_copy_to(len(targets)), [source], targets, queue=False)


def _copy_to(count: int):
    """An event function that sends its one input value to ``count`` outputs."""

    def copy(value):
        return [value] * count if count > 1 else value

    return copy


# ---------------------------------------------------------------- llamafactory.webui.runner
def stage_arguments(manager, data: dict, stage: str) -> dict[str, Any]:
    """The YAML keys of our ``stage`` with the values set in its accordion (``data``: component -> value)."""
    from groundpo.registry import get_stage
    from groundpo.webui.controls import to_config_value

    spec = get_stage(stage)
    args: dict[str, Any] = {}
    for control in spec.controls:
        try:
            elem = manager.get_elem_by_id(f"train.{elem_name(stage, control.key)}")
        except KeyError:
            continue
        if elem in data:
            args[control.key] = to_config_value(control.key, data[elem], spec)
    return args


def known_elem_ids() -> set[str]:
    """Manager ids of every accordion and control of the registered stages."""
    from groundpo.registry import stages

    ids = set()
    for spec in stages():
        ids.add(f"train.{tab_name(spec.name)}")
        ids.update(f"train.{elem_name(spec.name, c.key)}" for c in spec.controls)
    return ids


def patch_runner(runner: ModuleType) -> None:
    runner_cls, load_args = require(runner, "Runner", "load_args")
    (parse_train_args,) = require(runner_cls, "_parse_train_args")

    def _parse_train_args(self, data):
        args = parse_train_args(self, data)
        from groundpo.registry import is_registered

        stage = args.get("stage")
        if isinstance(stage, str) and is_registered(stage):
            args.update(stage_arguments(self.manager, data, stage))
        return args

    def _load_args(config_path):
        config = load_args(config_path)
        if isinstance(config, dict):
            prefix = f"train.{TAB_PREFIX}"
            known = known_elem_ids()
            stale = [k for k in config if isinstance(k, str) and k.startswith(prefix) and k not in known]
            for key in stale:
                del config[key]
            if stale:
                logger.warning("groundpo: ignored saved LlamaBoard values of unknown controls: %s", ", ".join(stale))
        return config

    _parse_train_args.__wrapped__ = parse_train_args
    _parse_train_args.__doc__ = parse_train_args.__doc__
    _load_args.__wrapped__ = load_args
    runner_cls._parse_train_args = _parse_train_args
    runner.load_args = _load_args


# ---------------------------------------------------------------- llamafactory.webui.engine
def language_updates(manager, lang: str) -> dict[Any, Any]:
    """Gradio updates that put the stage dropdown and our accordions into ``lang``."""
    import gradio as gr

    from groundpo.registry import stages
    from groundpo.webui import controls as C

    locales = require(_locales(), "LOCALES")[0]
    (training_stages,) = require(_constants(), "TRAINING_STAGES")
    updates: dict[Any, Any] = {}
    try:
        stage_dropdown = manager.get_elem_by_id("train.training_stage")
    except KeyError:  # the chat-only web demo has no Train tab
        return updates

    by_name = {spec.name: spec for spec in stages()}
    choices = []
    for label, name in training_stages.items():
        ours = _OUR_LABELS.get(label) == name and name in by_name
        choices.append((C.stage_label(by_name[name], lang) if ours else label, label))
    texts = dict(locales.get("training_stage", {}).get(lang, {}))
    updates[stage_dropdown] = gr.Dropdown(choices=choices, **texts)

    for spec in by_name.values():
        try:
            accordion = manager.get_elem_by_id(f"train.{tab_name(spec.name)}")
        except KeyError:  # registered after the UI was built
            continue
        updates[accordion] = gr.Accordion(label=C.accordion_title(spec, lang))
        for control in spec.controls:
            try:
                comp = manager.get_elem_by_id(f"train.{elem_name(spec.name, control.key)}")
            except KeyError:
                continue
            updates[comp] = comp.__class__(label=C.label(control, lang), info=C.info(control, lang))
    return updates


def _locales():
    import sys

    return sys.modules["llamafactory.webui.locales"]


def patch_engine(engine: ModuleType) -> None:
    (engine_cls,) = require(engine, "Engine")
    (change_lang,) = require(engine_cls, "change_lang")
    require(_locales(), "LOCALES")

    def _change_lang(self, lang):
        updates = change_lang(self, lang)
        updates.update(language_updates(self.manager, lang))
        return updates

    _change_lang.__wrapped__ = change_lang
    _change_lang.__doc__ = change_lang.__doc__
    engine_cls.change_lang = _change_lang


# ---------------------------------------------------------------- llamafactory.webui.common
def patch_common(common: ModuleType) -> None:
    (clean_cmd,) = require(common, "_clean_cmd")

    def _clean_cmd(args):
        cleaned = clean_cmd(args)
        from groundpo.registry import all_keys

        ours = all_keys()
        if not any(value is False and key in ours for key, value in args.items()):
            return cleaned
        return {k: v for k, v in args.items() if k in cleaned or (v is False and k in ours)}

    _clean_cmd.__wrapped__ = clean_cmd
    _clean_cmd.__doc__ = clean_cmd.__doc__
    common._clean_cmd = _clean_cmd


# ---------------------------------------------------------------- llamafactory.webui.interface
LOCAL_ONLY = "127.0.0.1"


def serve_address() -> tuple[str, str]:
    """(host, port) LlamaBoard binds: 127.0.0.1 unless GRADIO_SERVER_NAME says otherwise."""
    import os

    return os.environ.get("GRADIO_SERVER_NAME", LOCAL_ONLY), os.environ.get("GRADIO_SERVER_PORT", "7860")


def serve_locally(run):
    """``run`` (upstream's ``run_web_ui`` / ``run_web_demo``) bound to 127.0.0.1 unless GRADIO_SERVER_NAME
    says otherwise, announcing the URL it serves."""

    def wrapper(*args, **kwargs):
        import os

        os.environ.setdefault("GRADIO_SERVER_NAME", LOCAL_ONLY)
        host, port = serve_address()
        note = "" if host != LOCAL_ONLY else " (this machine only; set GRADIO_SERVER_NAME=0.0.0.0 to expose it)"
        print(f"[groundpo] LlamaBoard is served at http://{host}:{port}{note}", flush=True)
        return run(*args, **kwargs)

    wrapper.__wrapped__ = run
    wrapper.__doc__ = run.__doc__
    return wrapper


def patch_interface(interface: ModuleType) -> None:
    """LlamaBoard reads and writes arbitrary paths and starts training jobs: bind it to this machine only.

    Upstream listens on all interfaces (0.0.0.0) unless GRADIO_SERVER_NAME is set; we set 127.0.0.1
    as the default (an explicit GRADIO_SERVER_NAME still wins) and log where the board is served.
    """
    run_web_ui, run_web_demo = require(interface, "run_web_ui", "run_web_demo")
    interface.run_web_ui = serve_locally(run_web_ui)
    interface.run_web_demo = serve_locally(run_web_demo)
