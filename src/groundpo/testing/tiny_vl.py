"""A tiny Qwen2-VL checkpoint (image and video, no audio), built offline and deterministically.

The image papers (JoMPO, MFPO, MBPO) train and evaluate Qwen2-VL / Qwen2.5-VL with LLaMA-Factory's
``qwen2_vl`` template. This builder writes a real ``Qwen2VLForConditionalGeneration`` (vision tower,
merger, text decoder with mrope), the shared offline BPE tokenizer and a ``Qwen2VLProcessor``, so tests
run the exact code paths of the 7B model in seconds on a CPU. Two builds give the same bytes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .tiny_omni import canonicalise_json, seeded_init, train_tokenizer

# Tokens the ``qwen2_vl`` template and ``Qwen2VLProcessor`` expect, in id order.
SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)
PROCESSOR_TOKEN_ATTRS = {"image_token": "<|image_pad|>", "video_token": "<|video_pad|>"}


@dataclass(frozen=True)
class TinyVLSpec:
    """Sizes of the tiny Qwen2-VL; the defaults build about 0.2 M parameters."""

    hidden_size: int = 64
    intermediate_size: int = 128
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    vision_embed_dim: int = 32
    vision_depth: int = 1
    vocab_size: int = 512
    image_min_pixels: int = 28 * 28
    image_max_pixels: int = 56 * 56
    seed: int = 0


def build_tiny_qwen2_vl(out_dir: str | os.PathLike, spec: TinyVLSpec = TinyVLSpec()) -> Path:
    """Write a tiny Qwen2-VL checkpoint (config, weights, tokenizer, processor) to ``out_dir``; no network."""
    import torch
    from transformers import (
        Qwen2VLConfig,
        Qwen2VLForConditionalGeneration,
        Qwen2VLImageProcessor,
        Qwen2VLProcessor,
        Qwen2VLVideoProcessor,
    )

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = train_tokenizer(spec.vocab_size, SPECIAL_TOKENS, PROCESSOR_TOKEN_ATTRS)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    vocab_size = -(-len(tokenizer) // 8) * 8

    head_dim = spec.hidden_size // spec.num_attention_heads
    half = head_dim // 2
    mrope_section = [half - 2 * (half // 3), half // 3, half // 3]
    config = Qwen2VLConfig(
        text_config={
            "vocab_size": vocab_size,
            "hidden_size": spec.hidden_size,
            "intermediate_size": spec.intermediate_size,
            "num_hidden_layers": spec.num_hidden_layers,
            "num_attention_heads": spec.num_attention_heads,
            "num_key_value_heads": spec.num_key_value_heads,
            "max_position_embeddings": 4096,
            "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": mrope_section},
            "pad_token_id": ids["<|endoftext|>"],
            "eos_token_id": ids["<|im_end|>"],
            "bos_token_id": ids["<|endoftext|>"],
            "tie_word_embeddings": False,
        },
        vision_config={
            "depth": spec.vision_depth,
            "embed_dim": spec.vision_embed_dim,
            "hidden_size": spec.hidden_size,
            "mlp_ratio": 2,
            "num_heads": 2,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
        },
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=False,
    )
    config.dtype = "float32"

    torch.manual_seed(spec.seed)
    model = Qwen2VLForConditionalGeneration(config)
    seeded_init(model, spec.seed)
    model.generation_config.pad_token_id = ids["<|endoftext|>"]
    model.generation_config.eos_token_id = ids["<|im_end|>"]
    model.save_pretrained(out)

    kwargs = dict(
        min_pixels=spec.image_min_pixels, max_pixels=spec.image_max_pixels, patch_size=14, merge_size=2,
        temporal_patch_size=2,
    )
    processor = Qwen2VLProcessor(
        image_processor=Qwen2VLImageProcessor(**kwargs),
        video_processor=Qwen2VLVideoProcessor(**kwargs),
        tokenizer=tokenizer,
        chat_template=tokenizer.chat_template,
    )
    processor.save_pretrained(out)
    tokenizer.save_pretrained(out)
    canonicalise_json(out)
    return out
