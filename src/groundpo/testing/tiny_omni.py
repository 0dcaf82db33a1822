"""A tiny Qwen2.5-Omni checkpoint, built offline and deterministically.

The checkpoint has a real thinker (vision tower, audio tower, text decoder), a byte-level BPE
tokenizer trained on a fixed corpus, and a ``Qwen2_5OmniProcessor``. It loads through
LLaMA-Factory's ``load_model`` and works with the ``qwen2_omni`` template, so tests and the demo
exercise the exact code paths of the 7B model, in seconds, on a CPU.

Determinism: weights come from a seeded generator, the tokenizer from a fixed corpus, and every
file is written with sorted keys, so two builds give the same bytes (``tests/test_tiny_omni.py``).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

# Tokens the ``qwen2_omni`` template and ``Qwen2_5OmniProcessor`` expect, in id order.
SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|AUDIO|>",
    "<|audio_bos|>",
    "<|audio_eos|>",
    "<|vision_bos|>",
    "<|vision_eos|>",
    "<|IMAGE|>",
    "<|VIDEO|>",
)
PROCESSOR_TOKEN_ATTRS = {
    "image_token": "<|IMAGE|>",
    "video_token": "<|VIDEO|>",
    "audio_token": "<|AUDIO|>",
    "vision_bos_token": "<|vision_bos|>",
    "vision_eos_token": "<|vision_eos|>",
    "audio_bos_token": "<|audio_bos|>",
    "audio_eos_token": "<|audio_eos|>",
}

# Sentences the BPE is trained on: the words of the demo data and of chat templates.
_CORPUS = """
You are a helpful assistant. system user assistant
What do you see in the video? What do you hear in the audio? Describe the sound. Describe the video.
What colour is the shape? What shape is moving? Which way does it move? Is there a sound?
Is there a dog? Is there a car? Yes. No. Yes, there is. No, there is not. I don't know.
A red circle moves from left to right. A blue square moves from top to bottom.
A green triangle moves from right to left. A yellow circle moves from bottom to top.
I hear a low tone. I hear a high tone. I hear a beeping sound. I hear noise. I hear silence.
I hear a rising tone. I hear a falling tone. A short burst of noise. Two short beeps.
The video shows a moving shape and the audio is a steady hum. The answer is A. The answer is B.
(A) (B) (C) (D) (E) A. B. C. D. E. red blue green yellow purple orange white black
circle square triangle left right top bottom up down fast slow loud quiet 0 1 2 3 4 5 6 7 8 9
"""


@dataclass(frozen=True)
class TinyOmniSpec:
    """Sizes of the tiny model; the defaults build about 0.4 M parameters."""

    hidden_size: int = 64
    intermediate_size: int = 128
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    vision_hidden_size: int = 32
    vision_depth: int = 1
    audio_d_model: int = 32
    audio_layers: int = 1
    vocab_size: int = 512
    image_min_pixels: int = 28 * 28
    image_max_pixels: int = 56 * 56
    audio_chunk_seconds: int = 10
    seed: int = 0
    extra_corpus: str = ""  # more sentences for the tokenizer (a world's vocabulary: shorter sequences)


def train_tokenizer(
    vocab_size: int,
    special_tokens: tuple[str, ...] = SPECIAL_TOKENS,
    processor_tokens: dict[str, str] = PROCESSOR_TOKEN_ATTRS,
    extra_corpus: str = "",
):
    """A byte-level BPE trained offline on the fixed corpus (plus ``extra_corpus``), with a ChatML chat template.

    ``special_tokens`` come first (in id order); ``processor_tokens`` are the tokenizer attributes
    the model's processor reads (``image_token`` ...). Shared by every tiny builder.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - 8,  # room so that the embedding is a multiple of 8
        special_tokens=list(special_tokens),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    lines = [line.strip() for line in (_CORPUS + extra_corpus).strip().splitlines() if line.strip()]
    tok.train_from_iterator(lines, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        extra_special_tokens=dict(processor_tokens),
        model_max_length=4096,
        padding_side="right",
        clean_up_tokenization_spaces=False,
    )
    fast.chat_template = (
        "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
        "{{ message['content'] }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    return fast


def build_tiny_omni(out_dir: str | os.PathLike, spec: TinyOmniSpec = TinyOmniSpec()) -> Path:
    """Write a tiny Qwen2.5-Omni checkpoint (config, weights, tokenizer, processor) to ``out_dir``.

    No network is used. Returns the folder.
    """
    import torch
    from transformers import (
        Qwen2_5OmniConfig,
        Qwen2_5OmniForConditionalGeneration,
        Qwen2_5OmniProcessor,
        Qwen2VLImageProcessor,
        Qwen2VLVideoProcessor,
        WhisperFeatureExtractor,
    )

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = train_tokenizer(spec.vocab_size, extra_corpus=spec.extra_corpus)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    vocab_size = -(-len(tokenizer) // 8) * 8

    head_dim = spec.hidden_size // spec.num_attention_heads
    half = head_dim // 2
    mrope_section = [half - 2 * (half // 3), half // 3, half // 3]
    user_ids = tokenizer.encode("user", add_special_tokens=False)
    thinker = {
        "audio_config": {
            "num_mel_bins": 128,
            "encoder_layers": spec.audio_layers,
            "encoder_attention_heads": 2,
            "encoder_ffn_dim": 2 * spec.audio_d_model,
            "d_model": spec.audio_d_model,
            "output_dim": spec.hidden_size,
            "max_source_positions": 1500,
            "n_window": 100,
        },
        "vision_config": {
            "depth": spec.vision_depth,
            "hidden_size": spec.vision_hidden_size,
            "intermediate_size": 2 * spec.vision_hidden_size,
            "num_heads": 2,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "window_size": 112,
            "out_hidden_size": spec.hidden_size,
            "fullatt_block_indexes": [spec.vision_depth - 1],
        },
        "text_config": {
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
            "tie_word_embeddings": False,
        },
        "audio_token_index": ids["<|AUDIO|>"],
        "image_token_index": ids["<|IMAGE|>"],
        "video_token_index": ids["<|VIDEO|>"],
        "audio_start_token_id": ids["<|audio_bos|>"],
        "audio_end_token_id": ids["<|audio_eos|>"],
        "vision_start_token_id": ids["<|vision_bos|>"],
        "vision_end_token_id": ids["<|vision_eos|>"],
        "user_token_id": user_ids[0],
        "pad_token_id": ids["<|endoftext|>"],
        "eos_token_id": ids["<|im_end|>"],
    }
    config = Qwen2_5OmniConfig(thinker_config=thinker, enable_audio_output=False)
    config.dtype = "float32"

    torch.manual_seed(spec.seed)
    model = Qwen2_5OmniForConditionalGeneration(config)
    seeded_init(model, spec.seed)
    model.save_pretrained(out)
    torch.save({"Chelsie": {"cond": torch.zeros(4), "ref_mel": torch.zeros(2, 4)}}, out / "spk_dict.pt")

    image_processor = Qwen2VLImageProcessor(
        min_pixels=spec.image_min_pixels, max_pixels=spec.image_max_pixels, patch_size=14, merge_size=2,
        temporal_patch_size=2,
    )
    video_processor = Qwen2VLVideoProcessor(
        min_pixels=spec.image_min_pixels, max_pixels=spec.image_max_pixels, patch_size=14, merge_size=2,
        temporal_patch_size=2,
    )
    feature_extractor = WhisperFeatureExtractor(
        feature_size=128, sampling_rate=16000, chunk_length=spec.audio_chunk_seconds, hop_length=160, n_fft=400
    )
    processor = Qwen2_5OmniProcessor(
        image_processor=image_processor,
        video_processor=video_processor,
        feature_extractor=feature_extractor,
        tokenizer=tokenizer,
        chat_template=tokenizer.chat_template,
    )
    processor.save_pretrained(out)
    tokenizer.save_pretrained(out)
    canonicalise_json(out)
    return out


def seeded_init(model, seed: int) -> None:
    """Re-draw every weight from one seeded stream, in parameter order (norms 1, biases 0)."""
    import torch

    with torch.no_grad():
        gen = torch.Generator().manual_seed(seed)
        for name, param in model.named_parameters():
            if name.endswith("norm.weight") or name.endswith("ln_q.weight") or ".norm" in name and name.endswith("weight"):
                param.fill_(1.0)
            elif name.endswith("bias"):
                param.zero_()
            else:
                param.copy_(torch.randn(param.shape, generator=gen) * 0.02)


def canonicalise_json(folder: Path) -> None:
    """Rewrite every JSON file with sorted keys so two builds give identical bytes."""
    for path in sorted(folder.glob("*.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        path.write_text(json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")
