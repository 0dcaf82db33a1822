"""Shared fixtures: offline environment, the tiny Qwen2.5-Omni, configs and a CLI runner."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

for _key in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ[_key] = "1"
os.environ.setdefault("WANDB_DISABLED", "true")

ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = ROOT / "data"
BIN = Path(sys.executable).parent


@pytest.fixture(scope="session")
def tiny_omni(tmp_path_factory) -> Path:
    from groundpo.testing.tiny_omni import build_tiny_omni

    return build_tiny_omni(tmp_path_factory.mktemp("tiny-omni"))


def tiny_config(model: Path, output_dir: Path, **overrides) -> dict:
    """A training config on the tiny model and the demo data: CPU, seconds."""
    config = {
        "model_name_or_path": str(model),
        "image_max_pixels": 3136,
        "video_max_pixels": 3136,
        "video_maxlen": 4,
        "stage": "mod_dpo",
        "do_train": True,
        "finetuning_type": "full",
        "freeze_vision_tower": False,
        "dataset": "demo_mod_dpo",
        "dataset_dir": str(DATA_DIR),
        "template": "qwen2_omni",
        "cutoff_len": 512,
        "overwrite_cache": True,
        "preprocessing_num_workers": 1,
        "dataloader_num_workers": 0,
        "output_dir": str(output_dir),
        "logging_steps": 1,
        "save_strategy": "no",
        "overwrite_output_dir": True,
        "report_to": "none",
        "use_cpu": True,
        "per_device_train_batch_size": 2,
        "learning_rate": 5.0e-3,
        "lr_scheduler_type": "constant",
        "num_train_epochs": 1,
        "seed": 42,
    }
    config.update(overrides)
    return {k: v for k, v in config.items() if v is not None}


def write_config(path: Path, config: dict) -> Path:
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def run_cli(args: list[str], env: dict | None = None, timeout: int = 600, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    """Run ``llamafactory-cli`` of this venv (with the venv's bin first on PATH, as torchrun needs)."""
    full_env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", **(env or {})}
    proc = subprocess.run(
        [str(BIN / "llamafactory-cli"), *args], cwd=cwd, env=full_env, capture_output=True, text=True,
        timeout=timeout,
    )
    return proc


def assert_ok(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 0, f"exit {proc.returncode}\n--- stdout ---\n{proc.stdout[-4000:]}\n--- stderr ---\n{proc.stderr[-6000:]}"
