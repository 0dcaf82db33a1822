"""The multi-process harness: every stage as the papers' setups run it, on 2 CPU processes.

Each run is the unmodified ``llamafactory-cli train`` with ``FORCE_TORCHRUN=1 NPROC_PER_NODE=2``
(gloo), upstream's defaults (gradient checkpointing ON), an eval set, and full or LoRA tuning; the
mod_dpo and mfpo paper setups also run under DeepSpeed ZeRO-3 (DeepSpeed's CPU accelerator), with
the reference precomputed and the curriculum scored on the ZeRO-3-wrapped model. The same
machinery covers resume (the losses of a resumed run equal the uninterrupted run's), rank-weighted
metrics, and a two-"node" launch with torchrun's NNODES / NODE_RANK / MASTER_ADDR.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import (
    BIN,
    ROOT,
    assert_ok,
    free_port,
    run_cli,
    tiny_config,
    venv_env,
    write_config,
)

pytestmark = pytest.mark.slow

DATASET = {"jompo": "demo_jompo", "mfpo": "demo_mfpo", "acpo": "demo_acpo"}
STAGE_KEYS = {  # each stage's own metrics: every log line carries at least one
    "mod_dpo": ("mod/margin",),
    "base_dpo": ("rewards/margins",),
    "omni_dpo": ("omni_dpo/l_vis",),
    "mdpo": ("mdpo/l_copo",),
    "jompo": ("jompo/pl_w",),
    "mfpo": ("mfpo/l_image",),
    # a step whose rows are all output pairs (or all input pairs) logs only that kind's loss
    "acpo": ("acpo/loss_output", "acpo/loss_input"),
}


def _harness_config(model: Path, out: Path, stage: str, **overrides) -> dict:
    cfg = tiny_config(
        model, out, stage=stage, dataset=DATASET.get(stage, "demo_mod_dpo"), max_samples=12, val_size=4,
        max_steps=2, do_eval=True, eval_strategy="steps", eval_steps=2, per_device_eval_batch_size=1,
        report_to="none",
    )
    cfg.update(overrides)
    return {k: v for k, v in cfg.items() if v is not None}


def _torchrun_env(nproc: int = 2) -> dict:
    return {"FORCE_TORCHRUN": "1", "NPROC_PER_NODE": str(nproc), "MASTER_PORT": str(free_port())}


def _torchrun(tmp_path: Path, cfg: dict, name: str = "run", nproc: int = 2) -> subprocess.CompletedProcess:
    path = write_config(tmp_path / f"{name}.yaml", {**cfg, "ddp_backend": "gloo"})  # torchrun on CPU
    return run_cli(["train", str(path)], env=_torchrun_env(nproc))


def _log(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "trainer_log.jsonl").read_text().splitlines()]


def _check_trained(proc, out: Path, stage: str, steps: int | None = 2) -> list[dict]:
    """Both ranks trained to the end with gradient checkpointing on, logged the stage's keys every step, and evaluated."""
    assert_ok(proc)
    text = proc.stdout + proc.stderr
    assert "world size: 2" in text
    assert "Gradient checkpointing enabled." in text  # upstream's default, left on
    lines = _log(out)
    train = [line for line in lines if "loss" in line]
    total = steps if steps is not None else train[-1]["total_steps"]
    assert [line["current_steps"] for line in train] == list(range(1, total + 1))
    assert all(set(STAGE_KEYS[stage]) & set(line) and "rewards/chosen" in line for line in train), train
    # every logged number is finite (transformers logs a NaN loss as the running mean, so check the rest too)
    assert all(math.isfinite(v) for line in lines for v in line.values() if isinstance(v, float)), lines
    assert any("eval_loss" in line for line in lines) or json.loads((out / "all_results.json").read_text()).get(
        "eval_loss"
    ) is not None
    return train


@pytest.mark.parametrize("stage", ["omni_dpo", "mdpo", "jompo", "mfpo", "acpo"])
def test_every_stage_example_trains_on_two_processes_and_its_loss_goes_down(tiny_omni, tmp_path, stage):
    """examples/<stage>/tiny_omni.yaml as the papers' setups run: 2 processes of one row each (the
    example's global batch of 2), full fine-tuning, gradient checkpointing on (upstream's default),
    4 rows held out and evaluated at the end. Every stage trains to the end and its loss falls."""
    out = tmp_path / stage
    overrides = ["per_device_train_batch_size=1", "val_size=4", "do_eval=true", "per_device_eval_batch_size=1",
                 "ddp_backend=gloo", "plot_loss=false"]
    proc = run_cli(["train", f"examples/{stage}/tiny_omni.yaml", f"model_name_or_path={tiny_omni}", f"output_dir={out}",
                    *overrides], env=_torchrun_env())
    train = _check_trained(proc, out, stage, steps=None)
    losses = [line["loss"] for line in train]
    third = len(losses) // 3
    assert sum(losses[-third:]) / third < sum(losses[:third]) / third, (stage, losses)
    if stage == "mfpo":  # the curriculum is scored on the DDP-wrapped policy, every training row once
        assert "Scoring rows by token entropy on DistributedDataParallel (12 rows)" in proc.stdout + proc.stderr
        scores = json.loads((out / "curriculum_scores.json").read_text())["scores"]
        assert len(scores) == 12 and all(s > 0 for s in scores)


def test_base_dpo_trains_on_two_processes(tiny_omni, tmp_path):
    out = tmp_path / "out"
    _check_trained(_torchrun(tmp_path, _harness_config(tiny_omni, out, "base_dpo")), out, "base_dpo")


@pytest.mark.parametrize("stage", ["mod_dpo", "omni_dpo"])
def test_lora_on_two_processes(tiny_omni, tmp_path, stage):
    out = tmp_path / "out"
    cfg = _harness_config(tiny_omni, out, stage, finetuning_type="lora", lora_target="q_proj,v_proj",
                          mod_gamma_lpd=0.05 if stage == "mod_dpo" else None)
    train = _check_trained(_torchrun(tmp_path, cfg), out, stage)
    assert train[0]["rewards/chosen"] == pytest.approx(0.0, abs=1e-5)  # adapters start at zero: policy == reference
    assert (out / "adapter_model.safetensors").exists()


def test_zero3_mod_dpo_lora_precomputes_its_reference_on_the_wrapped_model(tiny_omni, tmp_path):
    """The paper configs' DeepSpeed ZeRO-3, on DeepSpeed's CPU accelerator, with LoRA and MoD-DPO++.
    The reference is the ZeRO-3-wrapped policy with its adapters off, so step 1 must show policy ==
    reference exactly: the precomputed table (train and eval rows) came from the sharded model,
    gathered correctly, and eval during training read it."""
    out = tmp_path / "out"
    cfg = _harness_config(
        tiny_omni, out, "mod_dpo", deepspeed=str(ROOT / "examples/deepspeed/ds_z3_config.json"), finetuning_type="lora",
        lora_target="q_proj,v_proj", mod_gamma_lpd=0.05, mod_precompute_reference=True,
    )
    proc = _torchrun(tmp_path, cfg)
    train = _check_trained(proc, out, "mod_dpo")
    text = proc.stdout + proc.stderr
    assert "DeepSpeed ZeRO3 detected" in text
    assert "Precomputing reference log-probs on DeepSpeedEngine (12 rows" in text
    assert train[0]["rewards/chosen"] == pytest.approx(0.0, abs=1e-6)
    assert train[0]["rewards/rejected"] == pytest.approx(0.0, abs=1e-6)
    assert (out / "adapter_model.safetensors").exists()


ZERO3_LOAD = """
import json, sys
import torch
torch.use_deterministic_algorithms(True, warn_only=True)  # memory nobody wrote reads as NaN
import deepspeed

deepspeed.init_distributed(dist_backend="gloo")
rank = torch.distributed.get_rank()
config = {"train_micro_batch_size_per_gpu": 1, "zero_optimization": {"stage": 3, "stage3_param_persistence_threshold": 0}}
with deepspeed.zero.Init(config_dict_or_path=config):
    model = torch.nn.Sequential(*[torch.nn.Linear(32, 32) for _ in range(100)])
for i, layer in enumerate(model):  # as transformers loads a checkpoint under ZeRO-3: gather, rank 0 writes
    with deepspeed.zero.GatheredParameters(list(layer.parameters()), modifier_rank=0):
        if rank == 0:
            with torch.no_grad():
                layer.weight.fill_(i + 1)
                layer.bias.fill_(-(i + 1))
wrong = [n for n, p in model.named_parameters() if not torch.all(p.ds_tensor.abs() == int(n.split(".")[0]) + 1)]
print("RESULT " + json.dumps({"rank": rank, "wrong": wrong}), flush=True)
"""


def test_zero3_checkpoint_loading_on_gloo_keeps_every_value(tmp_path):
    """DeepSpeed's coalesced gather waits only for its last all-gather; gloo finishes them in any order,
    so a late one overwrote a parameter rank 0 had just loaded (random NaN weights in CI). With
    ``groundpo.integration.deepspeed_gloo`` every partition holds what rank 0 wrote (measured without
    it: 1 to 4 of these 200 parameters wrong in each of 3 runs)."""
    script = tmp_path / "zero3_load.py"
    script.write_text(ZERO3_LOAD)
    proc = subprocess.run([str(BIN / "torchrun"), "--nproc_per_node", "2", "--master_port", str(free_port()), str(script)],
                          env=venv_env(), capture_output=True, text=True, timeout=600)
    assert_ok(proc)
    results = [json.loads(line.split("RESULT ", 1)[1]) for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert sorted(r["rank"] for r in results) == [0, 1]
    assert all(r["wrong"] == [] for r in results), results


def test_zero3_mfpo_scores_its_curriculum_on_the_wrapped_model(tiny_omni, tmp_path):
    """MFPO's paper config enables ZeRO-3 and the curriculum: the entropy scores come from the sharded
    policy, every training row is scored, and training then follows the easy-to-hard order."""
    out = tmp_path / "out"
    cfg = _harness_config(tiny_omni, out, "mfpo", deepspeed=str(ROOT / "examples/deepspeed/ds_z3_config.json"))
    proc = _torchrun(tmp_path, cfg)
    _check_trained(proc, out, "mfpo")
    text = proc.stdout + proc.stderr
    assert "DeepSpeed ZeRO3 detected" in text and "Scoring rows by token entropy on DeepSpeedEngine (8 rows)" in text
    scores = json.loads((out / "curriculum_scores.json").read_text())["scores"]
    assert len(scores) == 8 and all(s > 0 for s in scores)


# ------------------------------------------------------------------------------------------ metrics
def test_ranks_with_different_row_kinds_log_the_values_of_one_process_holding_both(tiny_omni, tmp_path):
    """ACPO rows alternate output / input pairs. On 2 ranks with one row each, rank 0 only ever holds
    output pairs and rank 1 only input pairs; one process with batches of 2 holds both. Both runs see
    the same rows per step and take the same updates, so every logged metric must agree: keys that
    only one rank has are neither dropped nor averaged with another key, and each value is the mean
    over the rows that have it."""
    # plain SGD: updates are proportional to the gradients, so the float rounding that differs between
    # a 2-row batch and two 1-row ranks stays at rounding size (Adam amplifies it on near-zero gradients)
    common = dict(stage="acpo", dataset="demo_acpo", max_samples=8, max_steps=3, disable_shuffling=True,
                  optim="sgd", learning_rate=0.5)
    two = tmp_path / "two"
    assert_ok(_torchrun(tmp_path, tiny_config(tiny_omni, two, per_device_train_batch_size=1, **common), "two"))
    one = tmp_path / "one"
    assert_ok(run_cli(["train", str(write_config(tmp_path / "one.yaml", tiny_config(tiny_omni, one, per_device_train_batch_size=2, **common)))]))
    a, b = ([line for line in _log(out) if "loss" in line] for out in (two, one))
    assert len(a) == len(b) == 3
    for line_two, line_one in zip(a, b):
        assert set(line_two) == set(line_one)
        assert {"acpo/loss_output", "acpo/loss_input"} <= set(line_two)
        for key in ("loss", "acpo/loss_output", "acpo/loss_input", "rewards/chosen", "rewards/margins", "logps/rejected"):
            assert line_two[key] == pytest.approx(line_one[key], rel=1e-4, abs=1e-5), key
    assert a[-1]["acpo/loss_output"] != pytest.approx(a[-1]["acpo/loss_input"], abs=1e-4)  # really two kinds


# ------------------------------------------------------------------------------------------ resume
def _resume_pair(tiny_omni, tmp_path, stage: str, torchrun: bool, **extra):
    """(uninterrupted losses, resumed losses) over steps 4..6 of a 6-step run saved at step 3."""
    def cfg(out, **more):
        return tiny_config(
            tiny_omni, out, stage=stage, dataset=DATASET.get(stage, "demo_mod_dpo"), max_samples=16, max_steps=6,
            save_strategy="steps", save_steps=3, save_only_model=False,
            per_device_train_batch_size=1 if torchrun else 2, **extra, **more,
        )

    def train(name, config):
        if torchrun:
            return _torchrun(tmp_path, config, name)
        return run_cli(["train", str(write_config(tmp_path / f"{name}.yaml", config))])

    full = tmp_path / "full"
    assert_ok(train("full", cfg(full)))
    resumed = tmp_path / "resumed"
    resumed.mkdir()
    shutil.copytree(full / "checkpoint-3", resumed / "checkpoint-3")
    proc = train("resumed", cfg(resumed, resume_from_checkpoint=str(resumed / "checkpoint-3"), overwrite_output_dir=False))
    assert_ok(proc)
    losses = [{line["current_steps"]: line["loss"] for line in _log(out) if "loss" in line} for out in (full, resumed)]
    return [losses[0][s] for s in (4, 5, 6)], [losses[1][s] for s in (4, 5, 6)], proc


def test_resumed_mod_dpo_on_two_processes_logs_the_uninterrupted_losses(tiny_omni, tmp_path):
    """MoD-DPO++ with full fine-tuning on 2 processes, gradient checkpointing on, the reference
    precomputed for the training and eval rows, eval every 3 steps: the
    run resumed at step 3 logs the uninterrupted run's losses (noise is a function of seed, step,
    rank and row) and the same eval loss at the end."""
    full, resumed, proc = _resume_pair(
        tiny_omni, tmp_path, "mod_dpo", torchrun=True, mod_gamma_lpd=0.05, mod_precompute_reference=True, val_size=4,
        do_eval=True, eval_strategy="steps", eval_steps=3, per_device_eval_batch_size=1,
    )
    assert resumed == pytest.approx(full, abs=1e-6)
    text = proc.stdout + proc.stderr
    assert "world size: 2" in text and "Gradient checkpointing enabled." in text
    # full tuning: the reference is its own frozen model (DDP wraps only the policy); 12 train + 4 eval rows
    assert "Precomputing reference log-probs on Qwen2_5OmniThinkerForConditionalGeneration (16 rows" in text
    evals = [{line["current_steps"]: line["eval_loss"] for line in _log(out) if "eval_loss" in line}
             for out in (tmp_path / "full", tmp_path / "resumed")]
    assert evals[1][6] == pytest.approx(evals[0][6], abs=1e-6)


def test_resumed_mfpo_keeps_its_curriculum_and_logs_the_uninterrupted_losses(tiny_omni, tmp_path):
    full, resumed, _ = _resume_pair(tiny_omni, tmp_path, "mfpo", torchrun=False)
    assert resumed == pytest.approx(full, abs=1e-6)
    kept = json.loads((tmp_path / "full" / "checkpoint-3" / "curriculum_scores.json").read_text())
    assert kept == json.loads((tmp_path / "resumed" / "curriculum_scores.json").read_text())


# ------------------------------------------------------------------------------------------ many machines
def test_two_node_launch_with_nnodes_node_rank_and_master_addr(tiny_omni, tmp_path):
    """torchrun's multi-node launch, two 'nodes' of one process each on this machine (as on two hosts
    with MASTER_ADDR set to node 0's address): both start from `llamafactory-cli train`."""
    out = tmp_path / "out"
    path = write_config(tmp_path / "multi.yaml", _harness_config(tiny_omni, out, "mod_dpo", do_eval=False, eval_strategy="no", val_size=None, ddp_backend="gloo"))
    port = str(free_port())
    env = venv_env({"FORCE_TORCHRUN": "1", "NNODES": "2", "NPROC_PER_NODE": "1", "MASTER_ADDR": "127.0.0.1",
                    "MASTER_PORT": port})
    # each node writes to a file: with pipes read one after the other, a node blocked on a full pipe
    # would stall the collective the other node waits in
    logs = [tmp_path / f"node{rank}.log" for rank in (0, 1)]
    nodes = []
    for rank, log in enumerate(logs):
        with log.open("w") as sink:
            nodes.append(subprocess.Popen([str(BIN / "llamafactory-cli"), "train", str(path)], cwd=ROOT,
                                          env={**env, "NODE_RANK": str(rank)}, stdout=sink, stderr=subprocess.STDOUT))
    for node in nodes:
        node.wait(timeout=600)
    outputs = [log.read_text() for log in logs]
    assert [node.returncode for node in nodes] == [0, 0], outputs[0][-3000:] + outputs[1][-3000:]
    assert "world size: 2" in outputs[0] and "world size: 2" in outputs[1]
    assert "mod/margin" in _log(out)[0]
