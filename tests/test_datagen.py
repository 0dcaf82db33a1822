"""groundpo-data, piece by piece: the MoD-DPO yes/no rules, answers checked against schemas, retries
through a real HTTP server, the resumable store, the pair search, the keyword graph, the region
noise, muxing, options and input errors. (End-to-end builds + training: tests/test_datagen_e2e.py.)"""

from __future__ import annotations

import json
import math
import wave

import numpy as np
import pytest

from groundpo.datagen import PIPELINES, get_pipeline
from groundpo.datagen.backends import ChatBackend, Meter, RetryPolicy, extract_json, metered, validate_answer
from groundpo.datagen.cli import main
from groundpo.datagen.errors import FatalBackendError, InputError, Reject, TransientError
from groundpo.datagen.mod_dpo import CATEGORIES, Classification, ModDPOOptions, normalise_category, presence_qas
from groundpo.datagen.options import OptionError, build_options, parse_options
from groundpo.datagen.resume import JsonlStore, StoreError
from groundpo.datagen.runner import Item, select_items
from groundpo.testing.chat_server import Fault, ScriptedChatServer

# ---------------------------------------------------------------- MoD-DPO's yes/no rules (Supp. B.1.2), one test per category
VISUAL_Q = "Is the dog visible in the video?"
AUDIO_Q = "Is the dog making sound in the audio?"


def _qas(category: str) -> list[tuple[str, str, str]]:
    return [(qa.modality, qa.question, qa.answer) for qa in presence_qas("dog", category)]


def test_in_view_sound_source_is_visible_and_heard():
    assert _qas("in-view sound source") == [("visual", VISUAL_Q, "Yes"), ("audio", AUDIO_Q, "Yes")]


def test_in_view_sound_is_asked_only_about_the_audio_and_is_heard():
    assert _qas("in-view sound") == [("audio", AUDIO_Q, "Yes")]


def test_in_view_silent_object_is_asked_only_about_the_audio_and_is_not_heard():
    assert _qas("in-view silent object") == [("audio", AUDIO_Q, "No")]


def test_out_of_view_sound_source_is_asked_only_about_the_video_and_is_not_visible():
    assert _qas("out-of-view sound source") == [("visual", VISUAL_Q, "No")]


def test_out_of_view_sound_is_asked_only_about_the_video_and_is_not_visible():
    assert _qas("out-of-view sound") == [("visual", VISUAL_Q, "No")]


def test_category_spellings_of_endpoints_are_normalised_and_unknown_ones_rejected():
    assert normalise_category("In view sound-sources") == "in-view sound source"
    assert normalise_category("OUT_OF_VIEW_SOUNDS") == "out-of-view sound"
    assert [normalise_category(c) for c in CATEGORIES] == list(CATEGORIES)
    with pytest.raises(ValueError, match="unknown category 'background'"):
        normalise_category("background")
    with pytest.raises(Reject, match="objects.0.category"):
        validate_answer('{"objects": [{"name": "dog", "category": "nearby"}]}', Classification)


# ---------------------------------------------------------------- answers
def test_json_answers_are_found_in_fences_and_prose_and_malformed_ones_say_why():
    assert extract_json('```json\n{"a": 1}\n```') == {"a": 1}
    assert extract_json('Sure! Here it is: {"a": [1, 2]} Hope this helps.') == {"a": [1, 2]}
    with pytest.raises(Reject) as bad:
        extract_json("I cannot help with that.")
    assert bad.value.reason == "invalid_json" and "I cannot help" in bad.value.detail
    with pytest.raises(Reject) as missing:
        validate_answer('{"objects": [{"name": "dog"}]}', Classification)
    assert missing.value.reason == "schema" and "objects.0.category: Field required" in missing.value.detail


def _backend(server, **kw) -> ChatBackend:
    return ChatBackend(server.base_url, "m", "GROUNDPO_TEST_NO_KEY", retry=RetryPolicy(4, 0.01, 0.05), **kw)


def test_rate_limits_and_server_errors_are_retried_with_backoff_then_answered():
    replies = [Fault(429, retry_after=0), Fault(503), Fault(500), "fine"]
    with ScriptedChatServer(lambda body: replies.pop(0)) as server:
        meter = Meter()
        with metered(meter):
            assert _backend(server).complete([{"role": "user", "content": "hi"}]) == "fine"
    assert (meter.requests, meter.retries) == (4, 3)
    assert meter.total_tokens == meter.prompt_tokens + meter.completion_tokens > 0


def test_an_endpoint_that_stays_overloaded_is_a_transient_failure_and_a_refusal_is_fatal():
    with ScriptedChatServer(lambda body: Fault(429)) as server:
        with pytest.raises(TransientError, match="after 5 attempts"):
            _backend(server).complete([{"role": "user", "content": "hi"}])
    with ScriptedChatServer(lambda body: Fault(404, "model 'm' does not exist")) as server:
        with pytest.raises(FatalBackendError, match="HTTP 404.*does not exist"):
            _backend(server).complete([{"role": "user", "content": "hi"}])


def test_a_malformed_answer_is_asked_again_and_rejected_with_its_reason_when_it_stays_malformed():
    answers = ["not json", '{"objects": [{"name": "dog", "category": "in-view sound"}]}']
    with ScriptedChatServer(lambda body: answers.pop(0)) as server:
        got = _backend(server, answer_retries=1).ask_json([{"role": "user", "content": "x"}], Classification, "classify")
        assert got.objects[0].category == "in-view sound" and len(server.requests) == 2
        assert server.requests[0]["response_format"]["json_schema"]["name"] == "classify"
    with ScriptedChatServer(lambda body: '{"objects": "none"}') as server:
        with pytest.raises(Reject) as rejected:
            _backend(server, answer_retries=2).ask_json([{"role": "user", "content": "x"}], Classification, "classify")
        assert len(server.requests) == 3
    assert rejected.value.reason == "schema" and rejected.value.detail.startswith("classify: objects:")
    assert rejected.value.as_record()["request"] == "classify"


def test_media_travel_inline_as_the_server_expects(tmp_path):
    import io

    from PIL import Image

    from groundpo.datagen.backends import audio_part, image_part
    from groundpo.testing.chat_server import decoded_media, media_parts
    from groundpo.testing.media import write_image, write_tone_wav

    wav = write_tone_wav(tmp_path / "a.wav", kind="high_beeps", seconds=0.5)
    png = write_image(tmp_path / "i.png", shape="square", colour="blue", size=64)
    parts = [image_part(png, max_side=32), audio_part(wav), audio_part(wav, "audio_url"), {"type": "text", "text": "?"}]
    with ScriptedChatServer(lambda body: "ok") as server:
        assert _backend(server).complete([{"role": "user", "content": parts}]) == "ok"
        (body,) = server.requests
    (image,) = media_parts(body, "image_url")
    assert Image.open(io.BytesIO(decoded_media(image))).size == (32, 32)  # longest side capped
    assert decoded_media(media_parts(body, "input_audio")[0]) == wav.read_bytes()
    assert decoded_media(media_parts(body, "audio_url")[0]) == wav.read_bytes()
    assert media_parts(body, "audio_url")[0]["audio_url"]["url"].startswith("data:audio/wav;base64,")


# ---------------------------------------------------------------- resume store, selection
def test_store_drops_a_line_cut_by_a_kill_keeps_first_records_and_appends_cleanly(tmp_path):
    path = tmp_path / "items.jsonl"
    path.write_text('{"id": "a", "n": 1}\n{"id": "a", "n": 2}\n{"id": "b", "n": 3}\n{"id": "c", "n"')
    store = JsonlStore(path)
    assert store.dropped_tail and [r["n"] for r in store] == [1, 3]
    assert not store.append({"id": "b", "n": 9})
    assert store.append({"id": "c", "n": 4})
    assert [json.loads(line)["id"] for line in path.read_text().splitlines()] == ["a", "a", "b", "c"]
    assert [r["n"] for r in JsonlStore(path)] == [1, 3, 4]
    path.write_text('{"id": "a"}\nnot json\n{"id": "b"}\n')
    with pytest.raises(StoreError, match="line 2 is not a record"):
        JsonlStore(path)


def test_two_builds_never_write_to_one_output_folder(tmp_path):
    from groundpo.datagen.resume import RunLock

    with RunLock(tmp_path):
        with pytest.raises(StoreError, match="another groundpo-data run is writing to"):
            with RunLock(tmp_path):
                pass
    with RunLock(tmp_path):  # released: the next run gets it
        pass


def test_shards_partition_the_items_in_source_order_and_limit_takes_the_first_ones():
    items = [Item(f"i{k}") for k in range(7)]
    shards = [select_items(items, (i, 3), None) for i in range(3)]
    assert sorted(index for shard in shards for index, _ in shard) == list(range(7))
    assert [index for index, _ in shards[1]] == [1, 4]
    assert [item.id for _, item in select_items(items, (0, 3), 2)] == ["i0", "i3"]
    with pytest.raises(InputError, match="share the id 'x'.*positions 0 and 2"):
        select_items([Item("x"), Item("y"), Item("x")], (0, 1), None)


# ---------------------------------------------------------------- VTC's pair search
def _brute_force(clip, dino, ct, dt):
    n = len(clip)
    return {(i, j) for i in range(n) for j in range(i + 1, n) if clip[i] @ clip[j] > ct and dino[i] @ dino[j] < dt}


def test_block_search_finds_exactly_the_clip_blind_pairs():
    from groundpo.datagen.vtc import mine_pairs

    rng = np.random.default_rng(0)
    base = rng.standard_normal((6, 8))
    clip = np.repeat(base, 5, axis=0) + 0.15 * rng.standard_normal((30, 8))  # 6 groups of CLIP-near images
    dino = rng.standard_normal((30, 8))
    clip /= np.linalg.norm(clip, axis=1, keepdims=True)
    dino /= np.linalg.norm(dino, axis=1, keepdims=True)
    for ct, dt in ((0.95, 0.6), (0.9, 0.2), (0.99, 0.0)):
        pairs = mine_pairs(clip, dino, ct, dt, block_size=7, top_k=30, max_pairs_per_image=30)
        assert {(i, j) for i, j, _, _ in pairs} == _brute_force(clip, dino, ct, dt)
        assert all(cv > ct and dv < dt for _, _, cv, dv in pairs)
    assert len(_brute_force(clip, dino, 0.95, 0.6)) > 6  # images in several pairs
    once = mine_pairs(clip, dino, 0.95, 0.6, block_size=7, top_k=30, max_pairs_per_image=1)
    used = [k for i, j, _, _ in once for k in (i, j)]
    assert len(used) == len(set(used)) and once == sorted(once)
    best = max(_brute_force(clip, dino, 0.95, 0.6), key=lambda p: clip[p[0]] @ clip[p[1]] - dino[p[0]] @ dino[p[1]])
    assert best in {(i, j) for i, j, _, _ in once}  # the largest CLIP-DINOv2 gap is taken first


# ---------------------------------------------------------------- MFPO's keyword graph and region noise
def test_keyword_graph_edges_follow_the_positional_weight_and_skip_words_of_one_topic():
    from groundpo.datagen.mfpo import KeywordSettings, keyword_graph

    settings = KeywordSettings(phi=1.0, gamma=1.0, lam=0.0, context=0.0)
    graph = keyword_graph("A red circle and a red square, two circles.", settings=settings)
    # tokens: a(1) red(2) circle(3) and(4) a(5) red(6) square(7) two(8) circles(9)
    assert graph.nodes["red"]["positions"] == [2, 6]
    assert graph.nodes["circle"]["topic"] == graph.nodes["circles"]["topic"]  # one topic: no edge inside it
    assert not graph.has_edge("circle", "circles") and not graph.has_edge("circles", "circle")
    theta = 1 / (1 + 1) + 1 / (1 + 3)  # red (2, 6) - circle (3)
    assert graph["circle"]["red"]["weight"] == pytest.approx(theta)
    assert graph["red"]["square"]["weight"] == pytest.approx(1 / (1 + 5) + 1 / (1 + 1))
    decayed = keyword_graph("A red circle and a red square.", settings=KeywordSettings(lam=0.5, context=0.0))
    assert decayed["circle"]["red"]["weight"] == pytest.approx((theta + 0.0) * math.exp(-0.5 * 2))  # κ of red (first at 2)


def test_keywords_rank_by_weighted_pagerank_one_per_topic():
    import networkx as nx

    from groundpo.datagen.mfpo import KeywordSettings, keyword_graph, rank_keywords

    text = "A brown dog sits on a wooden bench next to a small dog bowl; the dog looks at the bench."
    ranked = rank_keywords(text, 3)
    assert [w for w, _ in ranked][:2] == ["dog", "bench"]
    graph = keyword_graph(text, settings=KeywordSettings())
    scores = nx.pagerank(graph, alpha=0.85, weight="weight")
    assert [s for _, s in ranked] == sorted((scores[w] for w, _ in ranked), reverse=True)
    # the semantic term: with embeddings that make "dog" and "puppy" one topic only one of them is kept
    vocab = {"dog": [1, 0], "puppy": [0.99, 0.14], "bench": [0, 1]}
    embed = lambda words: np.array([vocab.get(w, [-1.0, 0.0]) for w in words], dtype=float)  # noqa: E731
    words = [w for w, _ in rank_keywords("The dog and the puppy near the bench", 3, embed)]
    assert len({"dog", "puppy"} & set(words)) == 1 and "bench" in words


def test_region_noise_changes_only_the_region_and_the_whole_image_without_one():
    from groundpo.corruption import vcd_alpha_bar
    from groundpo.datagen.mfpo import diffusion_perturb

    pixels = np.full((20, 30, 3), 200, dtype=np.uint8)
    mask = np.zeros((20, 30), dtype=bool)
    mask[5:10, 8:20] = True
    out = diffusion_perturb(pixels, mask, 500, seed=7)
    assert np.array_equal(out[~mask], pixels[~mask]) and (out[mask] != pixels[mask]).mean() > 0.9
    assert np.array_equal(out, diffusion_perturb(pixels, mask, 500, seed=7))
    whole = diffusion_perturb(np.full((100, 100, 3), 200, np.uint8), None, 500, seed=7).astype(float) / 127.5 - 1
    # x_t = √ᾱ·x0 + √(1-ᾱ)·ε clipped to [-1, 1]: the mean of a normal clipped at ±1
    mu, sigma = math.sqrt(vcd_alpha_bar(500)) * (200 / 127.5 - 1), math.sqrt(1 - vcd_alpha_bar(500))
    cdf = lambda z: 0.5 * (1 + math.erf(z / math.sqrt(2)))  # noqa: E731
    pdf = lambda z: math.exp(-z * z / 2) / math.sqrt(2 * math.pi)  # noqa: E731
    a, b = (-1 - mu) / sigma, (1 - mu) / sigma
    expected = -cdf(a) + (1 - cdf(b)) + mu * (cdf(b) - cdf(a)) + sigma * (pdf(a) - pdf(b))
    assert whole.mean() == pytest.approx(expected, abs=0.01)  # 30000 draws: the standard error is 0.003
    assert (whole != 200 / 127.5 - 1).mean() > 0.95


# ---------------------------------------------------------------- media
def test_mux_keeps_one_clip_video_and_puts_the_other_clip_audio_under_it(tmp_path):
    from groundpo.datagen.media import extract_audio, mux, read_audio, sample_frames, video_duration
    from groundpo.testing.media import write_shape_video, write_tone_wav

    video = write_shape_video(tmp_path / "v.mp4", shape="circle", colour="red", direction="left_to_right", seconds=3, fps=8)
    wav = extract_audio(write_tone_wav(tmp_path / "b.wav", kind="high_beeps", seconds=5, sample_rate=8000), tmp_path / "b16.wav")
    out = mux(video, wav, tmp_path / "mux" / "v__b.mp4")
    assert video_duration(out) == pytest.approx(3.0)
    assert [f.tobytes() for f in sample_frames(out, 1.0)] == [f.tobytes() for f in sample_frames(video, 1.0)]
    heard, source = read_audio(out).astype(float), read_audio(wav).astype(float)
    assert len(heard) == pytest.approx(3 * 16000, abs=1100)  # cut to the video (AAC adds one frame of priming)
    best = max(np.corrcoef(heard[k : k + 16000], source[:16000])[0, 1] for k in range(0, 2100))
    assert best > 0.99
    assert len(sample_frames(video, 1.0)) == 3 and len(sample_frames(video, 2.0)) == 6
    with wave.open(str(wav)) as w:
        assert (w.getframerate(), w.getnchannels()) == (16000, 1)


# ---------------------------------------------------------------- options and bad input
def test_options_from_yaml_and_command_line_with_errors_that_name_the_option(tmp_path):
    cfg = tmp_path / "build.yaml"
    cfg.write_text("videos: clips\noutput_dir: out\nmismatch_ratio: 0.5\ntasks: [captioning]\n")
    options = parse_options(ModDPOOptions, [str(cfg), "--mismatch_ratio", "0.25", "--verify", "false"], prog="t")
    assert (options.mismatch_ratio, options.tasks, options.verify, options.shard) == (0.25, ["captioning"], False, "0/1")
    assert "api_key" not in json.dumps(options.fingerprint()) or "api_key_env" not in options.fingerprint()
    with pytest.raises(OptionError, match="--shard must look like i/N"):
        build_options(ModDPOOptions, {"videos": "v", "output_dir": "o", "shard": "2"})
    with pytest.raises(OptionError, match=r"--shard '3/3': need N >= 1 and 0 <= i < N"):
        build_options(ModDPOOptions, {"videos": "v", "output_dir": "o", "shard": "3/3"})
    with pytest.raises(OptionError, match="--concurrency: expected an integer, got 'many'"):
        build_options(ModDPOOptions, {"videos": "v", "output_dir": "o", "concurrency": "many"})
    with pytest.raises(OptionError, match="missing required option.*--videos"):
        build_options(ModDPOOptions, {"output_dir": "o"})
    cfg.write_text("videos: clips\noutput_dir: out\nmismatch_rate: 0.5\n")
    with pytest.raises(OptionError, match="unknown option.*mismatch_rate"):
        parse_options(ModDPOOptions, [str(cfg)], prog="t")
    with pytest.raises(OptionError, match="--tasks: unknown summaries"):
        build_options(ModDPOOptions, {"videos": "v", "output_dir": "o", "tasks": "captioning,summaries"})


def test_bad_input_stops_before_any_request_and_names_the_item_field_and_path(tmp_path, capsys):
    from groundpo.testing.media import write_shape_video

    write_shape_video(tmp_path / "a.mp4", shape="circle", colour="red", direction="left_to_right", seconds=1)
    listing = tmp_path / "clips.jsonl"
    listing.write_text('{"id": "a", "video": "a.mp4"}\n{"id": "b", "video": "gone.mp4"}\n{"id": "c"}\n')
    with ScriptedChatServer(lambda body: "x") as server:
        code = main(["mod_dpo", "--videos", str(listing), "--output_dir", str(tmp_path / "out"),
                     "--api_base", server.base_url, "--api_model", "m", "--progress", "false"])
        assert code == 2 and not server.requests
    assert "clips.jsonl:3: field 'video' missing" in capsys.readouterr().err
    listing.write_text('{"id": "a", "video": "a.mp4"}\n{"id": "b", "video": "gone.mp4"}\n')
    assert main(["mod_dpo", "--videos", str(listing), "--output_dir", str(tmp_path / "out"), "--progress", "false"]) == 2
    assert f"clip 'b' video: {tmp_path / 'gone.mp4'}" in capsys.readouterr().err
    captions = tmp_path / "captions.json"
    captions.write_text(json.dumps({"sentences": [{"video_id": "a", "caption": "a red circle"}]}))
    listing.write_text('{"id": "a", "video": "a.mp4"}\n{"id": "z", "video": "a.mp4"}\n')
    assert main(["mod_dpo", "--videos", str(listing), "--visual_captions", str(captions), "--output_dir",
                 str(tmp_path / "out"), "--progress", "false"]) == 2
    assert "--visual_captions: no entry for 1 clip(s): 'z'" in capsys.readouterr().err
    assert main(["mod_dpo", "--videos", str(listing), "--output_dir", str(tmp_path / "out2"), "--progress", "false"]) == 2
    err = capsys.readouterr().err  # the endpoints are checked before any item starts
    assert "give --vision_api_base / --vision_api_model (or --api_base / --api_model)" in err


def test_a_corrupt_clip_is_rejected_with_its_path_the_others_are_built_and_unreported_tokens_are_said(tmp_path, capsys):
    from groundpo.datagen.media import mux
    from groundpo.testing.media import write_shape_video, write_tone_wav

    video = write_shape_video(tmp_path / "v.mp4", shape="circle", colour="red", direction="left_to_right", seconds=1)
    mux(video, write_tone_wav(tmp_path / "a.wav", kind="low_hum", seconds=1, sample_rate=16000), tmp_path / "clips" / "good.mp4")
    (tmp_path / "clips" / "bad.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 not really a video")
    for kind in ("visual", "audio"):
        (tmp_path / f"{kind}.json").write_text(json.dumps({"good": f"{kind} of good", "bad": f"{kind} of bad"}))
    pair = json.dumps({"chosen": "A red circle moves.", "rejected": "A red circle hums."})
    with ScriptedChatServer(lambda body: pair, report_usage=False) as server:
        code = main(["mod_dpo", "--videos", str(tmp_path / "clips"), "--visual_captions", str(tmp_path / "visual.json"),
                     "--audio_captions", str(tmp_path / "audio.json"), "--tasks", "captioning", "--mismatch_ratio", "0", "--output_dir", str(tmp_path / "out"),
                     "--api_base", server.base_url, "--api_model", "m", "--progress", "false"])
    assert code == 0
    rejects = [json.loads(line) for line in (tmp_path / "out" / "rejects.jsonl").read_text().splitlines()]
    assert [(r["item"], r["reason"]) for r in rejects] == [("bad", "unreadable_media")]
    assert str(tmp_path / "clips" / "bad.mp4") in rejects[0]["detail"]
    rows = json.loads((tmp_path / "out" / "rows.json").read_text())
    assert [r["id"] for r in rows] == ["good#0", "good#1"]
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["tokens"] is None and summary["answers_without_usage"] == 2
    assert "tokens:     not reported by the endpoint" in capsys.readouterr().out
    # resuming with options that change the data (or another shard) is refused, naming what changed
    base = ["mod_dpo", "--videos", str(tmp_path / "clips"), "--visual_captions", str(tmp_path / "visual.json"),
            "--audio_captions", str(tmp_path / "audio.json"), "--tasks", "captioning", "--output_dir", str(tmp_path / "out")]
    assert main([*base, "--mismatch_ratio", "0.5"]) == 2
    assert "mismatch_ratio: was 0.0, now 0.5" in capsys.readouterr().err
    assert main([*base, "--mismatch_ratio", "0", "--shard", "1/2"]) == 2
    assert "shard: was '0/1', now '1/2'" in capsys.readouterr().err


def test_every_pipeline_is_registered_with_its_stage_and_help(capsys):
    assert main(["list"]) == 0
    listing = capsys.readouterr().out
    stages = {name: get_pipeline(name).stage for name in PIPELINES}
    assert stages == {"mod_dpo": "mod_dpo", "vtc": "jompo", "mfpo": "mfpo", "acpo": "acpo", "mbpo": "mbpo"}
    assert all(name in listing for name in PIPELINES)
    with pytest.raises(SystemExit):
        main(["vtc", "--help"])
    assert "--clip_threshold" in capsys.readouterr().out
    assert main(["nonsense"]) == 2


def test_prompt_files_can_be_replaced_and_a_wrong_placeholder_names_the_file(tmp_path):
    from groundpo.datagen.prompts import PromptBook

    book = PromptBook("mod_dpo")
    text = book.messages("classify", visual="a dog", audio="barking", categories="- x")[-1]["content"]
    assert "a dog" in text and "barking" in text
    (tmp_path / "classify.txt").write_text("[user]\nSort $things please.\n")
    with pytest.raises(InputError, match=r"classify.txt: unknown placeholder \$things"):
        PromptBook("mod_dpo", str(tmp_path)).render("classify", visual="", audio="", categories="")
    (tmp_path / "classify.txt").write_text("[system]\nBe brief.\n[user]\nSee: $visual; hear: $audio\n")
    replaced = PromptBook("mod_dpo", str(tmp_path))
    assert replaced.messages("classify", visual="v", audio="a", categories="")[0] == {"role": "system", "content": "Be brief."}
    assert replaced.fingerprint() != book.fingerprint()


def test_tag_distance_ignores_case_and_plurals():
    from groundpo.datagen.acpo import tag_distance

    assert tag_distance(["Dog barks", "engine"], ["dog barks", "Engines"]) == 0.0
    assert tag_distance(["speech"], ["music"]) == 1.0
    assert tag_distance(["speech", "music"], ["music"]) == 0.5
    assert tag_distance([], []) == 0.0


def test_every_option_the_docs_pass_to_groundpo_data_exists():
    """docs/data.md and the README: each --option of a groundpo-data command is an option of that pipeline."""
    import dataclasses
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    known = {name: {f.name for f in dataclasses.fields(get_pipeline(name).options_class)} for name in PIPELINES}
    known["merge"] = {"output_dir", "allow_partial"}
    checked = 0
    for doc in (root / "docs" / "data.md", root / "README.md"):
        text = doc.read_text(encoding="utf-8")
        assert "docs/data.md" in text or doc.name == "data.md"
        for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
            command = None
            for line in block.replace("\\\n", " ").splitlines():
                found = re.search(r"groundpo-data (\w+)", line)
                if not found:
                    continue
                command = found.group(1)
                options = re.findall(r"--(\w+)", line[found.end():].split("#")[0])
                if command in known:
                    unknown = set(options) - known[command] - {"help"}
                    assert not unknown, f"{doc.name}: groundpo-data {command} has no option(s) {sorted(unknown)}"
                    checked += len(options)
    assert checked > 40  # the parser found the commands
    for name in PIPELINES:  # one section per pipeline with its paper-scale command
        assert f"## `{name}`" in (root / "docs" / "data.md").read_text()
