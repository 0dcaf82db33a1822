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


# ------------------------------------------------------------------------------- bad rows, before training
@pytest.mark.parametrize(
    "change, expected",
    [
        ({"chosen": {"from": "gpt", "value": ""}}, r"row 2, field 'chosen': empty answer ''"),
        ({"rejected": {"from": "gpt", "value": "  \n"}}, r"row 2, field 'rejected': empty answer '  \\n'"),
        ({"conversations": [{"from": "human", "value": "<video><audio><audio>What colour is it?"}]},
         r"row 2, field 'audios': 1 file\(s\) for 2 <audio> placeholder\(s\)"),
        ({"conversations": [{"from": "human", "value": "<audio>What colour is it?"}]},
         r"row 2, field 'videos': 1 file\(s\) for 0 <video> placeholder\(s\)"),
        ({"modality": 3}, r"row 2, field 'modality': expected text, got 3 \(int\)"),
        ({"chosen": 5}, r"row 2, field 'chosen': expected a message .*got 5 \(int\)"),
        ({"videos": 7}, r"row 2, field 'videos': expected a list of media paths, got 7 \(int\)"),
        ({"audios": [["a.wav", 3]]}, r"row 2, field 'audios': expected media paths"),
        ({"conversations": "What?"}, r"row 2, field 'messages': expected a non-empty list of messages"),
    ],
)
def test_malformed_rows_name_dataset_row_field_and_value(tiny_omni, tmp_path, change, expected):
    rows = _demo_rows()
    rows[2].update(change)
    with pytest.raises(RowError, match=r"dataset 'rows.json', " + expected):
        _build(tiny_omni, tmp_path, rows)


@pytest.mark.parametrize("kind", ["empty", "garbage", "directory"])
def test_unreadable_media_names_the_row_the_field_and_the_path(tiny_omni, tmp_path, kind):
    bad = tmp_path / "bad.mp4"
    if kind == "directory":
        bad.mkdir()
    else:
        bad.write_bytes(b"" if kind == "empty" else b"not a video" * 20)
    rows = _demo_rows()
    rows[4]["videos"] = [str(bad)]
    with pytest.raises(RowError, match=rf"dataset 'rows.json', row 4, field 'videos': .*{bad}"):
        _build(tiny_omni, tmp_path, rows)


def test_the_cli_reports_the_bad_row_before_training(tiny_omni, tmp_path):
    from conftest import run_cli, write_config

    rows = _demo_rows()
    rows[1]["chosen"] = {"from": "gpt", "value": " "}
    (tmp_path / "data").mkdir()
    data = _dataset_dir(tmp_path / "data", rows)
    cfg = tiny_config(tiny_omni, tmp_path / "out", dataset="bad_rows", dataset_dir=str(data))
    proc = run_cli(["train", str(write_config(tmp_path / "bad.yaml", cfg))])
    assert proc.returncode != 0
    assert "RowError: dataset 'rows.json', row 1, field 'chosen': empty answer ' '" in proc.stderr
    assert "'loss'" not in proc.stdout + proc.stderr  # no step ran


# ------------------------------------------------------------------------------- every view scores the same tokens
def test_a_truncated_answer_keeps_the_same_tokens_in_every_view(tiny_omni, tmp_path):
    """cutoff_len leaves the text-only view (short prompt) more room for the answer than the clean view
    (media tokens): MoD-DPO++'s LPD term must still compare log-probs of the same tokens."""
    from llamafactory.hparams import get_train_args

    from groundpo.train.workflow import build_trainer

    rows = _demo_rows(4)
    long = " ".join(["The square is yellow and it moves from left to right."] * 12)
    rows[0]["chosen"]["value"] = long
    rows[0]["rejected"]["value"] = long.replace("yellow", "blue")
    (tmp_path / "data").mkdir()
    data = _dataset_dir(tmp_path / "data", rows)
    cfg = tiny_config(tiny_omni, tmp_path / "out", dataset="bad_rows", dataset_dir=str(data), cutoff_len=160, mod_gamma_lpd=0.05)
    trainer = build_trainer(*get_train_args(cfg)[:4])
    row = trainer.train_dataset[[r for r in range(4) if trainer.train_dataset[r]["row_id"] == 0][0]]
    full = len(trainer.processing_class(long, add_special_tokens=False)["input_ids"])
    for side in ("chosen", "rejected"):
        clean = [t for t in row[f"{side}_labels"] if t != -100]
        text = [t for t in row[f"text_{side}_labels"] if t != -100]
        assert clean == text and 0 < len(clean) < full  # truncated, and to the same tokens in both views
        assert len(row[f"{side}_input_ids"]) <= 160
    assert len(row["text_chosen_input_ids"]) < 160  # the text view had room for more of the answer


# ------------------------------------------------------------------------------- regions where the model sees them
def test_regions_follow_the_llava_resize_and_centre_crop():
    """LLaVA-1.5's processor resizes the shortest edge and centre-crops a square: a box given on the original
    (non-square) image must land where its pixels land in the processed tensor."""
    import numpy as np
    import torch
    from PIL import Image
    from transformers import CLIPImageProcessor

    from groundpo.data.processor import relative_region

    processor = CLIPImageProcessor(size={"shortest_edge": 48}, crop_size={"height": 48, "width": 48}, do_center_crop=True,
                                   image_mean=[0, 0, 0], image_std=[1, 1, 1])
    pixels = np.zeros((60, 120, 3), dtype=np.uint8)  # 120 wide, 60 high
    box = [70, 10, 100, 40]  # x0, y0, x1, y1 in original pixels
    pixels[box[1] : box[3], box[0] : box[2]] = 255
    image = Image.fromarray(pixels)
    tensor = processor(images=image, return_tensors="pt")["pixel_values"][0, 0]  # [48, 48]
    ys, xs = torch.nonzero(tensor > 0.5, as_tuple=True)
    seen = [xs.min().item() / 48, ys.min().item() / 48, (xs.max().item() + 1) / 48, (ys.max().item() + 1) / 48]
    mapped = relative_region(box, [image], processor)
    assert mapped == pytest.approx(seen, abs=1.5 / 48)
    assert relative_region(box, [image]) == pytest.approx([70 / 120, 10 / 60, 100 / 120, 40 / 60])  # no crop: fractions
    assert relative_region([0, 0, 20, 60], [image], processor) is None  # cropped away: the whole image is perturbed
