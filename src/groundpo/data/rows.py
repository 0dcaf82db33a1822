"""Our dataset columns and the checks a row must pass before training starts.

``dataset_info.json`` maps these logical columns to dataset columns, next to upstream's
(``"columns": {"modality": "modality", "rejected_images": "rejected_images", ...}``). After
upstream's converter has aligned a dataset, ``groundpo.integration.data`` adds them as
``_<name>`` columns, with media paths resolved against ``media_dir`` like upstream's.

A row that fails a check stops training at start-up with its dataset, index, field and value.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable

EXTRA_COLUMNS = ("modality", "rejected_images", "rejected_videos", "rejected_audios", "region", "pair_type")
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


def check_rows(dataset_name: str, rows: list[dict[str, Any]], checks: tuple[RowCheck, ...]) -> None:
    """Run ``checks`` on every row, then report every missing media file at once."""
    missing: list[str] = []
    for index, values in enumerate(rows):
        row = Row(dataset_name, index, values)
        for check in checks:
            check(row)
        missing += check_media_files(row)
    if missing:
        shown = "\n  ".join(missing[:20]) + (f"\n  ... and {len(missing) - 20} more" if len(missing) > 20 else "")
        raise RowError(f"dataset {dataset_name!r}: {len(missing)} media file(s) not found:\n  {shown}")
