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


# ------------------------------------------------------------------------------- scale: evaluation, ranks, passes
def _two_datasets(tmp_path, n_train: int, n_eval: int, like: str = "demo_mod_dpo", source: str = "mod_pref.json"):
    import json

    from conftest import DATA_DIR, demo_rows

    rows = demo_rows(source, n_train + n_eval)
    folder = tmp_path / "data"
    folder.mkdir(parents=True, exist_ok=True)
    info = json.loads((DATA_DIR / "dataset_info.json").read_text())[like]
    entries = {}
    for name, part in (("train_rows", rows[:n_train]), ("eval_rows", rows[n_train:])):
        (folder / f"{name}.json").write_text(json.dumps(part))
        entries[name] = {**info, "file_name": f"{name}.json"}
    (folder / "dataset_info.json").write_text(json.dumps(entries))
    return folder


def test_eval_with_a_precomputed_reference_equals_eval_with_a_live_reference(tiny_omni, tmp_path):
    """The eval set is larger than the training set and its rows are not training rows: the table must
    hold the eval rows' own reference log-probs (and never index past the training rows)."""
    data = _two_datasets(tmp_path, n_train=4, n_eval=10)
    common = dict(dataset="train_rows", eval_dataset="eval_rows", dataset_dir=str(data), do_eval=True,
                  per_device_eval_batch_size=2, mod_alternate_modalities=False)
    live = _build(tiny_omni, tmp_path / "live", **common)
    pre = _build(tiny_omni, tmp_path / "pre", mod_precompute_reference=True, **common)
    assert len(pre.train_dataset) == 4 and len(pre.eval_dataset) == 10
    assert sorted(pre.eval_dataset["row_id"]) == list(range(4, 14))  # unique across the run's datasets
    pre.precompute_reference()
    assert pre.reference_table[CLEAN].shape == (14, 2) and torch.isfinite(pre.reference_table[CLEAN]).all()

    calls = []
    hook = pre.ref_model.register_forward_hook(lambda *_: calls.append(1))
    try:
        with_table = pre.evaluate()
    finally:
        hook.remove()
    assert calls == []  # every eval reference value came from the table
    without = live.evaluate()
    keys = [k for k in without if k.startswith("eval_") and k not in ("eval_runtime", "eval_samples_per_second", "eval_steps_per_second")]
    assert {"eval_loss", "eval_mod/lr_text", "eval_rewards/chosen"} <= set(keys)
    for key in keys:
        assert with_table[key] == pytest.approx(without[key], abs=1e-6), key


def test_every_row_is_scored_even_with_drop_last(tiny_omni, tmp_path):
    """dataloader_drop_last drops a short last batch in training; precompute and curriculum must not."""
    data = _two_datasets(tmp_path, n_train=5, n_eval=0)
    trainer = _build(tiny_omni, tmp_path, dataset="train_rows", dataset_dir=str(data), dataloader_drop_last=True,
                     mod_precompute_reference=True, per_device_train_batch_size=2, per_device_eval_batch_size=1)
    sizes = []
    collate = trainer.data_collator.__call__
    trainer.data_collator = lambda features: sizes.append(len(features)) or collate(features)
    trainer.precompute_reference()
    assert torch.isfinite(trainer.reference_table[CLEAN]).all() and trainer.reference_table[CLEAN].shape == (5, 2)
    assert (trainer.reference_table[CLEAN] != 0).all()
    assert sizes == [2, 2, 2]  # the training batch size (not the eval one), the last batch padded with a repeat
    # each row's value is its own: recompute row 4 alone
    single = trainer.data_collator([trainer.train_dataset[4]])
    info = single.pop(INFO_KEY)
    alone = trainer._reference_scores(trainer.model, *trainer.scoring_inputs(single, info, CLEAN, seed=0)).logps[0]
    assert trainer.reference_table[CLEAN][4].tolist() == pytest.approx(alone.tolist(), abs=1e-5)


def test_a_view_skipped_here_still_runs_when_another_rank_needs_it(trainer, batches):
    """Eval batches are not modality-homogeneous: rank 0 may hold only audiovisual rows (no invariance
    term) while rank 1 holds a visual row. Every rank must then run the invariance pass (ZeRO-3 hangs
    otherwise); the audiovisual rows are masked out of the term."""
    batch = dict(batches["audiovisual"])
    info = batch.pop(INFO_KEY)
    assert not trainer.tensor_view_needed(info, "inv")  # alone: nobody needs it
    trainer._any_rank = lambda flag: True  # another rank holds a row that needs it
    try:
        table, _ = trainer.compute_table(trainer.model, batch, info)
    finally:
        del trainer._any_rank
    assert (POLICY, "inv") in table
    kwargs = trainer.objective_inputs(table, info, trainer.finetuning_args)
    assert kwargs["inv_mask"].tolist() == [False] * len(info["rows"])
    table, _ = trainer.compute_table(trainer.model, batch, info)
    assert (POLICY, "inv") not in table


def test_every_pass_with_gradient_is_one_forward_and_equals_separate_forwards(tiny_omni, tmp_path):
    from conftest import build_trainer_for

    from groundpo.data.packing import layout_from_labels
    from groundpo.train.logps import layout_logps

    trainer = build_trainer_for(tiny_omni, tmp_path, stage="jompo", dataset="demo_jompo")
    batch = dict(next(iter(trainer.get_train_dataloader())))
    info = batch.pop(INFO_KEY)
    grad_calls = []
    hook = trainer.model.register_forward_hook(lambda m, a, out: grad_calls.append(torch.is_grad_enabled()))
    try:
        table, _ = trainer.compute_table(trainer.model, batch, info)
    finally:
        hook.remove()
    assert grad_calls.count(True) == 1  # clean, text-only and contrast views: one forward
    pairs = len(info["rows"])
    for view in (CLEAN, "text", "contrast"):  # each view alone, unpacked: two sequences per pair
        inputs, _ = trainer.view_batch(batch, info, view, trainer.noise_seed())
        with torch.no_grad():
            alone = layout_logps(trainer.model, inputs, layout_from_labels(inputs["labels"], pairs)).logps
        joined = torch.stack(table[(POLICY, view)], dim=1).detach()
        assert joined.flatten().tolist() == pytest.approx(alone.flatten().tolist(), abs=1e-4), view


@pytest.mark.parametrize("share_prefix", [True, False])
def test_conditional_passes_score_only_the_chosen_rows(tiny_omni, tmp_path, share_prefix):
    """OmniDPO's v' and a' terms use log π(y_w | corrupted) only: the rejected rows are not run. The
    clean pass holds one packed row per pair with the shared prompt prefix, two rows without."""
    from conftest import build_trainer_for

    trainer = build_trainer_for(tiny_omni, tmp_path, stage="omni_dpo", dataset="demo_mod_dpo",
                                share_prompt_prefix=share_prefix)
    batch = dict(next(iter(trainer.get_train_dataloader())))
    info = batch.pop(INFO_KEY)
    rows_seen = {"policy": [], "ref": []}
    hooks = [
        trainer.model.register_forward_pre_hook(lambda m, a, k: rows_seen["policy"].append(k["input_ids"].shape[0]), with_kwargs=True),
        trainer.ref_model.register_forward_pre_hook(lambda m, a, k: rows_seen["ref"].append(k["input_ids"].shape[0]), with_kwargs=True),
    ]
    try:
        table, _ = trainer.compute_table(trainer.model, batch, info)
    finally:
        for hook in hooks:
            hook.remove()
    pairs = len(info["rows"])
    clean = pairs if share_prefix else 2 * pairs
    assert rows_seen["ref"] == [clean, pairs, pairs]  # clean, v' (chosen), a' (chosen)
    assert rows_seen["policy"] == [clean + pairs + pairs]  # one forward: clean + v' + a' chosen rows
    for view in ("vcorrupt", "acorrupt"):
        assert table[(POLICY, view)][1] is None and table[(POLICY, view)][0].shape == (pairs,)
