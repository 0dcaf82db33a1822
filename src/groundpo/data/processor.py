"""Dataset processor for multi-view preference rows.

It extends upstream's ``PairwiseDatasetProcessor``: each row is encoded as upstream encodes it
(the clean view), and once more for every token view the stage needs (``groundpo.views``): text
only (media placeholders removed, no media) or contrast media. Token counts of a view are fixed
here, at preprocessing, so the trainer never re-tokenises. Our columns (``modality``,
``pair_type``, ``region``) are carried through.

Rows upstream would silently drop (a prompt with an even number of turns, fewer than two
responses) are errors here, naming the dataset and row.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from llamafactory.data.processor import PairwiseDatasetProcessor
from llamafactory.extras.constants import AUDIO_PLACEHOLDER, IGNORE_INDEX, IMAGE_PLACEHOLDER, VIDEO_PLACEHOLDER

from ..integration.data import encode_pair
from ..views import TokenView
from .rows import RowError

_PLACEHOLDERS = re.compile("|".join(re.escape(p) for p in (IMAGE_PLACEHOLDER, VIDEO_PLACEHOLDER, AUDIO_PLACEHOLDER)))
CARRIED_COLUMNS = ("modality", "pair_type", "region")


def strip_media_placeholders(messages: list[dict[str, str]]) -> list[dict[str, str]]:
    """The messages with every media placeholder removed (the text-only prompt x of the papers)."""
    return [{**m, "content": _PLACEHOLDERS.sub("", m["content"]).strip()} for m in messages]


@dataclass
class ViewPairwiseDatasetProcessor(PairwiseDatasetProcessor):
    token_views: tuple[TokenView, ...] = ()

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
            for key, value in self._encode(prompt, response, row["_system"], row["_tools"], *media).items():
                out[key].append(value)
            out["images"].append(row["_images"])
            out["videos"].append(row["_videos"])
            out["audios"].append(row["_audios"])

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
        return out

    def print_data_example(self, example: dict[str, list[int]]) -> None:
        super().print_data_example(example)
        for view in self.token_views:
            labels = [t for t in example[f"{view.name}_chosen_labels"] if t != IGNORE_INDEX]
            print(f"{view.name}_chosen_inputs:\n{self.tokenizer.decode(example[f'{view.name}_chosen_input_ids'])}")
            print(f"{view.name}_chosen_labels:\n{self.tokenizer.decode(labels)}")
        print(f"modality: {example.get('modality')}")
