"""Batched generation with the Hugging Face backend: left padding, VCD / AVCD, one model load.

:class:`BatchedEngine` loads the model exactly as :class:`~groundpo.eval.engine.ChatEngine` does
(LLaMA-Factory's ``ChatModel``: same model, adapter, template and media processing) and then
generates itself, ``batch_size`` items per ``model.generate`` call:

- prompts are built with the template's public methods as upstream's engine builds one
  (``mm_plugin.process_messages``, ``template.encode_oneturn``, ``mm_plugin.process_token_ids``),
  left-padded, and the media of the whole batch go through ``mm_plugin.get_mm_inputs`` once;
- models whose ``get_rope_index`` takes ``mm_token_type_ids`` (Qwen2-VL and Qwen2.5-VL in
  transformers 5) get them, so generation uses the same multimodal rotary positions as training
  (upstream's engine passes none, and those models then fall back to text positions);
- items are batched only with items of the same answer budget and the same audio-in-video
  layout; answers come back in input order; an item whose inputs cannot be built fails alone,
  and a batch whose ``generate`` fails is retried item by item, so an error names its item;
- ``decoding`` (:mod:`groundpo.eval.decoding`): VCD and AVCD run as extra streams of the same
  batch with a logits processor, the KV cache kept per stream.

Greedy answers do not depend on ``batch_size`` (``tests/test_eval_decoding.py`` checks it on the
tiny Qwen2-VL): padding is masked out of attention and positions.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from .decoding import (
    AUDIO,
    LANGUAGE,
    VISUAL,
    ContrastiveLogitsProcessor,
    DecodingConfig,
    attentive_mask,
    concat_streams,
    dominant,
    item_seed,
    last_token_attention,
    modality_attention,
    plan_streams,
)
from .engine import ChatEngine, GenerationResult, ItemGenerationError
from .readers import EvalItem

logger = logging.getLogger(__name__)

__all__ = ["BatchedEngine", "PreparedItem"]


@dataclass
class PreparedItem:
    item: EvalItem
    ids: list[int]
    media: dict[str, list[Any]]
    max_new_tokens: int
    question: tuple[int, int] | None = None  # [start, end) of the question tokens (AVCD)
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> tuple[int, bool]:
        return self.max_new_tokens, bool(self.media["videos"] and self.media["audios"])


class BatchedEngine(ChatEngine):
    """``ChatEngine`` for the Hugging Face backend with batched, optionally contrastive, decoding."""

    def __init__(self, model_args: dict[str, Any], *, decoding: DecodingConfig | None = None, **kwargs: Any) -> None:
        super().__init__(model_args, **kwargs)
        engine = self.chat_model.engine
        self.model, self.tokenizer, self.processor, self.template = engine.model, engine.tokenizer, engine.processor, engine.template
        self.generating_args = dict(engine.generating_args)
        self.decoding = (decoding or DecodingConfig()).resolved()
        self.use_cache = True
        plugin = self.template.mm_plugin
        self.media_token_ids = {
            side: {self.tokenizer.convert_tokens_to_ids(t) for t in tokens if t}
            for side, tokens in ((VISUAL, (plugin.image_token, plugin.video_token)), (AUDIO, (plugin.audio_token,)))
        }
        self.stop_ids = set(self.template.get_stop_token_ids(self.tokenizer))
        model_type = str(getattr(self.model.config, "model_type", ""))
        self.one_by_one = model_type in ("minicpmv", "minicpmo")  # their plugin's inputs do not batch
        if self.one_by_one and self.decoding.contrastive:
            raise ValueError(f"--decoding {self.decoding.method} is not supported for {model_type}")

    # -- inputs ---------------------------------------------------------------------------------

    def _encode(self, messages: list[dict[str, str]], media: dict[str, list[Any]]) -> list[int]:
        plugin = self.template.mm_plugin
        messages = plugin.process_messages(messages, media["images"], media["videos"], media["audios"], self.processor)
        ids, _ = self.template.encode_oneturn(self.tokenizer, messages + [{"role": "assistant", "content": ""}], self.system, None)
        ids, _ = plugin.process_token_ids(ids, None, media["images"], media["videos"], media["audios"], self.tokenizer, self.processor)
        return ids

    def prepare(self, item: EvalItem) -> PreparedItem:
        """Token ids and media of one item (``ItemGenerationError`` naming it when that fails)."""
        try:
            messages, media = self.inputs(item)
            media = {k: list(v or []) for k, v in media.items()}
            ids = self._encode([dict(m) for m in messages], media)
            question = None
            if self.decoding.method == "avcd":  # the question's tokens: what differs from an empty question
                empty = [dict(m) for m in messages]
                empty[-1]["content"] = empty[-1]["content"][: len(empty[-1]["content"]) - len(item.prompt)]
                question = _differing_span(ids, self._encode(empty, media))
        except Exception as e:
            raise self._item_error(item, e) from e
        budget = self.caption_max_new_tokens if item.kind == "caption" else self.max_new_tokens
        return PreparedItem(item, ids, media, budget, question)

    @staticmethod
    def _item_error(item: EvalItem, e: Exception) -> ItemGenerationError:
        if isinstance(e, ItemGenerationError):
            return e
        paths = ", ".join(p for _, p in item.media())
        return ItemGenerationError(f"generation failed for item {item.id} (media: {paths}): {type(e).__name__}: {e}")

    def collate(self, prepared: list[PreparedItem]) -> tuple[dict[str, Any], dict[str, list[int]]]:
        """Left-padded ``input_ids`` / ``attention_mask`` and the batch's media tensors (on the
        model's device), and the media counts per row (:func:`groundpo.generation.left_padded_inputs`)."""
        from ..generation import left_padded_inputs

        return left_padded_inputs(
            [p.ids for p in prepared], [p.media for p in prepared], tokenizer=self.tokenizer, template=self.template,
            processor=self.processor, model=self.model,
        )

    # -- generation -----------------------------------------------------------------------------

    def _generation_config(self, max_new_tokens: int):
        from transformers import GenerationConfig

        args = dict(self.generating_args)
        args.update(
            do_sample=False,
            num_beams=1,
            max_new_tokens=max_new_tokens,
            eos_token_id=sorted(self.stop_ids),
            pad_token_id=self.tokenizer.pad_token_id,
            use_cache=self.use_cache,
        )
        for key in ("temperature", "top_p", "top_k", "max_length", "skip_special_tokens", "default_system", "enable_thinking"):
            args.pop(key, None)
        return GenerationConfig(**args)

    def generate_batch(self, prepared: list[PreparedItem]) -> list[GenerationResult]:
        """Generate the answers of ``prepared`` (one ``model.generate`` call)."""
        import torch

        batch, counts = self.collate(prepared)
        n = len(prepared)
        processor = None
        if self.decoding.contrastive:
            batch, processor = self._streams(prepared, batch, counts)
        kwargs = {}
        if self.use_audio_in_video and prepared[0].key[1]:
            kwargs["use_audio_in_video"] = True
        with torch.inference_mode():
            out = self.model.generate(
                **batch,
                generation_config=self._generation_config(prepared[0].max_new_tokens),
                logits_processor=[processor] if processor is not None else None,
                **kwargs,
            )
        width = batch["input_ids"].shape[1]
        results = []
        for i, p in enumerate(prepared):
            tokens = out[i, width:].tolist()
            stop = next((k for k, t in enumerate(tokens) if t in self.stop_ids), None)
            kept = tokens if stop is None else tokens[:stop]
            info = {}
            if processor is not None:
                info = {"decoding": self.decoding.method, "contrast_steps": processor.contrast_steps[i], **p.info}
            results.append(
                GenerationResult(
                    text=self.tokenizer.decode(kept, skip_special_tokens=True, clean_up_tokenization_spaces=True),
                    prompt_length=len(p.ids),
                    response_length=len(tokens) if stop is None else stop + 1,
                    finish_reason="length" if stop is None else "stop",
                    info=info,
                )
            )
        assert len(results) == n
        return results

    def _streams(self, prepared: list[PreparedItem], batch: dict[str, Any], counts: dict[str, list[int]]):
        """The contrast streams of a batch and the logits processor that combines them."""
        import torch

        from ..corruption import AUDIO as C_AUDIO
        from ..corruption import VISUAL as C_VISUAL
        from ..corruption import CorruptionSpec, corrupt_batch

        c = self.decoding
        n = len(prepared)
        spec = CorruptionSpec(kind="diffusion", diffusion_steps=c.noise_step)
        keys = [item_seed(p.item.id, c.seed) for p in prepared]

        def perturbed(sides_per_row: list[frozenset[str]], language_masks: list[torch.Tensor | None]) -> dict[str, Any]:
            media_sides = [frozenset({C_VISUAL if s == VISUAL else C_AUDIO for s in sides if s != LANGUAGE}) for sides in sides_per_row]
            out = corrupt_batch(batch, counts, media_sides, {C_VISUAL: spec, C_AUDIO: spec}, seed=c.seed, row_keys=keys)
            if any(m is not None for m in language_masks):
                mask = out["attention_mask"].clone()
                for row, m in enumerate(language_masks):
                    if m is not None:
                        mask[row, m.to(mask.device)] = 0
                out["attention_mask"] = mask
            return out

        if c.method == "vcd":
            for p in prepared:
                if not p.media["images"] and not p.media["videos"]:
                    raise ItemGenerationError(f"--decoding vcd needs an image or a video; item {p.item.id} has none")
            streams = [batch, perturbed([frozenset({VISUAL})] * n, [None] * n)]
            return concat_streams(streams), ContrastiveLogitsProcessor(n, 2, ["vcd"] * n, c)

        # AVCD: dominant modality from the attention of the last prompt token
        ids = batch["input_ids"]
        width = ids.shape[1]
        masks = {side: torch.zeros_like(ids, dtype=torch.bool) for side in (LANGUAGE, VISUAL, AUDIO)}
        for side in (VISUAL, AUDIO):
            for token in self.media_token_ids[side]:
                masks[side] |= ids == token
        for row, p in enumerate(prepared):
            if p.question is not None:
                start, end = p.question
                offset = width - len(p.ids)
                masks[LANGUAGE][row, offset + start : offset + end] = True
        attn = last_token_attention(self.model, batch)
        scores = modality_attention(attn, masks)
        plans, sides = [], [[], [], []]
        language_masks: list[torch.Tensor | None] = []
        for row, p in enumerate(prepared):
            dom = dominant(scores[row])
            plan, perturb = plan_streams(list(scores[row]), dom)
            plans.append(plan)
            for s in range(3):
                sides[s].append(perturb[s])
            language_masks.append(attentive_mask(attn[row], masks[LANGUAGE][row].to(attn.device)).cpu() if LANGUAGE in scores[row] else None)
            p.info = {"dominant": dom, "attention": {k: round(v, 6) for k, v in scores[row].items()}}
        streams = [batch]
        for s in range(3):
            streams.append(perturbed(sides[s], [m if LANGUAGE in sides[s][r] else None for r, m in enumerate(language_masks)]))
        return concat_streams(streams), ContrastiveLogitsProcessor(n, 4, plans, c)

    def generate(
        self, items: Iterable[EvalItem], return_errors: bool = False
    ) -> Iterator[tuple[EvalItem, GenerationResult | ItemGenerationError]]:
        """Yield ``(item, result)`` in input order, generating ``batch_size`` items at a time."""
        if self.one_by_one:
            yield from super().generate(items, return_errors)
            return
        pending: list[tuple[EvalItem, PreparedItem | ItemGenerationError]] = []

        def flush() -> Iterator[tuple[EvalItem, GenerationResult | ItemGenerationError]]:
            ready = [p for _, p in pending if isinstance(p, PreparedItem)]
            results: dict[str, GenerationResult | ItemGenerationError] = {}
            groups: dict[tuple[int, bool], list[PreparedItem]] = {}
            for p in ready:
                groups.setdefault(p.key, []).append(p)
            for group in groups.values():
                try:
                    for p, r in zip(group, self.generate_batch(group)):
                        results[p.item.id] = r
                except Exception as e:  # noqa: BLE001 - any failure of a batch is retried item by item
                    if len(group) == 1:
                        results[group[0].item.id] = self._item_error(group[0].item, e)
                        continue
                    logger.warning("a batch of %d failed (%s: %s); retrying its items one by one", len(group), type(e).__name__, e)
                    for p in group:
                        try:
                            results[p.item.id] = self.generate_batch([p])[0]
                        except Exception as e1:  # noqa: BLE001 - becomes this item's error
                            results[p.item.id] = self._item_error(p.item, e1)
            for item, p in pending:
                r = p if isinstance(p, ItemGenerationError) else results[item.id]
                if isinstance(r, ItemGenerationError):
                    if not return_errors:
                        raise r
                    logger.error("%s", r)
                yield item, r
            pending.clear()

        for item in items:
            try:
                pending.append((item, self.prepare(item)))
            except ItemGenerationError as e:
                pending.append((item, e))
            if len(pending) >= self.batch_size:
                yield from flush()
        if pending:
            yield from flush()


def _differing_span(full: list[int], other: list[int]) -> tuple[int, int] | None:
    """``[start, end)`` of ``full`` that differs from ``other`` (common prefix and suffix removed)."""
    prefix = 0
    while prefix < min(len(full), len(other)) and full[prefix] == other[prefix]:
        prefix += 1
    suffix = 0
    while suffix < min(len(full), len(other)) - prefix and full[-1 - suffix] == other[-1 - suffix]:
        suffix += 1
    end = len(full) - suffix
    return (prefix, end) if end > prefix else None
