"""The overlay reaches upstream without a wrapper command, and fails loudly if upstream moved."""

from __future__ import annotations

import os
import subprocess
import sys
import types

import pytest

from groundpo.integration import bootstrap
from groundpo.integration.upstream import EXPECTED_LLAMAFACTORY, UpstreamMismatch, require
from groundpo.registry import StageSpec, register_stage, unregister_stage

PROBE = """
import json, sys
import llamafactory.train.tuner as tuner
import llamafactory.data.loader, llamafactory.train.callbacks, llamafactory.webui.interface
import deepspeed  # loads deepspeed.runtime.zero.partition_parameters
from groundpo.integration import bootstrap
print(json.dumps({"applied": sorted(bootstrap.applied()), "run_dpo": tuner.run_dpo.__qualname__}))
"""


def _probe(env_extra: dict) -> dict:
    import json

    env = {**os.environ, **env_extra}
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_fresh_interpreter_is_patched_when_llamafactory_loads():
    result = _probe({})
    assert result["applied"] == sorted(bootstrap.PATCHES)
    assert result["run_dpo"] == "patch.<locals>._run_dpo"


def test_overlay_can_be_switched_off():
    result = _probe({"GROUNDPO_NO_OVERLAY": "1"})
    assert result["applied"] == []
    assert result["run_dpo"] == "run_dpo"  # upstream's function, untouched


def test_require_names_the_missing_symbol_and_the_expected_version():
    fake = types.ModuleType("llamafactory.train.fake")
    fake.present = object()
    assert require(fake, "present") == [fake.present]
    with pytest.raises(UpstreamMismatch) as err:
        require(fake, "present", "_training_function")
    assert "llamafactory.train.fake._training_function" in str(err.value)
    assert f"llamafactory=={EXPECTED_LLAMAFACTORY}" in str(err.value)
    with pytest.raises(UpstreamMismatch, match=r"deepspeed\.fake\.gone`.*installed deepspeed .*deepspeed==0\.18\.4"):
        require(types.ModuleType("deepspeed.fake"), "gone", package="deepspeed", expected="0.18.4")


def test_every_patch_target_exists_in_the_installed_upstream():
    """Each patch checked its targets at import; re-running them on fresh module objects would raise if not."""
    import importlib

    for module_name in bootstrap.PATCHES:
        importlib.import_module(module_name)
    assert bootstrap.applied() == frozenset(bootstrap.PATCHES)


CALLS: list[dict] = []


def _probe_workflow(model_args, data_args, training_args, finetuning_args, callbacks=None):
    CALLS.append({"stage": finetuning_args.stage, "callbacks": [type(c).__name__ for c in callbacks]})


def test_dispatch_runs_the_stage_workflow_with_upstream_callbacks(tmp_path):
    """``run_exp`` -> upstream ``_training_function`` -> our workflow, with upstream's callbacks built."""
    from llamafactory.train.tuner import run_exp

    register_stage(StageSpec(name="probe_stage", label={"en": "Probe"}, paper="test", workflow=f"{__name__}:_probe_workflow"))
    try:
        run_exp(
            {
                "model_name_or_path": "unused",
                "stage": "probe_stage",
                "do_train": True,
                "dataset": "demo_mod_dpo",
                "template": "qwen2_omni",
                "output_dir": str(tmp_path),
                "use_cpu": True,
                "report_to": "none",
            }
        )
    finally:
        unregister_stage("probe_stage")
    assert CALLS and CALLS[-1]["stage"] == "probe_stage"  # the real name is restored before the workflow runs
    assert "LogCallback" in CALLS[-1]["callbacks"] and "ReporterCallback" in CALLS[-1]["callbacks"]
