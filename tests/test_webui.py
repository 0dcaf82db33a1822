"""LlamaBoard with groundpo, in-process: stages in the dropdown, controls from the registry, arguments.

The Train tab is built with upstream's own functions (``Engine``, ``create_top``,
``create_train_tab``) inside a Gradio ``Blocks``; nothing is launched. LlamaBoard writes
``llamaboard_cache`` / ``llamaboard_config`` / ``saves`` relative to the working directory, so
every test that builds or drives it runs in a temporary directory.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Literal

import pytest

from groundpo.hparams import ModDPOArguments, ViewEngineArguments
from groundpo.registry import (
    LANGS,
    StageSpec,
    get_stage,
    register_stage,
    stage_names,
    stages,
    unregister_stage,
)
from groundpo.webui import controls as C

ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = ROOT / "data"
UPSTREAM_STAGES = {
    "Supervised Fine-Tuning": "sft",
    "Reward Modeling": "rm",
    "PPO": "ppo",
    "DPO": "dpo",
    "KTO": "kto",
    "Pre-Training": "pt",
}


class Board:
    """A Train tab built by upstream's functions, and helpers to fill in its values."""

    def __init__(self) -> None:
        import gradio as gr
        from llamafactory.webui.components import create_top, create_train_tab
        from llamafactory.webui.engine import Engine

        self.engine = Engine()
        with gr.Blocks() as self.demo:
            self.engine.manager.add_elems("top", create_top())
            with gr.Tab("Train"):
                self.engine.manager.add_elems("train", create_train_tab(self.engine))
        self.manager = self.engine.manager
        self.runner = self.engine.runner

    def elem(self, elem_id: str):
        return self.manager.get_elem_by_id(elem_id)

    def data(self, stage_label: str, **values) -> dict:
        """Every component's initial value, a tiny-model setup, then ``values`` (elem id -> value)."""
        data = {elem: elem.value for elem in self.manager.get_elem_list() if hasattr(elem, "value")}
        defaults = {
            "top.lang": "en",
            "top.model_name": "Qwen2.5-Omni-7B",
            "top.model_path": "unused-model",
            "top.template": "qwen2_omni",
            "top.finetuning_type": "full",
            "train.training_stage": stage_label,
            "train.dataset_dir": str(DATA_DIR),
            "train.dataset": ["demo_mod_dpo"],
            "train.compute_type": "fp32",
            "train.output_dir": "train_unit",
            "train.config_path": "unit.yaml",
        }
        for elem_id, value in {**defaults, **values}.items():
            data[self.elem(elem_id)] = value
        return data


def our_id(stage: str, key: str) -> str:
    return f"train.groundpo_{stage}_{key}"


def label_of(stage: str) -> str:
    from llamafactory.extras.constants import TRAINING_STAGES

    return next(label for label, name in TRAINING_STAGES.items() if name == stage)


@pytest.fixture()
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture()
def board(in_tmp) -> Board:
    return Board()


# ---------------------------------------------------------------- stages
def test_upstream_tables_are_unchanged_without_the_overlay():
    probe = (
        "import json; from llamafactory.extras.constants import TRAINING_STAGES as T, STAGES_USE_PAIR_DATA as P;"
        "import llamafactory.webui.control; print(json.dumps([T, sorted(P)]))"
    )
    env = {**os.environ, "GROUNDPO_NO_OVERLAY": "1"}
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True)
    upstream, pairs = json.loads(out.stdout.strip().splitlines()[-1])
    assert upstream == UPSTREAM_STAGES
    assert pairs == ["dpo", "rm"]


def test_stage_dropdown_lists_every_registered_stage_after_upstreams(board):
    from llamafactory.extras.constants import STAGES_USE_PAIR_DATA, TRAINING_STAGES

    choices = [value for _, value in board.elem("train.training_stage").choices]
    assert choices[: len(UPSTREAM_STAGES)] == list(UPSTREAM_STAGES)  # upstream's, same labels, same order
    assert {k: TRAINING_STAGES[k] for k in UPSTREAM_STAGES} == UPSTREAM_STAGES
    ours = choices[len(UPSTREAM_STAGES) :]
    assert [TRAINING_STAGES[label] for label in ours] == stage_names()
    assert ours[0] == "MoD-DPO"  # the flagship first, under its readable label
    assert board.elem("train.training_stage").value == "Supervised Fine-Tuning"  # upstream's default
    for spec in stages():
        assert (spec.name in STAGES_USE_PAIR_DATA) == spec.pairwise
    assert {"rm", "dpo"} <= STAGES_USE_PAIR_DATA


def test_pair_data_filtering_offers_ranking_datasets_to_our_stages():
    from llamafactory.webui.control import list_datasets

    ours = list_datasets(str(DATA_DIR), "MoD-DPO").choices
    sft = list_datasets(str(DATA_DIR), "Supervised Fine-Tuning").choices
    assert ("demo_mod_dpo", "demo_mod_dpo") in ours
    assert ("demo_mod_dpo", "demo_mod_dpo") not in sft


def test_every_stage_and_control_has_a_label_in_every_language():
    assert set(C.ACCORDION_TITLE) == set(LANGS)
    for spec in stages():
        assert set(spec.label) >= set(LANGS), spec.name
    for control in C.CONTROLS.values():
        assert set(control.label) == set(LANGS), control.key
        assert set(control.info) == set(LANGS), control.key
        assert all(text.strip() for text in [*control.label.values(), *control.info.values()])


# ---------------------------------------------------------------- controls from the registry
def test_mod_dpo_controls_come_from_its_keys_with_dataclass_defaults():
    spec = get_stage("mod_dpo")
    keys = [c.key for c in spec.controls]
    engine = [f.name for f in fields(ViewEngineArguments)]
    assert keys == ["pref_beta"] + [f.name for f in fields(ModDPOArguments)] + engine
    by_key = {c.key: c for c in spec.controls}
    for key in ("pref_beta", "mod_beta_inv", "mod_beta_sens", "mod_gamma_lpd"):
        assert (by_key[key].kind, by_key[key].minimum, by_key[key].maximum, by_key[key].step) == ("slider", 0, 1, 0.01)
    steps = by_key["mod_diffusion_steps"]
    assert (steps.minimum, steps.maximum, steps.step) == (0, 999, 1)
    assert C.choices_of(by_key["mod_tau"], spec) == ("paper", "derived")
    assert C.choices_of(by_key["mod_corruption"], spec) == ("diffusion", "gaussian", "zeros", "shuffle")
    assert C.initial_value(by_key["pref_beta"], spec) == 0.1  # upstream's FinetuningArguments default
    for f in fields(ModDPOArguments):
        expected = "none" if f.default is None else f.default
        assert C.initial_value(by_key[f.name], spec) == expected
    assert [c.key for c in get_stage("base_dpo").controls] == ["pref_beta", *engine]  # β and the engine's keys


def test_accordion_shows_the_registry_controls(board):
    for spec in stages():
        accordion = board.elem(f"train.groundpo_{spec.name}_tab")
        assert accordion.label == C.accordion_title(spec, "en")
        assert accordion.visible is False  # shown when its stage is selected
        for control in spec.controls:
            comp = board.elem(our_id(spec.name, control.key))
            expected = C.initial_value(control, spec)
            assert comp.value == expected, (spec.name, control.key)
            assert comp.elem_id == f"groundpo-{spec.name}-{control.key}"
    assert board.elem(our_id("mod_dpo", "mod_gamma_lpd")).value == ModDPOArguments.mod_gamma_lpd == 0.0
    assert board.elem(our_id("mod_dpo", "mod_diffusion_steps")).maximum == 999
    # below upstream's RLHF accordion, MoD-DPO first
    tab = board.elem("train.rlhf_tab").parent
    at = tab.children.index(board.elem("train.rlhf_tab"))
    assert tab.children[at + 1] is board.elem("train.groundpo_mod_dpo_tab")


def _events(board: Board, inputs: list, output) -> list:
    """The functions of the Train tab's events with exactly these inputs and ``output`` among the outputs."""
    return [
        fn.fn
        for fn in board.demo.fns.values()
        if list(fn.inputs) == inputs and any(out is output for out in fn.outputs)
    ]


def test_stage_change_shows_only_its_accordion_and_beta_is_linked(board):
    stage = board.elem("train.training_stage")
    (show,) = _events(board, [stage], board.elem("train.groundpo_mod_dpo_tab"))
    names = [spec.name for spec in stages()]
    for label, selected in (("MoD-DPO", "mod_dpo"), ("DPO (groundpo engine)", "base_dpo"), ("DPO", None)):
        assert [update.visible for update in show(label)] == [name == selected for name in names]

    upstream_beta = board.elem("train.pref_beta")
    ours = board.elem(our_id("mod_dpo", "pref_beta"))
    (copy,) = _events(board, [ours], upstream_beta)
    with_beta = [spec.name for spec in stages() if spec.reads_beta]  # MBPO reads no β and shows none
    assert "mbpo" not in with_beta
    assert copy(0.3) == [0.3] * len(with_beta)  # upstream's β and every other stage's β
    (copy_back,) = _events(board, [upstream_beta], ours)
    assert copy_back(0.4) == [0.4] * len(with_beta)


def test_jompo_starts_at_its_paper_beta(board):
    """JoMPO's β is 0.05 (its Sec. 5.1.4), not upstream's 0.1, until the user moves a β slider."""
    assert board.elem(our_id("jompo", "pref_beta")).value == pytest.approx(0.05)
    args = board.runner._parse_train_args(board.data(label_of("jompo"), **{"train.dataset": ["demo_jompo"]}))
    assert (args["stage"], args["pref_beta"]) == ("jompo", pytest.approx(0.05))


def test_llamaboard_binds_this_machine_unless_told_otherwise(monkeypatch, capsys):
    import llamafactory.webui.interface as interface

    from groundpo.integration.webui import serve_locally

    assert interface.run_web_ui.__wrapped__ is not None and interface.run_web_demo.__wrapped__ is not None
    serve = serve_locally(lambda: os.environ["GRADIO_SERVER_NAME"])
    monkeypatch.delenv("GRADIO_SERVER_NAME", raising=False)
    monkeypatch.setenv("GRADIO_SERVER_PORT", "7861")
    assert serve() == "127.0.0.1"
    assert "LlamaBoard is served at http://127.0.0.1:7861 (this machine only" in capsys.readouterr().out
    monkeypatch.setenv("GRADIO_SERVER_NAME", "0.0.0.0")  # an explicit choice wins
    assert serve() == "0.0.0.0"
    assert "http://0.0.0.0:7861" in capsys.readouterr().out


@dataclass
class _ToyArguments:
    toy_weight: float = field(default=0.5, metadata={"help": "Weight of the toy term."})
    toy_mode: Literal["a", "b"] = field(default="b", metadata={"help": "Toy mode."})
    toy_flag: bool = field(default=True, metadata={"help": "Toy flag."})
    toy_note: str = field(default="x", metadata={"help": "Free text: no control."})


def test_a_new_stage_appears_with_automatic_controls_and_no_ui_code(in_tmp):
    register_stage(
        StageSpec(
            name="toy_po",
            label={"en": "Toy-PO", "ru": "Той-PO", "zh": "玩具-PO", "ko": "토이-PO", "ja": "トイ-PO"},
            paper="-",
            workflow="groundpo.train.workflow:run_preference",
            arguments=(_ToyArguments,),
            pairwise=False,
        )
    )
    try:
        spec = get_stage("toy_po")
        assert [(c.key, c.kind) for c in spec.controls] == [
            ("pref_beta", "slider"),
            ("toy_weight", "number"),
            ("toy_mode", "dropdown"),
            ("toy_flag", "checkbox"),
        ]
        assert all(c.label[lang] == c.key for c in spec.controls[1:] for lang in LANGS)
        board = Board()
        from llamafactory.extras.constants import STAGES_USE_PAIR_DATA

        assert "toy_po" not in STAGES_USE_PAIR_DATA  # not pairwise
        assert board.elem(our_id("toy_po", "toy_mode")).value == "b"
        updates = board.engine.change_lang("ja")
        assert updates[board.elem("train.groundpo_toy_po_tab")].label == "トイ-PO 設定"
        assert ("トイ-PO", "Toy-PO") in updates[board.elem("train.training_stage")].choices
        data = board.data("Toy-PO", **{our_id("toy_po", "toy_weight"): 0.25, our_id("toy_po", "toy_flag"): False})
        args = board.runner._parse_train_args(data)
        assert (args["stage"], args["toy_weight"], args["toy_mode"], args["toy_flag"]) == ("toy_po", 0.25, "b", False)
        assert "toy_note" not in args and not any(k.startswith("mod_") for k in args)
    finally:
        unregister_stage("toy_po")
    from llamafactory.extras.constants import TRAINING_STAGES

    Board()  # a rebuilt tab forgets the stage
    assert "Toy-PO" not in TRAINING_STAGES


# ---------------------------------------------------------------- arguments
def test_parse_train_args_adds_the_selected_stage_keys_only(board):
    data = board.data(
        "MoD-DPO",
        **{
            our_id("mod_dpo", "mod_beta_inv"): 0.030000000000000002,  # as a slider may send it
            our_id("mod_dpo", "mod_gamma_lpd"): 0.05,
            our_id("mod_dpo", "pref_beta"): 0.2,
            our_id("mod_dpo", "mod_tau"): "derived",
            our_id("mod_dpo", "mod_diffusion_steps"): 250.0,
            our_id("mod_dpo", "mod_alternate_modalities"): False,
            our_id("mod_dpo", "mod_corruption_audio"): "zeros",
        },
    )
    args = board.runner._parse_train_args(data)
    assert args["stage"] == "mod_dpo"
    assert args["mod_beta_inv"] == 0.03 and args["mod_gamma_lpd"] == 0.05 and args["pref_beta"] == 0.2
    assert args["mod_tau"] == "derived" and args["mod_diffusion_steps"] == 250
    assert isinstance(args["mod_diffusion_steps"], int)
    assert args["mod_alternate_modalities"] is False
    assert args["mod_corruption_visual"] is None and args["mod_corruption_audio"] == "zeros"
    assert "pref_loss" not in args and "pref_ftx" not in args  # upstream dpo options stay out

    from llamafactory.webui.common import gen_cmd

    preview = gen_cmd(args)
    for line in ("--stage mod_dpo", "--mod_beta_inv 0.03", "--mod_gamma_lpd 0.05", "--pref_beta 0.2"):
        assert line in preview
    assert "--mod_alternate_modalities False" in preview  # False kept for our keys
    assert "--mod_corruption_visual" not in preview  # None = not set
    assert "--use_galore" not in preview  # upstream still drops its False values

    base = board.runner._parse_train_args(board.data("DPO (groundpo engine)", **{our_id("base_dpo", "pref_beta"): 0.3}))
    assert base["stage"] == "base_dpo" and base["pref_beta"] == 0.3
    assert not any(key.startswith("mod_") for key in base)


def test_parse_train_args_of_upstream_stages_is_upstreams(board):
    from llamafactory.webui.runner import Runner

    original = Runner._parse_train_args.__wrapped__
    for label in UPSTREAM_STAGES:
        data = board.data(label, **{our_id("mod_dpo", "mod_beta_inv"): 0.5, "train.reward_model": "rm"})
        args = board.runner._parse_train_args(data)
        assert args == original(board.runner, data)
        assert not any(key.startswith("mod_") for key in args)
    assert "pref_beta" in board.runner._parse_train_args(board.data("DPO"))


def test_parsed_arguments_are_accepted_by_the_training_parser(board, tmp_path):
    from llamafactory.hparams import get_train_args

    data = board.data(
        "MoD-DPO", **{our_id("mod_dpo", "mod_beta_inv"): 0.03, our_id("mod_dpo", "mod_diffusion_steps"): 100.0}
    )
    args = board.runner._parse_train_args(data)
    args.update(output_dir=str(tmp_path / "out"), use_cpu=True, report_to="none")
    from llamafactory.webui.common import _clean_cmd

    _, _, _, finetuning_args, _ = get_train_args(_clean_cmd(args))
    assert (finetuning_args.stage, finetuning_args.mod_beta_inv, finetuning_args.mod_diffusion_steps) == ("mod_dpo", 0.03, 100)


def test_save_and_load_arguments_round_trip_our_controls(board):
    values = {our_id("mod_dpo", "mod_beta_inv"): 0.03, our_id("mod_dpo", "mod_gamma_lpd"): 0.05, our_id("mod_dpo", "mod_tau"): "derived"}
    data = board.data("MoD-DPO", **values)
    saved = board.runner.save_args(data)
    assert "unit.yaml" in next(iter(saved.values()))
    loaded = board.runner.load_args("en", "unit.yaml")
    for elem_id, value in values.items():
        assert loaded[board.elem(elem_id)] == value
    assert loaded[board.elem("train.training_stage")] == "MoD-DPO"


def test_saved_values_of_unknown_controls_are_ignored_on_load(board, in_tmp):
    import yaml

    (in_tmp / "llamaboard_config").mkdir(exist_ok=True)
    config = {"train.training_stage": "MoD-DPO", our_id("mod_dpo", "mod_beta_inv"): 0.04, our_id("gone_po", "x"): 1}
    (in_tmp / "llamaboard_config" / "old.yaml").write_text(yaml.safe_dump(config))
    loaded = board.runner.load_args("en", "old.yaml")
    assert loaded[board.elem(our_id("mod_dpo", "mod_beta_inv"))] == 0.04


# ---------------------------------------------------------------- languages
@pytest.mark.parametrize("lang", LANGS)
def test_switching_language_labels_our_stages_and_controls(board, lang):
    updates = board.engine.change_lang(lang)
    stage_update = updates[board.elem("train.training_stage")]
    display = {value: shown for shown, value in stage_update.choices}
    for spec in stages():
        assert display[label_of(spec.name)] == spec.label[lang]
    for label in UPSTREAM_STAGES:
        assert display[label] == label  # upstream's labels as upstream shows them
    from llamafactory.webui.locales import LOCALES

    assert stage_update.label == LOCALES["training_stage"][lang]["label"]
    for spec in stages():
        assert updates[board.elem(f"train.groundpo_{spec.name}_tab")].label == C.accordion_title(spec, lang)
        for control in spec.controls:
            update = updates[board.elem(our_id(spec.name, control.key))]
            assert update.label == control.label[lang]
            assert update.info == control.info[lang]
    assert updates[board.elem("train.pref_beta")].label == LOCALES["pref_beta"][lang]["label"]  # upstream's own


def test_language_switch_without_a_train_tab_raises_nothing(in_tmp):
    import gradio as gr
    from llamafactory.webui.components import create_top
    from llamafactory.webui.engine import Engine

    engine = Engine()  # a manager without the Train tab, as in the chat-only web demo
    with gr.Blocks():
        engine.manager.add_elems("top", create_top())
    for lang in LANGS:
        assert engine.manager.get_elem_by_id("top.lang") in engine.change_lang(lang)
