"""The MiniAVH world: clips with one visible object and one sound, and the data made from them.

Objects. Each of the five objects has a look (a colour, drawn as a large solid rectangle) and a
sound (one of the distinct sounds of :func:`groundpo.testing.media.tone_samples`):

======  ===============  ==============
object  look             sound
======  ===============  ==============
car     blue             low hum
bell    yellow           high beeps
drum    red              noise bursts
bird    green            rising tone
horn    magenta          falling tone
======  ===============  ==============

A clip (1 s) shows one object ``visible`` and plays the sound of one object ``sound``. A clip is
*matched* when the two are the same object (the visible object is the sound's source) and
*mismatched* otherwise: the visible object is an in-view silent object and the sound's source is
out of view (AVHBench's swapped-audio case). Every clip varies in nuisance: background grey,
rectangle size, position and colour jitter, loudness and background noise of the sound.

Splits, each drawn from its own seeded stream:

* ``sft``: the base training distribution. The sound comes from the visible object with
  probability ``p`` (default 0.9), so sight predicts sound and sound predicts sight.
* ``pref``: the preference contexts. Mismatched with probability ``mismatch_ratio`` (0.7, the
  default of ``groundpo-data mod_dpo``: the paper mismatches "in most cases").
* ``test``: the held-out AVHBench-format set, half matched, half mismatched.

Questions follow AVHBench: "Is the {x} visible in the video?" (audio-driven video hallucination,
ADVH), "Is the {x} making sound in the audio?" (video-driven audio hallucination, VDAH), "Are the
contexts of audio and visual content matching?" (AV matching, AVM), plus captioning.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..datagen.media import write_wav
from ..datagen.mod_dpo import (
    AUDIO_PRESENCE,
    CAPTION_QUESTIONS,
    VISUAL_PRESENCE,
    ModDPOPipeline,
    presence_qas,
)
from ..datagen.runner import register_dataset, rows_json, sharegpt_row
from ..testing.media import tone_samples, write_frames_video


@dataclass(frozen=True)
class WorldObject:
    name: str
    rgb: tuple[int, int, int]
    sound: str  # a kind of groundpo.testing.media.tone_samples


OBJECTS: tuple[WorldObject, ...] = (
    WorldObject("car", (40, 80, 230), "low_hum"),
    WorldObject("bell", (235, 215, 40), "high_beeps"),
    WorldObject("drum", (220, 40, 40), "noise_bursts"),
    WorldObject("bird", (40, 190, 70), "rising_tone"),
    WorldObject("horn", (200, 60, 200), "falling_tone"),
)
NAMES = tuple(o.name for o in OBJECTS)
BY_NAME = {o.name: o for o in OBJECTS}

FRAME_SIZE = 56  # pixels; 4 x 4 patches of the vision tower, 4 tokens per frame pair after merging
FPS = 2
SECONDS = 1.0  # of video: 2 frames, one temporal patch
AUDIO_SECONDS = 0.5  # 50 mel frames, 13 audio tokens
SAMPLE_RATE = 16000

# AVHBench's wording (its QA.json) and the task names groundpo-eval reads
AVM_QUESTION = "Are the contexts of audio and visual content matching?"
AVC_QUESTION = "Describe what you see and hear."
TASK_NAMES = {
    "ADVH": "Audio-driven Video Hallucination",
    "VDAH": "Video-driven Audio Hallucination",
    "AVM": "AV Matching",
    "AVC": "AV Captioning",
}
# the suffix groundpo-eval appends to yes/no questions: the base model is taught with it
YES_NO_SUFFIX = " Answer with yes or no."
SPLIT_CODES = {"sft": 1, "pref": 2, "test": 3}


@dataclass(frozen=True)
class Clip:
    id: str
    visible: str
    sound: str
    seed: int

    @property
    def matched(self) -> bool:
        return self.visible == self.sound


# ---------------------------------------------------------------- sampling
def sample_clips(split: str, n: int, seed: int, *, p: float | None = None, mismatch_ratio: float | None = None) -> list[Clip]:
    """``n`` clips of ``split``; the sound is the visible object's with probability ``p``
    (``sft``), or another object's with probability ``mismatch_ratio`` (``pref``, ``test``)."""
    if (p is None) == (mismatch_ratio is None):
        raise ValueError("give exactly one of p and mismatch_ratio")
    rng = np.random.default_rng([seed, SPLIT_CODES[split]])
    mismatch = 1.0 - p if p is not None else mismatch_ratio
    clips = []
    for i in range(n):
        visible = NAMES[rng.integers(len(NAMES))]
        sound = visible
        if rng.random() < mismatch:
            others = [x for x in NAMES if x != visible]
            sound = others[rng.integers(len(others))]
        clips.append(Clip(f"{split}_{i:05d}", visible, sound, int(rng.integers(2**31))))
    return clips


def balanced_test_clips(n: int, seed: int) -> list[Clip]:
    """Held-out clips: every (visible, sound) pair equally often on the matched and mismatched
    sides, half of the clips matched. Order shuffled with the seed."""
    rng = np.random.default_rng([seed, SPLIT_CODES["test"]])
    pairs = []
    mismatched = [(v, s) for v in NAMES for s in NAMES if v != s]
    for i in range(n):
        if i % 2 == 0:
            pairs.append((NAMES[(i // 2) % len(NAMES)],) * 2)
        else:
            pairs.append(mismatched[(i // 2) % len(mismatched)])
    order = rng.permutation(n)
    return [Clip(f"test_{k:05d}", *pairs[j], int(rng.integers(2**31))) for k, j in enumerate(order)]


def other_object(rng: np.random.Generator, *exclude: str) -> str:
    choices = [x for x in NAMES if x not in exclude]
    return choices[rng.integers(len(choices))]


# ---------------------------------------------------------------- media
def render_frames(clip: Clip) -> list[np.ndarray]:
    """The clip's frames: a noisy grey background with the visible object's rectangle (45-85 % of
    each side, colour jittered), the same in every frame; nuisance drawn from the clip's seed."""
    rng = np.random.default_rng([clip.seed, 1])
    size = FRAME_SIZE
    w, h = (int(rng.integers(int(0.45 * size), int(0.85 * size) + 1)) for _ in range(2))
    x0, y0 = int(rng.integers(0, size - w + 1)), int(rng.integers(0, size - h + 1))
    frame = np.full((size, size, 3), float(rng.integers(10, 90)))
    frame[y0 : y0 + h, x0 : x0 + w] = np.asarray(BY_NAME[clip.visible].rgb) + rng.normal(0, 20, 3)
    frame = np.clip(frame + rng.normal(0, 6, frame.shape), 0, 255).astype(np.uint8)
    return [frame] * max(2, round(SECONDS * FPS))


def render_audio(clip: Clip) -> np.ndarray:
    """The sound of ``clip.sound`` at a random loudness over faint white noise, as int16 samples."""
    rng = np.random.default_rng([clip.seed, 2])
    tone = tone_samples(BY_NAME[clip.sound].sound, seconds=AUDIO_SECONDS, sample_rate=SAMPLE_RATE, seed=int(rng.integers(2**31)))
    signal = tone * rng.uniform(0.6, 1.6) + rng.normal(0, rng.uniform(0.003, 0.02), tone.shape)
    return np.round(np.clip(signal, -1.0, 1.0) * 32767.0).astype("<i2")


def write_clip(clip: Clip, video_path: Path, audio_path: Path) -> None:
    """The clip's mp4 (no audio track) and its 16 kHz wav; skipped when both exist."""
    if video_path.exists() and audio_path.exists():
        return
    write_frames_video(video_path, render_frames(clip), fps=FPS)
    write_wav(audio_path, render_audio(clip), SAMPLE_RATE)


# ---------------------------------------------------------------- answers
def seen(clip: Clip) -> str:
    return f"I see the {clip.visible}."


def heard(clip: Clip) -> str:
    return f"I hear the {clip.sound}."


def both(clip: Clip) -> str:
    return f"I see the {clip.visible} and I hear the {clip.sound}."


def reasoned(statement: str, answer: bool, subject: str | None = None) -> str:
    """The question's object, what the relevant modality shows, then the answer: "The bell? I see
    the horn, so no." (the model restates and perceives before it answers; ``groundpo-eval``'s
    parser reads the yes/no at the end). ``subject`` is None for AV matching."""
    head = f"The {subject}? " if subject else ""
    return f"{head}{statement.rstrip('.')}, so {'yes' if answer else 'no'}."


def visual_question(x: str) -> str:
    return VISUAL_PRESENCE.format(x=x)


def audio_question(x: str) -> str:
    return AUDIO_PRESENCE.format(x=x)


def yes_no_questions(clip: Clip, rng: np.random.Generator) -> list[tuple[str, str | None, str, bool]]:
    """``(task, object asked about, question, gold)`` of a clip, AVHBench-style: ADVH about the visible object (yes)
    and about the heard object when it is out of view, else about an absent one (no); VDAH
    likewise the other way round; AVM."""
    no_visual = clip.sound if not clip.matched else other_object(rng, clip.visible)
    no_audio = clip.visible if not clip.matched else other_object(rng, clip.sound)
    return [
        ("ADVH", clip.visible, visual_question(clip.visible), True),
        ("ADVH", no_visual, visual_question(no_visual), False),
        ("VDAH", clip.sound, audio_question(clip.sound), True),
        ("VDAH", no_audio, audio_question(no_audio), False),
        ("AVM", None, AVM_QUESTION, clip.matched),
    ]


def answer(task: str, subject: str | None, clip: Clip, gold: bool) -> str:
    """The base model's answer: what the relevant modality shows, then yes/no."""
    return reasoned({"ADVH": seen, "VDAH": heard, "AVM": both}[task](clip), gold, subject)


# ---------------------------------------------------------------- datasets
def sft_rows(clips: list[Clip], media: dict[str, tuple[str, str]], seed: int, questions_per_clip: int) -> list[dict]:
    """Instruction rows of the base distribution: per clip ``questions_per_clip`` of its five
    yes/no questions and three captioning prompts, drawn with the seed."""
    rows = []
    for clip in clips:
        rng = np.random.default_rng([seed, clip.seed, 3])
        pool = [(q + YES_NO_SUFFIX, answer(task, x, clip, gold)) for task, x, q, gold in yes_no_questions(clip, rng)]
        pool += [(CAPTION_QUESTIONS["visual"], seen(clip)), (CAPTION_QUESTIONS["audio"], heard(clip)), (AVC_QUESTION, both(clip))]
        video, audio = media[clip.id]
        for k in rng.permutation(len(pool))[:questions_per_clip]:
            prompt, response = pool[k]
            rows.append({
                "messages": [{"role": "user", "content": f"<video><audio>{prompt}"}, {"role": "assistant", "content": response}],
                "videos": [video], "audios": [audio], "clip": clip.id,
            })
    return rows


def category(clip: Clip, name: str) -> str:
    """The AVHBench-style category of an object of the context (MoD-DPO Supp. B.1.2)."""
    if name == clip.visible:
        return "in-view sound source" if clip.matched else "in-view silent object"
    if name == clip.sound:
        return "out-of-view sound source"
    raise ValueError(f"{name} is not in clip {clip.id}")


def preference_rows(clips: list[Clip], media: dict[str, tuple[str, str]]) -> list[dict]:
    """MoD-DPO's recipe (Sec. 4.3, Supp. B.1) with the world's ground truth standing in for the
    annotators: presence QAs by the paper's category rules (:func:`presence_qas`), captioning
    pairs; the chosen answer uses the relevant modality, the rejected one the irrelevant
    modality (a hard negative). Pairs whose two answers coincide (captions of a matched
    context) are left out, as ``groundpo-data`` rejects identical answers."""
    rows = []
    for clip in clips:
        video, audio = media[clip.id]
        columns = {"videos": [video], "audios": [audio], "video_source": clip.id, "audio_source": clip.id,
                   "mismatched": not clip.matched}
        objects = list(dict.fromkeys([clip.visible, clip.sound]))
        for qa in (qa for name in objects for qa in presence_qas(name, category(clip, name))):
            gold = qa.answer == "Yes"
            relevant, irrelevant = (seen, heard) if qa.modality == "visual" else (heard, seen)
            chosen = reasoned(relevant(clip), gold, qa.name)
            rejected = reasoned(irrelevant(clip), not gold, qa.name)
            rows.append(sharegpt_row(f"<video><audio>{qa.question}{YES_NO_SUFFIX}", chosen, rejected, modality=qa.modality,
                                     task="presence", category=qa.category, object=qa.name, **columns))
        if not clip.matched:
            swapped = Clip(clip.id, clip.sound, clip.visible, clip.seed)  # the other modality's content
            rows.append(sharegpt_row(f"<video><audio>{CAPTION_QUESTIONS['visual']}", seen(clip), seen(swapped),
                                     modality="visual", task="captioning", **columns))
            rows.append(sharegpt_row(f"<video><audio>{CAPTION_QUESTIONS['audio']}", heard(clip), heard(swapped),
                                     modality="audio", task="captioning", **columns))
    return rows


def avhbench_items(clips: list[Clip], seed: int, captions: bool = True) -> list[dict]:
    """QA.json items (AVHBench's format) for the held-out clips."""
    items = []
    for clip in clips:
        rng = np.random.default_rng([seed, clip.seed, 4])
        for task, _, question, gold in yes_no_questions(clip, rng):
            items.append({"video_id": clip.id, "task": TASK_NAMES[task], "text": question, "label": "Yes" if gold else "No"})
        if captions:
            items.append({"video_id": clip.id, "task": TASK_NAMES["AVC"], "text": AVC_QUESTION, "label": both(clip)})
    return items


def corpus() -> str:
    """Every prompt and answer of the world, one per line: the tokenizer's extra corpus, so that
    each word is a token or two and sequences stay short."""
    clip_lines = []
    for v in NAMES:
        for s in NAMES:
            clip = Clip("", v, s, 0)
            clip_lines += [seen(clip), heard(clip), both(clip)]
    questions = [q(x) + YES_NO_SUFFIX for x in NAMES for q in (visual_question, audio_question)]
    answers = [reasoned(line, gold, x) for line in clip_lines for gold in (True, False) for x in (None, *NAMES)]
    fixed = [AVM_QUESTION + YES_NO_SUFFIX, AVC_QUESTION, *CAPTION_QUESTIONS.values()]
    return "\n".join(dict.fromkeys(fixed + questions + clip_lines + answers)) + "\n"


SFT_DATASET = "miniavh_sft"
PREF_DATASET = "miniavh_pref"


def _write_media(root: Path, clips: list[Clip], folder: str, progress=None) -> dict[str, tuple[str, str]]:
    """Write every clip's media under ``root/folder`` (videos and audios side by side, or AVHBench's
    ``videos/`` and ``audios/``); returns ``clip id -> (video, audio)`` relative to ``root``."""
    media = {}
    for done, clip in enumerate(clips, 1):
        if folder == "avhbench":
            video, audio = f"avhbench/videos/{clip.id}.mp4", f"avhbench/audios/{clip.id}.wav"
        else:
            video, audio = f"{folder}/{clip.id}.mp4", f"{folder}/{clip.id}.wav"
        write_clip(clip, root / video, root / audio)
        media[clip.id] = (video, audio)
        if progress:
            progress(done, len(clips))
    return media


def _truth(root: Path, split: str, clips: list[Clip]) -> None:
    """Record the ground truth of a split's clips in ``clips.json``."""
    path = root / "clips.json"
    truth = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    truth[split] = [asdict(c) | {"matched": c.matched} for c in clips]
    path.write_text(json.dumps(truth, indent=1, sort_keys=True) + "\n", encoding="utf-8")


def write_world(root: Path, *, seed: int, n_sft: int, n_test: int, p: float, questions_per_clip: int) -> dict:
    """The base distribution's clips and SFT rows (``sft.json``, dataset ``miniavh_sft``) and the
    held-out AVHBench folder (``avhbench/``: QA.json, videos/, audios/). Returns a summary."""
    root.mkdir(parents=True, exist_ok=True)
    sft_clips = sample_clips("sft", n_sft, seed, p=p)
    test_clips = balanced_test_clips(n_test, seed)
    sft = sft_rows(sft_clips, _write_media(root, sft_clips, "media"), seed, questions_per_clip)
    _write_media(root, test_clips, "avhbench")
    (root / "sft.json").write_text(rows_json(sft), encoding="utf-8")
    register_dataset(root, SFT_DATASET, {
        "file_name": "sft.json", "formatting": "sharegpt",
        "columns": {"messages": "messages", "videos": "videos", "audios": "audios"},
        "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant"},
    })
    bench = avhbench_items(test_clips, seed)
    (root / "avhbench" / "QA.json").write_text(json.dumps(bench, indent=1) + "\n", encoding="utf-8")
    _truth(root, "sft", sft_clips)
    _truth(root, "test", test_clips)
    return {
        "sft_clips": len(sft_clips), "sft_mismatched": sum(not c.matched for c in sft_clips), "sft_rows": len(sft),
        "test_clips": len(test_clips), "test_mismatched": sum(not c.matched for c in test_clips),
        "test_items": sum(i["task"] != TASK_NAMES["AVC"] for i in bench),
    }


def write_preferences(root: Path, *, seed: int, n_pref: int, mismatch_ratio: float) -> dict:
    """The preference contexts and rows (``pref.json``, dataset ``miniavh_pref``). Returns a summary."""
    clips = sample_clips("pref", n_pref, seed, mismatch_ratio=mismatch_ratio)
    rows = preference_rows(clips, _write_media(root, clips, "media"))
    (root / "pref.json").write_text(rows_json(rows), encoding="utf-8")
    register_dataset(root, PREF_DATASET, ModDPOPipeline.dataset_info("pref.json"))
    _truth(root, "pref", clips)
    return {
        "pref_contexts": len(clips), "pref_mismatched": sum(not c.matched for c in clips), "pref_rows": len(rows),
        "pref_rows_by_modality": {m: sum(r["modality"] == m for r in rows) for m in ("visual", "audio")},
        "pref_rows_by_task": {t: sum(r["task"] == t for r in rows) for t in ("presence", "captioning")},
    }
