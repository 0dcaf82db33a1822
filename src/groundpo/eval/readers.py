"""Benchmark readers: the official file layouts -> a list of :class:`EvalItem`.

Every reader takes the local folder the benchmark was unpacked into (``data_dir``) and, where
the annotation file has another name than the official one, ``data_file`` (relative to
``data_dir`` or absolute). Readers only read JSON and check paths; they load no media and no
model. :func:`read_benchmark` adds the ``--tasks`` filter and the ``--limit`` cut, and
:func:`find_missing_media` lists every media file that is not there, so a run can report all of
them before it loads a model.

Layouts (``docs/evaluation.md`` has the details):

- ``avhbench``: ``QA.json`` (a list of ``{video_id, task, text, label}``), ``videos/<id>.mp4``,
  optional ``audios/<id>.wav``; the v0 layout ``json/<id>.json`` + ``video/<id>.mp4`` works too.
- ``cmm``: ``all_data_final_reorg.json`` (or any one ``.json``/``.jsonl``) with ``category,
  sub_category, modality, granularity, video_path, audio_path, question, answer``; media paths
  relative to ``data_dir``.
- ``dailyomni``: ``qa.json`` with ``Question, Choice, Answer, video_id, Type, video_duration``;
  ``Videos/<id>/<id>_video.mp4`` and ``Videos/<id>/<id>_audio.wav``.
- ``mvbench``: ``json/<task>.json`` with ``video, question, candidates, answer`` (``start,
  end`` for clipped tasks); ``video/<source folder>/<video>``.
- ``mmau``: ``mmau-test-mini.json`` with ``audio_id, question, choices, answer, task``; audio
  paths relative to ``data_dir``.
- ``amber``: AMBER's repository layout: ``data/query/query_all.json`` (or another query file,
  ``--data_file``) with ``id, image, query``; ``data/annotations.json``, ``data/relation.json``,
  ``data/safe_words.txt``; images ``image/AMBER_<n>.jpg``.
- ``objhal``: Object HalBench's ``obj_halbench_300_with_image.jsonl`` with ``image_id, question``
  and the image as base64 (``image``); COCO annotations for the ground truth (``--coco_annotations``).
- ``mmhal``: MMHal-Bench's ``response_template.json`` (96 items with ``question, gt_answer,
  image_content, image_src, question_type``) and ``images/``.
- ``pope``: POPE's ``coco_pope_{random,popular,adversarial}.json`` (JSON lines ``question_id,
  image, text, label``) and the COCO val2014 images (``val2014/``).

``--image_dir`` names the image folder when it is not where the layout puts it.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .metrics import split_options

__all__ = [
    "AVHBENCH_TASKS",
    "BENCHMARKS",
    "MVBENCH_TASKS",
    "BenchmarkFormatError",
    "EvalItem",
    "MissingMediaError",
    "amber_files",
    "choice_prompt",
    "find_missing_media",
    "read_amber",
    "read_avhbench",
    "read_benchmark",
    "read_cmm",
    "read_dailyomni",
    "read_mmau",
    "read_mmhal",
    "read_mvbench",
    "read_objhal",
    "read_pope",
]

KINDS = ("yesno", "choice", "caption")
DEFAULT_YES_NO_SUFFIX = " Answer with yes or no."
# AMBER and POPE questions: LLaVA-1.5's suffix for short answers (the models then say "Yes" / "No")
IMAGE_YES_NO_SUFFIX = " Answer the question using a single word or phrase."
CHOICE_INSTRUCTION = "Answer with the option's letter from the given choices directly."


@dataclass
class EvalItem:
    """One question of a benchmark, ready for the chat engine.

    ``id`` is unique and stable across runs of the same annotation file (resuming relies on
    it). ``task`` is the unit of ``--tasks``, ``--limit`` and the per-task scores; ``aliases``
    are other names ``--tasks`` accepts for it. ``kind`` says how the answer is scored:
    ``"yesno"`` (gold ``"yes"``/``"no"``), ``"choice"`` (gold is an option letter, ``options``
    the option texts in letter order) or ``"caption"`` (gold is a reference text, not scored).
    ``videos`` holds video files, or a folder of frames when ``frame_fps`` is set; ``clip`` is
    the ``(start, end)`` window in seconds to show, ``None`` for the whole video. ``groups``
    are extra score breakdowns (``{"granularity": "event-level"}``); ``meta`` is carried into
    ``predictions.jsonl`` untouched.
    """

    id: str
    task: str
    prompt: str
    gold: str | None
    kind: str = "yesno"
    images: list[str] = field(default_factory=list)
    videos: list[str] = field(default_factory=list)
    audios: list[str] = field(default_factory=list)
    options: list[str] | None = None
    clip: tuple[float, float] | None = None
    frame_fps: float | None = None
    aliases: tuple[str, ...] = ()
    groups: dict[str, str] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"EvalItem.kind must be one of {KINDS}, not {self.kind!r}")

    def media(self) -> list[tuple[str, str]]:
        """``(kind, path)`` of every media input: kind is image, video, frames or audio."""
        out = [("image", p) for p in self.images]
        out += [("frames" if self.frame_fps else "video", p) for p in self.videos]
        out += [("audio", p) for p in self.audios if p not in self.videos]
        return out


class BenchmarkFormatError(ValueError):
    """An annotation file does not have the official format (names the file, item and field)."""


class MissingMediaError(FileNotFoundError):
    """Media files named by the annotations are not on disk; ``missing`` lists all of them."""

    def __init__(self, missing: list[tuple[str, str]], data_dir: str | os.PathLike, listing: str | None = None):
        self.missing = missing
        shown = "\n".join(f"  {path}   (item {item_id})" for item_id, path in missing[:20])
        more = f"\n  ... and {len(missing) - 20} more" if len(missing) > 20 else ""
        where = f"\nThe full list is in {listing}." if listing else ""
        super().__init__(
            f"{len(missing)} media file(s) named by the benchmark under {data_dir} are missing:\n{shown}{more}{where}\n"
            "Download/unpack them, fix --data_dir, or pass --skip_missing_media to evaluate only the items "
            "whose media are present."
        )


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------


def _load_json(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BenchmarkFormatError(f"{path}: file not found") from None
    if path.suffix == ".jsonl":
        records = []
        for lineno, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise BenchmarkFormatError(f"{path}: line {lineno} is not valid JSON ({e.msg})") from None
        return records
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise BenchmarkFormatError(f"{path}: not valid JSON (line {e.lineno}: {e.msg})") from None


def _as_list(data: Any, path: Path) -> list[Any]:
    if isinstance(data, list):
        return data
    if isinstance(data, dict) and data and all(isinstance(v, dict) for v in data.values()):
        return list(data.values())  # {"Entry_0": {...}, ...}
    raise BenchmarkFormatError(f"{path}: expected a JSON list of items, found {type(data).__name__}")


def _field(item: Any, key: str, where: str, *, kinds: tuple[type, ...] = (str,), optional: bool = False) -> Any:
    if not isinstance(item, dict):
        raise BenchmarkFormatError(f"{where}: expected a JSON object, found {type(item).__name__}")
    if key not in item or item[key] is None:
        if optional:
            return None
        raise BenchmarkFormatError(f"{where}: field {key!r} is missing")
    value = item[key]
    if not isinstance(value, kinds) or isinstance(value, bool) and bool not in kinds:
        names = " or ".join(k.__name__ for k in kinds)
        raise BenchmarkFormatError(f"{where}: field {key!r} must be {names}, found {type(value).__name__} {value!r}")
    if isinstance(value, str) and not value.strip() and not optional:
        raise BenchmarkFormatError(f"{where}: field {key!r} is empty")
    return value


def _annotation_file(root: Path, data_file: str | None, defaults: Sequence[str], what: str) -> Path:
    if data_file:
        path = Path(data_file)
        path = path if path.is_absolute() else root / path
        if not path.is_file():
            raise BenchmarkFormatError(f"{what} annotation file {path} does not exist")
        return path
    for name in defaults:
        if (root / name).is_file():
            return root / name
    raise BenchmarkFormatError(
        f"no {what} annotation file in {root} (looked for {', '.join(defaults)}); pass --data_file"
    )


def _first_existing(candidates: Iterable[Path]) -> Path:
    candidates = list(candidates)
    for path in candidates:
        if path.exists():
            return path
    return candidates[0]


def _rel(root: Path, value: str) -> Path:
    path = Path(value)
    if path.is_absolute():
        return path
    parts = [p for p in path.parts if p not in (".", "")]
    return root.joinpath(*parts)


def _none_path(value: Any) -> bool:
    return value is None or (isinstance(value, str) and value.strip() in ("", "None", "none", "null"))


def _yes_no_gold(value: str, where: str, key: str) -> str:
    v = value.strip().lower().rstrip(".")
    if v not in ("yes", "no"):
        raise BenchmarkFormatError(f"{where}: field {key!r} must be yes or no, found {value!r}")
    return v


def _yes_no_prompt(question: str, suffix: str | None) -> str:
    question = question.strip()
    if suffix and "yes or no" not in question.lower():
        return question + suffix
    return question


def choice_prompt(question: str, options: dict[str, str], style: str = "dot") -> str:
    """Question, one option per line (``"A. cat"`` or ``"(A) cat"``), then the instruction."""
    lines = [question.strip()]
    for letter, text in options.items():
        lines.append(f"({letter}) {text}" if style == "paren" else f"{letter}. {text}")
    lines.append(CHOICE_INSTRUCTION)
    return "\n".join(lines)


def _gold_letter(answer: str, options: dict[str, str], where: str, key: str) -> str:
    a = answer.strip()
    if a.upper().rstrip(".)").lstrip("(") in options:
        return a.upper().rstrip(".)").lstrip("(")
    for letter, text in options.items():
        if a == text.strip():
            return letter
    for letter, text in options.items():
        if a.casefold() == text.strip().casefold():
            return letter
    raise BenchmarkFormatError(f"{where}: field {key!r} ({answer!r}) is not one of the options {list(options.values())}")


# ---------------------------------------------------------------------------------------------
# AVHBench
# ---------------------------------------------------------------------------------------------

# code -> names the QA file uses
AVHBENCH_TASKS: dict[str, tuple[str, ...]] = {
    "ADVH": ("Audio-driven Video Hallucination",),
    "VDAH": ("Video-driven Audio Hallucination",),
    "AVM": ("AV Matching", "Audio-visual Matching", "Audio-Visual Matching"),
    "AVC": ("AV Captioning", "Audio-visual Captioning", "Audio-Visual Captioning"),
}
_AVH_LOOKUP = {name.casefold(): code for code, names in AVHBENCH_TASKS.items() for name in (code, *names)}


def read_avhbench(
    data_dir: str | os.PathLike, data_file: str | None = None, prompt_suffix: str | None = DEFAULT_YES_NO_SUFFIX
) -> list[EvalItem]:
    """AVHBench: ``QA.json`` items ``{video_id, task, text, label}``.

    Tasks: ADVH (audio-driven video hallucination), VDAH (video-driven audio hallucination),
    AVM (audio-visual matching): yes/no; AVC (audio-visual captioning): a caption, kept but
    not scored. Each item sees the video ``videos/<video_id>.mp4`` (or ``video/``) and its sound:
    ``audios/<video_id>.wav`` when present, else the video's own audio track. ``prompt_suffix``
    is appended to yes/no questions that do not already ask for "yes or no".
    """
    root = Path(data_dir)
    if data_file or any((root / n).is_file() for n in ("QA.json", "qa.json", "json/QA.json")):
        files = [_annotation_file(root, data_file, ("QA.json", "qa.json", "json/QA.json"), "AVHBench")]
    elif (root / "json").is_dir() and any((root / "json").glob("*.json")):
        files = sorted((root / "json").glob("*.json"))  # v0 layout: one file per video
    else:
        raise BenchmarkFormatError(f"no AVHBench annotations in {root} (looked for QA.json and json/*.json); pass --data_file")

    items: list[EvalItem] = []
    seen: Counter[tuple[str, str]] = Counter()
    for path in files:
        for index, raw in enumerate(_as_list(_load_json(path), path)):
            where = f"{path.name}: item {index}"
            video_id = str(_field(raw, "video_id", where, kinds=(str, int))).strip()
            task_name = _field(raw, "task", where)
            text = _field(raw, "text", where)
            label = _field(raw, "label", where)
            code = _AVH_LOOKUP.get(task_name.strip().casefold())
            if code is None:
                known = ", ".join(n for names in AVHBENCH_TASKS.values() for n in names)
                raise BenchmarkFormatError(f"{where}: field 'task' has unknown value {task_name!r} (known: {known})")
            video = _first_existing([root / "videos" / f"{video_id}.mp4", root / "video" / f"{video_id}.mp4", root / f"{video_id}.mp4"])
            audio_file = _first_existing([root / "audios" / f"{video_id}.wav", root / "audio" / f"{video_id}.wav"])
            audio = audio_file if audio_file.exists() else video
            k = seen[(video_id, code)]
            seen[(video_id, code)] += 1
            caption = code == "AVC"
            items.append(
                EvalItem(
                    id=f"{video_id}:{code}:{k}",
                    task=code,
                    prompt=text.strip() if caption else _yes_no_prompt(text, prompt_suffix),
                    gold=label.strip() if caption else _yes_no_gold(label, where, "label"),
                    kind="caption" if caption else "yesno",
                    videos=[str(video)],
                    audios=[str(audio)],
                    aliases=AVHBENCH_TASKS[code],
                    meta={"video_id": video_id, "question": text},
                )
            )
    return items


# ---------------------------------------------------------------------------------------------
# CMM
# ---------------------------------------------------------------------------------------------


def read_cmm(
    data_dir: str | os.PathLike, data_file: str | None = None, prompt_suffix: str | None = DEFAULT_YES_NO_SUFFIX
) -> list[EvalItem]:
    """CMM (The Curse of Multi-Modalities): a JSON list or JSONL of ``{category, sub_category,
    modality, granularity, video_path, audio_path, question, answer}``.

    ``video_path``/``audio_path`` are relative to ``data_dir`` (or to the annotation file's
    folder); ``null`` or ``"None"`` means the item has no such input. The task is the
    ``sub_category``; ``--tasks`` also accepts a ``category``. Scores are broken down by
    ``granularity`` as well.
    """
    root = Path(data_dir)
    if data_file:
        path = _annotation_file(root, data_file, (), "CMM")
    else:
        names = ["all_data_final_reorg.json", "cmm.json", "cmm.jsonl"]
        found = [root / n for n in names if (root / n).is_file()]
        if not found:
            found = sorted(p for p in root.iterdir() if p.suffix in (".json", ".jsonl") and p.is_file()) if root.is_dir() else []
            if len(found) > 1:
                raise BenchmarkFormatError(
                    f"several JSON files in {root} ({', '.join(p.name for p in found)}): pass --data_file"
                )
        if not found:
            raise BenchmarkFormatError(f"no CMM annotation file in {root} (looked for {', '.join(names)} or one *.json); pass --data_file")
        path = found[0]

    items = []
    for index, raw in enumerate(_as_list(_load_json(path), path)):
        where = f"{path.name}: item {index}"
        sub = _field(raw, "sub_category", where)
        category = _field(raw, "category", where)
        granularity = _field(raw, "granularity", where)
        question = _field(raw, "question", where)
        answer = _yes_no_gold(_field(raw, "answer", where), where, "answer")
        if "video_path" not in raw and "audio_path" not in raw:
            raise BenchmarkFormatError(f"{where}: fields 'video_path' and 'audio_path' are both missing")
        media = {}
        for key in ("video_path", "audio_path"):
            value = raw.get(key)
            if _none_path(value):
                continue
            if not isinstance(value, str):
                raise BenchmarkFormatError(f"{where}: field {key!r} must be a path string, found {value!r}")
            media[key] = str(_first_existing([_rel(root, value), _rel(path.parent, value)]))
        if not media:
            raise BenchmarkFormatError(f"{where}: fields 'video_path' and 'audio_path' are both empty")
        items.append(
            EvalItem(
                id=f"{index:05d}",
                task=sub,
                prompt=_yes_no_prompt(question, prompt_suffix),
                gold=answer,
                kind="yesno",
                videos=[media["video_path"]] if "video_path" in media else [],
                audios=[media["audio_path"]] if "audio_path" in media else [],
                aliases=(category,),
                groups={"granularity": granularity},
                meta={
                    "category": category,
                    "sub_category": sub,
                    "granularity": granularity,
                    "modality": raw.get("modality"),
                    "correlation_type": raw.get("correlation_type"),
                    "question": question,
                },
            )
        )
    return items


# ---------------------------------------------------------------------------------------------
# DailyOmni
# ---------------------------------------------------------------------------------------------


def read_dailyomni(data_dir: str | os.PathLike, data_file: str | None = None) -> list[EvalItem]:
    """Daily-Omni: ``qa.json`` items ``{Question, Choice, Answer, video_id, Type,
    video_duration, video_category, ...}`` (a list, or a dict of entries).

    ``Choice`` is ``["A. ...", "B. ...", ...]`` (or a letter -> text dict); ``Answer`` a letter.
    Media: ``Videos/<id>/<id>_video.mp4`` (or ``Videos/<id>.mp4``) with the sound of
    ``Videos/<id>/<id>_audio.wav`` when present, else the video's own audio track. The task is
    ``Type``; scores are broken down by ``video_duration`` as well.
    """
    root = Path(data_dir)
    path = _annotation_file(root, data_file, ("qa.json", "QA.json"), "DailyOmni")
    items = []
    for index, raw in enumerate(_as_list(_load_json(path), path)):
        where = f"{path.name}: item {index}"
        question = _field(raw, "Question", where)
        choices = _field(raw, "Choice", where, kinds=(list, dict))
        answer = _field(raw, "Answer", where)
        video_id = str(_field(raw, "video_id", where, kinds=(str, int))).strip()
        qtype = _field(raw, "Type", where, optional=True) or "all"
        if not choices or not all(isinstance(c, str) for c in (choices.values() if isinstance(choices, dict) else choices)):
            raise BenchmarkFormatError(f"{where}: field 'Choice' must be a non-empty list of strings")
        options = split_options(choices)
        gold = _gold_letter(answer, options, where, "Answer")
        vdir = root / "Videos" / video_id
        video = _first_existing(
            [vdir / f"{video_id}_video.mp4", root / "Videos" / f"{video_id}.mp4", vdir / f"{video_id}.mp4", root / "videos" / f"{video_id}.mp4"]
        )
        audio_file = vdir / f"{video_id}_audio.wav"
        groups = {}
        if raw.get("video_duration"):
            groups["duration"] = str(raw["video_duration"])
        items.append(
            EvalItem(
                id=f"{video_id}:{index}",
                task=str(qtype),
                prompt=choice_prompt(question, options),
                gold=gold,
                kind="choice",
                videos=[str(video)],
                audios=[str(audio_file if audio_file.exists() else video)],
                options=list(options.values()),
                groups=groups,
                meta={
                    "video_id": video_id,
                    "video_duration": raw.get("video_duration"),
                    "video_category": raw.get("video_category"),
                    "content_parent_category": raw.get("content_parent_category"),
                },
            )
        )
    return items


# ---------------------------------------------------------------------------------------------
# MVBench
# ---------------------------------------------------------------------------------------------

# task (json file stem) -> (folder under video/, media kind, whether items carry start/end)
MVBENCH_TASKS: dict[str, tuple[str, str, bool]] = {
    "action_sequence": ("star/Charades_v1_480", "video", True),
    "action_prediction": ("star/Charades_v1_480", "video", True),
    "action_antonym": ("ssv2_video", "video", False),
    "fine_grained_action": ("Moments_in_Time_Raw/videos", "video", False),
    "unexpected_action": ("FunQA_test/test", "video", False),
    "object_existence": ("clevrer/video_validation", "video", False),
    "object_interaction": ("star/Charades_v1_480", "video", True),
    "object_shuffle": ("perception/videos", "video", False),
    "moving_direction": ("clevrer/video_validation", "video", False),
    "action_localization": ("sta/sta_video", "video", True),
    "scene_transition": ("scene_qa/video", "video", False),
    "action_count": ("perception/videos", "video", False),
    "moving_count": ("clevrer/video_validation", "video", False),
    "moving_attribute": ("clevrer/video_validation", "video", False),
    "state_change": ("perception/videos", "video", False),
    "fine_grained_pose": ("nturgbd", "video", False),
    "character_order": ("perception/videos", "video", False),
    "egocentric_navigation": ("vlnqa", "video", False),
    "episodic_reasoning": ("tvqa/frames_fps3_hq", "frames", True),
    "counterfactual_inference": ("clevrer/video_validation", "video", False),
}
MVBENCH_FRAME_FPS = 3.0  # tvqa/frames_fps3_hq


def read_mvbench(data_dir: str | os.PathLike, data_file: str | None = None) -> list[EvalItem]:
    """MVBench: ``json/<task>.json`` lists of ``{video, question, candidates, answer}`` (plus
    ``start``/``end`` in seconds for the clipped tasks), videos under ``video/<source>/``.

    The task is the JSON file's stem (``action_sequence``, ...). The 20 official tasks know
    their source folder (:data:`MVBENCH_TASKS`); for any other file, or when the file is not
    there, ``video/<video>`` and ``<data_dir>/<video>`` are tried. ``episodic_reasoning``
    videos are folders of frames at 3 fps. ``data_file`` may name another folder of task
    files or one task file.
    """
    root = Path(data_dir)
    if data_file:
        target = Path(data_file) if Path(data_file).is_absolute() else root / data_file
        files = sorted(target.glob("*.json")) if target.is_dir() else [target]
    else:
        files = sorted((root / "json").glob("*.json"))
    if not files or not all(f.is_file() for f in files):
        raise BenchmarkFormatError(f"no MVBench task files in {root / 'json'} (json/<task>.json); pass --data_file")
    items = []
    for path in files:
        task = path.stem
        folder, media_kind, _ = MVBENCH_TASKS.get(task, ("", "video", False))
        for index, raw in enumerate(_as_list(_load_json(path), path)):
            where = f"{path.name}: item {index}"
            video = _field(raw, "video", where)
            question = _field(raw, "question", where)
            candidates = _field(raw, "candidates", where, kinds=(list,))
            answer = _field(raw, "answer", where, kinds=(str, int, float))
            if not candidates:
                raise BenchmarkFormatError(f"{where}: field 'candidates' is empty")
            options = split_options([str(c) for c in candidates])
            gold = _gold_letter(str(answer), options, where, "answer")
            paths = [root / "video" / folder / video] if folder else []
            paths += [root / "video" / video, root / video]
            media = _first_existing(paths)
            clip = None
            if "start" in raw or "end" in raw:
                start = _field(raw, "start", where, kinds=(int, float))
                end = _field(raw, "end", where, kinds=(int, float))
                if end < start:
                    raise BenchmarkFormatError(f"{where}: field 'end' ({end}) is before 'start' ({start})")
                clip = (float(start), float(end))
            frames = media_kind == "frames" or (media.is_dir() and media.exists())
            items.append(
                EvalItem(
                    id=f"{task}:{index}",
                    task=task,
                    prompt=choice_prompt(question, options, style="paren"),
                    gold=gold,
                    kind="choice",
                    videos=[str(media)],
                    options=list(options.values()),
                    clip=clip,
                    frame_fps=MVBENCH_FRAME_FPS if frames else None,
                    meta={"video": video, "answer": answer},
                )
            )
    return items


# ---------------------------------------------------------------------------------------------
# MMAU
# ---------------------------------------------------------------------------------------------


def read_mmau(data_dir: str | os.PathLike, data_file: str | None = None) -> list[EvalItem]:
    """MMAU test-mini: ``mmau-test-mini.json`` items ``{id?, audio_id, question, choices,
    answer, task, difficulty, category, sub-category}``.

    ``audio_id`` is a path relative to ``data_dir`` (``./test-mini-audios/<uuid>.wav``); the
    answer is the text of the correct choice. The task is ``task`` (sound, music, speech);
    scores are broken down by ``difficulty`` as well.
    """
    root = Path(data_dir)
    path = _annotation_file(root, data_file, ("mmau-test-mini.json", "mmau-test.json", "mmau.json"), "MMAU")
    items = []
    for index, raw in enumerate(_as_list(_load_json(path), path)):
        where = f"{path.name}: item {index}"
        audio_id = _field(raw, "audio_id", where)
        question = _field(raw, "question", where)
        choices = _field(raw, "choices", where, kinds=(list,))
        answer = _field(raw, "answer", where)
        if not choices or not all(isinstance(c, str) for c in choices):
            raise BenchmarkFormatError(f"{where}: field 'choices' must be a non-empty list of strings")
        options = split_options(choices)
        gold = _gold_letter(answer, options, where, "answer")
        name = Path(audio_id).name
        audio = _first_existing([_rel(root, audio_id), root / "test-mini-audios" / name, root / name])
        groups = {"difficulty": str(raw["difficulty"])} if raw.get("difficulty") else {}
        items.append(
            EvalItem(
                id=str(raw.get("id") or f"{index:05d}"),
                task=str(raw.get("task") or "all"),
                prompt=choice_prompt(question, options, style="paren"),
                gold=gold,
                kind="choice",
                audios=[str(audio)],
                options=list(options.values()),
                groups=groups,
                meta={k: raw.get(k) for k in ("category", "sub-category", "difficulty", "dataset") if k in raw},
            )
        )
    ids = Counter(it.id for it in items)
    dup = [i for i, c in ids.items() if c > 1]
    if dup:
        raise BenchmarkFormatError(f"{path.name}: field 'id' repeats ({', '.join(dup[:5])})")
    return items


# ---------------------------------------------------------------------------------------------
# image benchmarks: AMBER, Object HalBench, MMHal-Bench, POPE
# ---------------------------------------------------------------------------------------------


def _image_path(root: Path, name: str, folders: Sequence[str], image_dir: str | None) -> str:
    """The first existing ``folder/name`` (``image_dir`` first), else the first candidate."""
    bases = ([Path(image_dir)] if image_dir else []) + [root / f for f in folders] + [root]
    return str(_first_existing([b / name for b in bases]))


def amber_files(data_dir: str | os.PathLike) -> dict[str, Path]:
    """AMBER's annotation files: ``annotations``, ``relation`` (word associations) and
    ``safe_words``, under ``data/`` (the repository layout) or at the top of ``data_dir``."""
    root = Path(data_dir)
    base = root / "data" if (root / "data" / "annotations.json").is_file() else root
    files = {"annotations": base / "annotations.json", "relation": base / "relation.json", "safe_words": base / "safe_words.txt"}
    missing = [str(p) for p in files.values() if not p.is_file()]
    if missing:
        raise BenchmarkFormatError(
            f"AMBER files missing: {', '.join(missing)} (the data/ folder of the AMBER repository: annotations.json, "
            "relation.json, safe_words.txt)"
        )
    return files


AMBER_TASK_ALIASES = {
    "generative": ("g",),
    "existence": ("discriminative", "d", "de"),
    "state": ("discriminative", "d", "attribute", "da"),
    "number": ("discriminative", "d", "attribute", "da"),
    "action": ("discriminative", "d", "attribute", "da"),
    "relation": ("discriminative", "d", "dr"),
}


def read_amber(
    data_dir: str | os.PathLike,
    data_file: str | None = None,
    prompt_suffix: str | None = IMAGE_YES_NO_SUFFIX,
    image_dir: str | None = None,
) -> list[EvalItem]:
    """AMBER: queries ``{id, image, query}`` (``data/query/query_all.json``; ``--data_file`` picks
    another query file, e.g. ``data/query/query_generative.json``) and ``data/annotations.json``
    (``{id, type, truth, hallu}``; annotation ``id`` n is the query of id n).

    Generative queries (``type: generative``) are captions scored by CHAIR/Cover/Hal/Cog; the
    others are yes/no questions, tasks ``existence``, ``state``, ``number``, ``action``,
    ``relation`` (``--tasks`` also takes ``discriminative``, ``attribute`` and AMBER's own codes
    g, d, de, da, dr)."""
    from .metrics import amber_dimension

    root = Path(data_dir)
    files = amber_files(root)
    qfile = _annotation_file(
        root, data_file, ("data/query/query_all.json", "query/query_all.json", "query_all.json"), "AMBER query"
    )
    annotations = _as_list(_load_json(files["annotations"]), files["annotations"])
    by_id: dict[int, dict] = {}
    for index, ann in enumerate(annotations):
        where = f"{files['annotations'].name}: item {index}"
        ann_id = _field(ann, "id", where, kinds=(int,), optional=True)
        by_id[ann_id if ann_id is not None else index + 1] = ann
    items = []
    for index, raw in enumerate(_as_list(_load_json(qfile), qfile)):
        where = f"{qfile.name}: item {index}"
        qid = _field(raw, "id", where, kinds=(int,))
        image = _field(raw, "image", where)
        query = _field(raw, "query", where)
        ann = by_id.get(qid)
        if ann is None:
            raise BenchmarkFormatError(f"{where}: id {qid} has no entry in {files['annotations'].name}")
        awhere = f"{files['annotations'].name}: id {qid}"
        kind = _field(ann, "type", awhere)
        path = _image_path(root, image, ("image", "images"), image_dir)
        if kind == "generative":
            truth = _field(ann, "truth", awhere, kinds=(list,))
            hallu = _field(ann, "hallu", awhere, kinds=(list,))
            items.append(
                EvalItem(
                    id=str(qid), task="generative", prompt=query.strip(), gold=None, kind="caption", images=[path],
                    aliases=AMBER_TASK_ALIASES["generative"],
                    meta={"amber_id": qid, "type": kind, "truth": truth, "hallu": hallu},
                )
            )  # fmt: skip
        else:
            dim = amber_dimension(kind)
            gold = _yes_no_gold(_field(ann, "truth", awhere), awhere, "truth")
            items.append(
                EvalItem(
                    id=str(qid), task=dim, prompt=_yes_no_prompt(query, prompt_suffix), gold=gold, kind="yesno",
                    images=[path], aliases=AMBER_TASK_ALIASES[dim], meta={"amber_id": qid, "type": kind},
                )
            )  # fmt: skip
    return items


def read_objhal(data_dir: str | os.PathLike, data_file: str | None = None, image_dir: str | None = None) -> list[EvalItem]:
    """Object HalBench: JSON lines ``{image_id, question, image?, org_idx?}`` (300 COCO images,
    8 description prompts). ``image`` holds the picture as base64: it is written once to
    ``<data_dir>/objhal_images/<image_id>.jpg``; without it the COCO file
    ``val2014/COCO_val2014_<id:012d>.jpg`` (or ``train2014``) is used."""
    import base64
    import binascii

    root = Path(data_dir)
    path = _annotation_file(
        root, data_file, ("obj_halbench_300_with_image.jsonl", "obj_halbench_300.jsonl", "objhal.jsonl"), "Object HalBench"
    )
    items = []
    for index, raw in enumerate(_as_list(_load_json(path), path)):
        where = f"{path.name}: item {index}"
        image_id = int(_field(raw, "image_id", where, kinds=(int, str)))
        question = _field(raw, "question", where)
        encoded = raw.get("image")
        if isinstance(encoded, str) and len(encoded) > 256:
            target = root / "objhal_images" / f"{image_id}.jpg"
            if not target.is_file():
                try:
                    data = base64.b64decode(encoded, validate=False)
                except (binascii.Error, ValueError):
                    raise BenchmarkFormatError(f"{where}: field 'image' is not base64") from None
                target.parent.mkdir(parents=True, exist_ok=True)
                tmp = target.with_suffix(".tmp")
                tmp.write_bytes(data)
                os.replace(tmp, target)
            image = str(target)
        else:
            names = [f"COCO_val2014_{image_id:012d}.jpg", f"COCO_train2014_{image_id:012d}.jpg"]
            candidates = [Path(image_dir) / n for n in names] if image_dir else []
            candidates += [root / folder / n for folder in ("val2014", "train2014", "images") for n in names]
            image = str(_first_existing(candidates))
        key = raw.get("org_idx", index)
        items.append(
            EvalItem(
                id=f"{key}:{image_id}", task="objhal", prompt=question.strip(), gold=None, kind="caption", images=[image],
                meta={"image_id": image_id, "question": question},
            )
        )  # fmt: skip
    return items


def read_mmhal(data_dir: str | os.PathLike, data_file: str | None = None, image_dir: str | None = None) -> list[EvalItem]:
    """MMHal-Bench: ``response_template.json``, a list of ``{question, gt_answer, image_content,
    image_src, image_id, question_type, question_topic, ...}``; images ``images/<basename of
    image_src>``. Item i's question type (the task) is the i % 8-th of attribute, adversarial,
    comparison, counting, relation, environment, holistic, other, as MMHal-Bench's scorer groups
    them; answers are judged by an LLM (``--judge_model``)."""
    from .metrics import MMHAL_QUESTION_TYPES

    root = Path(data_dir)
    path = _annotation_file(root, data_file, ("response_template.json", "mmhal-bench_answer_template.json"), "MMHal-Bench")
    items = []
    for index, raw in enumerate(_as_list(_load_json(path), path)):
        where = f"{path.name}: item {index}"
        question = _field(raw, "question", where)
        gt_answer = _field(raw, "gt_answer", where)
        content = _field(raw, "image_content", where, kinds=(list, str), optional=True) or []
        src = _field(raw, "image_src", where, optional=True) or _field(raw, "image_path", where, optional=True)
        if not src:
            raise BenchmarkFormatError(f"{where}: field 'image_src' is missing")
        name = src.rstrip("/").split("/")[-1]
        qtype = MMHAL_QUESTION_TYPES[index % len(MMHAL_QUESTION_TYPES)]
        items.append(
            EvalItem(
                id=f"{index:03d}", task=qtype, prompt=question.strip(), gold=gt_answer, kind="caption",
                images=[_image_path(root, name, ("images", "image"), image_dir)],
                meta={
                    "question": question,
                    "gt_answer": gt_answer,
                    "image_content": content if isinstance(content, list) else [content],
                    "question_type": raw.get("question_type", qtype),
                    "question_topic": raw.get("question_topic"),
                    "image_id": raw.get("image_id"),
                },
            )
        )  # fmt: skip
    return items


POPE_SPLITS = ("random", "popular", "adversarial")


def read_pope(
    data_dir: str | os.PathLike,
    data_file: str | None = None,
    prompt_suffix: str | None = IMAGE_YES_NO_SUFFIX,
    image_dir: str | None = None,
) -> list[EvalItem]:
    """POPE: ``<dataset>_pope_<split>.json`` files of JSON lines ``{question_id, image, text,
    label}`` (``coco_pope_random.json``, ``..._popular``, ``..._adversarial``, in ``data_dir`` or
    ``output/coco/``); the split is the task. Images ``val2014/<image>`` (or ``--image_dir``)."""
    root = Path(data_dir)
    if data_file:
        files = [_annotation_file(root, data_file, (), "POPE")]
    else:
        files = []
        for folder in (root, root / "output" / "coco"):
            for split in POPE_SPLITS:
                files += sorted(p for p in folder.glob(f"*_pope_{split}.json*") if p.is_file())
        prefixes = sorted({p.name.split("_pope_")[0] for p in files})
        if "coco" in prefixes and len(prefixes) > 1:
            files = [p for p in files if p.name.startswith("coco_pope_")]
        elif len(prefixes) > 1:
            raise BenchmarkFormatError(f"POPE files of several datasets in {root} ({', '.join(prefixes)}): pass --data_file")
        if not files:
            raise BenchmarkFormatError(f"no POPE files in {root} (looked for coco_pope_<random|popular|adversarial>.json); pass --data_file")
    items = []
    for path in files:
        split = path.name.split("_pope_")[-1].split(".")[0] if "_pope_" in path.name else path.stem
        text = path.read_text(encoding="utf-8").strip()
        data = _load_json(path) if text.startswith("[") else _load_jsonl_text(text, path)
        for index, raw in enumerate(_as_list(data, path)):
            where = f"{path.name}: item {index}"
            qid = _field(raw, "question_id", where, kinds=(int, str))
            image = _field(raw, "image", where)
            question = _field(raw, "text", where)
            label = _yes_no_gold(_field(raw, "label", where), where, "label")
            items.append(
                EvalItem(
                    id=f"{split}:{qid}", task=split, prompt=_yes_no_prompt(question, prompt_suffix), gold=label, kind="yesno",
                    images=[_image_path(root, image, ("val2014", "images", "image"), image_dir)],
                    meta={"question_id": qid, "image": image},
                )
            )  # fmt: skip
    return items


def _load_jsonl_text(text: str, path: Path) -> list[Any]:
    records = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise BenchmarkFormatError(f"{path}: line {lineno} is not valid JSON ({e.msg})") from None
    return records


# ---------------------------------------------------------------------------------------------
# dispatch, filters, media check
# ---------------------------------------------------------------------------------------------

BENCHMARKS: dict[str, Callable[..., list[EvalItem]]] = {
    "avhbench": read_avhbench,
    "cmm": read_cmm,
    "dailyomni": read_dailyomni,
    "mvbench": read_mvbench,
    "mmau": read_mmau,
    "amber": read_amber,
    "objhal": read_objhal,
    "mmhal": read_mmhal,
    "pope": read_pope,
}
# readers that take --prompt_suffix (yes/no questions) and --image_dir
_SUFFIX_READERS = ("avhbench", "cmm", "amber", "pope")
_IMAGE_DIR_READERS = ("amber", "objhal", "mmhal", "pope")
# tasks run when --tasks is not given (captioning is opt-in: long outputs, not scored)
DEFAULT_EXCLUDED_TASKS = {"avhbench": {"AVC"}}


def read_benchmark(
    name: str,
    data_dir: str | os.PathLike,
    data_file: str | None = None,
    tasks: Sequence[str] | None = None,
    limit: int | None = None,
    prompt_suffix: str | None = None,
    image_dir: str | None = None,
) -> list[EvalItem]:
    """Read benchmark ``name`` from ``data_dir``; keep ``tasks`` (names or aliases,
    case-insensitive; default: every task but AVHBench captioning) and the first ``limit``
    items of each task, in file order."""
    if name not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {name!r}; choose from {', '.join(BENCHMARKS)}")
    if not Path(data_dir).is_dir():
        raise BenchmarkFormatError(f"--data_dir {data_dir} is not a folder")
    kwargs: dict[str, Any] = {"data_file": data_file}
    if name in _SUFFIX_READERS and prompt_suffix is not None:
        kwargs["prompt_suffix"] = prompt_suffix
    if name in _IMAGE_DIR_READERS:
        kwargs["image_dir"] = image_dir
    elif image_dir:
        raise ValueError(f"--image_dir is for the image benchmarks ({', '.join(_IMAGE_DIR_READERS)}), not {name}")
    items = BENCHMARKS[name](data_dir, **kwargs)

    if tasks:
        wanted = {t.strip().casefold() for t in tasks if t.strip()}
        names = {n.casefold() for it in items for n in (it.task, *it.aliases)}
        unknown = sorted(t for t in wanted if t not in names)
        if unknown:
            available = sorted(dict.fromkeys(it.task for it in items))
            raise ValueError(f"unknown task(s) {unknown} for {name}; the data has: {', '.join(available)}")
        items = [it for it in items if {n.casefold() for n in (it.task, *it.aliases)} & wanted]
    else:
        skip = DEFAULT_EXCLUDED_TASKS.get(name, set())
        items = [it for it in items if it.task not in skip]

    if limit is not None:
        if limit < 0:
            raise ValueError("--limit must be >= 0")
        kept: Counter[str] = Counter()
        out = []
        for it in items:
            if kept[it.task] < limit:
                kept[it.task] += 1
                out.append(it)
        items = out

    ids = Counter(it.id for it in items)
    dup = [i for i, c in ids.items() if c > 1]
    if dup:
        raise BenchmarkFormatError(f"item ids repeat in {name} ({', '.join(dup[:5])}); resuming needs unique ids")
    return items


def find_missing_media(items: Iterable[EvalItem]) -> list[tuple[str, str]]:
    """``(item id, path)`` for every media input that is not on disk (frame folders must be
    folders, everything else files)."""
    missing = []
    for it in items:
        for kind, path in it.media():
            ok = os.path.isdir(path) if kind == "frames" else os.path.isfile(path)
            if not ok:
                missing.append((it.id, path))
    return missing
