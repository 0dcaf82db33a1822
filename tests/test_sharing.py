"""Shared prompt prefix and shared media encodings change nothing but the cost.

For every stage, on the tiny Qwen2.5-Omni with video + audio, batches of 2 pairs of different
lengths: the log-prob table and the gradients of one step are the same (to 1e-5, float32) with
sharing on and off. The same trainer runs both ways on the same batch, so weights and corruption
noise are identical.
"""

from __future__ import annotations

import logging

import pytest
import torch
from conftest import build_trainer_for

from groundpo.data.collator import INFO_KEY
from groundpo.data.packing import SEGMENTS
from groundpo.views import POLICY

CASES = {
    "base_dpo": dict(stage="base_dpo"),
    # frozen towers (LLaMA-Factory's default): policy and reference share every clean encoding
    "mod_dpo": dict(stage="mod_dpo", mod_gamma_lpd=0.05, use_audio_in_video=True, freeze_vision_tower=True),
    "omni_dpo_lora": dict(stage="omni_dpo", finetuning_type="lora", lora_target="q_proj,v_proj"),
    "mdpo": dict(stage="mdpo"),
    "jompo": dict(stage="jompo", dataset="demo_jompo"),
    "mfpo": dict(stage="mfpo", dataset="demo_mfpo", mfpo_curriculum=False),
    "acpo": dict(stage="acpo", dataset="demo_acpo", disable_shuffling=True),  # an output pair and an input pair
}


def _step(trainer, batch: dict, share: bool):
    trainer.share_prefix = share
    trainer.finetuning_args.share_media_encodings = share
    trainer.model.zero_grad(set_to_none=True)
    batch = dict(batch)
    info = batch.pop(INFO_KEY)
    table, _ = trainer.compute_table(trainer.model, batch, info)
    grad_logps = [side for (model, _), sides in table.items() if model == POLICY for side in sides
                  if side is not None and side.requires_grad]
    torch.stack([s.sum() for s in grad_logps]).sum().backward()
    grads = {n: p.grad.clone() for n, p in trainer.model.named_parameters() if p.grad is not None}
    return table, grads


@pytest.mark.parametrize("case", sorted(CASES))
def test_sharing_on_and_off_give_the_same_log_probs_and_gradients(tiny_omni, tmp_path, case):
    overrides = {"dataset": "demo_mod_dpo", "max_samples": 8, **CASES[case]}
    trainer = build_trainer_for(tiny_omni, tmp_path, **overrides)
    # 2 pairs of different lengths (padding) where the data has them
    batches = list(trainer.get_train_dataloader())
    batch = next((b for b in batches if len(set(b["attention_mask"].sum(-1).tolist())) > 1), batches[0])
    assert batch["input_ids"].shape[0] == 4
    assert len(set(batch["attention_mask"].sum(-1).tolist())) > 1 or case == "mfpo"  # MFPO's demo rows: one length
    assert {"pixel_values_videos", "input_features"} <= set(batch) or case in ("jompo", "mfpo")

    shared, shared_grads = _step(trainer, batch, share=True)
    plain, plain_grads = _step(trainer, batch, share=False)
    assert shared.keys() == plain.keys()
    for key in plain:
        for a, b in zip(shared[key], plain[key]):
            assert (a is None) == (b is None), key
            if a is not None:
                # 1e-5, or float32's own rounding (1e-6 relative) on sums of ~100 nats
                torch.testing.assert_close(a.detach(), b.detach(), rtol=1e-6, atol=1e-5, msg=lambda m: f"{key}: {m}")
    assert shared_grads.keys() == plain_grads.keys() and shared_grads
    for name in plain_grads:
        torch.testing.assert_close(shared_grads[name], plain_grads[name], rtol=1e-4, atol=1e-5, msg=lambda m: f"{name}: {m}")

    trainer.share_prefix = True
    info = batch[INFO_KEY]
    packed, layout = trainer.scoring_inputs({k: v for k, v in batch.items() if k != INFO_KEY}, info, "clean", seed=0)
    rows = packed["input_ids"].shape[0]
    if case == "acpo":  # the input pair (other audio on its rejected side) stays two rows: fallback, pair by pair
        assert info["same_media"] == [True, False] and rows == 3 and layout.rows.tolist() == [[0, 0], [1, 2]]
    else:
        assert rows == 2 and SEGMENTS in packed and layout.rows.tolist() == [[0, 0], [1, 1]]
    encodings = trainer._encodings
    assert encodings.calls > 0
    if case == "mod_dpo":  # 8 tower calls (4 passes × video, audio), 4 distinct inputs: clean ×2, v', a'
        assert (encodings.calls, encodings.hits) == (8, 4)


def test_attention_without_block_masks_falls_back_once_with_a_message(tiny_omni, tmp_path, monkeypatch, caplog):
    import groundpo.train.trainer as trainer_module

    monkeypatch.setattr(trainer_module, "attention_implementation", lambda model: "flash_attention_2")
    with caplog.at_level(logging.WARNING):
        trainer = build_trainer_for(tiny_omni, tmp_path, stage="base_dpo", max_samples=4)
    assert not trainer.share_prefix
    assert "The shared prompt prefix is off for this run: `flash_attention_2` attention" in caplog.text
    batch = dict(next(iter(trainer.get_train_dataloader())))
    info = batch.pop(INFO_KEY)
    inputs, layout = trainer.scoring_inputs(batch, info, "clean", seed=0)
    assert inputs["input_ids"].shape[0] == 4 and SEGMENTS not in inputs  # two rows per pair, as upstream
