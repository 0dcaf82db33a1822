"""The tiny offline Qwen2-VL: deterministic bytes, loads through upstream, sees its image."""

from __future__ import annotations

import pytest
import torch

from groundpo.testing.tiny_vl import build_tiny_qwen2_vl


@pytest.fixture(scope="module")
def tiny_vl(tmp_path_factory):
    return build_tiny_qwen2_vl(tmp_path_factory.mktemp("tiny-vl"))


def test_build_is_deterministic(tiny_vl, tmp_path):
    again = build_tiny_qwen2_vl(tmp_path / "again")
    names = sorted(p.name for p in tiny_vl.iterdir())
    assert names == sorted(p.name for p in again.iterdir())
    assert {"config.json", "model.safetensors", "tokenizer.json", "processor_config.json"} <= set(names)
    for name in names:
        assert (tiny_vl / name).read_bytes() == (again / name).read_bytes(), name


def test_loads_with_the_qwen2_vl_template_and_the_image_changes_the_logits(tiny_vl):
    from PIL import Image

    from llamafactory.data import get_template_and_fix_tokenizer
    from llamafactory.hparams import get_infer_args
    from llamafactory.model import load_model, load_tokenizer

    model_args, data_args, finetuning_args, _ = get_infer_args(
        {"model_name_or_path": str(tiny_vl), "template": "qwen2_vl", "finetuning_type": "full"}
    )
    module = load_tokenizer(model_args)
    tokenizer, processor = module["tokenizer"], module["processor"]
    template = get_template_and_fix_tokenizer(tokenizer, data_args)
    model = load_model(tokenizer, model_args, finetuning_args, is_trainable=False)
    assert type(model).__name__ == "Qwen2VLForConditionalGeneration"

    def logits(colour):
        image = Image.new("RGB", (56, 56), colour)
        messages = [{"role": "user", "content": "<image>What colour is the shape?"}, {"role": "assistant", "content": ""}]
        messages = template.mm_plugin.process_messages(messages, [image], [], [], processor)
        ids, _ = template.encode_oneturn(tokenizer, messages)
        mm = template.mm_plugin.get_mm_inputs([image], [], [], [1], [0], [0], [ids], processor)
        assert tokenizer.convert_tokens_to_ids("<|image_pad|>") in ids
        input_ids = torch.tensor([ids])
        mm_token_type_ids = (input_ids == tokenizer.convert_tokens_to_ids("<|image_pad|>")).long()
        with torch.no_grad():
            return model(input_ids=input_ids, mm_token_type_ids=mm_token_type_ids, **mm).logits[0, -1]

    red, blue = logits((220, 20, 20)), logits((20, 20, 220))
    assert red.shape[-1] == model.config.text_config.vocab_size
    assert not torch.allclose(red, blue)  # the vision tower reaches the decoder
