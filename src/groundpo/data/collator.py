"""Collator for multi-view preference rows.

The clean view is collated the way upstream's ``PairwiseDataCollatorWithPadding`` does it (2B
rows, chosen then rejected, each with its row's media; mrope position ids included), through
upstream's ``MultiModalDataCollatorForSeq2Seq``; the rejected row of an input-contrastive pair
carries its own media. Each token
view the stage needs is collated the same way into its own sub-batch, so text-only inputs get
correct position ids. What the trainer needs besides the model inputs goes under one key,
``batch["groundpo"]``, which the trainer pops before any forward pass:

- ``modality`` (per pair) and ``rows`` (per pair: modality, pair_type, region as a relative box,
  has_contrast);
- ``row_id``: the row's index in the training set (for precomputed reference log-probs);
- ``counts``: images / videos / audios owned by each of the 2B collated rows, so corruptions
  find each row's media and leave upstream's dummy media alone;
- ``same_media`` (per pair): both sides carry the same media, so one prompt prefix can serve both
  responses (``groundpo.data.packing``); False for ACPO's input-contrastive pairs;
- ``views``: the collated token views. A view without media (text only) holds no media at all:
  the dummy image/audio that upstream's collator appends to media-free batches (masked out, after
  the real tokens) is dropped and its token slots become padding, so no vision or audio encoder
  runs and the view's input ids hold no media token. Every rank runs text-only passes together,
  so no rank calls an encoder that another skips (ZeRO-3 stays in step).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from llamafactory.data import MultiModalDataCollatorForSeq2Seq

MEDIA = ("images", "videos", "audios")
INFO_KEY = "groundpo"
ROW_INFO = ("modality", "pair_type", "region", "has_contrast")  # per-pair metadata views and losses read
# model inputs that carry media (Qwen2.5-Omni / Qwen2-VL style collators)
MEDIA_INPUTS = (
    "pixel_values",
    "image_grid_thw",
    "pixel_values_videos",
    "video_grid_thw",
    "video_second_per_grid",
    "second_per_grid_ts",
    "input_features",
    "feature_attention_mask",
)


def _media(feature: dict[str, Any], prefix: str, kind: str, side: str) -> list:
    """A collated row's media: the rejected side may bring its own (input-contrastive pairs)."""
    own = feature.get(f"{prefix}rejected_{kind}") if side == "rejected" else None
    return own if own is not None else (feature.get(f"{prefix}{kind}") or [])


def same_media(features: list[dict[str, Any]], prefix: str = "") -> list[bool]:
    """Per pair: both sides carry the same media (a shared prompt prefix can serve both responses)."""
    return [all(f.get(f"{prefix}rejected_{kind}") is None for kind in MEDIA) for f in features]


def media_counts(features: list[dict[str, Any]], prefix: str = "") -> dict[str, list[int]]:
    """Items of each media kind per collated row: the B chosen rows, then the B rejected rows."""
    return {
        kind: [len(_media(f, prefix, kind, side)) for side in ("chosen", "rejected") for f in features]
        for kind in MEDIA
    }


@dataclass
class ViewPairwiseDataCollator(MultiModalDataCollatorForSeq2Seq):
    token_views: tuple[str, ...] = ()

    def _collate_pairs(self, features: list[dict[str, Any]], prefix: str) -> dict[str, Any]:
        """2B rows, chosen then rejected (as upstream's pairwise collator), each with its own media."""
        rows = [
            {
                "input_ids": f[f"{prefix}{side}_input_ids"],
                "attention_mask": f[f"{prefix}{side}_attention_mask"],
                "labels": f[f"{prefix}{side}_labels"],
                **{kind: _media(f, prefix, kind, side) for kind in MEDIA},
            }
            for side in ("chosen", "rejected")
            for f in features
        ]
        batch = super().__call__(rows)
        if prefix and not any(f.get(f"{prefix}{kind}") for f in features for kind in MEDIA):
            self._strip_dummy_media(batch)
        return batch

    def _strip_dummy_media(self, batch: dict[str, Any]) -> None:
        for key in MEDIA_INPUTS:
            batch.pop(key, None)
        batch["input_ids"] = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, self.tokenizer.pad_token_id)

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        batch = self._collate_pairs(features, "")
        batch[INFO_KEY] = {
            "modality": [f.get("modality") for f in features],
            "rows": [{key: f.get(key) for key in ROW_INFO} for f in features],
            "row_id": torch.tensor([int(f.get("row_id", -1)) for f in features], dtype=torch.long),
            "counts": media_counts(features),
            "same_media": same_media(features),
            "views": {name: self._collate_pairs(features, f"{name}_") for name in self.token_views},
            "view_counts": {name: media_counts(features, f"{name}_") for name in self.token_views},
            "view_same_media": {name: same_media(features, f"{name}_") for name in self.token_views},
        }
        return batch
