"""Blank media m_blank of MBPO's image information gain (seed 003, Eq. 4), on processed tensors.

    IIG(y) = log π(y | x, m) − log π(y | x, m_blank)

m_blank is an all-zero image of the same size as m (for a video: all-zero frames; for audio:
silence). The processor maps such media to constant tensors of the same shape: a black image
becomes one patch row repeated (each channel at (0 − mean) / std), silence becomes one log-mel
value in every bin. :class:`BlankMedia` asks the model's own processor once what those values
are and fills a collated batch's media tensors with them, so no token, grid or position changes
and the blank view costs no decoding. ``tests/test_mbpo.py`` checks the result against a black
image sent through the plugin.

Supported: Qwen-style processors (Qwen2-VL, Qwen2.5-VL, Qwen2.5-Omni: ``pixel_values``,
``pixel_values_videos``, ``input_features``). Other media inputs raise :class:`BlankMediaError`.
"""

from __future__ import annotations

from typing import Any

import torch

BLANK_KEYS = ("pixel_values", "pixel_values_videos", "input_features")
PASS_KEYS = (
    "input_ids", "attention_mask", "labels", "position_ids", "rope_deltas", "image_grid_thw", "video_grid_thw",
    "feature_attention_mask", "video_second_per_grid", "second_per_grid_ts", "mm_token_type_ids", "token_type_ids",
)


class BlankMediaError(ValueError):
    """The batch holds media this module cannot blank (a model family it does not know)."""


class BlankMedia:
    def __init__(self, processor) -> None:
        self.processor = processor
        self._values: dict[str, torch.Tensor] = {}

    def _value(self, key: str) -> torch.Tensor:
        """The processed form of blank media for ``key``: one patch row, or one column of mel bins."""
        if key not in self._values:
            import numpy as np
            from PIL import Image

            if key == "pixel_values":
                out = self.processor.image_processor(images=[Image.new("RGB", (56, 56))], return_tensors="pt")
                self._values[key] = out["pixel_values"][0]
            elif key == "pixel_values_videos":
                video_processor = getattr(self.processor, "video_processor", None)
                if video_processor is None:
                    raise BlankMediaError("the processor has no video processor to blank video frames with")
                out = video_processor(videos=[np.zeros((2, 56, 56, 3), dtype=np.uint8)], return_tensors="pt")
                self._values[key] = out["pixel_values_videos"][0]
            elif key == "input_features":
                extractor = self.processor.feature_extractor
                rate = getattr(extractor, "sampling_rate", 16000)
                out = extractor([np.zeros(rate, dtype=np.float32)], sampling_rate=rate, return_tensors="pt")
                self._values[key] = out["input_features"][0, :, 0]
            else:
                raise BlankMediaError(f"cannot blank `{key}`")
        return self._values[key]

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        """``batch`` with every image, video frame and audio track replaced by its blank form."""
        unknown = [k for k in batch if k not in BLANK_KEYS and k not in PASS_KEYS]
        if unknown:
            raise BlankMediaError(f"cannot blank the media of batch entries {unknown} (Qwen-style media only)")
        out = dict(batch)
        for key in BLANK_KEYS:
            if key not in batch or not torch.is_tensor(batch[key]):
                continue
            value = self._value(key).to(device=batch[key].device, dtype=batch[key].dtype)
            if key == "input_features":  # [n, mel, frames]: the same mel column in every frame
                out[key] = value.view(1, -1, 1).expand_as(batch[key]).clone()
            else:  # [patches, C·T·P·P]: the same row for every patch
                if value.shape[-1] != batch[key].shape[-1]:
                    raise BlankMediaError(f"`{key}` rows have {batch[key].shape[-1]} values, the processor's {value.shape[-1]}")
                out[key] = value.expand_as(batch[key]).clone()
        return out
