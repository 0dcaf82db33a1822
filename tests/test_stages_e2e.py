"""Every DPO-family stage trains through ``llamafactory-cli`` on its tiny CPU config, and its loss goes down."""

from __future__ import annotations

import json

import pytest
from conftest import assert_ok, run_cli

pytestmark = pytest.mark.slow

STAGES = {
    "omni_dpo": ("omni_dpo/l_vis", "omni_dpo/l_aud"),
    "mdpo": ("mdpo/l_copo", "mdpo/l_ancpo"),
    "jompo": ("jompo/pl_w", "jompo/pl_l", "jompo/dpo_w", "jompo/dpo_l"),
    "mfpo": ("mfpo/l_text", "mfpo/l_image", "mfpo/l_margin"),
    "acpo": ("acpo/loss_output", "acpo/loss_input"),
}


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_stage_trains_on_its_tiny_config_and_loss_goes_down(tiny_omni, tmp_path, stage):
    out = tmp_path / stage
    proc = run_cli(["train", f"examples/{stage}/tiny_omni.yaml", f"model_name_or_path={tiny_omni}", f"output_dir={out}"])
    assert_ok(proc)
    assert (out / "model.safetensors").exists()
    state = json.loads((out / "trainer_state.json").read_text())
    losses = [e["loss"] for e in state["log_history"] if "loss" in e]
    third = len(losses) // 3
    first, last = sum(losses[:third]) / third, sum(losses[-third:]) / third
    assert last < first, (stage, first, last)
    logged = [json.loads(line) for line in (out / "trainer_log.jsonl").read_text().splitlines() if '"loss"' in line]
    assert all(set(STAGES[stage]) & set(line) for line in logged)
    if stage == "mfpo":  # the curriculum's difficulty scores are cached next to the output
        scores = json.loads((out / "curriculum_scores.json").read_text())["scores"]
        assert len(scores) == 16
