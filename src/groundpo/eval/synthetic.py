"""Tiny benchmark folders in each official layout, with generated media (no download).

For tests and demos: ``write_benchmark("avhbench", folder)`` writes a handful of items in the
exact file format of the real benchmark, with 56x56 px, 1-2 s videos (MPEG-4 with an AAC track,
written with PyAV), 16 kHz WAV files, PNG frames and small pictures (AMBER, Object HalBench with
its base64 images and a few COCO annotations, MMHal-Bench, POPE); the AMBER folder also holds a
tiny stand-in for the NLTK data its scorer needs (``nltk_data/``). The answers are arbitrary: the point is to
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

__all__ = [
    "SYNTHETIC_BENCHMARKS",
    "write_all",
    "write_benchmark",
    "write_frames",
    "write_image",
    "write_nltk_data",
    "write_video",
    "write_wav",
]


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


def write_image(path: str | os.PathLike, size: int = 56, seed: int = 0) -> Path:
    """A small RGB picture (a coloured square on a noisy background), PNG or JPEG by suffix."""
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    img = (rng.random((size, size, 3)) * 64).astype(np.uint8)
    img[size // 4 : 3 * size // 4, size // 4 : 3 * size // 4] = (64 + 191 * rng.random(3)).astype(np.uint8)
    Image.fromarray(img).save(path)
    return path


# a few words with their Penn Treebank tags, for the NLTK stand-in below
NLTK_TAGS = {
    "a": "DT", "an": "DT", "the": "DT", "and": "CC", "on": "IN", "in": "IN", "with": "IN", "of": "IN", "next": "JJ",
    "to": "TO", "is": "VBZ", "are": "VBP", "sits": "VBZ", "stands": "VBZ", "lies": "VBZ", "red": "JJ", "two": "CD",
    "small": "JJ", "dog": "NN", "dogs": "NNS", "cat": "NN", "cats": "NNS", "puppy": "NN", "puppies": "NNS",
    "grass": "NN", "tree": "NN", "trees": "NNS", "car": "NN", "cars": "NNS", "man": "NN", "men": "NNS",
    "ball": "NN", "balls": "NNS", "table": "NN", "sky": "NN", "frisbee": "NN", "bench": "NN", "benches": "NNS",
    "person": "NN", "picture": "NN", "image": "NN", "photo": "NN", "scene": "NN",
}  # fmt: skip
NLTK_LEMMAS = ("dog", "cat", "puppy", "grass", "tree", "car", "man", "ball", "table", "sky", "frisbee", "bench", "person", "picture", "image", "photo", "scene")


def write_nltk_data(folder: str | os.PathLike, tags: dict[str, str] | None = None, lemmas: tuple[str, ...] = NLTK_LEMMAS) -> Path:
    """A tiny stand-in for the NLTK data AMBER's scorer loads (``punkt_tab``,
    ``averaged_perceptron_tagger_eng``, ``wordnet``), in NLTK's own file formats: the tagger knows
    the words of ``tags`` (any other word gets the tag that sorts last), WordNet knows the nouns
    ``lemmas`` (and "men" -> "man"). For tests: the real data comes from ``nltk.downloader``."""
    root = Path(folder)
    punkt = root / "tokenizers/punkt_tab/english"
    punkt.mkdir(parents=True, exist_ok=True)
    for name in ("collocations.tab", "sent_starters.txt", "abbrev_types.txt", "ortho_context.tab"):
        (punkt / name).write_text("", encoding="utf-8")
    tagger = root / "taggers/averaged_perceptron_tagger_eng"
    tagger.mkdir(parents=True, exist_ok=True)
    tags = dict(NLTK_TAGS if tags is None else tags)
    tags.update({w.capitalize(): t for w, t in tags.items()})
    prefix = tagger / "averaged_perceptron_tagger_eng"
    Path(f"{prefix}.weights.json").write_text("{}", encoding="utf-8")
    Path(f"{prefix}.tagdict.json").write_text(json.dumps(tags, sort_keys=True), encoding="utf-8")
    Path(f"{prefix}.classes.json").write_text(json.dumps(sorted(set(tags.values()) | {"NN"})), encoding="utf-8")
    wordnet = root / "corpora/wordnet"
    wordnet.mkdir(parents=True, exist_ok=True)
    (wordnet / "lexnames").write_text("00\tadj.all\t3\n01\tadj.pert\t3\n02\tadv.all\t4\n03\tnoun.Tops\t1\n", encoding="utf-8")
    (wordnet / "data.adj").write_text("  1 a tiny stand-in for WordNet 3.0\n", encoding="utf-8")
    for pos in ("noun", "verb", "adv"):
        (wordnet / f"data.{pos}").write_text("", encoding="utf-8")
    for pos in ("noun", "verb", "adj", "adv"):
        (wordnet / f"index.{pos}").write_text("", encoding="utf-8")
        (wordnet / f"{pos}.exc").write_text("", encoding="utf-8")
    lines = [f"{lemma} n 1 0 1 0 {i + 1:08d}\n" for i, lemma in enumerate(sorted(lemmas))]
    (wordnet / "index.noun").write_text("".join(lines), encoding="utf-8")
    (wordnet / "noun.exc").write_text("men man\n", encoding="utf-8")
    (wordnet / "index.sense").write_text("", encoding="utf-8")
    return root


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


def _amber(root: Path) -> None:
    for n in (1, 2, 3):
        write_image(root / "image" / f"AMBER_{n}.jpg", seed=30 + n)
    relation = {"dog": ["puppy"], "grass": ["lawn"], "cat": ["kitten"], "frisbee": [], "car": [], "tree": [], "man": [], "ball": []}
    _dump(root / "data" / "relation.json", relation)
    (root / "data" / "safe_words.txt").write_text("picture\nimage\nphoto\nscene\n", encoding="utf-8")
    (root / "data" / "metrics.txt").write_text("chair_num=0.001\nchair_score=0\n", encoding="utf-8")
    annotations = [
        {"id": 1, "type": "generative", "truth": ["dog", "grass"], "hallu": ["cat", "frisbee"]},
        {"id": 2, "type": "generative", "truth": ["car", "tree"], "hallu": ["man"]},
        {"id": 1005, "type": "discriminative-hallucination", "truth": "yes"},
        {"id": 1006, "type": "discriminative-hallucination", "truth": "no"},
        {"id": 1007, "type": "discriminative-attribute-state", "truth": "no"},
        {"id": 1008, "type": "discriminative-attribute-number", "truth": "yes"},
        {"id": 1009, "type": "discriminative-attribute-action", "truth": "no"},
        {"id": 1010, "type": "discriminative-relation", "truth": "yes"},
    ]
    _dump(root / "data" / "annotations.json", annotations)
    queries = [
        {"id": 1, "image": "AMBER_1.jpg", "query": "Describe this image."},
        {"id": 2, "image": "AMBER_2.jpg", "query": "Describe this image."},
        {"id": 1005, "image": "AMBER_1.jpg", "query": "Is there a dog in this image?"},
        {"id": 1006, "image": "AMBER_1.jpg", "query": "Is there a cat in this image?"},
        {"id": 1007, "image": "AMBER_2.jpg", "query": "Is the car red in this image?"},
        {"id": 1008, "image": "AMBER_2.jpg", "query": "Is there one tree in this image?"},
        {"id": 1009, "image": "AMBER_3.jpg", "query": "Is the dog running in this image?"},
        {"id": 1010, "image": "AMBER_3.jpg", "query": "Is the dog on the grass in this image?"},
    ]
    _dump(root / "data" / "query" / "query_all.json", queries)
    _dump(root / "data" / "query" / "query_generative.json", queries[:2])
    write_nltk_data(root / "nltk_data")  # a stand-in for the NLTK data AMBER's scorer needs (tests)


def _objhal(root: Path) -> None:
    import base64
    import io

    from PIL import Image

    ids = (139, 285, 632)
    lines = []
    prompts = ("Provide a thorough description of the given image.", "What is this photo about? Please answer in great detail.")
    for k, image_id in enumerate(ids):
        rng = np.random.default_rng(40 + k)
        buf = io.BytesIO()
        Image.fromarray((rng.random((56, 56, 3)) * 255).astype(np.uint8)).save(buf, format="JPEG")
        lines.append({"org_idx": k, "image_id": image_id, "question": prompts[k % 2], "image": base64.b64encode(buf.getvalue()).decode()})
    (root / "obj_halbench_300_with_image.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines), encoding="utf-8")
    cats = [{"id": 1, "name": "person"}, {"id": 18, "name": "dog"}, {"id": 62, "name": "chair"}, {"id": 67, "name": "dining table"}]
    instances = {
        "images": [{"id": i} for i in ids],
        "categories": cats,
        "annotations": [
            {"id": 1, "image_id": 139, "category_id": 1},
            {"id": 2, "image_id": 139, "category_id": 62},
            {"id": 3, "image_id": 285, "category_id": 18},
            {"id": 4, "image_id": 632, "category_id": 67},
        ],
    }
    captions = {
        "images": [{"id": i} for i in ids],
        "annotations": [
            {"id": 1, "image_id": 139, "caption": "A man sits on a chair in a living room."},
            {"id": 2, "image_id": 285, "caption": "A puppy lies on the grass."},
            {"id": 3, "image_id": 632, "caption": "A dining table with cups and a pizza."},
        ],
    }
    _dump(root / "annotations" / "instances_val2014.json", instances)
    _dump(root / "annotations" / "captions_val2014.json", captions)


def _mmhal(root: Path) -> None:
    spec = [
        ("What color is the car?", "The car is red.", ["car", "road"]),
        ("Is there a dog in the image?", "No, there is only a cat.", ["cat", "sofa"]),
        ("Which is bigger, the cup or the plate?", "The plate.", ["cup", "plate", "table"]),
    ]
    items = []
    for k, (question, answer, content) in enumerate(spec):
        name = f"{1000 + k}_mmhal.jpg"
        write_image(root / "images" / name, seed=50 + k)
        items.append(
            {
                "question_type": ("attribute", "adversarial", "comparison")[k],
                "question_topic": "synthetic",
                "image_id": f"img{k}",
                "image_src": f"https://example.invalid/images/{name}",
                "image_content": content,
                "question": question,
                "gt_answer_explanation": "",
                "gt_answer": answer,
                "model_answer": "",
            }
        )
    _dump(root / "response_template.json", items)


def _pope(root: Path) -> None:
    names = [f"COCO_val2014_{i:012d}.jpg" for i in (42, 73)]
    for k, name in enumerate(names):
        write_image(root / "val2014" / name, seed=60 + k)
    for s, split in enumerate(("random", "popular", "adversarial")):
        rows = [
            {"question_id": 1 + 2 * s, "image": names[0], "text": "Is there a dog in the image?", "label": "yes"},
            {"question_id": 2 + 2 * s, "image": names[1], "text": f"Is there a {('cat', 'car', 'bench')[s]} in the image?", "label": "no"},
        ]
        (root / f"coco_pope_{split}.json").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


SYNTHETIC_BENCHMARKS = {
    "avhbench": _avhbench,
    "cmm": _cmm,
    "dailyomni": _dailyomni,
    "mvbench": _mvbench,
    "mmau": _mmau,
    "amber": _amber,
    "objhal": _objhal,
    "mmhal": _mmhal,
    "pope": _pope,
}


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
