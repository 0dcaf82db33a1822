"""Dataset processor for multi-view preference rows.

It extends upstream's ``PairwiseDatasetProcessor``: each row is encoded as upstream encodes it
(the clean view), and once more for every token view the stage needs (``groundpo.views``): text
only (media placeholders removed, no media) or contrast media. Token counts of a view are fixed
here, at preprocessing, so the trainer never re-tokenises. Our columns (``modality``,
``pair_type``, ``region``) are carried through.

Rows upstream would silently drop (a prompt with an even number of turns, fewer than two
responses) are errors here, naming the dataset and row.

Input-contrastive rows (ACPO's audio-sensitivity pairs) compare one response under two inputs: the
rejected side is encoded with the row's contrast media (``rejected_*`` columns), and its media go
to ``rejected_images`` / ``rejected_videos`` / ``rejected_audios`` so the collator gives the
rejected row its own media.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Callable

from llamafactory.data.processor import PairwiseDatasetProcessor
from llamafactory.extras.constants import AUDIO_PLACEHOLDER, IGNORE_INDEX, IMAGE_PLACEHOLDER, VIDEO_PLACEHOLDER

from ..integration.data import encode_pair
from ..views import CONTRAST, MEDIA_KINDS, TokenView
from .rows import RowError

_PLACEHOLDERS = re.compile("|".join(re.escape(p) for p in (IMAGE_PLACEHOLDER, VIDEO_PLACEHOLDER, AUDIO_PLACEHOLDER)))
CARRIED_COLUMNS = ("modality", "pair_type")


def strip_media_placeholders(messages: list[dict[str, str]]) -> list[dict[str, str]]:
    """The messages with every media placeholder removed (the text-only prompt x of the papers)."""
    return [{**m, "content": _PLACEHOLDERS.sub("", m["content"]).strip()} for m in messages]


def _image_size(image) -> tuple[int, int]:
    from PIL import Image

    if isinstance(image, str):
        with Image.open(image) as im:
            return im.size
    if isinstance(image, dict) and image.get("path"):
        with Image.open(image["path"]) as im:
            return im.size
    return image.size


def _size_value(size, *keys):
    """An entry of an image processor's ``size`` / ``crop_size`` (a dict, transformers' SizeDict or an int)."""
    if size is None or isinstance(size, (int, float)):
        return int(size) if size is not None else None
    for key in keys:
        value = size.get(key) if isinstance(size, dict) else getattr(size, key, None)
        if value is not None:
            return int(value)
    return None


def relative_region(region, images, image_processor=None) -> list[float] | None:
    """A pixel box [x0, y0, x1, y1] of the row's first image as fractions of the image the model sees.

    Processors that resize the whole image (Qwen2-VL's smart resize, LLaMA-Factory's max-pixel
    resize) keep fractions as they are. CLIP-style processors (LLaVA-1.5: shortest edge to 336,
    then a centred 336×336 crop) cut the sides of a non-square image: the box is mapped through
    the resize and the crop and clipped to the crop. A box that the crop removes entirely gives
    None (the stage then perturbs the whole image, as MFPO does when no region is found).
    """
    if region is None or not images:
        return None
    width, height = _image_size(images[0])
    x0, y0, x1, y1 = (float(v) for v in region)
    processor = image_processor
    if processor is not None and getattr(processor, "do_center_crop", False) and getattr(processor, "crop_size", None):
        crop_h = _size_value(processor.crop_size, "height")
        crop_w = _size_value(processor.crop_size, "width") or crop_h
        shortest = _size_value(getattr(processor, "size", None), "shortest_edge") if getattr(processor, "do_resize", True) else None
        if shortest:
            scale = shortest / min(width, height)
            new_w, new_h = (shortest, int(shortest * height / width)) if width <= height else (int(shortest * width / height), shortest)
        else:
            scale, new_w, new_h = 1.0, width, height
        left, top = (new_w - crop_w) / 2, (new_h - crop_h) / 2
        box = [(x0 * scale - left) / crop_w, (y0 * scale - top) / crop_h, (x1 * scale - left) / crop_w, (y1 * scale - top) / crop_h]
        box = [min(max(v, 0.0), 1.0) for v in box]
        return box if box[2] > box[0] and box[3] > box[1] else None
    return [x0 / width, y0 / height, x1 / width, y1 / height]


def _response_length(labels: list[int]) -> int:
    return sum(1 for t in labels if t != IGNORE_INDEX)


def score_same_tokens(encodings: list[dict[str, list[int]]], tie_sides: bool = False) -> None:
    """Cut every encoding of a row so that all of them score the same response tokens (in place).

    Upstream truncates a response to what ``cutoff_len`` leaves after the prompt, so a long answer
    keeps more tokens in the text-only view (a shorter prompt) than in the clean one. Losses that
    compare log-probs across views (JoMPO's ranking, MoD-DPO's LPD term) must compare the same token
    sets: each side keeps the fewest response tokens any view kept. With ``tie_sides`` (input-
    contrastive pairs: one response under two inputs) chosen and rejected are cut alike too.
    """
    sides = ("chosen", "rejected")
    keep = {side: min(_response_length(e[f"{side}_labels"]) for e in encodings) for side in sides}
    if tie_sides:
        keep = dict.fromkeys(sides, min(keep.values()))
    for encoding in encodings:
        for side in sides:
            labels = encoding[f"{side}_labels"]
            length = len(labels) - _response_length(labels) + keep[side]
            for key in ("input_ids", "attention_mask", "labels"):
                encoding[f"{side}_{key}"] = encoding[f"{side}_{key}"][:length]


def _media_field(error: Exception, row: dict) -> str:
    """The media column whose file the error message names (else 'media')."""
    text = str(error)
    for kind in MEDIA_KINDS:
        for column in (f"_{kind}", f"_rejected_{kind}"):
            for item in row.get(column) or []:
                paths = item if isinstance(item, list) else [item]
                if any(isinstance(p, str) and p and p in text for p in paths):
                    return column[1:]
    return "media"


@dataclass
class ViewPairwiseDatasetProcessor(PairwiseDatasetProcessor):
    token_views: tuple[TokenView, ...] = ()
    input_contrastive: Callable[[dict], bool] | None = None

    def _encode(self, prompt, response, system, tools, images, videos, audios) -> dict[str, list[int]]:
        chosen_ids, chosen_labels, rejected_ids, rejected_labels = encode_pair(
            self, prompt, response, system, tools, images, videos, audios
        )
        return {
            "chosen_input_ids": chosen_ids,
            "chosen_attention_mask": [1] * len(chosen_ids),
            "chosen_labels": chosen_labels,
            "rejected_input_ids": rejected_ids,
            "rejected_attention_mask": [1] * len(rejected_ids),
            "rejected_labels": rejected_labels,
        }

    def preprocess_dataset(self, examples: dict[str, list[Any]]) -> dict[str, list[Any]]:
        out: dict[str, list[Any]] = defaultdict(list)
        for i in range(len(examples["_prompt"])):
            row = {key: values[i] for key, values in examples.items()}
            try:
                self._preprocess_row(row, out)
            except RowError:
                raise
            except Exception as error:  # unreadable media and the like: name the dataset, row and field
                raise RowError(
                    f"dataset {row.get('_source_dataset')!r}, row {row.get('_source_row')}, field "
                    f"{_media_field(error, row)!r}: {type(error).__name__}: {error}"
                ) from error
        return out

    def _preprocess_row(self, row: dict[str, Any], out: dict[str, list[Any]]) -> None:
        prompt, response = row["_prompt"], row["_response"]
        media = (row["_images"] or [], row["_videos"] or [], row["_audios"] or [])
        encoded = self._encode(prompt, response, row["_system"], row["_tools"], *media)
        encodings = [encoded]
        rejected_media = (None, None, None)
        input_contrastive = self.input_contrastive is not None and self.input_contrastive(row)
        if input_contrastive:  # one response (the chosen one) under the aligned and the contrast input
            rejected_media = CONTRAST.media(row)
            same = [response[0], response[0]]
            under_contrast = self._encode(prompt, same, row["_system"], row["_tools"], *rejected_media)
            encoded.update({k: v for k, v in under_contrast.items() if k.startswith("rejected_")})

        views = {}
        for view in self.token_views:
            view_prompt = strip_media_placeholders(prompt) if view.strip_placeholders else prompt
            view_media = view.media(row)
            views[view.name] = (self._encode(view_prompt, response, row["_system"], row["_tools"], *view_media), view_media)
            encodings.append(views[view.name][0])
        score_same_tokens(encodings, tie_sides=input_contrastive)

        for key, value in encoded.items():
            out[key].append(value)
        for kind, value, rejected in zip(MEDIA_KINDS, media, rejected_media):
            out[kind].append(list(value) or None)
            out[f"rejected_{kind}"].append(list(rejected) if rejected else None)
        for name, (view_encoded, view_media) in views.items():
            for key, value in view_encoded.items():
                out[f"{name}_{key}"].append(value)
            for kind, value in zip(MEDIA_KINDS, view_media):
                out[f"{name}_{kind}"].append(list(value) or None)

        for column in CARRIED_COLUMNS:
            out[column].append(row.get(f"_{column}"))
        image_processor = getattr(self.processor, "image_processor", None)
        out["region"].append(relative_region(row.get("_region"), row["_images"], image_processor))
        out["has_contrast"].append(any(row.get(f"_rejected_{kind}") for kind in MEDIA_KINDS))

    def print_data_example(self, example: dict[str, list[int]]) -> None:
        super().print_data_example(example)
        for view in self.token_views:
            labels = [t for t in example[f"{view.name}_chosen_labels"] if t != IGNORE_INDEX]
            print(f"{view.name}_chosen_inputs:\n{self.tokenizer.decode(example[f'{view.name}_chosen_input_ids'])}")
            print(f"{view.name}_chosen_labels:\n{self.tokenizer.decode(labels)}")
        print(f"modality: {example.get('modality')}")
