"""End to end: the tiny Qwen2-VL through `groundpo-eval` on AMBER, Object HalBench, MMHal-Bench and
POPE folders in their official layouts; runs stopped midway resume without duplicates; MMHal-Bench
is judged through a real local OpenAI-compatible HTTP server."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from groundpo.eval import cli
from groundpo.eval.coco import coco_ground_truth
from groundpo.eval.engine import create_engine
from groundpo.eval.metrics import chair_scores, mmhal_scores, pope_scores
from groundpo.eval.readers import read_benchmark
from groundpo.eval.runner import EvalConfig, run_eval
from groundpo.eval.synthetic import write_benchmark

FAST = ["--max_new_tokens", "4", "--caption_max_new_tokens", "8", "--image_max_pixels", "3136", "--disable_tqdm", "--infer_backend", "huggingface"]


@pytest.fixture(scope="module")
def tiny_vl(tmp_path_factory):
    from groundpo.testing.tiny_vl import build_tiny_qwen2_vl

    return build_tiny_qwen2_vl(tmp_path_factory.mktemp("tiny-vl"))


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench")
    return {name: write_benchmark(name, root / name) for name in ("amber", "objhal", "mmhal", "pope")}


def _args(name, model, data_dir, out, *extra):
    return [name, "--model_name_or_path", str(model), "--template", "qwen2_vl", "--data_dir", str(data_dir), "--output_dir", str(out), *FAST, *extra]


def _predictions(out):
    return [json.loads(line) for line in (out / "predictions.jsonl").read_text(encoding="utf-8").splitlines()]


def _metrics(out):
    return json.loads((out / "metrics.json").read_text(encoding="utf-8"))


def _stopping_factory(after):
    """The real engine, stopped (as by a kill) after ``after`` answers were written."""

    def factory(model_args, **kw):
        engine = create_engine(model_args, **kw)
        generate = engine.generate

        def stopping(items, return_errors=False):
            for n, pair in enumerate(generate(items, return_errors)):
                if n == after:
                    raise KeyboardInterrupt
                yield pair

        engine.generate = stopping
        return engine

    return factory


def test_pope_killed_midway_resumes_to_the_clean_run(tiny_vl, bench, tmp_path):
    out, clean_out = tmp_path / "run", tmp_path / "clean"
    args = _args("pope", tiny_vl, bench["pope"], out, "--batch_size", "2")
    env = dict(os.environ, HF_HUB_OFFLINE="1", GROUNDPO_EVAL_KILL_AFTER="3")
    killed = subprocess.run([sys.executable, "-m", "groundpo.eval.cli", *args], env=env, capture_output=True, text=True, timeout=600, check=False)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert len(_predictions(out)) == 3 and not (out / "metrics.json").exists()
    with open(out / "predictions.jsonl", "a", encoding="utf-8") as f:
        f.write('{"id": "popular:4", "predic')  # the kill hit a write
    assert cli.main(args) == 0
    assert cli.main(_args("pope", tiny_vl, bench["pope"], clean_out)) == 0  # batch size 1
    preds, clean = _predictions(out), {p["id"]: p["prediction"] for p in _predictions(clean_out)}
    ids = [p["id"] for p in preds]
    assert len(ids) == len(set(ids)) == 6 and set(ids) == set(clean)
    assert all(p["prediction"] == clean[p["id"]] for p in preds)  # batched greedy answers = unbatched
    m = _metrics(out)
    assert m["scores"] == _metrics(clean_out)["scores"]
    s = m["scores"]
    assert s["rule"] == "official" and s["splits"] == ["random", "popular", "adversarial"]
    items = read_benchmark("pope", bench["pope"])
    for split in s["splits"]:
        sub = [it for it in items if it.task == split]
        by_id = {p["id"]: p["prediction"] for p in preds}
        assert s["official"][split] == pope_scores([it.gold for it in sub], [by_id[it.id] for it in sub], "official")
    assert "average" in s["official"] and "| average" in (out / "results.md").read_text()


def test_amber_end_to_end_with_a_stop_and_resume(tiny_vl, bench, tmp_path):
    out = tmp_path / "amber"
    cfg = {
        "benchmark": "amber", "data_dir": str(bench["amber"]), "output_dir": str(out), "model_name_or_path": str(tiny_vl),
        "template": "qwen2_vl", "max_new_tokens": 4, "caption_max_new_tokens": 8, "batch_size": 3, "infer_backend": "huggingface",
        "disable_tqdm": True, "nltk_data": str(bench["amber"] / "nltk_data"), "spacy_model": "none",
        "model_args": {"image_max_pixels": 3136},
    }  # fmt: skip
    with pytest.raises(KeyboardInterrupt):
        run_eval(EvalConfig(**cfg), engine_factory=_stopping_factory(3))
    assert len(_predictions(out)) == 3
    m = run_eval(EvalConfig(**cfg))
    ids = [p["id"] for p in _predictions(out)]
    assert len(ids) == len(set(ids)) == 8
    s = m["scores"]
    assert s["generative"]["n"] == 2 and s["generative"]["synonyms"] is None
    assert set(s["generative"]) >= {"chair", "cover", "hal", "cog"}
    d = s["discriminative"]
    assert d["rule"] == "official" and d["official"]["overall"]["n"] == 6
    assert set(d["official"]) == {"overall", "existence", "attribute", "state", "number", "action", "relation"}
    table = (out / "results.md").read_text()
    assert "| Generative" in table and "| Discriminative" in table and "exact answers 'Yes' and 'No'" in table
    # scoring alone with the lenient rule, from the same predictions
    lenient = run_eval(EvalConfig(**{**cfg, "yes_no_rule": "lenient", "score_only": True}))
    assert lenient["scores"]["discriminative"]["lenient"] == d["lenient"]
    # no NLTK data: the run stops before loading a model and says what to fetch
    with pytest.raises(Exception, match="nltk.downloader"):
        run_eval(EvalConfig(**{**cfg, "nltk_data": str(tmp_path), "output_dir": str(tmp_path / "x")}), engine_factory=_fail_factory)


def _fail_factory(*a, **kw):
    raise AssertionError("no model may be loaded")


def test_objhal_end_to_end_scores_chair(tiny_vl, bench, tmp_path, capsys):
    out = tmp_path / "objhal"
    base = _args("objhal", tiny_vl, bench["objhal"], out, "--batch_size", "2", "--decoding", "vcd", "--cd_alpha", "1.0")
    with pytest.raises(KeyboardInterrupt):  # stopped after one answer, then resumed by the command
        run_eval(cli.build_config(base), engine_factory=_stopping_factory(1))
    assert len(_predictions(out)) == 1
    assert cli.main(base) == 0
    preds = _predictions(out)
    assert len(preds) == len({p["id"] for p in preds}) == 3 and all(p["decoding"] == "vcd" and p["contrast_steps"] >= 1 for p in preds)
    items = {it.id: it for it in read_benchmark("objhal", bench["objhal"])}
    truth = coco_ground_truth(bench["objhal"] / "annotations", [it.meta["image_id"] for it in items.values()])
    assert truth[139] == {"person", "chair"} and truth[632] >= {"dining table", "cup", "pizza"}
    m = _metrics(out)
    expected = chair_scores([p["prediction"] for p in preds], [truth[items[p["id"]].meta["image_id"]] for p in preds])
    assert {k: m["scores"][k] for k in expected} == expected
    assert m["decoding"]["method"] == "vcd" and "Decoding: vcd" in (out / "results.md").read_text()
    # resuming with other decoding settings is refused
    assert cli.main(base[:-2] + ["--cd_alpha", "2.0"]) == 2
    assert "alpha" in capsys.readouterr().err
    # missing COCO annotations: a clear error before any model is loaded
    bad = _args("objhal", tiny_vl, bench["objhal"], tmp_path / "bad", "--coco_annotations", str(tmp_path / "none"))
    assert cli.main(bad) == 2
    err = capsys.readouterr().err
    assert "instances_val2014.json" in err and "annotations_trainval2014.zip" in err


# ------------------------------------------------------------------------- MMHal-Bench judge

KEY = "sk-test-4f1c9e-never-printed"


class JudgeServer:
    """A scripted OpenAI-compatible ``/v1/chat/completions`` on 127.0.0.1 (a real HTTP server)."""

    def __init__(self, script):
        self.script, self.requests, self.auth = script, [], []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.requests.append(body)
                server.auth.append(self.headers.get("Authorization"))
                status, text = server.script(body, len(server.requests))
                if self.path != "/v1/chat/completions":
                    status, text = 404, "not found"
                if status != 200:
                    payload = {"error": {"message": text, "type": "server_error"}}
                else:
                    payload = {
                        "id": f"r{len(server.requests)}", "object": "chat.completion", "created": 0, "model": body["model"],
                        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
                    }  # fmt: skip
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def _rating_for(body):
    """Rates by the question in the prompt: the colour question 5, the dog question no rating, the cup one 2."""
    prompt = body["messages"][0]["content"]
    if "What color is the car?" in prompt:
        return "The answer adds nothing false.\nRating: 5"
    if "Is there a dog" in prompt:
        return "I cannot decide."  # no rating: counts 0
    return "It invents a plate size.\nRating: 2"


def test_mmhal_judged_through_a_local_server_and_resumed(tiny_vl, bench, tmp_path, monkeypatch, caplog, capsys):
    monkeypatch.setenv("GROUNDPO_TEST_JUDGE_KEY", KEY)
    out = tmp_path / "mmhal"
    calls = {"n": 0}

    def flaky(body, n):  # the first request fails with a 500: the judge retries it
        calls["n"] += 1
        return (500, "overloaded") if n == 1 else (200, _rating_for(body))

    with JudgeServer(flaky) as server:
        args = _args(
            "mmhal", tiny_vl, bench["mmhal"], out, "--judge_model", "judge-1", "--judge_base_url", server.url,
            "--judge_api_key_env", "GROUNDPO_TEST_JUDGE_KEY", "--batch_size", "3",
        )  # fmt: skip
        import groundpo.eval.judge as judge_mod

        monkeypatch.setattr(judge_mod.time, "sleep", lambda s: None)  # no waiting between retries
        with pytest.raises(KeyboardInterrupt):  # stopped after two answers, before any judging
            run_eval(cli.build_config(args), engine_factory=_stopping_factory(2))
        assert len(_predictions(out)) == 2 and not server.requests
        with caplog.at_level("INFO"):
            assert cli.main(args) == 0
        assert len(server.requests) == 4  # 3 answers, one retried
        assert len({p["id"] for p in _predictions(out)}) == len(_predictions(out)) == 3
        assert set(server.auth) == {f"Bearer {KEY}"} and {r["model"] for r in server.requests} == {"judge-1"}
        prompts = [r["messages"][0]["content"] for r in server.requests[1:]]
        preds = {p["id"]: p["prediction"] for p in _predictions(out)}
        assert all(any(p in prompt for prompt in prompts) for p in preds.values() if p)  # the model's answers reach the judge
        assert "The car is red." in prompts[0] and "Image content: car, road" in prompts[0]
        judgments = [json.loads(line) for line in (out / "judgments.jsonl").read_text().splitlines()]
        assert [j["rating"] for j in judgments] == [5, None, 2]
        m = _metrics(out)["scores"]
        assert m["score"] == pytest.approx(7 / 3) and m["hallucination_rate"] == pytest.approx(200 / 3) and m["unparsed"] == 1
        assert m == {**mmhal_scores([5, None, 2]), "question_type": m["question_type"], "judge_model": "judge-1"}
        assert m["question_type"]["attribute"]["score"] == 5.0 and m["question_type"]["adversarial"]["score"] == 0.0

        # a judgment lost and one cut off by a kill: a rerun asks the judge about those two only
        lines = (out / "judgments.jsonl").read_text().splitlines()
        (out / "judgments.jsonl").write_text(lines[0] + "\n" + lines[2][:15])
        before = len(server.requests)
        assert cli.main(args) == 0
        assert len(server.requests) == before + 2
        ids = [json.loads(line)["id"] for line in (out / "judgments.jsonl").read_text().splitlines()]
        assert sorted(ids) == ["000", "001", "002"] and _metrics(out)["scores"]["score"] == pytest.approx(7 / 3)
        # reviews by another judge model are not mixed in
        other = [("judge-2" if a == "judge-1" else a) for a in args]
        assert cli.main(other) == 2
        assert "holds reviews by judge-1, not judge-2" in capsys.readouterr().err

    # the key never reaches a file or a log
    texts = [p.read_text(errors="replace") for p in out.iterdir() if p.is_file()]
    assert all(KEY not in t for t in texts) and KEY not in caplog.text and KEY not in capsys.readouterr().err


def test_mmhal_needs_a_judge_and_its_key(tiny_vl, bench, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("GROUNDPO_TEST_JUDGE_KEY", raising=False)
    assert cli.main(_args("mmhal", tiny_vl, bench["mmhal"], tmp_path / "a")) == 2
    assert "--judge_model" in capsys.readouterr().err
    args = _args("mmhal", tiny_vl, bench["mmhal"], tmp_path / "b", "--judge_model", "j", "--judge_api_key_env", "GROUNDPO_TEST_JUDGE_KEY")
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert "GROUNDPO_TEST_JUDGE_KEY" in err and "not set" in err
    assert not (tmp_path / "b" / "predictions.jsonl").exists()  # checked before generating
