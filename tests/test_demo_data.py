"""The committed demo data (``data/demo``) is reproducible, well-formed and follows its rules."""

from __future__ import annotations

import importlib.util
import json
import os
import wave
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from groundpo.testing import demo_data as dd
from groundpo.testing import media

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data"
DEMO = DATA / "demo"
N_FRAMES = round(dd.VIDEO_KWARGS["seconds"] * dd.VIDEO_KWARGS["fps"])
N_SAMPLES = round(dd.AUDIO_KWARGS["seconds"] * dd.AUDIO_KWARGS["sample_rate"])


def _rows(name: str) -> list[dict]:
    return json.loads((DEMO / name).read_text(encoding="utf-8"))


def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _decode_video(path: Path) -> list[np.ndarray]:
    import av

    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


def _read_wav(path: Path) -> tuple:
    with wave.open(str(path), "rb") as w:
        return w.getparams(), np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")


def _pcm(kind: str, seed: int) -> np.ndarray:
    samples = media.tone_samples(kind, seed=seed, **dd.AUDIO_KWARGS)
    return np.round(np.clip(samples, -1, 1) * 32767).astype("<i2")


# ------------------------------------------------------------------------------- reproducibility
def test_regenerating_reproduces_committed_demo_byte_for_byte(tmp_path):
    out = dd.make_demo_dataset(tmp_path / "demo", seed=0)
    fresh, committed = _files(out), _files(DEMO)
    assert sorted(fresh) == sorted(committed)
    different = [name for name in committed if fresh[name] != committed[name]]
    assert different == []


def test_video_bytes_do_not_depend_on_the_cpus_simd_extensions(tmp_path, monkeypatch):
    """Another CPU model must write the committed mp4s again: x264 without any SIMD (plain C, as on the
    most basic x86-64 CPU) gives the same bytes as x264 with every extension this CPU has."""
    if media.video_codec_name() != "libx264":
        pytest.fail("this PyAV build has no libx264; the committed demo videos are H.264")
    kwargs = {"shape": "circle", "colour": "red", "direction": "left_to_right", "seconds": 2.0, "fps": 8, "size": 56}
    native = media.write_shape_video(tmp_path / "native.mp4", **kwargs).read_bytes()
    monkeypatch.setattr(media, "X264_PARAMS", media.X264_PARAMS + ":asm=0")
    plain_c = media.write_shape_video(tmp_path / "plain_c.mp4", **kwargs).read_bytes()
    assert plain_c == native


def test_committed_dataset_info_registers_demo_entries():
    info = json.loads((DATA / "dataset_info.json").read_text(encoding="utf-8"))
    for name, entry in dd.demo_dataset_info().items():
        assert info[name] == entry
        assert (DATA / entry["file_name"]).is_file()


def test_demo_size_is_small():
    assert sum(len(b) for b in _files(DEMO).values()) < 2 * 1024 * 1024


def test_other_seed_changes_rows_and_cli_writes_and_registers(tmp_path):
    spec = importlib.util.spec_from_file_location("make_demo_data", ROOT / "scripts" / "make_demo_data.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    (tmp_path / "dataset_info.json").write_text('{"other": {"file_name": "x.json"}}')
    assert script.main(["--out", str(tmp_path / "demo"), "--seed", "1"]) == 0
    info = json.loads((tmp_path / "dataset_info.json").read_text())
    assert set(info) == {"other", *dd.DATASET_FILES}
    assert (tmp_path / "demo" / "mod_pref.json").read_bytes() != (DEMO / "mod_pref.json").read_bytes()
    assert dd.mod_dpo_specs(1) != dd.mod_dpo_specs(0)


@pytest.mark.parametrize("codec", ["auto", "mpeg4"])
def test_video_writer_is_bit_exact(tmp_path, monkeypatch, codec):
    if codec == "mpeg4":
        monkeypatch.setattr(media, "video_codec_name", lambda: "mpeg4")
    kwargs = {
        "shape": "triangle",
        "colour": "green",
        "direction": "right_to_left",
        "seconds": 0.5,
        "fps": 8,
        "size": 32,
    }
    a = media.write_shape_video(tmp_path / "a" / "v.mp4", **kwargs).read_bytes()
    b = media.write_shape_video(tmp_path / "b" / "v.mp4", **kwargs).read_bytes()
    assert a == b
    assert b"creation_time" not in a and b"Lavf" not in a and b"Lavc" not in a
    frames = _decode_video(tmp_path / "a" / "v.mp4")
    assert len(frames) == 4 and frames[0].shape == (32, 32, 3)


def test_image_and_wav_writers_are_deterministic(tmp_path):
    for sub in ("a", "b"):
        media.write_image(tmp_path / sub / "i.png", shape="square", colour="blue", position=(10, 20))
        for kind in media.SOUND_KINDS:
            media.write_tone_wav(tmp_path / sub / f"{kind}.wav", kind=kind, seconds=0.5, seed=7)
    assert _files(tmp_path / "a") == _files(tmp_path / "b")
    params, pcm = _read_wav(tmp_path / "a" / "silence.wav")
    assert (params.nchannels, params.sampwidth, params.framerate, len(pcm)) == (1, 2, 16000, 8000)
    assert not pcm.any()
    other = media.write_tone_wav(tmp_path / "c.wav", kind="noise_bursts", seconds=0.5, seed=8)
    assert other.read_bytes() != (tmp_path / "a" / "noise_bursts.wav").read_bytes()


def test_tones_have_the_described_pitch():
    sr = 16000

    def dominant(x):
        return np.argmax(np.abs(np.fft.rfft(x))) * sr / len(x)

    hum = media.tone_samples("low_hum", seconds=1.0)
    assert abs(dominant(hum) - 220) < 5
    beeps = media.tone_samples("high_beeps", seconds=1.0)
    assert abs(dominant(beeps) - 1000) < 20
    loud = np.flatnonzero(np.abs(beeps) > 1e-3)
    assert 1 + int((np.diff(loud) > 100).sum()) == 3  # three separate beeps
    rising = media.tone_samples("rising_tone", seconds=1.0)
    assert dominant(rising[: sr // 4]) < dominant(rising[-sr // 4 :])
    falling = media.tone_samples("falling_tone", seconds=1.0)
    assert dominant(falling[: sr // 4]) > dominant(falling[-sr // 4 :])


# ---------------------------------------------------------------------------------- bad arguments
def _video(path, **overrides):
    kwargs = {"shape": "circle", "colour": "red", "direction": "left_to_right", **overrides}
    return media.write_shape_video(path / "v.mp4", **kwargs)


@pytest.mark.parametrize(
    "call, bad",
    [
        (lambda p: _video(p, shape="hexagon"), "hexagon"),
        (lambda p: _video(p, colour="mauve"), "mauve"),
        (lambda p: _video(p, direction="sideways"), "sideways"),
        (lambda p: media.write_image(p / "i.png", shape="star", colour="red"), "star"),
        (lambda p: media.write_image(p / "i.png", shape="circle", colour="pink"), "pink"),
        (lambda p: media.write_tone_wav(p / "a.wav", kind="bark"), "bark"),
    ],
)
def test_unknown_values_raise_value_error_naming_them(tmp_path, call, bad):
    with pytest.raises(ValueError, match=bad):
        call(tmp_path)
    assert not any(tmp_path.rglob("*.*"))


def test_writers_create_parent_folders(tmp_path):
    assert media.write_image(tmp_path / "x" / "y" / "i.png", shape="circle", colour="red").is_file()
    wav = media.write_tone_wav(tmp_path / "z" / "a.wav", kind="silence", seconds=0.1)
    assert wav.is_file()


# ------------------------------------------------------------------------------------ MoD-DPO rows
def test_mod_dpo_counts_and_interleaving():
    specs, rows = dd.mod_dpo_specs(0), _rows("mod_pref.json")
    assert len(rows) == len(specs) >= 32
    modalities = [r["modality"] for r in rows]
    assert modalities == [s.modality for s in specs]
    assert modalities.count("visual") == modalities.count("audio") == 16
    assert modalities.count("audiovisual") == 8
    assert len(set(modalities[:5])) == 3  # interleaved, not grouped
    for modality in ("visual", "audio"):
        matched = [s.matched for s in specs if s.modality == modality]
        assert 0 < sum(matched) < len(matched)
    assert all(not s.matched for s in specs if s.modality == "audiovisual")
    for s in specs:
        assert s.matched == (s.sound == dd.SOUND_OF_SHAPE[s.shape])


def test_mod_dpo_row_format():
    for i, row in enumerate(_rows("mod_pref.json")):
        assert set(row) == {"conversations", "chosen", "rejected", "videos", "audios", "modality"}
        assert row["videos"] == [f"demo/media/mod_{i:03d}.mp4"]
        assert row["audios"] == [f"demo/media/mod_{i:03d}.wav"]
        (turn,) = row["conversations"]
        assert turn["from"] == "human" and turn["value"].startswith("<video><audio>")
        assert row["chosen"]["from"] == row["rejected"]["from"] == "gpt"
        for side in ("chosen", "rejected"):
            assert len(row[side]["value"].split()) <= 15


def test_mod_dpo_hard_negative_rule():
    phrases = dd.SOUND_PHRASES
    for s, row in zip(dd.mod_dpo_specs(0), _rows("mod_pref.json")):
        chosen, rejected = row["chosen"]["value"], row["rejected"]["value"]
        assert (chosen, rejected) == dd.mod_dpo_answers(s)
        assert chosen != rejected
        if s.modality == "visual":
            assert s.shape in chosen and not any(p in chosen for p in phrases.values())
            assert {"colour": s.colour, "shape": s.shape, "direction": s.direction.split("_")[0]}[s.topic] in chosen
            if s.matched:  # the sound itself, described as if seen
                assert phrases[s.sound] in rejected
            else:  # the shape the heard sound belongs to
                assert dd.SHAPE_OF_SOUND[s.sound] in rejected and s.shape not in rejected
        elif s.modality == "audio":
            assert phrases[s.sound] in chosen and s.shape not in chosen
            assert phrases[s.sound] not in rejected
            if s.matched:  # the visual content, described as if heard
                assert s.shape in rejected and s.colour in rejected
            else:  # the sound the visible shape belongs to
                assert phrases[dd.SOUND_OF_SHAPE[s.shape]] in rejected
        else:
            assert s.shape in chosen and phrases[s.sound] in chosen
            if s.swap == "visual":
                assert dd.SHAPE_OF_SOUND[s.sound] in rejected and phrases[s.sound] in rejected
            else:
                assert s.shape in rejected and phrases[dd.SOUND_OF_SHAPE[s.shape]] in rejected
    assert {s.swap for s in dd.mod_dpo_specs(0) if s.modality == "audiovisual"} == {"visual", "audio"}


def _centroid(frame: np.ndarray, colour: str) -> tuple[float, float]:
    target = np.asarray(media.COLOURS[colour], dtype=float)
    mask = np.abs(frame.astype(float) - target).sum(axis=-1) < 60
    assert mask.sum() > 20, f"no {colour} shape found"
    ys, xs = np.nonzero(mask)
    return xs.mean(), ys.mean()


def test_mod_dpo_media_show_and_play_what_the_spec_says():
    for s in dd.mod_dpo_specs(0):
        frames = _decode_video(DEMO / "media" / f"{s.stem}.mp4")
        assert len(frames) == N_FRAMES
        (x0, y0), (x1, y1) = _centroid(frames[0], s.colour), _centroid(frames[-1], s.colour)
        expected = {
            "left_to_right": x1 - x0,
            "right_to_left": x0 - x1,
            "top_to_bottom": y1 - y0,
            "bottom_to_top": y0 - y1,
        }[s.direction]
        assert expected > 20
        _, pcm = _read_wav(DEMO / "media" / f"{s.stem}.wav")
        assert np.array_equal(pcm, _pcm(s.sound, dd.sub_seed(0, s.stem)))


# ------------------------------------------------------------------------------------- all media
def test_every_referenced_media_file_exists_and_decodes():
    from PIL import Image

    referenced = set()
    for name in dd.DATASET_FILES.values():
        for row in _rows(name):
            for key in ("images", "rejected_images", "videos", "audios", "rejected_audios"):
                for rel in row.get(key, []):
                    assert rel.startswith("demo/media/")
                    referenced.add(rel)
    on_disk = {f"demo/media/{p.name}" for p in (DEMO / "media").iterdir()}
    assert referenced == on_disk
    for rel in sorted(referenced):
        path = DATA / rel
        if path.suffix == ".mp4":
            frames = _decode_video(path)
            assert len(frames) == N_FRAMES
            assert all(f.shape == (56, 56, 3) for f in frames)
        elif path.suffix == ".wav":
            params, pcm = _read_wav(path)
            assert (params.nchannels, params.sampwidth) == (1, 2)
            assert params.framerate == dd.AUDIO_KWARGS["sample_rate"] and len(pcm) == N_SAMPLES
        else:
            with Image.open(path) as im:
                assert im.format == "PNG" and im.size == (56, 56) and im.mode == "RGB"


# ---------------------------------------------------------------------------- JoMPO / MFPO / ACPO
def test_jompo_pairs_differ_in_one_attribute():
    from PIL import Image

    rows, specs = _rows("jompo_pref.json"), dd.jompo_specs(0)
    assert len(rows) == len(specs) == 16
    assert {s.attribute for s in specs} == {"colour", "shape", "position"}
    for i, (s, row) in enumerate(zip(specs, rows)):
        assert row["images"] == [f"demo/media/jompo_{i:03d}_w.png"]
        assert row["rejected_images"] == [f"demo/media/jompo_{i:03d}_l.png"]
        assert row["conversations"][0]["value"].startswith("<image>")
        assert (row["chosen"]["value"], row["rejected"]["value"]) == dd.jompo_answers(s)
        assert row["chosen"]["value"] != row["rejected"]["value"]
        w, lose = (s.shape_w, s.colour_w, s.position_w), (s.shape_l, s.colour_l, s.position_l)
        assert sum(a != b for a, b in zip(w, lose)) == 1
        pix_w = np.asarray(Image.open(DATA / row["images"][0]))
        assert _centroid(pix_w, s.colour_w) == pytest.approx(dd.position_centre(s.position_w), abs=4)


def test_mfpo_regions_and_perturbed_images():
    from PIL import Image

    rows, specs = _rows("mfpo_pref.json"), dd.mfpo_specs(0)
    assert len(rows) == 16
    assert sum("rejected_images" in r for r in rows) == 8
    for s, row in zip(specs, rows):
        assert (row["chosen"]["value"], row["rejected"]["value"]) == dd.mfpo_answers(s)
        assert s.hallucinated in row["rejected"]["value"] and s.hallucinated not in row["chosen"]["value"]
        x0, y0, x1, y1 = row["region"]
        assert 0 <= x0 < x1 <= 56 and 0 <= y0 < y1 <= 56
        pix = np.asarray(Image.open(DATA / row["images"][0]))
        ys, xs = np.nonzero(pix.any(axis=-1))
        assert [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1] == row["region"]
        if s.perturbed:
            noisy = np.asarray(Image.open(DATA / row["rejected_images"][0]))
            outside = np.ones((56, 56), bool)
            outside[y0:y1, x0:x1] = False
            assert np.array_equal(noisy[outside], pix[outside])
            assert not np.array_equal(noisy[y0:y1, x0:x1], pix[y0:y1, x0:x1])
        else:
            assert "rejected_images" not in row


def test_acpo_output_and_input_pairs():
    rows, specs = _rows("acpo_pref.json"), dd.acpo_specs(0)
    assert [r["pair_type"] for r in rows] == ["output", "input"] * 8
    for s, row in zip(specs, rows):
        assert s.aligned == dd.SOUND_OF_SHAPE[s.shape] != s.swapped
        assert s.swapped in dd.SHAPE_OF_SOUND
        chosen, rejected = row["chosen"]["value"], row["rejected"]["value"]
        _, heard = _read_wav(DATA / row["audios"][0])
        if s.pair_type == "output":
            assert "rejected_audios" not in row
            assert np.array_equal(heard, _pcm(s.swapped, dd.sub_seed(0, s.stem)))
            assert dd.SOUND_PHRASES[s.swapped] in chosen and dd.SOUND_PHRASES[s.aligned] in rejected
        else:
            assert chosen == rejected and dd.SOUND_PHRASES[s.aligned] in chosen and s.shape in chosen
            assert np.array_equal(heard, _pcm(s.aligned, dd.sub_seed(0, s.stem)))
            _, other = _read_wav(DATA / row["rejected_audios"][0])
            assert np.array_equal(other, _pcm(s.swapped, dd.sub_seed(0, f"{s.stem}_l")))


# ------------------------------------------------------------------------------- LLaMA-Factory
def test_llamafactory_reads_the_demo_datasets(tmp_path):
    import datasets
    from llamafactory.data.converter import get_dataset_converter
    from llamafactory.data.parser import get_dataset_list
    from llamafactory.hparams import DataArguments

    names = list(dd.DATASET_FILES)
    attrs = get_dataset_list(names, str(DATA))
    (mod,) = get_dataset_list(["demo_mod_dpo"], str(DATA))
    assert mod.ranking is True and mod.formatting == "sharegpt" and mod.load_from == "file"
    assert (mod.messages, mod.videos, mod.audios) == ("conversations", "videos", "audios")
    data_args = DataArguments(dataset_dir=str(DATA))
    for name, attr in zip(names, attrs):
        prompts = name in dd.PROMPT_DATASETS  # MBPO's online rows: a question and its reference answer
        assert attr.ranking is (not prompts) and attr.formatting == "sharegpt"
        ds = datasets.load_dataset(
            "json", data_files=str(DATA / attr.dataset_name), split="train", cache_dir=str(tmp_path)
        )
        converter = get_dataset_converter(attr.formatting, attr, data_args)
        for example in (ds[0], ds[1]):
            out = converter(example)
            assert [m["role"] for m in out["_prompt"]] == ["user"]
            assert len(out["_response"]) == (1 if prompts else 2)
            if prompts:
                assert example["answer"] in ("yes", "no", "A", "B", "C", "D")
            for key in ("_images", "_videos", "_audios"):
                for path in out[key] or []:
                    assert Path(path).is_file()


# ------------------------------------------------------------------------------------------ MBPO
def test_mbpo_rows_answer_what_their_media_show():
    """Online rows: the gold answer is true of the image / clip (yes/no both ways, options hold the
    answer); offline rows: the chosen answer describes the image, the rejected one the language prior."""
    import re

    from groundpo.rewards import gold_answer

    specs = dd.jompo_specs(0)
    answers = {"yes": 0, "no": 0, "choice": 0}
    for i, row in enumerate(_rows("mbpo_online.json")):
        s = specs[i]
        assert row["images"] == [f"demo/media/jompo_{i:03d}_w.png"]
        question = row["conversations"][0]["value"]
        if "options" in row:
            letter = gold_answer(row["answer"], row["options"])
            text = dict(o.split(". ", 1) for o in row["options"])[letter]
            assert text in (s.colour_w, s.shape_w) and text in question
            answers["choice"] += 1
        else:
            asked = re.search(r"Is (?:the shape|there a) (\w+)\?", question).group(1)
            assert (row["answer"] == "yes") == (asked in (s.colour_w, s.shape_w))
            answers[row["answer"]] += 1
    assert min(answers.values()) >= 4  # both yes and no answers, and multiple choice
    clips = [s for s in dd.mod_dpo_specs(0) if s.modality == "audio"][:8]
    for s, row in zip(clips, _rows("mbpo_omni_online.json")):
        assert row["videos"] == [f"demo/media/{s.stem}.mp4"] and row["audios"] == [f"demo/media/{s.stem}.wav"]
        question = row["conversations"][0]["value"]
        if "options" in row:
            assert dict(o.split(". ", 1) for o in row["options"])[row["answer"]] == dd.DIRECTION_PHRASES[s.direction]
        elif "hear" in question:
            assert (row["answer"] == "yes") == (dd.SOUND_PHRASES[s.sound] in question)
        else:
            assert (row["answer"] == "yes") == (f" {s.colour}?" in question)
    for spec, row in zip(dd.mfpo_specs(0), _rows("mbpo_offline.json")):
        chosen, rejected = row["chosen"]["value"], row["rejected"]["value"]
        assert spec.shape in chosen and spec.colour in chosen and chosen != rejected
        assert not (spec.shape in rejected and spec.colour in rejected)
    source = _rows("mbpo_source.json")
    assert len(source) == 8 and all((DATA / row["image"]).is_file() for row in source)
