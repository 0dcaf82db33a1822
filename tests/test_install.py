"""A regular (wheel) install registers our stages too: the .pth file ships inside the wheel."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
from conftest import ROOT, tiny_config, write_config

pytestmark = pytest.mark.slow


def _run(cmd, **kwargs):
    proc = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    assert proc.returncode == 0, f"{cmd}\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return proc


def test_wheel_install_registers_stages_and_trains(tmp_path, tiny_omni):
    dist = tmp_path / "dist"
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dist), str(ROOT)])
    (wheel,) = dist.glob("groundpo-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        assert "groundpo_overlay.pth" in names  # at the root of purelib, i.e. site-packages
        record = next(n for n in names if n.endswith(".dist-info/RECORD"))
        assert "groundpo_overlay.pth," in zf.read(record).decode()

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    python = venv / "bin" / "python"
    _run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index", "-q", str(wheel)])
    site = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip())
    assert (site / "groundpo_overlay.pth").exists()
    # dependencies come from the development venv; its site-packages is added as a plain path
    # (its .pth files, our editable install among them, are not processed this way)
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")

    probe = _run(
        [str(python), "-c",
         "import groundpo, llamafactory.train.tuner as t; from groundpo.integration import bootstrap;"
         "print(groundpo.__file__); print(t.run_dpo.__qualname__); print(sorted(bootstrap.applied()))"],
        cwd=tmp_path,
    ).stdout.splitlines()
    assert probe[0].startswith(str(site)), probe  # the wheel's copy, not the source tree
    assert probe[1] == "patch.<locals>._run_dpo"

    out = tmp_path / "out"
    cfg = write_config(tmp_path / "cfg.yaml", tiny_config(tiny_omni, out, max_steps=2))
    _run([str(python), "-m", "llamafactory.cli", "train", str(cfg)], cwd=ROOT)
    assert (out / "model.safetensors").exists()
