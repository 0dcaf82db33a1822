"""Tiny benchmark folders in each official layout, with generated media (no download).

For tests and demos: ``write_benchmark("avhbench", folder)`` writes a handful of items in the
exact file format of the real benchmark, with 56x56 px, 1-2 s videos (MPEG-4 with an AAC track,
written with PyAV), 16 kHz WAV files and PNG frames. The answers are arbitrary: the point is to
exercise readers, the engine, resuming and scoring end to end, e.g. on the tiny model of
:func:`groundpo.testing.tiny_omni.build_tiny_omni`::

    from groundpo.eval.synthetic import write_all
    folders = write_all("/tmp/bench")      # {"avhbench": Path(...), "cmm": ..., ...}

Everything is deterministic (seeded), so two calls write the same annotations and pixels.
"""

from __future__ import annotations

import fractions
import json
import os
import wave
from pathlib import Path

import numpy as np

__all__ = ["SYNTHETIC_BENCHMARKS", "write_all", "write_benchmark", "write_frames", "write_video", "write_wav"]


def write_video(
    path: str | os.PathLike,
    seconds: float = 1.0,
    fps: int = 4,
    size: int = 56,
    audio: bool = True,
    freq: float = 440.0,
    seed: int = 0,
    sample_rate: int = 16000,
) -> Path:
    """An MPEG-4 video of a coloured bar sweeping right, with a sine tone as AAC audio."""
    import av

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    colour = (64 + 191 * rng.random(3)).astype(np.uint8)
    n = max(2, round(seconds * fps))
    with av.open(str(path), "w") as container:
        vstream = container.add_stream("mpeg4", rate=fps)
        vstream.width = vstream.height = size
        vstream.pix_fmt = "yuv420p"
        astream = None
        if audio:
            astream = container.add_stream("aac", rate=sample_rate)
            astream.layout = "mono"
        for i in range(n):
            img = np.zeros((size, size, 3), np.uint8)
            img[:, : max(1, (i + 1) * size // n)] = colour
            for packet in vstream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in vstream.encode():
            container.mux(packet)
        if astream is not None:
            t = np.arange(int(seconds * sample_rate)) / sample_rate
            signal = (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)
            pts = 0
            for start in range(0, len(signal), 1024):
                chunk = signal[start : start + 1024]
                frame = av.AudioFrame.from_ndarray(chunk[None, :], format="flt", layout="mono")
                frame.sample_rate = sample_rate
                frame.pts = pts
                frame.time_base = fractions.Fraction(1, sample_rate)
                pts += len(chunk)
                for packet in astream.encode(frame):
                    container.mux(packet)
            for packet in astream.encode():
                container.mux(packet)
    return path


def write_wav(path: str | os.PathLike, seconds: float = 1.0, freq: float = 440.0, sample_rate: int = 16000) -> Path:
    """A 16-bit mono WAV with a sine tone."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    pcm = (0.3 * 32767 * np.sin(2 * np.pi * freq * t)).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(pcm.tobytes())
    return path


def write_frames(folder: str | os.PathLike, n: int = 6, size: int = 56, seed: int = 0) -> Path:
    """``n`` PNG frames ``00001.png`` ... (a frame folder, as MVBench's tvqa frames)."""
    from PIL import Image

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        img = (rng.random((size, size, 3)) * 255).astype(np.uint8)
        Image.fromarray(img).save(folder / f"{i + 1:05d}.png")
    return folder


def _dump(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def _avhbench(root: Path) -> None:
    qa = []
    for k, vid in enumerate(("00001", "00002")):
        write_video(root / "videos" / f"{vid}.mp4", freq=330 + 220 * k, seed=k)
        if k == 0:  # one video with a separate audio file, one with only its own track
            write_wav(root / "audios" / f"{vid}.wav", freq=330)
        qa += [
            {"video_id": vid, "task": "Audio-driven Video Hallucination", "text": "Is the red circle visible in the video?", "label": "Yes" if k == 0 else "No"},
            {"video_id": vid, "task": "Video-driven Audio Hallucination", "text": "Is the dog making sound in the audio?", "label": "No" if k == 0 else "Yes"},
            {"video_id": vid, "task": "AV Matching", "text": "Are the contexts of audio and visual content matching?", "label": "Yes" if k == 0 else "No"},
            {"video_id": vid, "task": "AV Captioning", "text": "Describe what you see and hear in a single sentence.", "label": "A coloured bar moves right while a tone plays."},
        ]
    _dump(root / "QA.json", qa)


def _cmm(root: Path) -> None:
    base = "raw_files/over-reliance_unimodal_priors"
    write_video(root / base / "visual_dominance/v1.mp4", seed=1)
    write_video(root / base / "language_dominance/v2.mp4", audio=False, seed=2)
    write_wav(root / "raw_files/inter-modality_spurious_correlation/audio-language/a1.wav", freq=550)
    items = [
        ("over-reliance_unimodal_priors", "overrely_visual_ignore_audio", "visual+audio", "event-level", f"./{base}/visual_dominance/v1.mp4", f"./{base}/visual_dominance/v1.mp4", "Did you hear a dog barking in the audio? Answer with yes or no.", "no"),
        ("over-reliance_unimodal_priors", "overrely_visual_ignore_audio", "visual+audio", "event-level", f"./{base}/visual_dominance/v1.mp4", f"./{base}/visual_dominance/v1.mp4", "Did you hear a tone in the audio? Answer with yes or no.", "yes"),
        ("over-reliance_unimodal_priors", "overrely_language_ignore_visual", "visual", "object-level", f"./{base}/language_dominance/v2.mp4", None, "Did you see a bar in the video? Answer with yes or no.", "yes"),
        ("over-reliance_unimodal_priors", "overrely_language_ignore_visual", "visual", "object-level", f"./{base}/language_dominance/v2.mp4", None, "Did you see a cat in the video? Answer with yes or no.", "no"),
        ("inter-modality_spurious_correlation", "audio-language", "audio", "event-level", "None", "./raw_files/inter-modality_spurious_correlation/audio-language/a1.wav", "Did you hear a piano in the audio? Answer with yes or no.", "no"),
    ]
    keys = ("category", "sub_category", "modality", "granularity", "video_path", "audio_path", "question", "answer")
    _dump(root / "all_data_final_reorg.json", [dict(zip(keys, it)) | {"correlation_type": None} for it in items])


def _dailyomni(root: Path) -> None:
    for k, vid in enumerate(("vidA", "vidB")):
        write_video(root / "Videos" / vid / f"{vid}_video.mp4", seconds=1.5, seed=10 + k)
        if k == 0:
            write_wav(root / "Videos" / vid / f"{vid}_audio.wav", seconds=1.5)
    choices = ["A. A red circle", "B. A blue square", "C. A green triangle", "D. A yellow circle"]
    qa = [
        {"Question": "What shape moves while the tone plays?", "Choice": choices, "Answer": "B", "video_id": "vidA", "Type": "AV Event Alignment", "video_category": "Demo", "video_duration": "30s"},
        {"Question": "Which way does the shape move?", "Choice": ["A. Left", "B. Right", "C. Up", "D. Down"], "Answer": "B", "video_id": "vidA", "Type": "Event Sequence", "video_category": "Demo", "video_duration": "30s"},
        {"Question": "What do you hear?", "Choice": ["A. A tone", "B. A dog", "C. Speech", "D. Silence"], "Answer": "A", "video_id": "vidB", "Type": "AV Event Alignment", "video_category": "Demo", "video_duration": "60s"},
    ]
    _dump(root / "qa.json", qa)


def _mvbench(root: Path) -> None:
    write_video(root / "video/star/Charades_v1_480/C1.mp4", seconds=2.0, audio=False, seed=20)
    write_video(root / "video/clevrer/video_validation/video_10000.mp4", audio=False, seed=21)
    write_frames(root / "video/tvqa/frames_fps3_hq/s01e01_seg01_clip_00", n=6, seed=22)
    _dump(
        root / "json/action_sequence.json",
        [
            {"video": "C1.mp4", "question": "What happened after the bar appeared?", "candidates": ["It moved right.", "It vanished.", "It turned blue."], "answer": "It moved right.", "start": 0.5, "end": 1.5},
            {"video": "C1.mp4", "question": "What did the bar do first?", "candidates": ["Grew", "Shrank", "Spun", "Jumped"], "answer": "Grew", "start": 0.0, "end": 1.0},
        ],
    )
    _dump(
        root / "json/object_existence.json",
        [{"video": "video_10000.mp4", "question": "Is there a moving cube?", "candidates": ["yes", "no"], "answer": "no"}],
    )
    _dump(
        root / "json/episodic_reasoning.json",
        [{"video": "s01e01_seg01_clip_00", "question": "What is shown?", "candidates": ["Noise", "A face", "A car", "Text", "A dog"], "answer": "Noise", "start": 0.0, "end": 2.0}],
    )


def _mmau(root: Path) -> None:
    items = []
    spec = [
        ("3fe64f3d-0001", "sound", "easy", 440.0, ["Man", "Woman", "Child", "Robot"], "Man", "Based on the given audio, identify the source of the sound."),
        ("3fe64f3d-0002", "music", "medium", 660.0, ["Piano", "Guitar", "Drums", "Violin"], "Violin", "Which instrument plays the tone?"),
        ("3fe64f3d-0003", "speech", "hard", 220.0, ["A child", "A woman", "An adult man", "A man and a child"], "A man and a child", "Who is speaking?"),
    ]
    for uid, task, difficulty, freq, choices, answer, question in spec:
        write_wav(root / "test-mini-audios" / f"{uid}.wav", freq=freq)
        items.append(
            {
                "id": uid,
                "audio_id": f"./test-mini-audios/{uid}.wav",
                "question": question,
                "choices": choices,
                "answer": answer,
                "dataset": "synthetic",
                "task": task,
                "split": "test-mini",
                "category": "Reasoning",
                "sub-category": "Synthetic",
                "difficulty": difficulty,
            }
        )
    _dump(root / "mmau-test-mini.json", items)


SYNTHETIC_BENCHMARKS = {"avhbench": _avhbench, "cmm": _cmm, "dailyomni": _dailyomni, "mvbench": _mvbench, "mmau": _mmau}


def write_benchmark(name: str, folder: str | os.PathLike) -> Path:
    """Write the synthetic ``name`` benchmark into ``folder`` (created) and return it."""
    if name not in SYNTHETIC_BENCHMARKS:
        raise ValueError(f"unknown benchmark {name!r}; choose from {', '.join(SYNTHETIC_BENCHMARKS)}")
    root = Path(folder)
    root.mkdir(parents=True, exist_ok=True)
    SYNTHETIC_BENCHMARKS[name](root)
    return root


def write_all(folder: str | os.PathLike) -> dict[str, Path]:
    """Every synthetic benchmark, each in ``folder/<name>``."""
    return {name: write_benchmark(name, Path(folder) / name) for name in SYNTHETIC_BENCHMARKS}
