"""groundpo-data end to end. Each pipeline builds a dataset from media this test generates, through
a real HTTP endpoint (the scripted OpenAI-compatible server, driven by the official ``openai``
client) and tiny local transformers models built offline, and the dataset then trains for two
steps with the stage it was built for (``llamafactory-cli train`` on the tiny Qwen2.5-Omni), with
no edit: the stage's row checks run at start-up.

The scripted "models" answer from the media they receive where they can: the fake VLM reads the
colour of the frames or recognises the test images pixel for pixel, so a wrong frame or a swapped
image gives a wrong row. Some answers are malformed on purpose (they must land in rejects.jsonl
with their reason), some requests get 429/500 first (they must be retried).
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import BIN, assert_ok, run_cli, tiny_config, write_config
from PIL import Image

from groundpo.datagen.cli import main
from groundpo.datagen.media import mux
from groundpo.testing.chat_server import Fault, ScriptedChatServer, decoded_media, media_parts, message_text, schema_name
from groundpo.testing.demo_data import DIRECTION_PHRASES, SHAPE_OF_SOUND, SOUND_OF_SHAPE, SOUND_PHRASES
from groundpo.testing.media import COLOURS, shape_bbox, write_image, write_shape_video, write_tone_wav

pytestmark = pytest.mark.slow

KEY_ENV = "GROUNDPO_TEST_ENDPOINT_KEY"
KEY = "sk-groundpo-test-0123456789abcdef"
SHORT_SOUND = {"low_hum": "hum", "high_beeps": "beeps", "noise_bursts": "noise"}
# clip id: (shape, colour, direction, sound); c3's sound is not its shape's natural one
CLIPS = {
    "c0": ("circle", "red", "left_to_right", "low_hum"),
    "c1": ("square", "blue", "top_to_bottom", "high_beeps"),
    "c2": ("triangle", "green", "right_to_left", "noise_bursts"),
    "c3": ("circle", "yellow", "bottom_to_top", "high_beeps"),
}
BY_COLOUR = {colour: clip for clip, (_, colour, _, _) in CLIPS.items()}
RULES = {  # MoD-DPO Supp. B.1.2: (category, question modality) -> answer
    ("in-view sound source", "visual"): "Yes", ("in-view sound source", "audio"): "Yes", ("in-view sound", "audio"): "Yes",
    ("in-view silent object", "audio"): "No", ("out-of-view sound source", "visual"): "No", ("out-of-view sound", "visual"): "No",
}


def _common(server, out: Path, *extra: str) -> list[str]:
    return ["--output_dir", str(out), "--api_base", server.base_url, "--api_model", "scripted", "--api_key_env", KEY_ENV,
            "--retry_base_delay", "0.01", "--progress", "false", *extra]


def _rows(out: Path) -> list[dict]:
    return json.loads((out / "rows.json").read_text())


def _rejects(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "rejects.jsonl").read_text().splitlines()]


def _summary(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text())


def _train(tiny_omni, tmp_path: Path, stage: str, out: Path, dataset: str) -> list[dict]:
    """Two training steps of ``stage`` on the built dataset, through llamafactory-cli; the log lines."""
    run_dir = tmp_path / f"train-{stage}"
    cfg = tiny_config(tiny_omni, run_dir, stage=stage, dataset=dataset, dataset_dir=str(out), max_steps=2, save_strategy="no")
    assert_ok(run_cli(["train", str(write_config(tmp_path / f"train-{stage}.yaml", cfg))]))
    log = [json.loads(line) for line in (run_dir / "trainer_log.jsonl").read_text().splitlines()]
    return [line for line in log if "loss" in line]


def _no_secret_in(folder: Path) -> None:
    for path in folder.rglob("*"):
        if path.is_file():
            assert KEY.encode() not in path.read_bytes(), path


def _image_colour(part: dict) -> str:
    pixels = np.asarray(Image.open(io.BytesIO(decoded_media(part))).convert("RGB")).reshape(-1, 3).astype(float)
    bright = pixels[pixels.sum(1) > 120].mean(0)
    return min(COLOURS, key=lambda c: np.abs(np.asarray(COLOURS[c]) - bright).sum())


@pytest.fixture(scope="module", autouse=True)
def endpoint_key():
    os.environ[KEY_ENV] = KEY
    yield
    os.environ.pop(KEY_ENV, None)


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    """Four 2-second clips; c0-c2 carry their audio track, c3's audio is a separate file."""
    root = tmp_path_factory.mktemp("clips")
    entries = []
    for clip, (shape, colour, direction, sound) in CLIPS.items():
        video = write_shape_video(root / "raw" / f"{clip}.mp4", shape=shape, colour=colour, direction=direction, seconds=2, fps=8)
        wav = write_tone_wav(root / "raw" / f"{clip}.wav", kind=sound, seconds=2, sample_rate=16000)
        if clip == "c3":
            entries.append({"id": clip, "video": f"raw/{clip}.mp4", "audio": f"raw/{clip}.wav"})
        else:
            mux(video, wav, root / "av" / f"{clip}.mp4")
            entries.append({"id": clip, "video": f"av/{clip}.mp4"})
    (root / "clips.jsonl").write_text("".join(json.dumps(e) + "\n" for e in entries))
    # AudioCaps-style caption file and RAM++-style tags
    (root / "audio_captions.csv").write_text(
        "id,caption\n" + "".join(f"{c},I hear {SOUND_PHRASES[s]}.\n" for c, (_, _, _, s) in CLIPS.items())
    )
    (root / "tags.json").write_text(json.dumps([{"id": c, "tags": [shape, colour]} for c, (shape, colour, _, _) in CLIPS.items()]))
    return root


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    from groundpo.testing import tiny_vision

    root = tmp_path_factory.mktemp("tiny-vision")
    return {name: getattr(tiny_vision, f"build_tiny_{name}")(root / name) for name in ("clip", "dinov2", "owlvit", "sam", "tagger")}


# ---------------------------------------------------------------- mod_dpo
def mod_dpo_script():
    seen: dict[str, int] = {}

    def once(key: str) -> bool:
        seen[key] = seen.get(key, 0) + 1
        return seen[key] == 1

    def script(body):
        name, text = schema_name(body), message_text(body)
        if name is None:  # the visual caption: 2 s at 1 fps = 2 frames, described by their colour
            frames = media_parts(body, "image_url")
            assert len(frames) == 2 and not media_parts(body, "input_audio")
            clip = BY_COLOUR[_image_colour(frames[0])]
            if clip == "c1" and once("caption-c1"):
                return Fault(429, "slow down", retry_after=0)
            shape, colour, direction, _ = CLIPS[clip]
            return f"A {colour} {shape} moves {DIRECTION_PHRASES[direction]} on a black background."
        seen_text = text.split("What is seen:")[-1] if "What is seen:" in text else text
        colour = next(c for c in COLOURS if f"A {c} " in seen_text)
        shape = CLIPS[BY_COLOUR[colour]][0]
        sound = next(s for s, phrase in SOUND_PHRASES.items() if f"I hear {phrase}." in text)
        if name == "classify":
            if colour == "yellow":
                return "Sorry, I can only describe images."
            if colour == "red" and once("classify-red"):
                return Fault(500, "internal error")
            if SOUND_OF_SHAPE[shape] == sound:
                objects = [{"name": shape, "category": "in-view sound source"}, {"name": SHORT_SOUND[sound], "category": "In-view sound"}]
            else:
                objects = [{"name": shape, "category": "in-view silent object"},
                           {"name": SHAPE_OF_SOUND[sound], "category": "out-of-view sound source"},
                           {"name": SHORT_SOUND[sound], "category": "out-of-view sounds"}]
            if colour == "green":
                objects.append({"name": "background", "category": "in-view silent object"})
            return json.dumps({"objects": objects})
        if name == "verify":
            lines = re.findall(r"^(\d+)\. (.*)$", text, flags=re.M)
            return json.dumps({"verdicts": [{"index": int(i), "correct": "background" not in q, "reason": "not an object" if "background" in q else "ok"} for i, q in lines]})
        question = re.search(r'"(Is the .*?\?|Describe only the .*?\.)"', text).group(1)
        answer = re.search(r"The correct answer is: (Yes|No)\.", text)
        if answer:
            a = answer.group(1)
            return json.dumps({"chosen": f"{a}, going by the {'video' if 'visible' in question else 'audio'}.",
                               "rejected": f"{'No' if a == 'Yes' else 'Yes'}, as the other modality suggests."})
        if "audio" in question and colour == "blue" and once("audio-caption-blue"):
            return json.dumps({"chosen": "I hear beeps."})  # no "rejected": asked again
        if "video" in question:
            return json.dumps({"chosen": f"A {colour} {shape} moves.", "rejected": f"A {colour} {shape} moves and makes {SOUND_PHRASES[sound]}."})
        return json.dumps({"chosen": f"I hear {SOUND_PHRASES[sound]}.", "rejected": f"I hear the sound of a {shape}."})

    return script


def _mod_dpo_args(server, clips: Path, out: Path, *extra: str) -> list[str]:
    return ["mod_dpo", "--videos", str(clips / "clips.jsonl"), "--audio_captions", str(clips / "audio_captions.csv"),
            "--visual_tags", str(clips / "tags.json"), "--mismatch_ratio", "0.5", "--max_presence_questions", "4",
            *_common(server, out, *extra)]


def test_mod_dpo_builds_by_the_rules_resumes_after_a_kill_merges_shards_and_trains(clips, tiny_omni, tmp_path):
    full = tmp_path / "full"
    with ScriptedChatServer(mod_dpo_script()) as server:
        assert main(_mod_dpo_args(server, clips, full, "--concurrency", "4")) == 0
        assert set(server.auth) == {f"Bearer {KEY}"}
    rows, rejects, summary = _rows(full), _rejects(full), _summary(full)

    # every context: the video of one clip and the audio of one (other) clip, both recorded
    assert {r["video_source"] for r in rows} <= set(CLIPS) and any(r["mismatched"] for r in rows) and not all(r["mismatched"] for r in rows)
    for row in rows:
        assert (full / row["videos"][0]).is_file() and (full / row["audios"][0]).is_file()
        assert row["mismatched"] == (row["video_source"] != row["audio_source"]) == row["videos"][0].startswith("media/mux/")
        assert row["conversations"][0]["value"].startswith("<video><audio>") and row["modality"] in ("visual", "audio")
    # captioning: one visual and one audio row per context
    captions = [r for r in rows if r["task"] == "captioning"]
    assert sorted(r["conversations"][0]["value"][14:] for r in captions) == sorted(
        ["Describe only the video in detail.", "Describe only the audio in detail."] * 4)
    # presence: each object's category follows the context's sources, and the answer follows the category by the rules
    presence = [r for r in rows if r["task"] == "presence"]
    for row in presence:
        shape, sound = CLIPS[row["video_source"]][0], CLIPS[row["audio_source"]][3]
        natural = SOUND_OF_SHAPE[shape] == sound
        expected = {shape: "in-view sound source" if natural else "in-view silent object",
                    SHORT_SOUND[sound]: "in-view sound" if natural else "out-of-view sound",
                    SHAPE_OF_SOUND[sound]: "in-view sound source" if natural else "out-of-view sound source"}
        assert row["category"] == expected[row["object"]]
        answer = RULES[(row["category"], row["modality"])]
        assert row["chosen"]["value"].startswith(answer) and not row["rejected"]["value"].startswith(answer)
        question = row["conversations"][0]["value"]
        assert ("visible in the video" in question) == (row["modality"] == "visual")
    assert {r["category"] for r in presence} == set(c for c, _ in RULES)  # all five categories occur
    # malformed answers and failed verifications are in rejects.jsonl with their reasons; nothing else is
    by_reason = {}
    for reject in rejects:
        by_reason.setdefault(reject["reason"], []).append(reject)
    assert set(by_reason) == {"invalid_json", "verification_failed"}
    assert [r["item"] for r in by_reason["invalid_json"]] == ["c3"] and "Sorry, I can only describe" in by_reason["invalid_json"][0]["detail"]
    assert [(r["item"], r["question"]) for r in by_reason["verification_failed"]] == [("c2", "Is the background making sound in the audio?")]
    assert summary["rejects_by_reason"] == {"invalid_json": 1, "verification_failed": 1}
    assert summary["complete"] and summary["rows"] == len(rows) and summary["items_done"] == 4
    assert summary["retries"] == 2 and summary["tokens"]["total_tokens"] > 0  # the 429 and the 500

    # killed midway (SIGKILL while a request is in flight), then rerun: the same rows, each item once
    killed = tmp_path / "killed"
    with ScriptedChatServer(mod_dpo_script()) as server:
        server.hold_after(16)  # c0 takes 10 requests (one retried), c1 10: the kill comes inside c1
        proc = subprocess.Popen([str(BIN / "groundpo-data"), *_mod_dpo_args(server, clips, killed, "--concurrency", "1", "--progress", "true")],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"})
        assert server.wait_until_held()
        done_before = (killed / "progress" / "items.jsonl").read_text().count("\n")
        proc.kill()
        out, err = proc.communicate()
        server.release()
        assert proc.returncode == -9 and 1 <= done_before < 4
        assert b"mod_dpo:" in err and b"/4 [" in err  # its progress bar
        assert main(_mod_dpo_args(server, clips, killed, "--concurrency", "3")) == 0
    assert (killed / "rows.json").read_text() == (full / "rows.json").read_text()
    assert _rejects(killed) == rejects
    assert _summary(killed)["items_resumed"] == done_before
    ids = [json.loads(line)["id"] for line in (killed / "progress" / "items.jsonl").read_text().splitlines()]
    assert sorted(ids) == sorted(set(ids)) == sorted(CLIPS)
    assert KEY.encode() not in out + err
    _no_secret_in(full)
    _no_secret_in(killed)

    # two shards (as on two machines) joined by merge: the unsharded build's rows
    with ScriptedChatServer(mod_dpo_script()) as server:
        for i in (0, 1):
            assert main(_mod_dpo_args(server, clips, tmp_path / f"shard{i}", "--shard", f"{i}/2")) == 0
    assert {r["video_source"] for r in _rows(tmp_path / "shard1")} <= {"c1", "c3"}
    assert main(["merge", str(tmp_path / "shard1"), str(tmp_path / "shard0"), "--output_dir", str(tmp_path / "merged")]) == 0
    assert (tmp_path / "merged" / "rows.json").read_text() == (full / "rows.json").read_text()
    assert all((tmp_path / "merged" / r["videos"][0]).is_file() for r in _rows(tmp_path / "merged"))

    logs = _train(tiny_omni, tmp_path, "mod_dpo", killed, "groundpo_mod_dpo")
    assert len(logs) == 2 and all("mod/margin" in line for line in logs)


# ---------------------------------------------------------------- vtc
SHAPE_IMAGES = [("circle", "red", (18, 28)), ("circle", "blue", (38, 28)), ("square", "red", (28, 18)), ("square", "green", (28, 38)),
                ("triangle", "yellow", (20, 20)), ("triangle", "blue", (36, 36)), ("circle", "green", (28, 28)), ("square", "yellow", (24, 30))]


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("images")
    for k, (shape, colour, position) in enumerate(SHAPE_IMAGES):
        write_image(root / "imgs" / f"img{k}.png", shape=shape, colour=colour, position=position)
    return root


def _which_image(part: dict, folder: Path) -> int:
    pixels = np.asarray(Image.open(io.BytesIO(decoded_media(part))).convert("RGB"))
    matches = [k for k in range(len(SHAPE_IMAGES)) if np.array_equal(np.asarray(Image.open(folder / f"img{k}.png").convert("RGB")), pixels)]
    assert len(matches) == 1
    return matches[0]


def test_vtc_mines_clip_blind_pairs_asks_the_contrast_and_trains_jompo(images, tiny_models, tiny_omni, tmp_path):
    from groundpo.datagen.backends import ImageEmbedder
    from groundpo.datagen.media import load_image
    from groundpo.datagen.vtc import CONTRAST_TYPES

    pics = [load_image(images / "imgs" / f"img{k}.png") for k in range(len(SHAPE_IMAGES))]
    clip = ImageEmbedder(str(tiny_models["clip"]), "cpu").embed(pics)
    dino = ImageEmbedder(str(tiny_models["dinov2"]), "cpu").embed(pics)
    upper = np.triu_indices(len(pics), 1)
    ct, dt = float(np.quantile((clip @ clip.T)[upper], 0.3)), float(np.quantile((dino @ dino.T)[upper], 0.7))
    expected = {(i, j) for i, j in zip(*upper) if clip[i] @ clip[j] > ct and dino[i] @ dino[j] < dt}
    assert 4 <= len(expected) < len(upper[0])

    out = tmp_path / "vtc"
    opts = ["vtc", "--images", str(images / "imgs"), "--clip_model", str(tiny_models["clip"]), "--dino_model", str(tiny_models["dinov2"]),
            "--clip_threshold", str(ct), "--dino_threshold", str(dt), "--max_pairs_per_image", "8", "--block_size", "3", "--device", "cpu"]
    with ScriptedChatServer(lambda body: "unused") as server:
        assert main([*opts, *_common(server, out, "--limit", "0")]) == 0  # --limit 0: the search only
        assert not server.requests
    pairs = [json.loads(line) for line in (out / "pairs.jsonl").read_text().splitlines()]
    assert {(int(p["a"][3:-4]), int(p["b"][3:-4])) for p in pairs} == expected
    bad_pair = (int(pairs[0]["a"][3:-4]), int(pairs[0]["b"][3:-4]))

    def script(body):
        name = schema_name(body)
        a, b = (_which_image(p, images / "imgs") for p in media_parts(body, "image_url"))
        (sa, ca, pa), (sb, cb, pb) = SHAPE_IMAGES[a], SHAPE_IMAGES[b]
        if name == "contrast_type":
            kept = CONTRAST_TYPES[:-1] if (a, b) == bad_pair else CONTRAST_TYPES  # one type missing: malformed
            return json.dumps({"types": [{"type": t, "importance": 9 if t == "Color and Appearance" else 2, "importance_reason": "r",
                                          "hallucination_likelihood": 5, "likelihood_reason": "r"} for t in kept]})
        if name == "description":
            assert "Color and Appearance" in message_text(body)
            return json.dumps({"description_a": f"A {ca} {sa} near pixel {pa}.", "description_b": f"A {cb} {sb} near pixel {pb}."})
        return json.dumps({"question": "What colour and shape is it?", "answer_a": f"A {ca} {sa}.", "answer_b": f"A {cb} {sb}."})

    with ScriptedChatServer(script) as server:
        assert main([*opts, *_common(server, out, "--concurrency", "3")]) == 0
    rows, rejects = _rows(out), _rejects(out)
    assert [(r["item"], r["reason"]) for r in rejects] == [(f"{pairs[0]['a']}|{pairs[0]['b']}", "schema")]
    assert "missing ['Viewpoint and Perspective']" in rejects[0]["detail"]
    assert len(rows) == 2 * (len(pairs) - 1) and {r["task"] for r in rows} == {"description", "vqa"}
    for row in rows:
        a, b = (int(Path(s).stem[3:]) for s in row["image_sources"])
        (sa, ca, _), (sb, cb, _) = SHAPE_IMAGES[a], SHAPE_IMAGES[b]
        assert row["chosen"]["value"].startswith(f"A {ca} {sa}") and row["rejected"]["value"].startswith(f"A {cb} {sb}")
        assert (out / row["images"][0]).read_bytes() == (images / "imgs" / f"img{a}.png").read_bytes()
        assert (out / row["rejected_images"][0]).read_bytes() == (images / "imgs" / f"img{b}.png").read_bytes()
        assert row["contrast_type"] == "Color and Appearance" and row["clip_similarity"] > ct and row["dino_similarity"] < dt
    assert _summary(out)["requests"] == 3 * (len(pairs) - 1) + 3  # the malformed contrast answer was asked 3 times
    assert len(_train(tiny_omni, tmp_path, "jompo", out, "groundpo_vtc")) == 2


# ---------------------------------------------------------------- mfpo
def _mfpo_source(images: Path) -> Path:
    rows = []
    for k, (shape, colour, position) in enumerate(SHAPE_IMAGES[:6]):
        side = "left" if position[0] < 28 else "right"
        other = "blue" if colour != "blue" else "red"
        rows.append({"id": f"r{k}", "conversations": [{"from": "human", "value": "<image>Describe the image."}],
                     "chosen": {"from": "gpt", "value": f"A {colour} {shape} on the {side} of a black background."},
                     "rejected": {"from": "gpt", "value": f"A {other} {shape} on the {side} of a black background."},
                     "images": [f"imgs/img{k}.png"]})
    path = images / "mfpo_source.json"
    path.write_text(json.dumps(rows))
    return path


def test_mfpo_perturbs_the_keyword_regions_and_trains_mfpo(images, tiny_models, tiny_omni, tmp_path):
    source = _mfpo_source(images)

    def script(body):
        k = _which_image(media_parts(body, "image_url")[0], images / "imgs")
        keywords = json.loads(re.search(r"words, find the region of the image it refers to: (\[.*\])", message_text(body)).group(1))
        shape, _, position = SHAPE_IMAGES[k]
        if k == 4:
            return json.dumps({"regions": [{"keyword": keywords[0], "box": [1, 2, 3]}]})  # malformed box
        regions = [{"keyword": w, "box": (shape_bbox(shape, 56, position) if w == shape and k != 3 else None)} for w in keywords]
        return json.dumps({"regions": regions})

    out = tmp_path / "mfpo"
    with ScriptedChatServer(script) as server:
        assert main(["mfpo", "--source", str(source), "--grounder", "endpoint", "--segmenter_model", str(tiny_models["sam"]),
                     "--text_model", str(tiny_models["clip"]), "--topic_threshold", "0.999", "--top_k", "5", "--device", "cpu",
                     *_common(server, out)]) == 0
    rows, rejects = _rows(out), _rejects(out)
    assert [(r["item"], r["reason"]) for r in rejects] == [("r4", "schema")] and "4 numbers" in rejects[0]["detail"]
    assert [r["id"] for r in rows] == ["r0#0", "r1#0", "r2#0", "r3#0", "r5#0"]
    for row in rows:
        k = int(row["id"][1])
        shape, _, position = SHAPE_IMAGES[k]
        assert shape in row["keywords"]
        clean = np.asarray(Image.open(out / row["images"][0]).convert("RGB"))
        noisy = np.asarray(Image.open(out / row["rejected_images"][0]).convert("RGB"))
        changed = (clean != noisy).any(-1)
        if k == 3:  # no region found: the whole image is noised, and the row has no region
            assert "region" not in row and changed.mean() > 0.9 and row["regions"] == []
            continue
        x0, y0, x1, y1 = row["region"]
        bbox = shape_bbox(shape, 56, position)
        assert row["regions"] == [{"keyword": shape, "box": bbox}]
        assert bbox[0] <= x0 < x1 <= bbox[2] and bbox[1] <= y0 < y1 <= bbox[3]  # SAM's mask, kept inside the box
        outside = np.ones_like(changed)
        outside[y0:y1, x0:x1] = False
        assert not changed[outside].any() and changed.any()

    # the local text-prompted detector (tiny OWL-ViT): boxes inside the image, noise only inside them
    det = tmp_path / "mfpo-detector"
    assert main(["mfpo", "--source", str(source), "--detector_model", str(tiny_models["owlvit"]), "--box_threshold", "0.0",
                 "--limit", "2", "--device", "cpu", "--output_dir", str(det), "--progress", "false"]) == 0
    assert [r["id"] for r in _rows(det)] == ["r0#0", "r1#0"] and _summary(det)["items_in_source"] == 6  # --limit 2
    for row in _rows(det):
        changed = (np.asarray(Image.open(det / row["images"][0])) != np.asarray(Image.open(det / row["rejected_images"][0]))).any(-1)
        inside = np.zeros_like(changed)
        for region in row["regions"]:
            x0, y0, x1, y1 = region["box"]
            assert 0 <= x0 < x1 <= 56 and 0 <= y0 < y1 <= 56 and region["keyword"] in row["keywords"]
            inside[y0:y1, x0:x1] = True
        assert not changed[~inside].any() if row["regions"] else changed.mean() > 0.9
    assert len(_train(tiny_omni, tmp_path, "mfpo", out, "groundpo_mfpo")) == 2


# ---------------------------------------------------------------- acpo
def acpo_script(body):
    name, text = schema_name(body), message_text(body)
    if name is None:  # the audio endpoint (llamafactory-cli api style audio_url): a wav and no picture
        (part,) = media_parts(body, "audio_url")
        assert decoded_media(part)[:4] == b"RIFF" and not media_parts(body, "image_url")
        return "I hear short high beeps."
    if name == "decompose":
        colour = next(c for c in COLOURS if f"{c} " in text.lower())
        shape, _, _, sound = CLIPS[BY_COLOUR[colour]]
        if colour == "green":
            return "{'visual': broken"
        return json.dumps({"visual": f"A {colour} {shape} moves.", "audio": f"I hear {SOUND_PHRASES[sound]}.",
                           "audio_tags": [SHORT_SOUND[sound]], "joint": f"A {colour} {shape} moves while {SOUND_PHRASES[sound]} play."})
    heard = re.search(r"What is really heard: I hear (.*)\.", text).group(1)
    shape = re.search(r"What the picture shows: A \w+ (\w+) moves\.", text).group(1)
    return json.dumps({"chosen": f"I hear {heard}.", "rejected": f"I hear {SOUND_PHRASES[SOUND_OF_SHAPE[shape]]}."})


def test_acpo_keeps_only_swaps_whose_audio_differs_and_trains_acpo(clips, tiny_models, tiny_omni, tmp_path):
    captions = clips / "valor.jsonl"
    captions.write_text("".join(json.dumps({"id": c, "caption": f"A {col} {s} moves while {SOUND_PHRASES[snd]} play."}) + "\n"
                                for c, (s, col, _, snd) in CLIPS.items()))
    out = tmp_path / "acpo"
    with ScriptedChatServer(acpo_script) as server:
        assert main(["acpo", "--videos", str(clips / "clips.jsonl"), "--captions", str(captions), "--max_swap_tries", "3",
                     *_common(server, out, "--concurrency", "2")]) == 0
    rows, rejects = _rows(out), _rejects(out)
    # c2's decomposition stays malformed; c3 (a circle that beeps) can only swap with c0's hum, which is what a
    # circle looks like it should sound like: the visually implied answer is the true one, so no attribution pair
    assert [(r["item"], r["reason"], r.get("pair_type")) for r in rejects] == [("c2", "invalid_json", None), ("c3", "identical_answers", "output")]
    assert sorted((r["video_source"], r["pair_type"]) for r in rows) == sorted(
        [(c, t) for c in ("c0", "c1") for t in ("input", "output")] + [("c3", "input")])
    for row in rows:
        a, b = CLIPS[row["video_source"]], CLIPS[row["audio_source"]]
        assert a[3] != b[3] and row["audio_source"] != "c2" and row["audio_distance"] == 1.0  # curated: the sounds differ
        if row["pair_type"] == "output":
            assert row["audios"][0] == f"media/mux/{row['video_source']}__{row['audio_source']}.wav"
            assert row["chosen"]["value"] == f"I hear {SOUND_PHRASES[b[3]]}."
            assert row["rejected"]["value"] == f"I hear {SOUND_PHRASES[SOUND_OF_SHAPE[a[0]]]}."
        else:
            assert row["chosen"] == row["rejected"] and row["rejected_audios"][0].endswith(f"__{row['audio_source']}.wav")
            assert row["audios"][0] == f"media/audio/{row['video_source']}.wav"

    # two clips with the same sound: no swap passes the curation (text-embedding distance of the audio descriptions,
    # a local model); the audio captions come from the audio endpoint
    same = clips / "same_sound.jsonl"
    same.write_text(json.dumps({"id": "c1", "video": "av/c1.mp4"}) + "\n" + json.dumps({"id": "c3", "video": "raw/c3.mp4", "audio": "raw/c3.wav"}) + "\n")
    visual = clips / "visual.json"
    visual.write_text(json.dumps({c: f"A {CLIPS[c][1]} {CLIPS[c][0]} moves." for c in ("c1", "c3")}))
    with ScriptedChatServer(acpo_script) as server:
        assert main(["acpo", "--videos", str(same), "--visual_captions", str(visual), "--curation", "embedding",
                     "--text_model", str(tiny_models["clip"]), "--device", "cpu", "--audio_part", "audio_url",
                     *_common(server, tmp_path / "same")]) == 0
        assert len(media_parts(server.requests[0], "audio_url")) == 1
    same_rejects = _rejects(tmp_path / "same")
    assert [(r["item"], r["reason"]) for r in same_rejects] == [("c1", "audio_too_similar"), ("c3", "audio_too_similar")]
    assert "c3 (0.000)" in same_rejects[0]["detail"]  # the same description: distance 0
    assert _rows(tmp_path / "same") == []
    assert len(_train(tiny_omni, tmp_path, "acpo", out, "groundpo_acpo")) == 2


def test_a_local_tagger_tags_frames_for_stage_one(clips, tiny_models):
    from groundpo.datagen.backends import ImageTagger
    from groundpo.datagen.media import sample_frames
    from groundpo.testing.tiny_vision import TAG_LABELS

    frames = sample_frames(clips / "av" / "c0.mp4", 1.0)
    assert ImageTagger(str(tiny_models["tagger"]), "cpu", threshold=0.0, top_k=3).tags(frames) and set(
        ImageTagger(str(tiny_models["tagger"]), "cpu", threshold=0.0, top_k=3).tags(frames)) <= set(TAG_LABELS)
    assert ImageTagger(str(tiny_models["tagger"]), "cpu", threshold=1.01).tags(frames) == []


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
