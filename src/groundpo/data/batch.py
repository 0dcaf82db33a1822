"""Batch algebra for collated preference batches: the first rows of a batch, and several batches as one.

The engine needs two operations on what the collator produced:

- :func:`take_rows` keeps the first ``n`` rows of a batch with exactly their media. A pass that
  scores only the chosen responses (OmniDPO's, mDPO's and MFPO's corrupted passes) runs on the B
  chosen rows of a 2B-row pairwise batch.
- :func:`concat_batches` joins the batches of several views into one, so that every pass with
  gradient of a step is ONE forward: DDP (with any gradient checkpointing), ZeRO-3 and FSDP all
  accept one forward and one backward per step, and one larger forward is faster than several.

A collated batch holds three kinds of entries:

- row entries, one slice per row: ``input_ids``, ``attention_mask``, ``labels`` ([N, L], padded
  on the right), mrope ``position_ids`` ([P, N, L] or [N, L]), ``rope_deltas`` ([N, 1]), and
  per-row lists (MiniCPM-o's ``pixel_values``, ``tgt_sizes``, ``image_bound``, ...);
- media entries, one slice per media *item* in row order (an image, a video, an audio):
  Qwen's flattened patches (``pixel_values`` rows = Π ``image_grid_thw`` per image), LLaVA's
  ``pixel_values`` [n, C, H, W], audio features [n, mel, T] and their masks;
- MiniCPM-o nests all of this under ``data``.

``counts`` (recorded by ``groundpo.data.collator``) gives the images, videos and audios each row
owns, so both operations know which media belong to which rows. An entry this module does not
know is an error that names it: silently dropping or mis-slicing model inputs would train on
garbage.
"""

from __future__ import annotations

from typing import Any

import torch

from ..views import MEDIA_KINDS

IGNORE_INDEX = -100

# row entries [N, ...] and the value that pads them on the right
ROW_PAD = {
    "input_ids": None, "attention_mask": 0, "labels": IGNORE_INDEX, "token_type_ids": 0, "mm_token_type_ids": 0,
    "groundpo_segments": 0,  # groundpo.data.packing: which part of a packed row a token belongs to (0 = none)
}
ROW_FIXED = ("rope_deltas",)  # [N, k]: one value per row, no sequence axis
# Qwen-style media: entry -> (media kind, grid entry giving the patch rows of each item, or None = one per item)
QWEN_MEDIA = {
    "pixel_values": ("images", "image_grid_thw"),
    "image_grid_thw": ("images", None),
    "pixel_values_videos": ("videos", "video_grid_thw"),
    "video_grid_thw": ("videos", None),
    "video_second_per_grid": ("videos", None),
    "second_per_grid_ts": ("videos", None),
    "input_features": ("audios", None),
    "feature_attention_mask": ("audios", None),
}
# MiniCPM-o: audio feature rows are chunks; ``audio_feature_lens`` (a list per row) gives them
MINICPM_AUDIO = ("audio_features",)
PASSTHROUGH = ("data",)


class BatchAlgebraError(ValueError):
    """A collated batch holds an entry groundpo does not know how to slice or join."""


def rows_of(batch: dict) -> int:
    inner = batch["data"] if "data" in batch else batch
    return int(inner["input_ids"].shape[0])


def _items_per_row(batch: dict, kind: str, counts: dict[str, list[int]]) -> list[int]:
    return list(counts[kind])


def _patch_rows(grid: torch.Tensor) -> list[int]:
    return [int(t) * int(h) * int(w) for t, h, w in grid.tolist()]


def _item_units(batch: dict, key: str, kind: str, grid_key: str | None, n_items: int) -> list[int]:
    """How many leading-axis units of ``batch[key]`` each of the ``n_items`` items has."""
    if grid_key is not None and key.startswith("pixel_values") and grid_key in batch:
        return _patch_rows(batch[grid_key])
    return [1] * n_items


def _media_bounds(batch: dict, key: str, counts: dict[str, list[int]]) -> list[tuple[int, int]]:
    """(start, stop) along the leading axis of ``batch[key]`` for each row."""
    kind, grid_key = QWEN_MEDIA[key] if key in QWEN_MEDIA else ("images", None)
    per_row = _items_per_row(batch, kind, counts)
    units = _item_units(batch, key, kind, grid_key, sum(per_row))
    value = batch[key]
    size = value.shape[0] if torch.is_tensor(value) else len(value)
    if sum(per_row) == 0 and size > 0:
        # upstream's collator gives a batch without media one dummy item, its (masked) tokens in row 0
        return [(0, size)] + [(size, size)] * (len(per_row) - 1)
    if sum(units) != size:
        raise BatchAlgebraError(
            f"`{key}` has {size} entries along its first axis but the rows own {sum(per_row)} {kind} "
            f"({sum(units)} entries); the collated batch and its media counts disagree."
        )
    bounds, start, item = [], 0, 0
    for n in per_row:
        stop = start + sum(units[item : item + n])
        bounds.append((start, stop))
        start, item = stop, item + n
    return bounds


def _minicpm_audio_bounds(batch: dict) -> list[tuple[int, int]]:
    bounds, start = [], 0
    for lens in batch["audio_feature_lens"]:
        n = len(lens.tolist() if torch.is_tensor(lens) else lens)
        bounds.append((start, start + n))
        start += n
    return bounds


def _is_image_tensor(batch: dict, key: str) -> bool:
    """LLaVA-style ``pixel_values`` [n_images, C, H, W] (no grid)."""
    return key == "pixel_values" and torch.is_tensor(batch[key]) and batch[key].dim() == 4 and "image_grid_thw" not in batch


def _classify(batch: dict, key: str, n_rows: int) -> str:
    value = batch[key]
    if key in ROW_PAD or key in ROW_FIXED:
        return "row"
    if key == "position_ids":
        return "position"
    if key in QWEN_MEDIA and not (key == "pixel_values" and isinstance(value, list)):
        return "media"
    if _is_image_tensor(batch, key):
        return "media"
    if key in MINICPM_AUDIO:
        return "minicpm_audio"
    if isinstance(value, list) and len(value) == n_rows:
        return "row_list"
    if key in PASSTHROUGH:
        return "nested"
    raise BatchAlgebraError(
        f"groundpo does not know how the batch entry `{key}` ({type(value).__name__}"
        f"{' ' + str(tuple(value.shape)) if torch.is_tensor(value) else ''}) maps to rows; "
        "this model's collated inputs are not supported by the view engine yet."
    )


def _media_slicer(batch: dict, key: str, counts: dict[str, list[int]]):
    if _is_image_tensor(batch, key):
        per_row = counts["images"]
        if sum(per_row) == 0:  # upstream's dummy image, its tokens in row 0
            return [(0, batch[key].shape[0])] + [(batch[key].shape[0],) * 2] * (len(per_row) - 1)
        starts = [sum(per_row[:r]) for r in range(len(per_row))]
        return [(s, s + n) for s, n in zip(starts, per_row)]
    return _media_bounds(batch, key, counts)


def select_rows(batch: dict, counts: dict[str, list[int]], start: int, stop: int) -> dict:
    """Rows ``start:stop`` of ``batch`` with exactly their media (tensors are views, not copies)."""
    if "data" in batch:  # MiniCPM-o
        inner = select_rows(batch["data"], counts, start, stop)
        return {**{k: v for k, v in batch.items() if k != "data"}, "data": inner,
                "input_ids": inner["input_ids"], "labels": inner["labels"]}
    n_rows = rows_of(batch)
    out: dict[str, Any] = {}
    for key, value in batch.items():
        kind = _classify(batch, key, n_rows)
        if kind in ("row", "row_list"):
            out[key] = value[start:stop]
        elif kind == "position":
            out[key] = value[:, start:stop] if value.dim() == 3 else value[start:stop]
        elif kind in ("media", "minicpm_audio"):
            bounds = _minicpm_audio_bounds(batch) if kind == "minicpm_audio" else _media_slicer(batch, key, counts)
            first = bounds[start][0] if start < stop else 0
            last = bounds[stop - 1][1] if start < stop else 0
            out[key] = value[first:last]
    return out


def take_rows(batch: dict, counts: dict[str, list[int]], n: int) -> dict:
    """The first ``n`` rows of ``batch`` with exactly their media (tensors are views, not copies)."""
    return select_rows(batch, counts, 0, n)


def take_counts(counts: dict[str, list[int]], n: int) -> dict[str, list[int]]:
    return {kind: list(values[:n]) for kind, values in counts.items()}


def _pad_to(value: torch.Tensor, length: int, pad, dim: int) -> torch.Tensor:
    if value.shape[dim] == length:
        return value
    shape = list(value.shape)
    shape[dim] = length - value.shape[dim]
    return torch.cat([value, value.new_full(shape, pad)], dim=dim)


def concat_batches(batches: list[dict], pad_token_id: int) -> dict:
    """One batch holding the rows of ``batches`` in order (sequences padded on the right to the longest).

    Media entries are joined in the same order, so the k-th media item still belongs to the row
    whose placeholder tokens it fills. Audio features of different lengths are padded with zeros
    (and their masks with 0).
    """
    if len(batches) == 1:
        return batches[0]
    if any("data" in b for b in batches):  # MiniCPM-o
        inner = concat_batches([b["data"] for b in batches], pad_token_id)
        return {"data": inner, "input_ids": inner["input_ids"], "labels": inner["labels"]}
    keys = list(dict.fromkeys(k for b in batches for k in b))
    length = max(int(b["input_ids"].shape[1]) for b in batches)
    out: dict[str, Any] = {}
    for key in keys:
        present = [b for b in batches if key in b]
        kinds = {_classify(b, key, rows_of(b)) for b in present}
        if len(kinds) != 1:
            raise BatchAlgebraError(f"batch entry `{key}` has different layouts across views: {sorted(kinds)}")
        kind = kinds.pop()
        values = [b[key] for b in present]
        if kind in ("row", "position") and len(present) != len(batches):
            raise BatchAlgebraError(f"row entry `{key}` is missing from some views; cannot join them")
        if kind == "row":
            if key in ROW_FIXED:
                out[key] = torch.cat(values, dim=0)
            else:
                pad = pad_token_id if ROW_PAD[key] is None else ROW_PAD[key]
                out[key] = torch.cat([_pad_to(v, length, pad, 1) for v in values], dim=0)
        elif kind == "position":
            dim = 1 if values[0].dim() == 3 else 0
            out[key] = torch.cat([_pad_to(v, length, 1, v.dim() - 1) for v in values], dim=dim)
        elif kind == "row_list":
            out[key] = [item for v in values for item in v]
        elif kind in ("media", "minicpm_audio"):
            if values[0].dim() >= 2 and key in ("input_features", "feature_attention_mask", "audio_features"):
                frames = max(int(v.shape[-1]) for v in values)
                values = [_pad_to(v, frames, 0, v.dim() - 1) for v in values]
            out[key] = torch.cat(values, dim=0)
    return out


def concat_counts(counts: list[dict[str, list[int]]]) -> dict[str, list[int]]:
    return {kind: [n for c in counts for n in c.get(kind, [])] for kind in MEDIA_KINDS}
