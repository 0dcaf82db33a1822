"""Left-padded multimodal inputs for ``model.generate``: groundpo-eval's batched answers and MBPO's online samples.

Prompts are token ids as upstream's template encodes them (media tokens expanded); their media go
through ``mm_plugin.get_mm_inputs`` once for the whole batch. Models whose ``get_rope_index`` takes
``mm_token_type_ids`` (Qwen2-VL and Qwen2.5-VL in transformers 5) get them, so generation uses the
same multimodal rotary positions as training (upstream's chat engine passes none, and those models
then fall back to text positions). Padding is masked out of attention and positions, so a greedy
answer does not depend on the batch it is in (``tests/test_eval_decoding.py``).
"""

from __future__ import annotations

import inspect
from typing import Any

MEDIA_KINDS = ("images", "videos", "audios")
OMNI_THINKERS = ("qwen2_5_omni_thinker", "qwen3_omni_moe_thinker")


def wants_mm_token_type_ids(model) -> bool:
    """Whether ``model``'s rotary index takes ``mm_token_type_ids`` (it must then be given to ``generate``)."""
    rope = getattr(model, "get_rope_index", None) or getattr(getattr(model, "model", None), "get_rope_index", None)
    return rope is not None and "mm_token_type_ids" in inspect.signature(rope).parameters


def left_padded_inputs(
    prompts: list[list[int]], media: list[dict[str, list[Any]]], *, tokenizer, template, processor, model,
    device=None, dtype=None,
) -> tuple[dict[str, Any], dict[str, list[int]]]:
    """``generate`` keyword arguments for ``prompts`` (left-padded ids, mask, media tensors) and the media counts per row.

    ``media[i]`` holds the ``images`` / ``videos`` / ``audios`` of prompt i. Floating media tensors
    take ``dtype`` (the model's, by default); everything goes to ``device`` (the model's).
    """
    import torch

    pad = tokenizer.pad_token_id
    width = max(len(ids) for ids in prompts)
    input_ids = torch.full((len(prompts), width), pad, dtype=torch.long)
    attention_mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, ids in enumerate(prompts):
        input_ids[row, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
        attention_mask[row, width - len(ids) :] = 1
    items = {k: [m for row in media for m in (row.get(k) or [])] for k in MEDIA_KINDS}
    counts = {k: [len(row.get(k) or []) for row in media] for k in MEDIA_KINDS}
    mm = template.mm_plugin.get_mm_inputs(
        items["images"], items["videos"], items["audios"], counts["images"], counts["videos"], counts["audios"],
        list(prompts), processor,
    )  # fmt: skip
    batch: dict[str, Any] = {"input_ids": input_ids, "attention_mask": attention_mask}
    device = device if device is not None else model.device
    dtype = dtype if dtype is not None else model.dtype
    for key, value in mm.items():
        if key == "second_per_grid_ts":  # Qwen2.5-VL takes a list
            batch[key] = value.tolist() if torch.is_tensor(value) else list(value)
            continue
        if isinstance(value, list) and value and torch.is_tensor(value[0]):
            value = torch.stack(value)
        elif not torch.is_tensor(value):
            value = torch.tensor(value)
        batch[key] = value.to(dtype) if torch.is_floating_point(value) else value
    if wants_mm_token_type_ids(model) and "mm_token_type_ids" not in batch:
        types = torch.zeros_like(input_ids)
        config = model.config
        for value, token in ((1, getattr(config, "image_token_id", None)), (2, getattr(config, "video_token_id", None))):
            if token is not None:
                types[input_ids == token] = value
        batch["mm_token_type_ids"] = types
    return {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in batch.items()}, counts


def sample_responses(
    model, prompts: list[dict[str, Any]], *, tokenizer, template, processor, generation_config, synced_gpus: bool = False
) -> list[list[int]]:
    """``generation_config.num_return_sequences`` responses per prompt, grouped by prompt: token ids up to
    and including the first stop token (``generation_config.eos_token_id``), or all of them when none came.

    ``prompts[i]`` holds ``input_ids`` (the encoded prompt) and its ``images`` / ``videos`` / ``audios``.
    Qwen omni thinkers get ``use_audio_in_video`` as the processor has it, like the training collator.
    """
    inputs, _ = left_padded_inputs(
        [p["input_ids"] for p in prompts], [{k: p.get(k) or [] for k in MEDIA_KINDS} for p in prompts],
        tokenizer=tokenizer, template=template, processor=processor, model=model,
    )
    kwargs = {}
    if getattr(model.config, "model_type", None) in OMNI_THINKERS:
        kwargs["use_audio_in_video"] = getattr(processor, "use_audio_in_video", False)
    out = model.generate(**inputs, generation_config=generation_config, synced_gpus=synced_gpus, **kwargs)
    stops = generation_config.eos_token_id
    stops = set(stops if isinstance(stops, (list, tuple)) else [stops])
    responses = []
    for tokens in out[:, inputs["input_ids"].shape[1] :].tolist():
        stop = next((i for i, t in enumerate(tokens) if t in stops), None)
        responses.append(tokens if stop is None else tokens[: stop + 1])
    return responses
