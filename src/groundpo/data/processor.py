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


def relative_region(region, images) -> list[float] | None:
    """A pixel box [x0, y0, x1, y1] of the row's first image as fractions of its width and height."""
    if region is None or not images:
        return None
    from PIL import Image

    image = images[0]
    if isinstance(image, str):
        with Image.open(image) as im:
            width, height = im.size
    elif isinstance(image, dict) and image.get("path"):
        with Image.open(image["path"]) as im:
            width, height = im.size
    else:
        width, height = image.size
    x0, y0, x1, y1 = (float(v) for v in region)
    return [x0 / width, y0 / height, x1 / width, y1 / height]


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
            prompt, response = row["_prompt"], row["_response"]
            if len(prompt) % 2 != 1 or len(response) < 2:
                raise RowError(
                    f"dataset {row.get('_source_dataset')!r}, row {row.get('_source_row')}, field 'messages': "
                    "a preference row needs a prompt ending with a user turn and both a chosen and a rejected answer"
                )
            media = (row["_images"] or [], row["_videos"] or [], row["_audios"] or [])
            encoded = self._encode(prompt, response, row["_system"], row["_tools"], *media)
            rejected_media = (None, None, None)
            if self.input_contrastive is not None and self.input_contrastive(row):
                rejected_media = CONTRAST.media(row)
                under_contrast = self._encode(prompt, response, row["_system"], row["_tools"], *rejected_media)
                encoded.update({k: v for k, v in under_contrast.items() if k.startswith("rejected_")})
            for key, value in encoded.items():
                out[key].append(value)
            for kind, value, rejected in zip(MEDIA_KINDS, media, rejected_media):
                out[kind].append(list(value) or None)
                out[f"rejected_{kind}"].append(list(rejected) if rejected else None)

            for view in self.token_views:
                view_prompt = strip_media_placeholders(prompt) if view.strip_placeholders else prompt
                view_media = view.media(row)
                encoded = self._encode(view_prompt, response, row["_system"], row["_tools"], *view_media)
                for key, value in encoded.items():
                    out[f"{view.name}_{key}"].append(value)
                for kind, value in zip(("images", "videos", "audios"), view_media):
                    out[f"{view.name}_{kind}"].append(list(value) or None)

            for column in CARRIED_COLUMNS:
                out[column].append(row.get(f"_{column}"))
            out["region"].append(relative_region(row.get("_region"), row["_images"]))
            out["has_contrast"].append(any(row.get(f"_rejected_{kind}") for kind in MEDIA_KINDS))
        return out

    def print_data_example(self, example: dict[str, list[int]]) -> None:
        super().print_data_example(example)
        for view in self.token_views:
            labels = [t for t in example[f"{view.name}_chosen_labels"] if t != IGNORE_INDEX]
            print(f"{view.name}_chosen_inputs:\n{self.tokenizer.decode(example[f'{view.name}_chosen_input_ids'])}")
            print(f"{view.name}_chosen_labels:\n{self.tokenizer.decode(labels)}")
        print(f"modality: {example.get('modality')}")
