"""The mod_dpo trainer on real collated Qwen2.5-Omni batches of the demo data."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_config

from groundpo.data.collator import INFO_KEY, MEDIA_INPUTS
from groundpo.views import CLEAN, POLICY, REFERENCE


def _build(tiny_omni, tmp_path, **overrides):
    from llamafactory.hparams import get_train_args

    from groundpo.train.workflow import build_trainer

    cfg = tiny_config(tiny_omni, tmp_path, mod_gamma_lpd=0.05, **overrides)
    return build_trainer(*get_train_args(cfg)[:4])


@pytest.fixture(scope="module")
def trainer(tiny_omni, tmp_path_factory):
    return _build(tiny_omni, tmp_path_factory.mktemp("views"))


def _batches_by_modality(trainer) -> dict[str, dict]:
    found = {}
    for batch in trainer.get_train_dataloader():
        modalities = set(batch[INFO_KEY]["modality"])
        assert len(modalities) == 1  # modality-homogeneous batches
        found.setdefault(modalities.pop(), batch)
        if len(found) == 3:
            return found
    raise AssertionError(f"only saw {sorted(found)}")


@pytest.fixture(scope="module")
def batches(trainer):
    return _batches_by_modality(trainer)


def _changed(a: dict, b: dict, key: str) -> bool:
    return not torch.equal(a[key], b[key])


@pytest.mark.parametrize(
    "modality, inv_changes, sens_changes",
    [
        ("visual", {"input_features"}, {"pixel_values_videos"}),
        ("audio", {"pixel_values_videos"}, {"input_features"}),
        ("audiovisual", None, {"pixel_values_videos", "input_features"}),
    ],
)
def test_inv_and_sens_corrupt_the_right_modality(trainer, batches, modality, inv_changes, sens_changes):
    batch = dict(batches[modality])
    info = batch.pop(INFO_KEY)
    media = {"pixel_values_videos", "input_features"}
    for view, expected in (("inv", inv_changes), ("sens", sens_changes)):
        if expected is None:  # Supp. A.5: no invariance view for audiovisual prompts
            assert not trainer.tensor_view_needed(info, view)
            continue
        assert trainer.tensor_view_needed(info, view)
        out, counts = trainer.view_batch(batch, info, view, seed=1)
        assert counts == info["counts"]
        assert {k: v.shape for k, v in out.items() if torch.is_tensor(v)} == {
            k: v.shape for k, v in batch.items() if torch.is_tensor(v)
        }
        assert {k for k in media if _changed(out, batch, k)} == expected
        for key in ("input_ids", "attention_mask", "labels", "position_ids"):
            assert torch.equal(out[key], batch[key])


def test_text_only_view_holds_no_media(trainer, batches):
    info = batches["visual"][INFO_KEY]
    text = info["views"]["text"]
    assert not set(MEDIA_INPUTS) & set(text)
    tok = trainer.processing_class
    media_ids = {tok.convert_tokens_to_ids(t) for t in ("<|IMAGE|>", "<|VIDEO|>", "<|AUDIO|>", "<|vision_bos|>", "<|audio_bos|>")}
    assert not set(text["input_ids"].flatten().tolist()) & media_ids
    assert text["position_ids"].shape[-1] == text["input_ids"].shape[-1]
    clean = batches["visual"]
    assert set(clean["input_ids"].flatten().tolist()) & media_ids  # the clean view does carry media
    # the same responses are scored: label tokens match between the clean and the text-only view
    for row in range(clean["labels"].shape[0]):
        assert [t for t in clean["labels"][row].tolist() if t >= 0] == [t for t in text["labels"][row].tolist() if t >= 0]


def test_gradient_only_through_the_clean_policy_pass(trainer, batches):
    model = trainer.model
    calls, ref_calls = [], []
    hooks = [
        model.register_forward_hook(lambda *_: calls.append(torch.is_grad_enabled())),
        trainer.ref_model.register_forward_hook(lambda *_: ref_calls.append(torch.is_grad_enabled())),
    ]
    try:
        batch = dict(batches["visual"])
        info = batch.pop(INFO_KEY)
        model.zero_grad(set_to_none=True)
        table, _ = trainer.compute_table(model, batch, info)
    finally:
        for hook in hooks:
            hook.remove()
    assert set(table) == {(POLICY, CLEAN), (REFERENCE, CLEAN), (POLICY, "sens"), (POLICY, "inv"), (REFERENCE, "text")}
    assert calls == [False, False, True]  # sens and inv without autograd, first; then the clean policy pass
    assert ref_calls == [False, False]  # reference on clean and text-only inputs
    for key, (chosen, rejected) in table.items():
        with_grad = key == (POLICY, CLEAN)
        assert chosen.requires_grad == with_grad and rejected.requires_grad == with_grad
        assert (chosen.grad_fn is not None) == with_grad

    kwargs = trainer.objective_inputs(table, info, trainer.finetuning_args)
    losses, _ = trainer.objective(**kwargs)
    losses.mean().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert any(g is not None and g.abs().sum() > 0 for g in grads)
    assert all(p.grad is None for p in trainer.ref_model.parameters())


def test_precomputed_reference_gives_the_same_loss(tiny_omni, tmp_path):
    live = _build(tiny_omni, tmp_path / "live")
    pre = _build(tiny_omni, tmp_path / "pre", mod_precompute_reference=True)
    pre.precompute_reference()
    assert set(pre.reference_table) == {CLEAN, "text"}
    assert pre.reference_table[CLEAN].shape == (40, 2)
    assert torch.isfinite(pre.reference_table[CLEAN]).all() and torch.isfinite(pre.reference_table["text"]).all()
    for batch in list(live.get_train_dataloader())[:3]:
        results = []
        for trainer in (live, pre):  # the same step and seed: the same corruption noise in both
            with torch.no_grad():
                loss, metrics = trainer.get_batch_loss_metrics(trainer.model, dict(batch))
            results.append((loss.item(), metrics))
        assert results[0][0] == pytest.approx(results[1][0], rel=1e-5, abs=1e-6)
        for key in ("rewards/chosen", "mod/lr_text", "mod/margin"):
            assert results[0][1][key] == pytest.approx(results[1][1][key], rel=1e-4, abs=1e-5)
