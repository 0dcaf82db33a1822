"""End-to-end training through the unmodified ``llamafactory-cli`` on the tiny Qwen2.5-Omni (CPU)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import ROOT, assert_ok, run_cli, tiny_config, write_config

pytestmark = pytest.mark.slow

MOD_METRICS = ("mod/margin", "mod/lr_inv", "mod/lr_sens", "mod/lr_text", "mod/reliance_relevant", "mod/reliance_irrelevant")
DPO_METRICS = ("rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins", "logps/chosen", "logits/chosen")


def _train_log(output_dir: Path) -> list[dict]:
    lines = (output_dir / "trainer_log.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if '"loss"' in line]


def _epoch_means(output_dir: Path, key: str = "loss") -> list[float]:
    state = json.loads((output_dir / "trainer_state.json").read_text())
    by_epoch: dict[int, list[float]] = {}
    for entry in state["log_history"]:
        if key in entry:
            by_epoch.setdefault(int(-(-entry["epoch"] // 1)), []).append(entry[key])
    return [sum(v) / len(v) for _, v in sorted(by_epoch.items())]


def test_upstream_dpo_trains_on_video_plus_audio(tiny_omni, tmp_path):
    """LLaMA-Factory issue 9355: DPO on Qwen2.5-Omni with videos + audios interleaved (get_rope_index),
    upstream's own stage with the overlay loaded. (Our stages train on video + audio in
    tests/test_distributed.py and in the tests below.)"""
    out = tmp_path / "dpo"
    cfg = tiny_config(tiny_omni, out, stage="dpo", use_audio_in_video=True, max_steps=4, save_strategy="no")
    assert_ok(run_cli(["train", str(write_config(tmp_path / "dpo.yaml", cfg))]))
    assert (out / "model.safetensors").exists()
    assert len(_train_log(out)) == 4
    assert "mod/margin" not in _train_log(out)[0]  # upstream's log lines are upstream's


def test_mod_dpo_tiny_example_trains_and_logs_every_metric(tiny_omni, tmp_path):
    """The README's main job: examples/mod_dpo/tiny_omni.yaml (MoD-DPO++), through llamafactory-cli."""
    out = tmp_path / "mod"
    proc = run_cli(["train", "examples/mod_dpo/tiny_omni.yaml", f"model_name_or_path={tiny_omni}", f"output_dir={out}"])
    assert_ok(proc)
    assert (out / "model.safetensors").exists()
    lines = _train_log(out)
    assert len(lines) == 60
    visual_or_audio = [line for line in lines if "mod/lr_inv" in line]
    assert visual_or_audio and all(set(MOD_METRICS) <= set(line) for line in visual_or_audio)
    assert all(set(DPO_METRICS) <= set(line) for line in lines)
    losses = _epoch_means(out)
    assert len(losses) == 3 and losses[-1] < losses[0], losses
    for name in ("loss", "mod_margin", "mod_reliance_relevant", "mod_reliance_irrelevant"):
        assert (out / f"training_{name}.png").exists()


def test_mod_dpo_with_audio_in_video_and_lora(tiny_omni, tmp_path):
    out = tmp_path / "lora"
    cfg = tiny_config(
        tiny_omni, out, finetuning_type="lora", lora_target="q_proj,v_proj", use_audio_in_video=True, max_steps=6,
        mod_gamma_lpd=0.05,
    )
    assert_ok(run_cli(["train", str(write_config(tmp_path / "lora.yaml", cfg))]))
    assert (out / "adapter_model.safetensors").exists()
    first = _train_log(out)[0]
    # LoRA's B starts at zero: policy == reference (adapters off) at step 1, so every reward is 0
    assert first["rewards/chosen"] == pytest.approx(0.0, abs=1e-5)
    assert set(MOD_METRICS) <= set(first)
