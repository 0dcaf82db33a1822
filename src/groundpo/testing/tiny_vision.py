"""Tiny offline vision models for the data-pipeline tests, built like the tiny Qwen models.

Each builder writes a real transformers checkpoint (config, weights, processor) of a few thousand
parameters to a folder, from a seed, without any network: the pipelines load them with the same
``from_pretrained`` calls they use for the full-size models.

- :func:`build_tiny_clip`: ``CLIPModel`` + image processor + a character-level CLIP tokenizer
  (image embeddings for VTC, text embeddings for MFPO's keyword graph and ACPO's curation);
- :func:`build_tiny_dinov2`: ``Dinov2Model`` + image processor;
- :func:`build_tiny_owlvit`: ``OwlViTForObjectDetection`` + processor (text-prompted boxes);
- :func:`build_tiny_sam`: ``SamModel`` + processor (box-prompted masks);
- :func:`build_tiny_tagger`: ``ViTForImageClassification`` with a few tag labels.
"""

from __future__ import annotations

import os
import string
from pathlib import Path

IMAGE = 32  # side the tiny processors resize to
TAG_LABELS = ("circle", "square", "triangle", "red", "blue", "green", "yellow")


def _seed(seed: int) -> None:
    import torch

    torch.manual_seed(seed)


def tiny_clip_tokenizer(max_length: int = 64):
    """A CLIP tokenizer over single characters (no merges): any lower-case text tokenises offline."""
    from transformers import CLIPTokenizer

    vocab: dict[str, int] = {}
    symbols = string.ascii_lowercase + string.digits + string.punctuation
    for ch in symbols:
        vocab[ch] = len(vocab)
    for ch in symbols:
        vocab[ch + "</w>"] = len(vocab)
    # special tokens last, as in CLIP's vocabulary: OWL-ViT treats a query whose first id is 0 as padding
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=max_length)


def _text_config(tokenizer, max_length: int = 64) -> dict:
    return dict(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
        max_position_embeddings=max_length, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def _vision_config() -> dict:
    return dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, image_size=IMAGE, patch_size=8)


def build_tiny_clip(out_dir: str | os.PathLike, seed: int = 0) -> Path:
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    out = Path(out_dir)
    tokenizer = tiny_clip_tokenizer()
    _seed(seed)
    model = CLIPModel(CLIPConfig(text_config=_text_config(tokenizer), vision_config=_vision_config(), projection_dim=16))
    model.save_pretrained(out)
    image_processor = CLIPImageProcessor(size={"shortest_edge": IMAGE}, crop_size={"height": IMAGE, "width": IMAGE})
    CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(out)
    return out


def build_tiny_dinov2(out_dir: str | os.PathLike, seed: int = 1) -> Path:
    from transformers import BitImageProcessor, Dinov2Config, Dinov2Model

    out = Path(out_dir)
    _seed(seed)
    config = Dinov2Config(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, image_size=IMAGE, patch_size=8)
    Dinov2Model(config).save_pretrained(out)
    BitImageProcessor(size={"shortest_edge": IMAGE}, crop_size={"height": IMAGE, "width": IMAGE}, do_center_crop=True).save_pretrained(out)
    return out


def build_tiny_owlvit(out_dir: str | os.PathLike, seed: int = 2) -> Path:
    from transformers import OwlViTConfig, OwlViTForObjectDetection, OwlViTImageProcessor, OwlViTProcessor

    out = Path(out_dir)
    tokenizer = tiny_clip_tokenizer(16)
    _seed(seed)
    config = OwlViTConfig(text_config=_text_config(tokenizer, 16), vision_config=_vision_config(), projection_dim=32)
    OwlViTForObjectDetection(config).save_pretrained(out)
    image_processor = OwlViTImageProcessor(size={"height": IMAGE, "width": IMAGE}, crop_size={"height": IMAGE, "width": IMAGE})
    OwlViTProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(out)
    return out


def build_tiny_sam(out_dir: str | os.PathLike, seed: int = 3) -> Path:
    from transformers import SamConfig, SamImageProcessor, SamModel, SamProcessor

    out = Path(out_dir)
    _seed(seed)
    config = SamConfig(
        vision_config=dict(hidden_size=32, output_channels=16, num_hidden_layers=1, num_attention_heads=2, image_size=64,
                           patch_size=16, global_attn_indexes=[0], mlp_dim=64, num_pos_feats=8),
        prompt_encoder_config=dict(hidden_size=16, image_size=64, patch_size=16, mask_input_channels=4),
        mask_decoder_config=dict(hidden_size=16, mlp_dim=32, num_hidden_layers=1, num_attention_heads=2, iou_head_hidden_dim=16),
    )
    SamModel(config).save_pretrained(out)
    image_processor = SamImageProcessor(size={"longest_edge": 64}, pad_size={"height": 64, "width": 64}, mask_size={"longest_edge": 16})
    SamProcessor(image_processor=image_processor).save_pretrained(out)
    return out


def build_tiny_tagger(out_dir: str | os.PathLike, seed: int = 4, labels: tuple[str, ...] = TAG_LABELS) -> Path:
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    out = Path(out_dir)
    _seed(seed)
    config = ViTConfig(
        **_vision_config(), num_labels=len(labels), id2label=dict(enumerate(labels)), label2id={l: i for i, l in enumerate(labels)},
        problem_type="multi_label_classification",
    )
    ViTForImageClassification(config).save_pretrained(out)
    ViTImageProcessor(size={"height": IMAGE, "width": IMAGE}).save_pretrained(out)
    return out
