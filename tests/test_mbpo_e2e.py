"""MBPO end to end through the unmodified commands: ``groundpo-data mbpo`` builds pairs from the demo images
(resuming a partial build), ``llamafactory-cli train`` trains ``stage: mbpo`` on them in one process, and
the tiny configs train on 2 CPU processes (torchrun, gloo, gradient checkpointing on)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from conftest import BIN, DATA_DIR, ROOT, assert_ok, free_port, run_cli, write_config

pytestmark = pytest.mark.slow

EVERY_METRIC = {
    "loss", "mbpo/kl", "mbpo/clip_ratio", "mbpo/reward_offline", "mbpo/reward_offline_std", "mbpo/reward_online",
    "mbpo/reward_online_std", "mbpo/frac_reward_zero_std", "mbpo/response_length", "mbpo/truncated",
    "mbpo/iig_chosen", "mbpo/iig_rejected", "logps/chosen", "logps/rejected",
}


@pytest.fixture(scope="module")
def tiny_vl(tmp_path_factory):
    from groundpo.testing.tiny_vl import build_tiny_qwen2_vl

    return build_tiny_qwen2_vl(tmp_path_factory.mktemp("tiny-vl"))


def _train_lines(out: Path) -> list[dict]:
    lines = [json.loads(line) for line in (out / "trainer_log.jsonl").read_text().splitlines()]
    return [line for line in lines if "loss" in line]


def _data_cli(args: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([str(BIN / "groundpo-data"), "mbpo", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def test_groundpo_data_mbpo_builds_pairs_from_demo_images_that_stage_mbpo_trains_on(tiny_vl, tmp_path):
    out = tmp_path / "built"
    common = [
        "--source", "data/demo/mbpo_source.json", "--media_dir", "data", "--model_name_or_path", str(tiny_vl),
        "--template", "qwen2_vl", "--image_max_pixels", "3136", "--max_tokens", "12", "--output_dir", str(out),
        "--select", "all", "--pgd_steps", "5", "--progress", "false",
    ]
    first = _data_cli([*common, "--limit", "3"])
    assert first.returncode == 0, first.stderr[-3000:]
    second = _data_cli(common)  # resumes: the 3 items of the first run are kept, the other 5 are built
    assert second.returncode == 0, second.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["items_done"], summary["items_resumed"], summary["complete"]) == (8, 3, True), summary
    progress = [json.loads(line) for line in (out / "progress" / "items.jsonl").read_text().splitlines()]
    assert sorted(r["id"] for r in progress) == [f"mbpo_src_{i:03d}" for i in range(8)]  # each item once
    rows = json.loads((out / "rows.json").read_text())
    rejects = [json.loads(line) for line in (out / "rejects.jsonl").read_text().splitlines()]
    assert len(rows) + len(rejects) == 8 and len(rows) >= 4, rejects
    for row in rows:
        perturbed = out / row["perturbed_images"][0]
        assert perturbed.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"  # lossless
        assert row["chosen_logp_perturbed"] < row["chosen_logp"]  # the attack lowered log π(y_w | x, m + δ)
        assert row["rejected"]["value"] != row["chosen"]["value"] and "iig" in row and "rejected_iig" in row
    info = json.loads((out / "dataset_info.json").read_text())["groundpo_mbpo"]
    assert info["ranking"] is True and info["columns"]["images"] == "images"

    # the built pairs (offline) and the demo's online prompts (absolute paths) in one dataset_dir
    online = json.loads((DATA_DIR / "demo" / "mbpo_online.json").read_text())
    for row in online:
        row["images"] = [str(DATA_DIR / p) for p in row["images"]]
    (out / "online.json").write_text(json.dumps(online))
    entry = json.loads((DATA_DIR / "dataset_info.json").read_text())["demo_mbpo_online"]
    (out / "dataset_info.json").write_text(json.dumps({**json.loads((out / "dataset_info.json").read_text()),
                                                       "online": {**entry, "file_name": "online.json"}}))
    run = tmp_path / "run"
    proc = run_cli([
        "train", "examples/mbpo/tiny_vl.yaml", f"model_name_or_path={tiny_vl}", f"dataset_dir={out}",
        "dataset=groundpo_mbpo,online", f"output_dir={run}", "max_steps=4", "per_device_train_batch_size=4",
    ])
    assert_ok(proc)
    lines = _train_lines(run)
    assert len(lines) == 4 and all("mbpo/kl" in line for line in lines)
    assert EVERY_METRIC <= set().union(*lines), EVERY_METRIC - set().union(*lines)
    assert (run / "model.safetensors").exists()


@pytest.mark.parametrize("config", ["tiny_vl", "tiny_omni"])
def test_tiny_configs_train_on_two_processes(config, tiny_vl, tiny_omni, tmp_path):
    model = tiny_vl if config == "tiny_vl" else tiny_omni
    out = tmp_path / "out"
    cfg = {
        "model_name_or_path": str(model), "output_dir": str(out), "ddp_backend": "gloo", "per_device_train_batch_size": 2,
        "max_steps": 4, "save_strategy": "no",
    }
    if config == "tiny_vl":  # with an eval set, and μ = 2: each batch's responses serve two updates
        cfg.update(val_size=4, do_eval=True, eval_strategy="steps", eval_steps=4, per_device_eval_batch_size=2, mbpo_num_iterations=2)
    import yaml

    path = write_config(tmp_path / "run.yaml", {**yaml.safe_load((ROOT / "examples" / "mbpo" / f"{config}.yaml").read_text()), **cfg})
    proc = run_cli(["train", str(path)], env={"FORCE_TORCHRUN": "1", "NPROC_PER_NODE": "2", "MASTER_PORT": str(free_port())})
    assert_ok(proc)
    text = proc.stdout + proc.stderr
    assert "world size: 2" in text and "Gradient checkpointing enabled." in text
    lines = _train_lines(out)
    assert [line["current_steps"] for line in lines] == [1, 2, 3, 4]
    assert all("mbpo/kl" in line and "mbpo/clip_ratio" in line for line in lines)
    seen = set().union(*lines)
    assert {"mbpo/reward_offline", "mbpo/reward_online", "mbpo/iig_chosen", "mbpo/response_length"} <= seen
    if config == "tiny_vl":
        # updates 2 and 4 reuse the responses of 1 and 3: their rewards were logged when they were sampled
        assert all("mbpo/reward_online" not in lines[i] and "mbpo/reward_offline" not in lines[i] for i in (1, 3))
        results = json.loads((out / "all_results.json").read_text())
        assert "eval_loss" in results and "eval_mbpo/kl" in results
