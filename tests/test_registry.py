"""The stage registry, our arguments in upstream's parser, and the errors users see."""

from __future__ import annotations

import pytest

from groundpo.hparams import GroundpoFinetuningArguments, ModDPOArguments
from groundpo.integration.parser import StageKeyError, check_stage_keys
from groundpo.registry import (
    StageSpec,
    UnknownStageError,
    all_stage_names,
    get_stage,
    register_stage,
    stage_names,
    upstream_stages,
)


def _args(tmp_path, **extra):
    base = {
        "model_name_or_path": "unused",
        "stage": "mod_dpo",
        "do_train": True,
        "dataset": "demo_mod_dpo",
        "template": "qwen2_omni",
        "output_dir": str(tmp_path),
        "use_cpu": True,
        "report_to": "none",
    }
    base.update(extra)
    return base


def test_upstream_and_groundpo_stages_are_listed():
    assert upstream_stages() == ("pt", "sft", "rm", "ppo", "dpo", "kto")
    assert stage_names()[0] == "mod_dpo"  # the flagship comes first
    assert "base_dpo" in stage_names()
    assert all_stage_names()[: len(upstream_stages())] == list(upstream_stages())


def test_stage_spec_knows_its_keys_and_loads_its_parts():
    spec = get_stage("mod_dpo")
    assert {"mod_beta_inv", "mod_beta_sens", "mod_gamma_lpd", "mod_tau", "mod_corruption"} <= spec.keys
    from groundpo.losses.mod_dpo import mod_dpo_loss
    from groundpo.train.workflow import run_preference

    assert spec.load_objective() is mod_dpo_loss
    assert spec.load_workflow() is run_preference
    assert get_stage("base_dpo").keys == {"share_prompt_prefix", "share_media_encodings"}  # the view engine's only


def test_register_stage_rejects_duplicates_and_upstream_names():
    spec = get_stage("base_dpo")
    with pytest.raises(ValueError, match="already registered"):
        register_stage(spec)
    with pytest.raises(ValueError, match="upstream LLaMA-Factory stage"):
        register_stage(StageSpec(name="dpo", label={"en": "x"}, paper="", workflow="a:b"))


def test_unknown_stage_error_lists_every_stage(tmp_path):
    from llamafactory.hparams import get_train_args

    with pytest.raises(UnknownStageError) as err:
        get_train_args(_args(tmp_path, stage="mod_dop"))
    message = str(err.value)
    assert "'mod_dop'" in message
    for name in list(upstream_stages()) + stage_names():
        assert name in message


def test_our_keys_parse_for_our_stage(tmp_path):
    from llamafactory.hparams import get_train_args

    _, _, _, finetuning_args, _ = get_train_args(_args(tmp_path, mod_beta_inv=0.03, mod_gamma_lpd=0.05, mod_tau="derived"))
    assert isinstance(finetuning_args, GroundpoFinetuningArguments)
    assert finetuning_args.stage == "mod_dpo"
    assert (finetuning_args.mod_beta_inv, finetuning_args.mod_gamma_lpd, finetuning_args.mod_tau) == (0.03, 0.05, "derived")
    assert finetuning_args.use_ref_model is True


def test_our_keys_are_rejected_with_a_stage_that_does_not_take_them(tmp_path):
    from llamafactory.hparams import get_train_args

    with pytest.raises(StageKeyError, match=r"Stage 'dpo' does not take `mod_beta_inv`.*belongs to stage mod_dpo"):
        get_train_args(_args(tmp_path, stage="dpo", mod_beta_inv=0.02))
    with pytest.raises(StageKeyError, match="base_dpo"):
        check_stage_keys({"stage": "base_dpo", "mod_tau": "paper"})
    with pytest.raises(StageKeyError):  # command-line flags are checked too
        check_stage_keys(["--stage", "sft", "--mod_corruption", "zeros"])


def test_upstream_stage_parses_exactly_as_before(tmp_path):
    from llamafactory.hparams import get_train_args

    _, _, _, finetuning_args, _ = get_train_args(_args(tmp_path, stage="dpo", pref_beta=0.2))
    assert finetuning_args.stage == "dpo" and finetuning_args.use_ref_model and finetuning_args.pref_beta == 0.2
    defaults = ModDPOArguments()
    assert finetuning_args.mod_beta_inv == defaults.mod_beta_inv  # our keys keep their defaults


@pytest.mark.parametrize(
    "extra, message",
    [
        ({"mod_tau": "both"}, "mod_tau"),
        ({"mod_corruption": "blur"}, "mod_corruption"),
        ({"mod_corruption_audio": "blur"}, "mod_corruption_audio"),
        ({"mod_diffusion_steps": 1000}, "mod_diffusion_steps"),  # t indexes 0..999
        ({"mod_diffusion_steps": -1}, "mod_diffusion_steps"),
        ({"mod_beta_sens": -0.1}, "mod_beta_sens"),
        ({"pref_loss": "ipo"}, "pref_loss"),
    ],
)
def test_bad_values_name_the_key(tmp_path, extra, message):
    from llamafactory.hparams import get_train_args

    with pytest.raises(ValueError, match=message):
        get_train_args(_args(tmp_path, **extra))


def test_a_derived_tau_that_is_not_positive_is_an_error(tmp_path):
    from llamafactory.hparams import get_train_args

    # τ = β + β_inv − β_sens = 0.1 + 0.02 − 0.2 < 0 would flip the sign of the policy's log-ratio
    with pytest.raises(ValueError, match=r"τ = β \+ β_inv − β_sens = -0.08 ≤ 0"):
        get_train_args(_args(tmp_path, mod_tau="derived", mod_beta_sens=0.2))
    get_train_args(_args(tmp_path, mod_tau="paper", mod_beta_sens=0.2))  # the paper's τ stays positive


@pytest.mark.parametrize("key, value", [("dpo_label_smoothing", 0.1), ("pref_bco_weight", 0.5)])
@pytest.mark.parametrize("stage", ["mod_dpo", "base_dpo", "omni_dpo"])
def test_upstream_dpo_options_our_objectives_do_not_implement_are_errors(tmp_path, stage, key, value):
    from llamafactory.hparams import get_train_args

    with pytest.raises(ValueError, match=key):
        get_train_args(_args(tmp_path, stage=stage, **{key: value}))
    _, _, _, finetuning_args, _ = get_train_args(_args(tmp_path, stage="dpo", **{key: value}))
    assert getattr(finetuning_args, key) == value  # upstream's dpo still takes them


def test_per_modality_corruption_override():
    args = ModDPOArguments(mod_corruption="diffusion", mod_corruption_audio="zeros")
    assert args.corruption_for("visual") == "diffusion"
    assert args.corruption_for("audio") == "zeros"
