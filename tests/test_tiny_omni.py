"""The tiny offline Qwen2.5-Omni: deterministic bytes, no network, loads through upstream."""

from __future__ import annotations

import socket

import pytest

from groundpo.testing.tiny_omni import PROCESSOR_TOKEN_ATTRS, build_tiny_omni


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError("network access attempted during an offline build")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_build_is_deterministic_and_offline(tmp_path, no_network):
    first = build_tiny_omni(tmp_path / "a")
    second = build_tiny_omni(tmp_path / "b")
    names = sorted(p.name for p in first.iterdir())
    assert names == sorted(p.name for p in second.iterdir())
    assert {"config.json", "model.safetensors", "tokenizer.json", "processor_config.json", "spk_dict.pt"} <= set(names)
    for name in names:
        assert (first / name).read_bytes() == (second / name).read_bytes(), name


def test_loads_through_upstream_with_the_qwen2_omni_template(tiny_omni):
    from llamafactory.data import get_template_and_fix_tokenizer
    from llamafactory.hparams import get_infer_args
    from llamafactory.model import load_model, load_tokenizer

    model_args, data_args, finetuning_args, _ = get_infer_args(
        {"model_name_or_path": str(tiny_omni), "template": "qwen2_omni", "finetuning_type": "full"}
    )
    module = load_tokenizer(model_args)
    tokenizer, processor = module["tokenizer"], module["processor"]
    template = get_template_and_fix_tokenizer(tokenizer, data_args)
    model = load_model(tokenizer, model_args, finetuning_args, is_trainable=False)

    assert type(model).__name__ == "Qwen2_5OmniThinkerForConditionalGeneration"
    assert type(processor).__name__ == "Qwen2_5OmniProcessor"
    assert 100_000 < sum(p.numel() for p in model.parameters()) < 1_000_000
    for attr, token in PROCESSOR_TOKEN_ATTRS.items():  # the template's media tokens are single tokens
        assert getattr(processor, attr) == token
        assert len(tokenizer.encode(token, add_special_tokens=False)) == 1
    assert template.mm_plugin.audio_token == "<|AUDIO|>"
    ids = tokenizer.encode("<|im_start|>user\nWhat colour is the shape?<|im_end|>", add_special_tokens=False)
    assert tokenizer.decode(ids) == "<|im_start|>user\nWhat colour is the shape?<|im_end|>"
