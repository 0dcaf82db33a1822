"""Readers, runner, tables and CLI of groundpo.eval with a fake engine (fast: no model)."""

import json
import re
import zlib
from pathlib import Path
from typing import ClassVar

import pytest

from groundpo.eval import cli
from groundpo.eval import engine as engine_mod
from groundpo.eval.engine import (
    ChatEngine,
    GenerationResult,
    ItemGenerationError,
    resolve_backend,
)
from groundpo.eval.readers import (
    BenchmarkFormatError,
    MissingMediaError,
    find_missing_media,
    read_benchmark,
)
from groundpo.eval.runner import (
    PREDICTIONS,
    EvalConfig,
    PredictionsFileError,
    RunConfigMismatch,
    read_predictions,
    run_eval,
)
from groundpo.eval.synthetic import write_all, write_benchmark
from groundpo.eval.tables import compare_markdown, markdown_table, results_markdown


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    return write_all(tmp_path_factory.mktemp("bench"))


def _copy(name, tmp_path):
    return write_benchmark(name, tmp_path / name)


class FakeEngine:
    """Answers from the gold: right or wrong by a fixed function of the item id."""

    instances: ClassVar[list["FakeEngine"]] = []

    def __init__(self, model_args, *, max_new_tokens, caption_max_new_tokens, batch_size, system, decoding=None):
        self.model_args = model_args
        self.batch_size = batch_size
        self.decoding = decoding
        self.seen = []
        self.fail = set()
        self.stop_after = None
        FakeEngine.instances.append(self)

    @staticmethod
    def answer(item, right):
        if item.kind == "yesno":
            good = item.gold == "yes"
            return "Yes." if good == right else "No, it is not."
        if item.kind == "choice":
            letter = item.gold if right else ("B" if item.gold == "A" else "A")
            return f"The answer is ({letter})."
        return "A caption."

    @staticmethod
    def right(item):
        return zlib.crc32(item.id.encode()) % 3 != 0

    def generate(self, items, return_errors=False):
        for n, item in enumerate(items):
            if self.stop_after is not None and n >= self.stop_after:
                raise KeyboardInterrupt  # a kill between two items
            self.seen.append(item.id)
            if item.id in self.fail:
                err = ItemGenerationError(f"generation failed for item {item.id} (media: x): boom")
                if return_errors:
                    yield item, err
                    continue
                raise err
            yield item, GenerationResult(text=self.answer(item, self.right(item)), prompt_length=10, response_length=3, finish_reason="stop")


def _cfg(name, data_dir, out, **kw):
    kw.setdefault("model_name_or_path", "tiny")
    kw.setdefault("template", "qwen2_omni")
    kw.setdefault("disable_tqdm", True)
    return EvalConfig(benchmark=name, data_dir=str(data_dir), output_dir=str(out), **kw)


# ------------------------------------------------------------------------------------- readers


def test_read_avhbench(bench):
    items = read_benchmark("avhbench", bench["avhbench"])
    assert [it.id for it in items] == ["00001:ADVH:0", "00001:VDAH:0", "00001:AVM:0", "00002:ADVH:0", "00002:VDAH:0", "00002:AVM:0"]
    assert {it.kind for it in items} == {"yesno"}  # captioning is opt-in
    a = items[0]
    assert a.gold == "yes" and a.prompt.endswith("Answer with yes or no.")
    assert a.videos[0].endswith("videos/00001.mp4") and a.audios[0].endswith("audios/00001.wav")
    b = items[3]
    assert b.audios == b.videos  # no wav: the video's own audio track
    captions = read_benchmark("avhbench", bench["avhbench"], tasks=["AVC"])
    assert [it.kind for it in captions] == ["caption", "caption"] and captions[0].gold.startswith("A coloured bar")
    assert len(read_benchmark("avhbench", bench["avhbench"], tasks=["av matching", "advh"])) == 4
    assert len(read_benchmark("avhbench", bench["avhbench"], limit=1)) == 3
    assert read_benchmark("avhbench", bench["avhbench"], prompt_suffix="")[0].prompt == "Is the red circle visible in the video?"
    with pytest.raises(ValueError, match="unknown task.*ADVH"):
        read_benchmark("avhbench", bench["avhbench"], tasks=["visual"])


def test_read_cmm(bench):
    items = read_benchmark("cmm", bench["cmm"])
    assert len(items) == 5
    assert [it.task for it in items][:3] == ["overrely_visual_ignore_audio"] * 2 + ["overrely_language_ignore_visual"]
    assert items[2].audios == [] and items[2].videos  # visual only
    assert items[4].videos == [] and items[4].audios  # audio only ("None" video_path)
    assert items[0].groups == {"granularity": "event-level"}
    assert len(read_benchmark("cmm", bench["cmm"], tasks=["over-reliance_unimodal_priors"])) == 4  # a category
    assert find_missing_media(items) == []


def test_read_dailyomni_mvbench_mmau(bench):
    d = read_benchmark("dailyomni", bench["dailyomni"])
    assert [(it.id, it.gold, it.task) for it in d] == [
        ("vidA:0", "B", "AV Event Alignment"),
        ("vidA:1", "B", "Event Sequence"),
        ("vidB:2", "A", "AV Event Alignment"),
    ]
    assert d[0].options == ["A red circle", "A blue square", "A green triangle", "A yellow circle"]
    assert d[0].audios[0].endswith("vidA_audio.wav") and d[2].audios == d[2].videos
    clip_group = {"duration": "30s"}  # the folder's length group, not a timing
    assert d[0].groups == clip_group

    m = read_benchmark("mvbench", bench["mvbench"])
    by_id = {it.id: it for it in m}
    assert set(by_id) == {"action_sequence:0", "action_sequence:1", "episodic_reasoning:0", "object_existence:0"}
    assert by_id["action_sequence:0"].clip == (0.5, 1.5) and by_id["action_sequence:0"].gold == "A"
    assert by_id["episodic_reasoning:0"].frame_fps == 3.0 and by_id["object_existence:0"].gold == "B"
    assert "(A) It moved right." in by_id["action_sequence:0"].prompt

    a = read_benchmark("mmau", bench["mmau"])
    assert [(it.id, it.task, it.gold) for it in a] == [("3fe64f3d-0001", "sound", "A"), ("3fe64f3d-0002", "music", "D"), ("3fe64f3d-0003", "speech", "D")]
    assert a[0].audios[0].endswith("test-mini-audios/3fe64f3d-0001.wav") and a[0].videos == []


def _rewrite(path, fn):
    data = json.loads(path.read_text())
    fn(data)
    path.write_text(json.dumps(data))


@pytest.mark.parametrize(
    "name,file,edit,match",
    [
        ("avhbench", "QA.json", lambda d: d[1].pop("label"), r"QA.json: item 1: field 'label' is missing"),
        ("avhbench", "QA.json", lambda d: d[2].update(task="Visual QA"), r"item 2: field 'task' has unknown value 'Visual QA'"),
        ("avhbench", "QA.json", lambda d: d[0].update(label="Maybe"), r"item 0: field 'label' must be yes or no"),
        ("cmm", "all_data_final_reorg.json", lambda d: d[3].update(answer="perhaps"), r"item 3: field 'answer' must be yes or no"),
        ("cmm", "all_data_final_reorg.json", lambda d: d[1].pop("question"), r"item 1: field 'question' is missing"),
        ("dailyomni", "qa.json", lambda d: d[2].update(Answer="F"), r"item 2: field 'Answer' \('F'\) is not one of the options"),
        ("mvbench", "json/action_sequence.json", lambda d: d[1].update(candidates="yes"), r"action_sequence.json: item 1: field 'candidates' must be list"),
        ("mmau", "mmau-test-mini.json", lambda d: d[0].update(answer="Dog"), r"item 0: field 'answer' \('Dog'\) is not one of the options"),
    ],
)
def test_malformed_items_name_index_and_field(tmp_path, name, file, edit, match):
    root = _copy(name, tmp_path)
    _rewrite(root / file, edit)
    with pytest.raises(BenchmarkFormatError, match=match):
        read_benchmark(name, root)


def test_missing_annotation_file(tmp_path):
    with pytest.raises(BenchmarkFormatError, match="QA.json"):
        read_benchmark("avhbench", tmp_path)
    with pytest.raises(BenchmarkFormatError, match="not a folder"):
        read_benchmark("mmau", tmp_path / "nope")


# ------------------------------------------------------------------------------------- runner


def test_missing_media_reported_up_front(tmp_path):
    root = _copy("dailyomni", tmp_path)
    (root / "Videos/vidA/vidA_video.mp4").unlink()
    (root / "Videos/vidB/vidB_video.mp4").unlink()
    FakeEngine.instances.clear()
    with pytest.raises(MissingMediaError) as err:
        run_eval(_cfg("dailyomni", root, tmp_path / "out"), engine_factory=FakeEngine)
    assert not FakeEngine.instances  # stopped before any model was loaded
    msg = str(err.value)
    assert "Videos/vidA/vidA_video.mp4" in msg and "Videos/vidB/vidB_video.mp4" in msg and "3 media file(s)" in msg
    assert len((tmp_path / "out" / "missing_media.txt").read_text().splitlines()) == 3
    # every item needs a missing video: nothing left to run even when skipping
    with pytest.raises(MissingMediaError):
        run_eval(_cfg("dailyomni", root, tmp_path / "out", skip_missing_media=True), engine_factory=FakeEngine)


def test_skip_missing_media(tmp_path):
    root = _copy("mmau", tmp_path)
    (root / "test-mini-audios/3fe64f3d-0002.wav").unlink()
    metrics = run_eval(_cfg("mmau", root, tmp_path / "out", skip_missing_media=True), engine_factory=FakeEngine)
    assert metrics["n_items"] == 2 and metrics["scores"]["overall"]["n"] == 2


def test_runner_resumes_without_duplicates(bench, tmp_path):
    out = tmp_path / "run"
    FakeEngine.instances.clear()
    orig = FakeEngine.__init__

    def stopping_init(self, *a, **kw):
        orig(self, *a, **kw)
        self.stop_after = 2

    FakeEngine.__init__ = stopping_init
    try:
        with pytest.raises(KeyboardInterrupt):
            run_eval(_cfg("avhbench", bench["avhbench"], out), engine_factory=FakeEngine)
    finally:
        FakeEngine.__init__ = orig
    lines = (out / PREDICTIONS).read_text().splitlines()
    assert len(lines) == 2
    with open(out / PREDICTIONS, "a") as f:
        f.write('{"id": "00001:AVM:0", "pred')  # a write cut off by the kill
    metrics = run_eval(_cfg("avhbench", bench["avhbench"], out), engine_factory=FakeEngine)
    assert FakeEngine.instances[-1].seen == ["00001:AVM:0", "00002:ADVH:0", "00002:VDAH:0", "00002:AVM:0"]
    ids = [json.loads(line)["id"] for line in (out / PREDICTIONS).read_text().splitlines()]
    assert len(ids) == len(set(ids)) == 6
    clean = run_eval(_cfg("avhbench", bench["avhbench"], tmp_path / "clean"), engine_factory=FakeEngine)
    assert metrics["scores"] == clean["scores"]
    for task in ("ADVH", "VDAH", "AVM"):
        its = [it for it in read_benchmark("avhbench", bench["avhbench"]) if it.task == task]
        assert metrics["scores"][task]["accuracy"] == pytest.approx(100 * sum(map(FakeEngine.right, its)) / len(its))
    # a third run has nothing to do
    FakeEngine.instances.clear()
    again = run_eval(_cfg("avhbench", bench["avhbench"], out), engine_factory=FakeEngine)
    assert not FakeEngine.instances and again["scores"] == clean["scores"]


def test_read_predictions_tail_and_errors(tmp_path):
    p = tmp_path / "predictions.jsonl"
    p.write_text('{"id": "a", "prediction": "yes"}\n{"id": "b", "prediction": "no"}')  # valid, no newline
    assert set(read_predictions(p, repair=True)) == {"a", "b"}
    assert p.read_text().endswith("}\n")
    p.write_text('{"id": "a", "prediction": "yes"}\n{"id": "b", "predi')
    assert set(read_predictions(p, repair=True)) == {"a"}
    assert p.read_text() == '{"id": "a", "prediction": "yes"}\n'
    p.write_text('{"id": "a"}\n{"id": "a"}\n')
    assert list(read_predictions(p)) == ["a"]
    p.write_text('{"id": "a"}\nnot json\n{"id": "b"}\n')
    with pytest.raises(PredictionsFileError, match="line 2"):
        read_predictions(p)


def test_run_config_mismatch_and_overwrite(bench, tmp_path):
    out = tmp_path / "run"
    run_eval(_cfg("mmau", bench["mmau"], out, limit=1), engine_factory=FakeEngine)
    with pytest.raises(RunConfigMismatch, match="max_new_tokens"):
        run_eval(_cfg("mmau", bench["mmau"], out, max_new_tokens=99), engine_factory=FakeEngine)
    metrics = run_eval(_cfg("mmau", bench["mmau"], out, max_new_tokens=99, overwrite_output_dir=True), engine_factory=FakeEngine)
    assert metrics["n_items"] == 3


def test_on_error_record_and_score_only(bench, tmp_path):
    out = tmp_path / "run"
    orig = FakeEngine.__init__

    def failing_init(self, *a, **kw):
        orig(self, *a, **kw)
        self.fail = {"action_sequence:1"}

    FakeEngine.__init__ = failing_init
    try:
        with pytest.raises(ItemGenerationError):
            run_eval(_cfg("mvbench", bench["mvbench"], out), engine_factory=FakeEngine)
        metrics = run_eval(_cfg("mvbench", bench["mvbench"], out, on_error="record"), engine_factory=FakeEngine)
    finally:
        FakeEngine.__init__ = orig
    recs = {json.loads(line)["id"]: json.loads(line) for line in (out / PREDICTIONS).read_text().splitlines()}
    assert recs["action_sequence:1"]["error"].endswith("boom") and recs["action_sequence:1"]["correct"] is False
    assert metrics["n_predicted"] == 4
    assert metrics["scores"]["task"]["action_sequence"]["accuracy"] == 50.0
    FakeEngine.instances.clear()
    scored = run_eval(_cfg("mvbench", bench["mvbench"], out, score_only=True, model_name_or_path=None), engine_factory=FakeEngine)
    assert not FakeEngine.instances and scored["scores"] == metrics["scores"]


def test_metrics_and_tables(bench, tmp_path):
    m = run_eval(_cfg("cmm", bench["cmm"], tmp_path / "cmm"), engine_factory=FakeEngine)
    s = m["scores"]
    assert s["rule"] == "official" and s["sub_categories"] == ["overrely_visual_ignore_audio", "overrely_language_ignore_visual", "audio-language"]
    vis = [it for it in read_benchmark("cmm", bench["cmm"]) if it.task == "overrely_visual_ignore_audio"]
    assert [it.gold for it in vis] == ["no", "yes"]
    right = [FakeEngine.right(it) for it in vis]
    assert s["official"]["overrely_visual_ignore_audio"] == {"pa": 100.0 * right[1], "hr": 100.0 * right[0], "acc": 50.0 * sum(right), "n": 2}
    assert s["strict"]["overall"] == s["official"]["overall"]  # the fake answers "Yes." / "No, it is not."
    md = (tmp_path / "cmm" / "results.md").read_text()
    assert "| overrely_visual_ignore_audio" in md and "| Overall" in md and "–" in md  # audio-language has no gold yes

    a = run_eval(_cfg("avhbench", bench["avhbench"], tmp_path / "avh", tasks=["ADVH", "VDAH", "AVM", "AVC"]), engine_factory=FakeEngine)
    assert a["scores"]["AVC"] == {"n": 2, "scored": False}
    table = results_markdown(a)
    assert re.search(r"\| Task +\| +Acc \| +Pre \| +Rec \| +F1 \|", table) and "not scored" in table

    b = json.loads(json.dumps(a))
    b["name"] = "+MoD-DPO"
    b["scores"]["ADVH"]["accuracy"] = 75.0
    cmp = compare_markdown([a, b, m], ["base", "+MoD-DPO", "base"])
    assert "## AVHBench" in cmp and "## CMM" in cmp
    assert re.search(r"\| base +\|", cmp) and "| +MoD-DPO |" in cmp and "75.0" in cmp
    assert "ADVH Acc | ADVH Pre | ADVH Rec | ADVH F1" in cmp
    assert markdown_table(["a", "b"], [["x", 1]]) == "| a | b |\n|:--|--:|\n| x | 1 |\n"


# ---------------------------------------------------------------------------------------- CLI


def test_build_config_yaml_overrides_and_passthrough(tmp_path):
    cfg_file = tmp_path / "eval.yaml"
    cfg_file.write_text(
        "benchmark: cmm\nmodel_name_or_path: m\ntemplate: qwen2_omni\ndata_dir: d\noutput_dir: o\n"
        "tasks: [a, b]\nvideo_maxlen: 4\nuse_audio_in_video: false\nflash_attn: sdpa\n"
    )
    c = cli.build_config([str(cfg_file), "--limit", "3", "--video_fps", "1.5", "--vllm_gpu_util", "0.8", "--use_audio_in_video"])
    assert c.benchmark == "cmm" and c.tasks == ["a", "b"] and c.limit == 3 and c.use_audio_in_video is True
    assert c.model_args == {"flash_attn": "sdpa", "vllm_gpu_util": 0.8, "video_maxlen": 4, "video_fps": 1.5}
    c = cli.build_config(["cmm", str(cfg_file), "--use_audio_in_video", "false", "--tasks", "x,y", "--skip_missing_media"])
    assert c.use_audio_in_video is False and c.tasks == ["x", "y"] and c.skip_missing_media is True
    c = cli.build_config(["mmau", "--data_dir", "d", "--output_dir", "o", "--infer_dtype=bfloat16"])
    assert c.model_args == {"infer_dtype": "bfloat16"} and c.batch_size == 1 and c.infer_backend == "auto"
    with pytest.raises(ValueError, match="for benchmark 'cmm'"):
        cli.build_config(["mmau", str(cfg_file)])
    with pytest.raises(ValueError, match="--data_dir is required"):
        cli.build_config(["mmau", "--output_dir", "o"])
    with pytest.raises(ValueError, match="unknown benchmark"):
        cli.build_config(["vqa", "--data_dir", "d", "--output_dir", "o"])


def test_cli_errors_and_compare(bench, tmp_path, capsys):
    assert cli.main(["mmau", "--data_dir", str(tmp_path / "none"), "--output_dir", str(tmp_path / "o")]) == 2
    assert "not a folder" in capsys.readouterr().err
    for name in ("base", "dpo"):
        run_eval(_cfg("mmau", bench["mmau"], tmp_path / name / "mmau", run_name=name), engine_factory=FakeEngine)
        run_eval(_cfg("dailyomni", bench["dailyomni"], tmp_path / name / "dailyomni", run_name=name), engine_factory=FakeEngine)
    out = tmp_path / "cmp.md"
    assert cli.main(["compare", str(tmp_path / "base"), str(tmp_path / "dpo" / "mmau"), "--output", str(out)]) == 0
    text = out.read_text()
    assert "## MMAU (test-mini)" in text and "## DailyOmni" in text
    assert re.search(r"\| base +\|", text) and re.search(r"\| dpo +\|", text)
    assert cli.main(["compare", str(tmp_path / "base"), "--names", "a,b"]) == 2


# ------------------------------------------------------------------------------------- engine


def _bare_engine(**kw):
    eng = object.__new__(ChatEngine)  # the input builder needs no model
    eng.video_fps, eng.video_maxlen = kw.get("fps", 2.0), kw.get("maxlen", 4)
    return eng


def test_engine_inputs_placeholders_and_clips(bench):
    eng = _bare_engine()
    av = read_benchmark("avhbench", bench["avhbench"])[0]
    messages, media = eng.inputs(av)
    assert messages == [{"role": "user", "content": "<video><audio>" + av.prompt}]
    assert media["videos"] == av.videos and media["audios"] == av.audios and media["images"] is None
    mmau = read_benchmark("mmau", bench["mmau"])[0]
    messages, media = eng.inputs(mmau)
    assert messages[0]["content"].startswith("<audio>Based on") and media["videos"] is None
    mv = {it.id: it for it in read_benchmark("mvbench", bench["mvbench"])}
    _, media = eng.inputs(mv["action_sequence:0"])  # 0.5-1.5 s of a 2 s clip at 2 fps: 2 frames
    assert len(media["videos"][0]) == 2 and media["videos"][0][0].size == (56, 56)
    _, media = eng.inputs(mv["episodic_reasoning:0"])  # 6 frames at 3 fps, 0-2 s, max 4
    assert [Path(p).name for p in media["videos"][0]] == ["00001.png", "00003.png", "00005.png", "00006.png"]


def test_resolve_backend(monkeypatch):
    monkeypatch.setattr(engine_mod, "vllm_available", lambda: False)
    assert resolve_backend("auto", True, True) == "huggingface"
    assert resolve_backend("huggingface", True, True) == "huggingface"
    with pytest.raises(RuntimeError, match="not installed"):
        resolve_backend("vllm", False, False)
    monkeypatch.setattr(engine_mod, "vllm_available", lambda: True)
    with pytest.raises(RuntimeError, match="use_audio_in_video"):
        resolve_backend("vllm", True, True)
    assert resolve_backend("vllm", False, True) == "vllm"
    assert resolve_backend("auto", True, True) == "huggingface"
    with pytest.raises(ValueError):
        resolve_backend("sglang", False, False)
