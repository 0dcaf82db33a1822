"""End to end: the tiny Qwen2.5-Omni through `groundpo-eval` on synthetic benchmark folders.

The tiny model answers random text, so the scores are mostly 0; what is tested is the path:
official file layouts -> LLaMA-Factory's ChatModel (video + its audio track, audio only,
clipped videos, frame folders) -> predictions.jsonl -> metrics.json -> results.md, and that a
run killed midway (SIGKILL) resumes to the same predictions and metrics as a clean run.
"""

import json
import os
import signal
import subprocess
import sys

import pytest

from groundpo.eval import cli
from groundpo.eval.readers import read_benchmark
from groundpo.eval.synthetic import write_all

FAST = [
    "--max_new_tokens", "8",
    "--caption_max_new_tokens", "8",
    "--video_max_pixels", "3136",
    "--image_max_pixels", "3136",
    "--video_maxlen", "4",
    "--cutoff_len", "1024",
    "--disable_tqdm",
]  # fmt: skip


@pytest.fixture
def tiny(tiny_omni):
    """The session's tiny Qwen2.5-Omni (``tests/conftest.py``), built once, offline."""
    return tiny_omni


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    return write_all(tmp_path_factory.mktemp("bench"))


def _args(name, tiny, data_dir, out, *extra):
    return [name, "--model_name_or_path", str(tiny), "--template", "qwen2_omni", "--data_dir", str(data_dir), "--output_dir", str(out), *FAST, *extra]


def _subprocess(args, **env):
    full_env = dict(os.environ, HF_HUB_OFFLINE="1", **env)
    return subprocess.run(
        [sys.executable, "-m", "groundpo.eval.cli", *args], env=full_env, capture_output=True, text=True, timeout=600, check=False
    )


def _predictions(out):
    return [json.loads(line) for line in (out / "predictions.jsonl").read_text(encoding="utf-8").splitlines()]


def _metrics(out):
    return json.loads((out / "metrics.json").read_text(encoding="utf-8"))


def test_killed_midway_and_rerun_matches_a_clean_run(tiny, bench, tmp_path):
    tasks = ("--tasks", "ADVH,VDAH,AVM,AVC")  # 8 items, captions included
    clean_out, out = tmp_path / "clean", tmp_path / "run"

    clean = _subprocess(_args("avhbench", tiny, bench["avhbench"], clean_out, *tasks))
    assert clean.returncode == 0, clean.stderr[-4000:]
    assert "## AVHBench" in clean.stdout

    killed = _subprocess(_args("avhbench", tiny, bench["avhbench"], out, *tasks), GROUNDPO_EVAL_KILL_AFTER="3")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-4000:]
    assert len(_predictions(out)) == 3
    assert not (out / "metrics.json").exists()
    with open(out / "predictions.jsonl", "a", encoding="utf-8") as f:
        f.write('{"id": "00001:AVC:0", "task": "AVC", "predic')  # the kill hit a write

    resumed = _subprocess(_args("avhbench", tiny, bench["avhbench"], out, *tasks))
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    assert "5 item(s) to generate, 3 already" in resumed.stderr

    preds, clean_preds = _predictions(out), _predictions(clean_out)
    ids = [p["id"] for p in preds]
    assert len(ids) == len(set(ids)) == 8
    assert set(ids) == {p["id"] for p in clean_preds} == {it.id for it in read_benchmark("avhbench", bench["avhbench"], tasks=tasks[1].split(","))}
    by_id = {p["id"]: p["prediction"] for p in clean_preds}
    assert all(p["prediction"] == by_id[p["id"]] for p in preds)  # greedy: same answers
    assert _metrics(out)["scores"] == _metrics(clean_out)["scores"]
    assert (out / "results.md").read_text() == (clean_out / "results.md").read_text()
    m = _metrics(out)
    assert list(m["scores"]) == ["ADVH", "VDAH", "AVM", "AVC"] and m["n_missing"] == 0
    assert set(m["scores"]["ADVH"]) == {"accuracy", "precision", "recall", "f1", "yes_ratio", "n", "unparsed"}


@pytest.mark.parametrize(
    "name,extra",
    [
        ("cmm", ("--use_audio_in_video", "false")),  # audio as a separate input
        ("dailyomni", ("--batch_size", "2")),  # video + separate wav, interleaved; two in flight
        ("mvbench", ()),  # clipped videos and a frame folder
        ("mmau", ()),  # audio only
    ],
)
def test_each_format_end_to_end(tiny, bench, tmp_path, name, extra, capsys):
    out = tmp_path / name
    assert cli.main(_args(name, tiny, bench[name], out, *extra)) == 0
    items = read_benchmark(name, bench[name])
    preds = _predictions(out)
    assert sorted(p["id"] for p in preds) == sorted(it.id for it in items)
    assert all(isinstance(p["prediction"], str) and p["response_length"] >= 1 for p in preds)
    m = _metrics(out)
    assert m["n_items"] == m["n_predicted"] == len(items)
    table = (out / "results.md").read_text()
    assert table in capsys.readouterr().out
    for task in dict.fromkeys(it.task for it in items):
        assert f"| {task}" in table


def test_yaml_config_limit_and_compare(tiny, bench, tmp_path, capsys):
    cfg = tmp_path / "eval.yaml"
    cfg.write_text(
        "\n".join(
            [
                "benchmark: mmau",
                f"model_name_or_path: {tiny}",
                "template: qwen2_omni",
                f"data_dir: {bench['mmau']}",
                f"output_dir: {tmp_path / 'yaml_run'}",
                "run_name: tiny-yaml",
                "max_new_tokens: 8",
                "tasks: [sound, speech]",
                "disable_tqdm: true",
                "infer_backend: huggingface",
            ]
        )
        + "\n"
    )
    assert cli.main([str(cfg), "--limit", "1"]) == 0
    m = _metrics(tmp_path / "yaml_run")
    assert m["name"] == "tiny-yaml" and m["tasks"] == ["sound", "speech"] and m["n_items"] == 2
    assert cli.main(_args("mmau", tiny, bench["mmau"], tmp_path / "flags_run", "--run_name", "tiny-flags")) == 0
    capsys.readouterr()
    assert cli.main(["compare", str(tmp_path / "yaml_run"), str(tmp_path / "flags_run")]) == 0
    text = capsys.readouterr().out
    assert "## MMAU (test-mini)" in text and "| tiny-yaml " in text and "| tiny-flags " in text
