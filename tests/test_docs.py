"""The documentation keeps up with the code: every YAML key, the README's commands."""

from __future__ import annotations

import subprocess
import sys

from conftest import ROOT


def test_configuration_reference_is_up_to_date():
    proc = subprocess.run([sys.executable, "scripts/gen_config_docs.py", "--check"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_readme_names_setup_test_and_main_job_commands():
    readme = (ROOT / "README.md").read_text()
    assert "bash scripts/setup.sh" in readme
    assert "HF_HUB_OFFLINE=1 .venv/bin/python -m pytest -q -n 2" in readme
    assert "llamafactory-cli train examples/mod_dpo/tiny_omni.yaml" in readme
    ci = (ROOT / ".ci" / "run").read_text()
    assert "HF_HUB_OFFLINE=1 .venv/bin/python -m pytest -q -n 2" in ci and "scripts/setup.sh" in ci
