"""MiniAVH: the world's rules, and the one command's mechanics in its --quick mode.

The quick mode runs every stage (world, preference data, initial model, base SFT, its evaluation,
each method's training and evaluation, the report) at a toy size; it checks that the stages run,
resume and write the tables, not what the numbers are. The full comparison is a script
(``scripts/miniavh.py``), never a test.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from groundpo.miniavh import world as W
from groundpo.miniavh.plan import ARMS, METHODS, SIZES, Run, arm_runs, runs, size_with
from groundpo.miniavh.report import mean_sd

ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------- the world
def test_base_distribution_pairs_sound_with_its_source_with_probability_p():
    clips = W.sample_clips("sft", 4000, seed=0, p=0.9)
    matched = np.mean([c.matched for c in clips])
    assert 0.88 < matched < 0.92
    mismatched = [c for c in clips if not c.matched]
    assert all(c.sound != c.visible for c in mismatched)
    assert {c.visible for c in clips} == set(W.NAMES) == {c.sound for c in clips}


def test_generated_sft_rows_show_the_correlation_p():
    """The rows the base model learns from (not only the sampler) pair a sound with its source in a
    fraction p of the clips, and every answer states the clip's truth."""
    clips = W.sample_clips("sft", 2000, seed=1, p=0.8)
    media = {c.id: (f"media/{c.id}.mp4", f"media/{c.id}.wav") for c in clips}
    rows = W.sft_rows(clips, media, seed=1, questions_per_clip=8)
    assert len(rows) == 8 * len(clips)
    truth = {c.id: c for c in clips}
    pairs = []
    for row in rows:
        answer = row["messages"][1]["content"]
        clip = truth[row["clip"]]
        if seen := re.search(r"I see the (\w+)", answer):
            assert seen.group(1) == clip.visible
        if heard := re.search(r"I hear the (\w+)", answer):
            assert heard.group(1) == clip.sound
        if row["messages"][0]["content"].endswith(W.AVC_QUESTION):
            pairs.append(seen.group(1) == heard.group(1))
    assert len(pairs) == len(clips) and 0.78 < np.mean(pairs) < 0.82
    # the yes/no answers are the truth: "so yes" exactly when the asked object is the perceived one
    for row in rows[:400]:
        answer = row["messages"][1]["content"]
        if m := re.match(r"The (\w+)\? I (?:see|hear) the (\w+), so (yes|no)\.$", answer):
            assert (m.group(1) == m.group(2)) == (m.group(3) == "yes")


def test_held_out_set_is_half_mismatched_and_every_pair_occurs():
    clips = W.balanced_test_clips(60, seed=0)
    assert sum(c.matched for c in clips) == 30
    assert {(c.visible, c.sound) for c in clips if not c.matched} == {(v, s) for v in W.NAMES for s in W.NAMES if v != s}
    assert W.balanced_test_clips(60, seed=0) == clips  # seeded
    assert not {c.id for c in clips} & {c.id for c in W.sample_clips("sft", 60, seed=0, p=0.9)}


def test_questions_follow_avhbench_and_ask_about_the_other_modalitys_object_on_mismatched_clips():
    clip = W.Clip("x", visible="bell", sound="car", seed=1)
    qs = W.yes_no_questions(clip, np.random.default_rng(0))
    assert [(t, x, gold) for t, x, _, gold in qs] == [
        ("ADVH", "bell", True), ("ADVH", "car", False), ("VDAH", "car", True), ("VDAH", "bell", False), ("AVM", None, False),
    ]
    assert qs[1][2] == "Is the car visible in the video?"
    assert qs[3][2] == "Is the bell making sound in the audio?"
    matched = W.Clip("y", visible="drum", sound="drum", seed=2)
    absent = [x for t, x, _, gold in W.yes_no_questions(matched, np.random.default_rng(0)) if not gold and x]
    assert len(absent) == 2 and "drum" not in absent
    assert W.answer("VDAH", "bell", clip, False) == "The bell? I hear the car, so no."


def test_preference_rows_follow_the_mod_dpo_recipe():
    clips = [W.Clip("m", "car", "car", 3), W.Clip("x", "bell", "horn", 4)]
    media = {c.id: (f"media/{c.id}.mp4", f"media/{c.id}.wav") for c in clips}
    rows = W.preference_rows(clips, media)
    by = {(r["video_source"], r["task"], r["modality"], r.get("object")): r for r in rows}
    # matched context: the in-view sound source is visible and sounding (Supp. B.1.2); no captioning pair
    assert by[("m", "presence", "visual", "car")]["chosen"]["value"] == "The car? I see the car, so yes."
    assert by[("m", "presence", "visual", "car")]["rejected"]["value"] == "The car? I hear the car, so no."
    assert not [r for r in rows if r["video_source"] == "m" and r["task"] == "captioning"]
    # mismatched: the out-of-view sound source is not visible; the hard negative leans on the audio
    visual = by[("x", "presence", "visual", "horn")]
    assert visual["conversations"][0]["value"] == "<video><audio>Is the horn visible in the video? Answer with yes or no."
    assert (visual["chosen"]["value"], visual["rejected"]["value"]) == ("The horn? I see the bell, so no.", "The horn? I hear the horn, so yes.")
    audio = by[("x", "presence", "audio", "bell")]
    assert (audio["chosen"]["value"], audio["rejected"]["value"]) == ("The bell? I hear the horn, so no.", "The bell? I see the bell, so yes.")
    caption = by[("x", "captioning", "visual", None)]
    assert (caption["chosen"]["value"], caption["rejected"]["value"]) == ("I see the bell.", "I see the horn.")
    assert all(r["videos"] and r["audios"] for r in rows)  # OmniDPO and MoD-DPO corrupt both


def test_media_show_and_play_what_the_clip_says(tmp_path):
    from groundpo.datagen.media import read_audio, sample_frames

    clip = W.Clip("c", visible="bird", sound="bell", seed=5)
    W.write_clip(clip, tmp_path / "c.mp4", tmp_path / "c.wav")
    frame = np.asarray(sample_frames(tmp_path / "c.mp4", fps=2.0)[0]).astype(float)
    distance = {o.name: np.abs(frame - np.asarray(o.rgb)).sum(axis=2) for o in W.OBJECTS}
    closest = {name: int((d < 90).sum()) for name, d in distance.items()}
    assert max(closest, key=closest.get) == "bird" and closest["bird"] > 0.2 * W.FRAME_SIZE**2
    samples = read_audio(tmp_path / "c.wav").astype(float)
    assert len(samples) == int(W.AUDIO_SECONDS * W.SAMPLE_RATE)
    spectrum = np.abs(np.fft.rfft(samples))
    peak_hz = np.argmax(spectrum) * W.SAMPLE_RATE / len(samples)
    assert abs(peak_hz - 1000) < 60  # the bell's high beeps


def test_world_writes_llamafactory_datasets_and_an_avhbench_folder(tmp_path):
    from groundpo.eval.readers import read_avhbench

    summary = W.write_world(tmp_path, seed=0, n_sft=6, n_test=4, p=0.9, questions_per_clip=2)
    pref = W.write_preferences(tmp_path, seed=0, n_pref=4, mismatch_ratio=0.7)
    assert summary["sft_rows"] == 12 and summary["test_items"] == 20 and pref["pref_rows"] > 0
    info = json.loads((tmp_path / "dataset_info.json").read_text())
    assert info[W.PREF_DATASET]["ranking"] and info[W.PREF_DATASET]["columns"]["modality"] == "modality"
    items = read_avhbench(tmp_path / "avhbench")
    assert {it.task for it in items} == {"ADVH", "VDAH", "AVM", "AVC"}
    assert all(Path(p).exists() for it in items for p in it.videos + it.audios)
    assert items[0].audios[0].endswith(".wav")  # the clip's own sound file, not the video's track
    truth = json.loads((tmp_path / "clips.json").read_text())
    assert set(truth) == {"sft", "test", "pref"}


def test_tokenizer_corpus_keeps_the_worlds_words_whole():
    from groundpo.testing.tiny_omni import train_tokenizer

    tok = train_tokenizer(SIZES["default"].model["vocab_size"], extra_corpus=W.corpus())
    assert tok.tokenize("The bell? I see the horn, so no.") == ["The", "Ġbell", "?", "ĠI", "Ġsee", "Ġthe", "Ġhorn", ",", "Ġso", "Ġno", "."]


# ---------------------------------------------------------------- plan and report
def test_budget_rules_and_shared_runs():
    size = SIZES["default"]
    assert size.epochs("paper", "dpo") == 4 and size.epochs("paper", "omni_dpo") == 4
    assert size.epochs("paper", "mod_dpo") == 1 and size.epochs("paper", "mod_dpo_pp") == 1
    assert {size.epochs("equal", m) for m in METHODS} == {1}
    # MoD-DPO at 1 epoch belongs to both arms and is trained once per seed
    assert len(runs(size)) == 6 * len(size.seeds) and len(size.seeds) >= 3
    assert arm_runs(size, "equal", "mod_dpo") == arm_runs(size, "paper", "mod_dpo") == [Run("mod_dpo", 1.0, s) for s in size.seeds]
    assert set(ARMS) == {"paper", "equal"}
    assert size_with("default", seeds=[3, 4]).seeds == (3, 4)


def test_mean_sd_is_the_sample_standard_deviation():
    assert mean_sd([1.0, 2.0, 3.0]) == (2.0, 1.0)
    assert mean_sd([5.0]) == (5.0, 0.0)
    assert mean_sd([None]) == (None, None)


# ---------------------------------------------------------------- the one command, quick
def _run(out: Path, *extra: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(ROOT / "scripts" / "miniavh.py"), "--quick", "--output_dir", str(out), *extra]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_quick_mode_runs_every_stage_writes_the_tables_and_resumes(tmp_path):
    out = tmp_path / "run"
    proc = _run(out)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    size = SIZES["quick"]
    names = ["world", "pref", "model", "sft", "eval-base"] + [f"{k}-{r.name}" for r in runs(size) for k in ("train", "eval")]
    assert all((out / "state" / "done" / f"{n}.json").exists() for n in names)
    assert "[" in proc.stdout and "report:" in proc.stdout  # progress lines
    summary = (out / "results" / "summary.md").read_text()
    for text in ("## Base model", "## Paper budget", "## Equal epochs", "ADVH Acc", "VDAH F1", "AVM Pre", "MoD-DPO++", "OmniDPO",
                 "exceeds spread", "## Wall times"):
        assert text in summary
    data = json.loads((out / "results" / "results.json").read_text())
    assert set(data["arms"]) == set(ARMS) and set(data["arms"]["paper"]) == set(METHODS)
    assert (out / "results" / "plot.png").stat().st_size > 1000
    assert (out / "configs" / "sft.yaml").exists()  # runnable with llamafactory-cli train
    # every method trained from the same base on the same rows
    for run in runs(size):
        config = (out / "configs" / f"train-{run.name}.yaml").read_text()
        assert f"model_name_or_path: {out.resolve() / 'models' / 'base'}" in config and "dataset: miniavh_pref" in config

    # the held-out set has mismatched clips, asked about the other modality's object
    truth = json.loads((out / "world" / "clips.json").read_text())
    mismatched = [c for c in truth["test"] if not c["matched"]]
    assert mismatched and len(mismatched) == len(truth["test"]) // 2
    qa = json.loads((out / "world" / "avhbench" / "QA.json").read_text())
    clip = mismatched[0]
    assert {"video_id": clip["id"], "task": W.TASK_NAMES["ADVH"], "text": W.visual_question(clip["sound"]), "label": "No"} in qa
    base_scores = json.loads((out / "evals" / "base" / "metrics.json").read_text())
    assert base_scores["n_items"] == 5 * size.n_test and base_scores["n_missing"] == 0

    # resume: finished stages are skipped (their outputs untouched); a lost stage is redone alone
    (out / "state" / "done" / "pref.json").unlink()
    weights = out / "models" / "base" / "model.safetensors"
    stamp = weights.stat().st_mtime_ns
    again = _run(out)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert again.stdout.count("done before") == len(names) - 1
    assert "preference data (MoD-DPO recipe): done in" in again.stdout
    assert (out / "state" / "done" / "pref.json").exists() and weights.stat().st_mtime_ns == stamp

    # the tables can be rewritten from the finished runs alone, without training anything
    report = _run(out, "--report_only")
    assert report.returncode == 0 and "summary.md" in report.stdout, report.stderr[-2000:]

    # other settings in the same folder are refused
    refused = _run(out, "--seeds", "5")
    assert refused.returncode == 1 and "other settings" in refused.stderr


def test_worker_skips_finished_jobs_and_stops_at_the_first_failure(tmp_path):
    """The worker's resume rule without any training: a job with a marker is not run again; the
    first unfinished job runs, and a failing one stops the worker with its traceback in its log."""
    from groundpo.miniavh.worker import main as worker_main
    from groundpo.miniavh.worker import marker, write_marker

    jobs = [{"name": n, "kind": "bogus", "label": n, "config": {}, "output_dir": str(tmp_path)} for n in ("a", "b", "c")]
    spec = tmp_path / "jobs.json"
    spec.write_text(json.dumps({"root": str(tmp_path), "jobs": jobs}))
    write_marker(tmp_path, "a", 1.0)
    assert worker_main([str(spec)]) == 1  # "a" is skipped, "b" runs and fails, "c" is never reached
    assert not (tmp_path / "logs" / "a.log").exists() and not (tmp_path / "logs" / "c.log").exists()
    assert "unknown job kind 'bogus'" in (tmp_path / "logs" / "b.log").read_text()
    assert not marker(tmp_path, "b").exists()
    write_marker(tmp_path, "b", 1.0)
    write_marker(tmp_path, "c", 1.0)
    assert worker_main([str(spec)]) == 0  # everything done: nothing runs


@pytest.mark.parametrize("bad", ["nope"])
def test_unknown_method_is_refused(bad, tmp_path):
    proc = _run(tmp_path / "x", "--methods", bad)
    assert proc.returncode == 2 and "unknown method" in proc.stderr


def _fake_eval(folder: Path, clips: list, scores: dict[str, float], correct: bool) -> None:
    """An evaluation folder as groundpo-eval writes it: ``metrics.json`` with the given per-task
    accuracies and one yes/no prediction per clip and task, all right or all wrong."""
    folder.mkdir(parents=True)
    metrics = {"n_items": 5 * len(clips), "scores": {t: {"accuracy": a, "precision": a, "recall": a, "f1": a} for t, a in scores.items()}}
    (folder / "metrics.json").write_text(json.dumps(metrics))
    lines = []
    for clip in clips:
        for task, _, _, gold in W.yes_no_questions(clip, np.random.default_rng(0)):
            lines.append(json.dumps({"kind": "yesno", "task": task, "gold": "yes" if gold else "no", "correct": correct,
                                     "meta": {"video_id": clip.id}}))
    (folder / "predictions.jsonl").write_text("\n".join(lines) + "\n")


def test_tables_report_mean_and_sample_sd_over_seeds(tmp_path):
    from dataclasses import asdict

    from groundpo.miniavh.report import collect, summary_markdown
    from groundpo.miniavh.worker import write_marker

    size = size_with("quick", seeds=[0, 1])
    clips = W.balanced_test_clips(2, seed=0)
    (tmp_path / "world").mkdir()
    (tmp_path / "world" / "clips.json").write_text(json.dumps({"test": [asdict(c) | {"matched": c.matched} for c in clips]}))
    _fake_eval(tmp_path / "evals" / "base", clips, {"ADVH": 50.0, "VDAH": 50.0, "AVM": 50.0}, correct=True)
    advh = {0: 60.0, 1: 70.0}  # DPO's ADVH accuracy by seed; the other methods 80 and 90
    for run in runs(size):
        a = advh[run.seed] + (0 if run.method == "dpo" else 20)
        _fake_eval(tmp_path / "evals" / run.name, clips, {"ADVH": a, "VDAH": 40.0, "AVM": 50.0}, correct=run.seed == 0)
        write_marker(tmp_path, f"train-{run.name}", 10.0 + run.seed)
        write_marker(tmp_path, f"eval-{run.name}", 1.0)
    data = collect(tmp_path, size)
    dpo = data["arms"]["paper"]["dpo"]["stats"]
    assert dpo["ADVH.accuracy"] == pytest.approx((65.0, 50**0.5))  # sample sd of 60 and 70
    assert dpo["avg_acc"] == pytest.approx((50.0 + 5 / 3, (50 / 9) ** 0.5))  # the mean of the three tasks, per seed
    assert dpo["mismatched_acc"] == pytest.approx((50.0, 50 * 2**0.5))  # 100 % right with seed 0, 0 % with seed 1
    assert data["base"]["matched_acc"] == 100.0 and data["base"]["gap"] == 0.0
    assert data["wall_s"]["train (all runs)"] == pytest.approx(4 * 10 + 4 * 11)
    md = summary_markdown(data, size)
    assert "| 65.0 ± 7.1 |" in md and "| 85.0 ± 7.1 |" in md  # DPO and the others, ADVH Acc in the Table-1 layout
    # OmniDPO − DPO in Avg Acc: +20 on one task of three; spread sd + sd = 2 * 2.36, exceeded
    assert re.search(r"\| OmniDPO − DPO +\| +\+6\.7 \| +4\.7 \| +yes \|", md)
    assert "PARTIAL" not in md

    # a partial report (seed 1 of DPO not evaluated yet) covers the finished runs and says so
    (tmp_path / "state" / "done" / "eval-dpo-ep1-seed1.json").unlink()
    partial = collect(tmp_path, size)
    assert partial["arms"]["paper"]["dpo"]["stats"]["ADVH.accuracy"] == (60.0, 0.0)
    assert partial["arms"]["paper"]["omni_dpo"]["stats"]["ADVH.accuracy"] == pytest.approx((85.0, 50**0.5))
    md = summary_markdown(partial, size)
    assert "PARTIAL: DPO 1, OmniDPO 2, MoD-DPO 2, MoD-DPO++ 2 seed(s)" in md
    assert re.search(r"\| OmniDPO − DPO +\| +\+[0-9.]+ \| +[0-9.]+ \| +– \(1 seed\) \|", md)
