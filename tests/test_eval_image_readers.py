"""Readers of the image benchmarks (AMBER, Object HalBench, MMHal-Bench, POPE) on folders in their
official layouts, and their errors for bad input (file, item and field named). No model."""

import json

import pytest

from groundpo.eval import cli
from groundpo.eval.readers import (
    BenchmarkFormatError,
    find_missing_media,
    read_benchmark,
)
from groundpo.eval.synthetic import write_benchmark

IMAGE_BENCHMARKS = ("amber", "objhal", "mmhal", "pope")


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench")
    return {name: write_benchmark(name, root / name) for name in IMAGE_BENCHMARKS}


def test_read_amber(bench):
    items = read_benchmark("amber", bench["amber"])
    assert [(it.id, it.task, it.kind, it.gold) for it in items] == [
        ("1", "generative", "caption", None),
        ("2", "generative", "caption", None),
        ("1005", "existence", "yesno", "yes"),
        ("1006", "existence", "yesno", "no"),
        ("1007", "state", "yesno", "no"),
        ("1008", "number", "yesno", "yes"),
        ("1009", "action", "yesno", "no"),
        ("1010", "relation", "yesno", "yes"),
    ]
    assert items[0].meta["truth"] == ["dog", "grass"] and items[0].prompt == "Describe this image."
    assert items[2].prompt == "Is there a dog in this image? Answer the question using a single word or phrase."
    assert items[0].images[0].endswith("image/AMBER_1.jpg") and find_missing_media(items) == []
    # AMBER's own evaluation codes and group names select tasks
    assert [it.task for it in read_benchmark("amber", bench["amber"], tasks=["da"])] == ["state", "number", "action"]
    assert len(read_benchmark("amber", bench["amber"], tasks=["discriminative"])) == 6
    assert len(read_benchmark("amber", bench["amber"], tasks=["g"])) == 2
    assert len(read_benchmark("amber", bench["amber"], data_file="data/query/query_generative.json")) == 2


def test_read_objhal_decodes_base64_images_once(bench):
    items = read_benchmark("objhal", bench["objhal"])
    assert [(it.id, it.meta["image_id"]) for it in items] == [("0:139", 139), ("1:285", 285), ("2:632", 632)]
    path = bench["objhal"] / "objhal_images" / "139.jpg"
    assert items[0].images == [str(path)] and path.read_bytes()[:2] == b"\xff\xd8"  # a JPEG
    mtime = path.stat().st_mtime_ns
    read_benchmark("objhal", bench["objhal"])
    assert path.stat().st_mtime_ns == mtime  # not written again


def test_read_mmhal_and_pope(bench):
    m = read_benchmark("mmhal", bench["mmhal"])
    assert [(it.id, it.task) for it in m] == [("000", "attribute"), ("001", "adversarial"), ("002", "comparison")]
    assert m[0].meta["image_content"] == ["car", "road"] and m[0].images[0].endswith("images/1000_mmhal.jpg")
    p = read_benchmark("pope", bench["pope"])
    assert [it.id for it in p] == ["random:1", "random:2", "popular:3", "popular:4", "adversarial:5", "adversarial:6"]
    assert p[0].images[0].endswith("val2014/COCO_val2014_000000000042.jpg") and p[1].gold == "no"
    assert read_benchmark("pope", bench["pope"], prompt_suffix="")[0].prompt == "Is there a dog in the image?"
    assert [it.id for it in read_benchmark("pope", bench["pope"], data_file="coco_pope_popular.json")] == ["popular:3", "popular:4"]


def test_image_dir_option(bench, tmp_path):
    items = read_benchmark("pope", bench["pope"], image_dir=str(tmp_path))  # not there: the layout's folder
    assert items[0].images == [str(bench["pope"] / "val2014" / "COCO_val2014_000000000042.jpg")]
    (tmp_path / "COCO_val2014_000000000042.jpg").write_bytes(b"x")
    assert read_benchmark("pope", bench["pope"], image_dir=str(tmp_path))[0].images == [str(tmp_path / "COCO_val2014_000000000042.jpg")]
    elsewhere = read_benchmark("pope", tmp_path, data_file=str(bench["pope"] / "coco_pope_random.json"))
    assert find_missing_media(elsewhere) == [("random:2", str(tmp_path / "val2014" / "COCO_val2014_000000000073.jpg"))]
    with pytest.raises(ValueError, match="--image_dir is for the image benchmarks"):
        read_benchmark("mmau", bench["pope"], image_dir=str(tmp_path))


def _edit_json(path, fn):
    data = json.loads(path.read_text())
    fn(data)
    path.write_text(json.dumps(data))


def _edit_jsonl(path, fn):
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    fn(rows)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.mark.parametrize(
    "name,file,edit,match",
    [
        ("amber", "data/query/query_all.json", lambda d: d[2].pop("query"), r"query_all.json: item 2: field 'query' is missing"),
        ("amber", "data/query/query_all.json", lambda d: d[3].update(id=99), r"item 3: id 99 has no entry in annotations.json"),
        ("amber", "data/annotations.json", lambda d: d[4].update(truth="maybe"), r"annotations.json: id 1007: field 'truth' must be yes or no"),
        ("amber", "data/annotations.json", lambda d: d[0].pop("hallu"), r"annotations.json: id 1: field 'hallu' is missing"),
        ("mmhal", "response_template.json", lambda d: d[1].pop("gt_answer"), r"response_template.json: item 1: field 'gt_answer' is missing"),
        ("mmhal", "response_template.json", lambda d: d[2].pop("image_src"), r"item 2: field 'image_src' is missing"),
    ],
)
def test_malformed_json_items_name_file_item_and_field(tmp_path, name, file, edit, match):
    root = write_benchmark(name, tmp_path / name)
    _edit_json(root / file, edit)
    with pytest.raises(BenchmarkFormatError, match=match):
        read_benchmark(name, root)


@pytest.mark.parametrize(
    "name,file,edit,match",
    [
        ("pope", "coco_pope_popular.json", lambda r: r[1].update(label="unsure"), r"coco_pope_popular.json: item 1: field 'label' must be yes or no"),
        ("pope", "coco_pope_random.json", lambda r: r[0].pop("text"), r"coco_pope_random.json: item 0: field 'text' is missing"),
        ("objhal", "obj_halbench_300_with_image.jsonl", lambda r: r[2].pop("question"), r"obj_halbench_300_with_image.jsonl: item 2: field 'question' is missing"),
        ("objhal", "obj_halbench_300_with_image.jsonl", lambda r: r[0].update(image_id=[1]), r"item 0: field 'image_id' must be int or str"),
    ],
)
def test_malformed_jsonl_items_name_file_item_and_field(tmp_path, name, file, edit, match):
    root = write_benchmark(name, tmp_path / name)
    _edit_jsonl(root / file, edit)
    with pytest.raises(BenchmarkFormatError, match=match):
        read_benchmark(name, root)


def test_missing_files_and_ambiguous_layouts(tmp_path):
    root = write_benchmark("amber", tmp_path / "amber")
    (root / "data" / "relation.json").unlink()
    with pytest.raises(BenchmarkFormatError, match=r"AMBER files missing: .*relation.json"):
        read_benchmark("amber", root)
    with pytest.raises(BenchmarkFormatError, match="no POPE files"):
        read_benchmark("pope", tmp_path / "amber")
    pope = write_benchmark("pope", tmp_path / "pope")
    (pope / "gqa_pope_random.json").write_text((pope / "coco_pope_random.json").read_text())
    assert {it.id.split(":")[0] for it in read_benchmark("pope", pope)} == {"random", "popular", "adversarial"}  # coco wins
    (pope / "aokvqa_pope_random.json").write_text("")
    for f in pope.glob("coco_pope_*.json"):
        f.unlink()
    with pytest.raises(BenchmarkFormatError, match="several datasets.*pass --data_file"):
        read_benchmark("pope", pope)
    with pytest.raises(BenchmarkFormatError, match="Object HalBench annotation file"):
        read_benchmark("objhal", tmp_path / "amber")


def test_cli_options_of_the_image_benchmarks(tmp_path):
    c = cli.build_config([
        "pope", "--data_dir", "d", "--output_dir", "o", "--decoding", "vcd", "--cd_alpha", "0.5", "--cd_noise_step", "400",
        "--batch_size", "8", "--yes_no_rule", "lenient", "--image_dir", "imgs",
    ])  # fmt: skip
    assert (c.decoding, c.cd_alpha, c.cd_beta, c.cd_noise_step, c.batch_size, c.yes_no_rule, c.image_dir) == ("vcd", 0.5, None, 400, 8, "lenient", "imgs")
    assert c.decoding_config().beta == 0.1 and c.caption_max_new_tokens == 128 and c.model_args == {}
    assert c.fingerprint()["decoding"]["alpha"] == 0.5
    greedy = cli.build_config(["amber", "--data_dir", "d", "--output_dir", "o"])
    assert "decoding" not in greedy.fingerprint() and greedy.caption_max_new_tokens == 512
    m = cli.build_config(["mmhal", "--data_dir", "d", "--output_dir", "o", "--judge_model", "gpt-4o", "--judge_base_url", "http://127.0.0.1:9/v1"])
    assert m.judge_config().model == "gpt-4o" and m.judge_config().api_key_env == "OPENAI_API_KEY"
    with pytest.raises(ValueError, match="--decoding"):
        cli.build_config(["pope", "--data_dir", "d", "--output_dir", "o", "--decoding", "dola"]).decoding_config()
