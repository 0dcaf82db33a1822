"""Shared fixtures: offline environment, the tiny Qwen2.5-Omni, configs and a CLI runner."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

for _key in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ[_key] = "1"
os.environ.setdefault("WANDB_DISABLED", "true")
if os.environ.get("PYTEST_XDIST_WORKER"):
    # parallel workers (pytest -n 2): one compute thread per process, so two workers and the runs they
    # start do not oversubscribe the cores (OpenMP threads spin while they wait for a core)
    os.environ.setdefault("OMP_NUM_THREADS", "1")

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


def venv_env(extra: dict | None = None) -> dict:
    """This process's environment with the venv's bin first on PATH (torchrun, llamafactory-cli), plus ``extra``."""
    return {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", **(extra or {})}


def run_cli(args: list[str], env: dict | None = None, timeout: int = 600, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    """Run ``llamafactory-cli`` of this venv (with the venv's bin first on PATH, as torchrun needs)."""
    proc = subprocess.run(
        [str(BIN / "llamafactory-cli"), *args], cwd=cwd, env=venv_env(env), capture_output=True, text=True,
        timeout=timeout,
    )
    return proc


def free_port() -> int:
    """A TCP port nobody listens on now (torchrun's MASTER_PORT; safe when tests run in parallel workers)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def assert_ok(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 0, f"exit {proc.returncode}\n--- stdout ---\n{proc.stdout[-4000:]}\n--- stderr ---\n{proc.stderr[-6000:]}"


MEDIA_KEYS = ("images", "videos", "audios", "rejected_images", "rejected_videos", "rejected_audios")


def demo_rows(dataset_file: str, n: int | None = None) -> list[dict]:
    """Rows of a demo dataset (data/demo/<file>) with absolute media paths, usable from any dataset_dir."""
    rows = json.loads((DATA_DIR / "demo" / dataset_file).read_text())[:n]
    for row in rows:
        for key in MEDIA_KEYS:
            if row.get(key):
                row[key] = [str(DATA_DIR / p) for p in row[key]]
    return rows


def dataset_dir_with(folder: Path, rows: list[dict], like: str, name: str = "rows") -> Path:
    """A dataset_dir holding ``rows`` registered as ``name`` with the dataset_info entry of demo dataset ``like``."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "rows.json").write_text(json.dumps(rows), encoding="utf-8")
    info = json.loads((DATA_DIR / "dataset_info.json").read_text())[like]
    info["file_name"] = "rows.json"
    (folder / "dataset_info.json").write_text(json.dumps({name: info}), encoding="utf-8")
    return folder


def build_trainer_for(model: Path, tmp_path: Path, **overrides):
    """Our trainer for a tiny config, built in-process (no training)."""
    from llamafactory.hparams import get_train_args

    from groundpo.train.workflow import build_trainer

    return build_trainer(*get_train_args(tiny_config(model, tmp_path / "out", **overrides))[:4])
