"""The DPO-family stages of issue 4 on real collated batches: their views, data and errors."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from conftest import build_trainer_for, dataset_dir_with, demo_rows

from groundpo.data.collator import INFO_KEY, MEDIA_INPUTS
from groundpo.data.rows import RowError
from groundpo.data.sampler import CurriculumSampler
from groundpo.registry import get_stage
from groundpo.views import CLEAN, POLICY, REFERENCE, TEXT_ONLY

DATASETS = {"jompo": "jompo_pref.json", "mfpo": "mfpo_pref.json", "acpo": "acpo_pref.json"}
LIKE = {"jompo": "demo_jompo", "mfpo": "demo_mfpo", "acpo": "demo_acpo", "omni_dpo": "demo_mod_dpo", "mdpo": "demo_mod_dpo"}


def _trainer(tiny_omni, tmp_path, stage, rows=None, **overrides):
    if rows is None:
        return build_trainer_for(tiny_omni, tmp_path, stage=stage, dataset=LIKE[stage], **overrides)
    data = dataset_dir_with(tmp_path / "data", rows, like=LIKE[stage])
    return build_trainer_for(tiny_omni, tmp_path, stage=stage, dataset="rows", dataset_dir=str(data), **overrides)


def _first_batch(trainer):
    batch = dict(next(iter(trainer.get_train_dataloader())))
    return batch, batch.pop(INFO_KEY)


@pytest.mark.parametrize(
    "stage, source, change, expected",
    [
        ("jompo", "jompo_pref.json", {"rejected_images": None}, r"row 1, field 'rejected_images': JoMPO needs the contrasting image"),
        ("acpo", "acpo_pref.json", {"pair_type": "both"}, r"row 1, field 'pair_type': unknown value 'both'"),
        ("acpo", "acpo_pref.json", {"pair_type": None}, r"row 1, field 'pair_type': missing"),
        ("omni_dpo", "mod_pref.json", {"audios": None, "conversations": [{"from": "human", "value": "<video>What is it?"}]},
         r"row 1, field 'audios': OmniDPO corrupts the audio input"),
        ("mdpo", "mod_pref.json", {"videos": None, "conversations": [{"from": "human", "value": "<audio>What is it?"}]},
         r"row 1, field 'images': this stage corrupts the image"),
    ],
)
def test_missing_fields_fail_before_training(tiny_omni, tmp_path, stage, source, change, expected):
    rows = demo_rows(source, 4)
    for key, value in change.items():
        if value is None:
            rows[1].pop(key, None)
        else:
            rows[1][key] = value
    with pytest.raises(RowError, match=expected):
        _trainer(tiny_omni, tmp_path, stage, rows)


def test_acpo_input_row_without_mismatched_audio_names_the_field(tiny_omni, tmp_path):
    rows = demo_rows("acpo_pref.json", 4)
    index = next(i for i, r in enumerate(rows) if r["pair_type"] == "input")
    rows[index].pop("rejected_audios")
    with pytest.raises(RowError, match=rf"row {index}, field 'rejected_audios': an input-contrastive pair"):
        _trainer(tiny_omni, tmp_path, "acpo", rows)


def test_acpo_rejected_rows_of_input_pairs_carry_the_mismatched_audio(tiny_omni, tmp_path):
    rows = demo_rows("acpo_pref.json", 2)
    assert [r["pair_type"] for r in rows] == ["output", "input"]
    trainer = _trainer(tiny_omni, tmp_path, "acpo", rows, disable_shuffling=True)
    batch, info = _first_batch(trainer)
    feats = batch["input_features"]  # audio items in row order: chosen 0, chosen 1, rejected 0, rejected 1
    assert feats.shape[0] == 4
    assert torch.equal(feats[0], feats[2])  # output pair: one input, two responses
    assert not torch.equal(feats[1], feats[3])  # input pair: aligned vs mismatched audio
    labels = batch["labels"]
    assert [t for t in labels[1].tolist() if t >= 0] == [t for t in labels[3].tolist() if t >= 0]  # same response
    kwargs = get_stage("acpo").inputs(*trainer.compute_table(trainer.model, batch, info)[:1], info, trainer.finetuning_args)
    assert kwargs["input_contrastive"].tolist() == [False, True]


def test_jompo_views_share_the_text_only_mechanism_and_use_the_contrast_image(tiny_omni, tmp_path):
    trainer = _trainer(tiny_omni, tmp_path, "jompo")
    plan = trainer.plan
    mod_dpo_plus = get_stage("mod_dpo").plan(dataclasses.replace(trainer.finetuning_args, mod_gamma_lpd=0.05))
    assert TEXT_ONLY in plan.token_views and mod_dpo_plus.token_views == (TEXT_ONLY,)  # m_none == MoD-DPO++'s x
    assert trainer.finetuning_args.pref_beta == 0.05  # JoMPO's β when the config does not set it
    batch, info = _first_batch(trainer)
    text, contrast = info["views"]["text"], info["views"]["contrast"]
    assert not set(MEDIA_INPUTS) & set(text)
    assert contrast["pixel_values"].shape == batch["pixel_values"].shape
    assert not torch.equal(contrast["pixel_values"], batch["pixel_values"])  # m_l is another image
    table, _ = trainer.compute_table(trainer.model, batch, info)
    assert set(table) == {(m, v) for m in (POLICY, REFERENCE) for v in (CLEAN, "text", "contrast")}
    assert all(table[(POLICY, v)][0].requires_grad for v in (CLEAN, "text", "contrast"))
    kwargs = get_stage("jompo").inputs(table, info, trainer.finetuning_args)
    assert kwargs["policy_logps"].shape == (2, 3, 2)


def test_stage_beta_from_the_config_wins(tiny_omni, tmp_path):
    assert _trainer(tiny_omni, tmp_path, "jompo", pref_beta=0.2).finetuning_args.pref_beta == 0.2


def test_mdpo_crop_is_shared_by_policy_and_reference(tiny_omni, tmp_path):
    trainer = _trainer(tiny_omni, tmp_path, "mdpo", share_prompt_prefix=False)  # rows as upstream: 2B clean rows
    seen = {}
    hooks = [
        trainer.model.register_forward_pre_hook(lambda m, a, k: seen.setdefault("policy", []).append(k), with_kwargs=True),
        trainer.ref_model.register_forward_pre_hook(lambda m, a, k: seen.setdefault("ref", []).append(k), with_kwargs=True),
    ]
    try:
        batch, info = _first_batch(trainer)
        trainer.compute_table(trainer.model, batch, info)
    finally:
        for hook in hooks:
            hook.remove()
    clean = batch["pixel_values_videos"]
    # reference: clean (2B rows), then v' on the B chosen rows; policy: ONE forward of clean + v' rows
    assert [k["input_ids"].shape[0] for k in seen["ref"]] == [4, 2] and len(seen["policy"]) == 1
    crop = seen["ref"][1]["pixel_values_videos"]
    assert crop.shape[0] == clean.shape[0] // 2  # the chosen rows' videos only
    assert not torch.equal(crop, clean[: crop.shape[0]])  # cropped
    joined = seen["policy"][0]["pixel_values_videos"]
    assert torch.equal(joined[: clean.shape[0]], clean) and torch.equal(joined[clean.shape[0] :], crop)  # one crop
    for k in seen["policy"] + seen["ref"]:  # audio untouched
        n = k["input_features"].shape[0]
        assert torch.equal(k["input_features"], torch.cat([batch["input_features"]] * 2)[:n])


def test_mfpo_curriculum_orders_rows_by_entropy_and_reuses_its_cache(tiny_omni, tmp_path):
    trainer = _trainer(tiny_omni, tmp_path, "mfpo")
    cache = tmp_path / "out" / "curriculum_scores.json"
    scores = trainer.score_difficulty()
    assert len(scores) == 16 and cache.exists()
    assert len(set(scores)) > 1

    sampler = trainer._get_train_sampler()
    assert isinstance(sampler, CurriculumSampler)
    order = list(sampler)
    assert sorted(order) == list(range(16))
    thirds = [order[:5], order[5:11], order[11:]]
    assert max(scores[i] for i in thirds[0]) <= min(scores[i] for i in thirds[1])
    assert max(scores[i] for i in thirds[1]) <= min(scores[i] for i in thirds[2])

    # a resumed run (same output dir, same data) reads the cache and runs no forward pass
    resumed = _trainer(tiny_omni, tmp_path, "mfpo")
    resumed.model.forward = lambda *a, **k: (_ for _ in ()).throw(AssertionError("recomputed"))
    assert resumed.score_difficulty() == scores
    stale = json.loads(cache.read_text())
    stale["fingerprint"] = "other-data"
    cache.write_text(json.dumps(stale))
    with pytest.raises(AssertionError, match="recomputed"):  # other data: the cache is not trusted
        resumed.score_difficulty()


def test_mfpo_curriculum_refuses_non_finite_scores(tiny_omni, tmp_path):
    """A policy whose logits are NaN (say, weights a loader left unwritten) stops training with the rows
    named, instead of writing a curriculum of NaN that would order the rows arbitrarily."""
    trainer = _trainer(tiny_omni, tmp_path, "mfpo")
    forward = trainer.model.forward

    def broken(*args, **kwargs):
        out = forward(*args, **kwargs)
        out.logits[0] = float("nan")
        return out

    trainer.model.forward = broken
    with pytest.raises(RuntimeError, match=r"token entropy is not finite for training rows \[0, 2, 4"):
        trainer.score_difficulty()
    assert not (tmp_path / "out" / "curriculum_scores.json").exists()


def test_curriculum_sampler_thirds():
    sampler = CurriculumSampler([5.0, 1.0, 3.0, 2.0, 6.0, 4.0], shuffle=False)
    assert list(sampler) == [1, 3, 2, 5, 0, 4]
    shuffled = CurriculumSampler([5.0, 1.0, 3.0, 2.0, 6.0, 4.0], seed=1)
    order = list(shuffled)
    assert set(order[:2]) == {1, 3} and set(order[2:4]) == {2, 5} and set(order[4:]) == {0, 4}
