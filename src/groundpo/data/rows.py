"""Our dataset columns and the checks a row must pass before training starts.

``dataset_info.json`` maps these logical columns to dataset columns, next to upstream's
(``"columns": {"modality": "modality", "rejected_images": "rejected_images", ...}``). After
upstream's converter has aligned a dataset, ``groundpo.integration.data`` adds them as
``_<name>`` columns, with media paths resolved against ``media_dir`` like upstream's.

A row that fails a check stops training at start-up with its dataset, index, field and value.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any, Callable, Iterable

EXTRA_COLUMNS = (
    "modality", "rejected_images", "rejected_videos", "rejected_audios", "region", "pair_type", "answer", "options",
)
MEDIA_COLUMNS = ("images", "videos", "audios", "rejected_images", "rejected_videos", "rejected_audios")
MODALITIES = ("visual", "audio", "audiovisual")


class RowError(ValueError):
    """A dataset row that cannot be trained on; the message names dataset, row, field and value."""


@dataclass(frozen=True)
class Row:
    """An aligned row as our checks see it (index = position in its source dataset file)."""

    dataset: str
    index: int
    values: dict[str, Any]

    def get(self, name: str) -> Any:
        return self.values.get(f"_{name}")

    def error(self, field: str, problem: str) -> RowError:
        return RowError(f"dataset {self.dataset!r}, row {self.index}, field {field!r}: {problem}")


RowCheck = Callable[[Row], None]


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


# ---------------------------------------------------------------- raw rows: types of every column
def _check_text(error, field: str, value: Any, *, required: bool = True) -> None:
    if value is None and not required:
        return
    if not isinstance(value, str):
        raise error(field, f"expected text, got {_shown(value)} ({_type_name(value)})")


def _check_message(error, field: str, value: Any, role_tag: str, content_tag: str) -> None:
    if not isinstance(value, dict):
        raise error(field, f"expected a message {{{role_tag!r}: ..., {content_tag!r}: ...}}, got {_shown(value)} ({_type_name(value)})")
    if not isinstance(value.get(content_tag), str):
        raise error(field, f"the message's {content_tag!r} must be text, got {_shown(value.get(content_tag))}")
    if role_tag in value and not isinstance(value[role_tag], str):
        raise error(field, f"the message's {role_tag!r} must be text, got {_shown(value[role_tag])}")


def _check_media_list(error, field: str, value: Any) -> None:
    if value is None or isinstance(value, str):
        return
    if not isinstance(value, list):
        raise error(field, f"expected a list of media paths, got {_shown(value)} ({_type_name(value)})")
    for item in value:
        frames_ok = isinstance(item, list) and all(isinstance(f, str) for f in item)
        if not (isinstance(item, (str, dict)) or frames_ok):
            raise error(field, f"expected media paths (text), got {_shown(item)} ({_type_name(item)}) in {_shown(value)}")


def check_raw_row(dataset: str, index: int, raw: dict[str, Any], attr: Any, extra_columns: dict[str, str]) -> None:
    """Types of one row as it is in the dataset file, for the columns ``dataset_info.json`` maps.

    ``attr`` is upstream's ``DatasetAttr`` (column names and sharegpt tags); ``extra_columns`` maps our
    logical columns (``modality``, ``region``, ...) to the file's columns. Errors name the logical field.
    """
    row = Row(dataset, index, {})

    def error(field: str, problem: str) -> RowError:
        return row.error(field, problem)

    def value(logical: str) -> Any:
        column = getattr(attr, logical, None) if logical not in extra_columns else extra_columns[logical]
        return raw.get(column) if column else None

    if attr.formatting == "sharegpt":
        messages = value("messages")
        if not isinstance(messages, list) or not messages:
            raise error("messages", f"expected a non-empty list of messages, got {_shown(messages)} ({_type_name(messages)})")
        for message in messages:
            _check_message(error, "messages", message, attr.role_tag, attr.content_tag)
        if attr.ranking:
            for side in ("chosen", "rejected"):
                _check_message(error, side, value(side), attr.role_tag, attr.content_tag)
    else:
        for logical in ("prompt", "query", "system"):
            _check_text(error, logical, value(logical), required=False)
        if attr.ranking:
            for side in ("chosen", "rejected"):
                _check_text(error, side, value(side))
    if attr.formatting == "sharegpt":
        _check_text(error, "system", value("system"), required=False)
    for logical in ("images", "videos", "audios"):
        _check_media_list(error, logical, value(logical))
    for logical in ("rejected_images", "rejected_videos", "rejected_audios"):
        if logical in extra_columns:
            _check_media_list(error, logical, value(logical))
    for logical in ("modality", "pair_type"):
        if logical in extra_columns:
            _check_text(error, logical, value(logical), required=False)
    if "answer" in extra_columns:
        _check_text(error, "answer", value("answer"), required=False)
    options = value("options") if "options" in extra_columns else None
    if options is not None and not (
        (isinstance(options, list) and all(isinstance(o, str) for o in options))
        or (isinstance(options, dict) and all(isinstance(o, str) for o in options.values()))
    ):
        raise error("options", f"expected a list of option texts or a {{letter: text}} mapping, got {_shown(options)}")
    region = value("region") if "region" in extra_columns else None
    if region is not None and not (
        isinstance(region, list) and len(region) == 4 and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in region)
    ):
        raise error("region", f"expected a pixel box [x0, y0, x1, y1], got {_shown(region)}")


def check_raw_rows(dataset: str, rows: Iterable[dict[str, Any]], attr: Any, extra_columns: dict[str, str]) -> None:
    for index, raw in enumerate(rows):
        check_raw_row(dataset, index, raw, attr, extra_columns)


def read_raw_rows(files: list[str]) -> Iterable[dict[str, Any]]:
    """Rows of local JSON / JSONL files as Python objects, for diagnosing files ``datasets`` cannot load."""
    for path in sorted(files):
        if path.endswith((".jsonl", ".json")):
            with open(path, encoding="utf-8") as f:
                text = f.read()
            try:
                data = json.loads(text)
                rows = data if isinstance(data, list) else [data]
            except json.JSONDecodeError:
                rows = [json.loads(line) for line in text.splitlines() if line.strip()]
            yield from rows


# ---------------------------------------------------------------- aligned rows: what every stage needs
PLACEHOLDERS = {"images": "<image>", "videos": "<video>", "audios": "<audio>"}


def check_responses(row: Row) -> None:
    """A preference row has a prompt and two non-empty answers (chosen, rejected)."""
    response = row.get("response") or []
    if len(row.get("prompt") or []) % 2 != 1:
        raise row.error("messages", "the prompt must end with a user turn")
    if len(response) < 2:
        raise row.error("chosen", "a preference row needs both a chosen and a rejected answer")
    for side, message in zip(("chosen", "rejected"), response[:2]):
        content = message.get("content") if isinstance(message, dict) else None
        if not isinstance(content, str) or not content.strip():
            raise row.error(side, f"empty answer {_shown(content)}; both answers of a preference pair need text")


def check_placeholders(row: Row) -> None:
    """Each media kind appears as often in the prompt (``<image>``, ``<video>``, ``<audio>``) as the row has files,
    for the row's media and for its contrast media (``rejected_*``)."""
    texts = [m.get("content", "") for m in (row.get("prompt") or []) if isinstance(m, dict)]
    for response in (row.get("response") or [])[:2]:
        count_in = texts + [response.get("content", "")]
        for kind, placeholder in PLACEHOLDERS.items():
            wanted = sum(t.count(placeholder) for t in count_in)
            for field in (kind, f"rejected_{kind}"):
                media = row.get(field)
                if field != kind and not media:
                    continue
                have = len(media or [])
                if have != wanted:
                    raise row.error(
                        field,
                        f"{have} file(s) for {wanted} {placeholder} placeholder(s) in the prompt; "
                        f"each {placeholder} takes one file, in order",
                    )


COMMON_CHECKS: tuple[RowCheck, ...] = (check_responses, check_placeholders)


# ---------------------------------------------------------------- prompt rows (MBPO's online data)
def check_prompt(row: Row) -> None:
    """A prompt row ends with a user turn (the answer, if the file has one, is not trained on)."""
    if len(row.get("prompt") or []) % 2 != 1:
        raise row.error("messages", "the prompt must end with a user turn")


def check_prompt_placeholders(row: Row) -> None:
    """Each media kind appears in the prompt as often as the row has files (in order)."""
    texts = [m.get("content", "") for m in (row.get("prompt") or []) if isinstance(m, dict)]
    for kind, placeholder in PLACEHOLDERS.items():
        wanted = sum(t.count(placeholder) for t in texts)
        have = len(row.get(kind) or [])
        if have != wanted:
            raise row.error(
                kind, f"{have} file(s) for {wanted} {placeholder} placeholder(s) in the prompt; each {placeholder} takes one file, in order"
            )


def check_verifiable_answer(row: Row) -> None:
    """A closed-ended prompt has a gold ``answer``: yes/no, or an option letter or text when it has ``options``."""
    from ..rewards import AnswerError, gold_answer, option_map

    answer, options = row.get("answer"), option_map(row.get("options"))
    if answer is None:
        raise row.error(
            "answer", "missing; an online (prompt-only) row needs its gold answer: yes/no, or an option with `options`"
        )
    if options is not None and len(options) < 2:
        raise row.error("options", f"a multiple-choice question needs at least two options, got {_shown(options)}")
    try:
        gold_answer(answer, options)
    except AnswerError as e:
        raise row.error("answer", str(e)) from None


PROMPT_CHECKS: tuple[RowCheck, ...] = (check_prompt, check_prompt_placeholders, check_verifiable_answer)


def check_modality(row: Row) -> None:
    """``modality`` is one of visual / audio / audiovisual, and the row holds that modality's media."""
    value = row.get("modality")
    if value is None:
        raise row.error("modality", "missing; expected one of visual, audio, audiovisual")
    if value not in MODALITIES:
        raise row.error("modality", f"unknown value {value!r}; expected one of visual, audio, audiovisual")
    has_visual = bool(row.get("images") or row.get("videos"))
    has_audio = bool(row.get("audios"))
    if not (has_visual and has_audio):
        missing = "image or video" if not has_visual else "audio"
        raise row.error(
            "modality",
            f"{value!r} row has no {missing}; MoD-DPO corrupts one modality while keeping the other, "
            "so each row needs both visual and audio media",
        )


def _has_visual(row: Row) -> bool:
    return bool(row.get("images") or row.get("videos"))


def check_audiovisual_media(row: Row) -> None:
    """OmniDPO corrupts the visual and the audio input of every row: both must be there."""
    if not _has_visual(row):
        raise row.error("videos", "OmniDPO corrupts the visual input; the row has no image or video")
    if not row.get("audios"):
        raise row.error("audios", "OmniDPO corrupts the audio input; the row has no audio")


def check_visual_media(row: Row) -> None:
    if not _has_visual(row):
        raise row.error("images", "this stage corrupts the image; the row has no image or video")


def check_contrast_image(row: Row) -> None:
    """JoMPO's m_l: one contrasting image per image of the row."""
    images, contrast = row.get("images") or [], row.get("rejected_images") or []
    if not images:
        raise row.error("images", "JoMPO needs the image m_w that matches the chosen answer")
    if len(contrast) != len(images):
        raise row.error(
            "rejected_images",
            f"JoMPO needs the contrasting image m_l of the rejected answer, one per image; found {len(contrast)} "
            f"for {len(images)} image(s)",
        )


PAIR_TYPES = ("output", "input")


def check_pair_type(row: Row) -> None:
    """ACPO: ``pair_type`` is output (audio attribution) or input (audio sensitivity, needs contrast audio)."""
    value = row.get("pair_type")
    if value not in PAIR_TYPES:
        raise row.error("pair_type", f"{'missing' if value is None else f'unknown value {value!r}'}; expected output or input")
    if value == "input" and not (row.get("rejected_audios") or row.get("rejected_videos") or row.get("rejected_images")):
        raise row.error(
            "rejected_audios",
            "an input-contrastive pair compares the response under the aligned and a mismatched input; "
            "give the mismatched audio track in rejected_audios",
        )
    if value == "input":
        chosen, rejected = (m.get("content") for m in (row.get("response") or [{}, {}])[:2])
        if chosen != rejected:
            raise row.error(
                "rejected",
                f"an input-contrastive pair scores ONE response under two inputs: rejected must repeat the chosen "
                f"answer, got {_shown(rejected)} for chosen {_shown(chosen)}",
            )


def check_media_files(row: Row) -> list[str]:
    """Paths of this row's media files that do not exist (URLs and in-memory media are skipped)."""
    missing = []
    for column in MEDIA_COLUMNS:
        for item in row.get(column) or []:
            paths = item if isinstance(item, list) else [item]  # a video may be a list of frames
            for path in paths:
                if isinstance(path, str) and "://" not in path and not os.path.exists(path):
                    missing.append(f"row {row.index} {column}: {path}")
    return missing


def check_rows(
    dataset_name: str, rows: list[dict[str, Any]], checks: tuple[RowCheck, ...], common: tuple[RowCheck, ...] = COMMON_CHECKS
) -> None:
    """Run the ``common`` checks (a preference row's; ``PROMPT_CHECKS`` for prompt rows) and ``checks`` on every
    row, then report every missing media file at once."""
    missing: list[str] = []
    for index, values in enumerate(rows):
        row = Row(dataset_name, index, values)
        for check in tuple(common) + tuple(checks):
            check(row)
        missing += check_media_files(row)
    if missing:
        shown = "\n  ".join(missing[:20]) + (f"\n  ... and {len(missing) - 20} more" if len(missing) > 20 else "")
        raise RowError(f"dataset {dataset_name!r}: {len(missing)} media file(s) not found:\n  {shown}")
