"""Dataset checks before training, and the modality-homogeneous sampler."""

from __future__ import annotations

import json

import pytest
from conftest import DATA_DIR, tiny_config

from groundpo.data.rows import RowError
from groundpo.data.sampler import ModalityBatchSampler


def _dataset_dir(tmp_path, rows):
    (tmp_path / "rows.json").write_text(json.dumps(rows), encoding="utf-8")
    info = json.loads((DATA_DIR / "dataset_info.json").read_text())["demo_mod_dpo"]
    info["file_name"] = "rows.json"
    (tmp_path / "dataset_info.json").write_text(json.dumps({"bad_rows": info}), encoding="utf-8")
    return tmp_path


def _demo_rows(n=6):
    rows = json.loads((DATA_DIR / "demo" / "mod_pref.json").read_text())[:n]
    for row in rows:  # absolute media paths so the rows work from any dataset_dir
        row["videos"] = [str(DATA_DIR / p) for p in row["videos"]]
        row["audios"] = [str(DATA_DIR / p) for p in row["audios"]]
    return rows


def _build(tiny_omni, tmp_path, rows):
    from llamafactory.hparams import get_train_args

    from groundpo.train.workflow import build_trainer

    (tmp_path / "data").mkdir()
    data = _dataset_dir(tmp_path / "data", rows)
    cfg = tiny_config(tiny_omni, tmp_path / "out", dataset="bad_rows", dataset_dir=str(data))
    return build_trainer(*get_train_args(cfg)[:4])


@pytest.mark.parametrize(
    "index, change, expected",
    [
        (3, {"modality": "visaul"}, r"row 3, field 'modality': unknown value 'visaul'"),
        (2, {"modality": None}, r"row 2, field 'modality': missing"),
        (4, {"audios": [], "conversations": [{"from": "human", "value": "<video>What colour is it?"}]},
         r"row 4, field 'modality': '\w+' row has no audio"),
    ],
)
def test_bad_rows_fail_before_training_with_index_field_and_value(tiny_omni, tmp_path, index, change, expected):
    rows = _demo_rows()
    rows[index].update(change)
    if change.get("modality", "") is None:
        del rows[index]["modality"]
    with pytest.raises(RowError, match=expected):
        _build(tiny_omni, tmp_path, rows)


def test_missing_media_files_are_listed_with_their_paths(tiny_omni, tmp_path):
    rows = _demo_rows()
    rows[1]["audios"] = ["/nowhere/lost.wav"]
    rows[5]["videos"] = ["/nowhere/gone.mp4"]
    with pytest.raises(RowError) as err:
        _build(tiny_omni, tmp_path, rows)
    assert "2 media file(s) not found" in str(err.value)
    assert "row 1 audios: /nowhere/lost.wav" in str(err.value)
    assert "row 5 videos: /nowhere/gone.mp4" in str(err.value)


def test_upstream_dpo_ignores_our_columns(tiny_omni, tmp_path):
    """With an upstream stage, the same dataset (with a bad modality) loads as before."""
    from llamafactory.data import get_dataset, get_template_and_fix_tokenizer
    from llamafactory.hparams import get_train_args
    from llamafactory.model import load_tokenizer

    rows = _demo_rows()
    rows[0]["modality"] = "nonsense"
    data = _dataset_dir(tmp_path, rows)
    model_args, data_args, training_args, _, _ = get_train_args(
        tiny_config(tiny_omni, tmp_path / "out", stage="dpo", dataset="bad_rows", dataset_dir=str(data))
    )
    module = load_tokenizer(model_args)
    template = get_template_and_fix_tokenizer(module["tokenizer"], data_args)
    dataset = get_dataset(template, model_args, data_args, training_args, stage="rm", **module)["train_dataset"]
    assert len(dataset) == 6
    assert "modality" not in dataset.column_names and "text_chosen_input_ids" not in dataset.column_names


def test_sampler_blocks_are_homogeneous_alternate_and_cover_every_row():
    modalities = ["visual"] * 7 + ["audio"] * 5 + ["audiovisual"] * 3
    sampler = ModalityBatchSampler(modalities, per_device_batch_size=2, world_size=2, seed=0)
    steps = sampler.steps()
    assert all(len(step) == 4 for step in steps)
    kinds = [{modalities[i] for i in step} for step in steps]
    assert all(len(k) == 1 for k in kinds)
    order = [k.pop() for k in kinds]
    assert order[:3] == ["visual", "audio", "audiovisual"] and order[3:5] == ["visual", "audio"]
    assert set(sampler) == set(range(15))  # every row at least once; groups padded with repeats
    assert len(list(sampler)) == len(sampler) == 8 + 8 + 4
    # rank r of a step gets batch r: both ranks see the same modality at every step
    for step in steps:
        rank0, rank1 = step[:2], step[2:]
        assert {modalities[i] for i in rank0} == {modalities[i] for i in rank1}


def test_sampler_is_seeded_per_epoch():
    modalities = ["visual", "audio"] * 8
    a, b = ModalityBatchSampler(modalities, 2, seed=3), ModalityBatchSampler(modalities, 2, seed=3)
    assert list(a) == list(b)
    first = list(a)
    a.set_epoch(1)
    assert list(a) != first and sorted(a) == sorted(first)
    unshuffled = ModalityBatchSampler(modalities, 2, shuffle=False)
    assert list(unshuffled)[:4] == [0, 2, 1, 3]
