"""Every example config parses for its stage, and the paper-setup configs keep the papers' numbers."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from conftest import ROOT

from groundpo.hparams import GroundpoFinetuningArguments
from groundpo.integration.parser import check_stage_keys
from groundpo.registry import all_stage_names

EXAMPLES = sorted((ROOT / "examples").glob("*/*.yaml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: str(p.relative_to(ROOT / "examples")))
def test_example_parses_for_its_stage(path: Path):
    from dataclasses import fields

    config = yaml.safe_load(path.read_text())
    assert config["stage"] in all_stage_names()
    check_stage_keys(config)  # our keys belong to the stage
    names = {f.name for f in fields(GroundpoFinetuningArguments)}
    GroundpoFinetuningArguments(**{k: v for k, v in config.items() if k in names})  # values validate
    if "deepspeed" in config:
        assert (ROOT / config["deepspeed"]).exists()
    assert (ROOT / config.get("dataset_dir", "data") / "dataset_info.json").exists()


@pytest.mark.parametrize("name", ["qwen2_5_omni_7b_full.yaml", "minicpm_o_2_6_full.yaml"])
def test_mod_dpo_paper_setup(name):
    config = yaml.safe_load((ROOT / "examples" / "mod_dpo" / name).read_text())
    paper = {
        "stage": "mod_dpo", "learning_rate": 3.0e-7, "num_train_epochs": 1.0, "per_device_train_batch_size": 1,
        "pref_beta": 0.1, "mod_beta_sens": 0.05, "mod_beta_inv": 0.02, "mod_gamma_lpd": 0.05,
        "mod_corruption": "diffusion", "mod_diffusion_steps": 500, "finetuning_type": "full",
    }
    assert {k: config[k] for k in paper} == paper
    assert yaml.safe_load((ROOT / config["deepspeed"]).read_text())["zero_optimization"]["stage"] == 3


def test_dpo_baseline_has_the_equal_budget_epochs():
    baseline = yaml.safe_load((ROOT / "examples/mod_dpo/qwen2_5_omni_7b_dpo_baseline.yaml").read_text())
    mod = yaml.safe_load((ROOT / "examples/mod_dpo/qwen2_5_omni_7b_full.yaml").read_text())
    assert baseline["stage"] == "dpo" and baseline["num_train_epochs"] == 4 * mod["num_train_epochs"]
    assert {k: baseline[k] for k in ("learning_rate", "dataset", "model_name_or_path")} == {
        k: mod[k] for k in ("learning_rate", "dataset", "model_name_or_path")
    }


def test_jompo_paper_setup():
    config = yaml.safe_load((ROOT / "examples/jompo/llava1_5_7b_full.yaml").read_text())
    assert (config["pref_beta"], config["learning_rate"], config["num_train_epochs"]) == (0.05, 5e-7, 2.0)
