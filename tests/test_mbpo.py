"""MBPO: verified rewards, prompt rows, blank media and IIG against hand computations, PGD, the hybrid
data and μ-repeat sampler, a behaviour test (GRPO really raises the reward), and gradients with video +
audio on the tiny Qwen2.5-Omni. Everything offline on tiny models built here."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import DATA_DIR, tiny_config

from groundpo.rewards import AnswerError, gold_answer, verified_reward

YES_NO = "Answer yes or no."


# ---------------------------------------------------------------- verified rewards
@pytest.mark.parametrize(
    "response, answer, options, reward",
    [
        ("Yes.", "yes", None, 1.0),
        ("yes", "Yes.", None, 1.0),
        ("I don't know.", "no", None, 0.0),  # no "no" inside "know", and a hedge is no answer
        ("No, I know it is not.", "no", None, 1.0),
        ("Yes or no?", "yes", None, 0.0),  # the question echoed
        ("yesterday it rained", "yes", None, 0.0),
        ("There is nothing on the piano", "no", None, 0.0),
        ("Nope.", "no", None, 1.0),
        ("Yes, but no dog barks.", "yes", None, 1.0),  # the answer given first
        ("The answer is no.", "yes", None, 0.0),
        ("The answer is (B).", "B", ["cat", "dog", "bird"], 1.0),
        ("B or C", "B", ["cat", "dog", "bird"], 0.0),  # two letters offered
        ("A dog is sitting there.", "B", ["A. cat", "B. dog"], 1.0),  # the article "A", then the option text
        ("(A) cat", "B", ["A. cat", "B. dog"], 0.0),
        ("It is a dog.", "dog", ["A. cat", "B. dog"], 1.0),  # gold given as the option's text
        ("E", "A", ["w", "x", "y", "z"], 0.0),  # no such option
        ("c.", "(C)", {"A": "red", "B": "blue", "C": "green"}, 1.0),
        ("C", "C", {"A": "red", "B": "blue", "C": "green", "D": None}, 1.0),  # a mapping's missing letter is dropped
    ],
)
def test_verified_reward_reads_answers_with_the_eval_parsers(response, answer, options, reward):
    assert verified_reward(response, answer, options) == reward


def test_gold_answers_no_response_could_match_are_errors():
    assert gold_answer(" No. ") == "no"
    assert gold_answer("dog", ["A. cat", "B. dog"]) == "B"
    for answer, options in (("maybe", None), ("", None), ("E", ["a", "b"]), ("fish", ["A. cat", "B. dog"])):
        with pytest.raises(AnswerError):
            gold_answer(answer, options)


# ---------------------------------------------------------------- tiny models
@pytest.fixture(scope="module")
def tiny_vl(tmp_path_factory):
    from groundpo.testing.tiny_vl import build_tiny_qwen2_vl

    return build_tiny_qwen2_vl(tmp_path_factory.mktemp("tiny-vl"))


def _image(name: str) -> str:
    return str(DATA_DIR / "demo" / "media" / name)


def _prompt_dataset(folder: Path, rows: list[dict], name: str = "prompts") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "rows.json").write_text(json.dumps(rows), encoding="utf-8")
    info = json.loads((DATA_DIR / "dataset_info.json").read_text())["demo_mbpo_online"]
    info["file_name"] = "rows.json"
    (folder / "dataset_info.json").write_text(json.dumps({name: info}), encoding="utf-8")
    return folder


def _prompt_row(question: str, answer: str, image: str = "jompo_000_w.png", **extra) -> dict:
    return {
        "conversations": [{"from": "human", "value": f"<image>{question}"}, {"from": "gpt", "value": answer}],
        "answer": answer, "images": [_image(image)], **extra,
    }


# ---------------------------------------------------------------- prompt rows
@pytest.mark.parametrize(
    "bad, field, message",
    [
        ({"answer": None}, "answer", "missing"),
        ({"answer": "maybe"}, "answer", "must be 'yes' or 'no'"),
        ({"answer": "fish", "options": ["A. cat", "B. dog"]}, "answer", "neither an option letter"),
        ({"options": ["A. cat"], "answer": "A"}, "options", "at least two options"),
        ({"images": []}, "images", "0 file(s) for 1 <image>"),
        ({"options": "A. cat, B. dog", "answer": "A"}, "options", "list of option texts"),
    ],
)
def test_bad_online_rows_name_dataset_row_and_field(tiny_vl, tmp_path, bad, field, message):
    from llamafactory.data import get_template_and_fix_tokenizer
    from llamafactory.hparams import get_train_args
    from llamafactory.model import load_tokenizer

    from groundpo.data.rows import RowError
    from groundpo.train.mbpo import load_hybrid_data

    rows = [_prompt_row(f"Is the shape red? {YES_NO}", "no"), {**_prompt_row(f"Is it blue? {YES_NO}", "yes"), **bad}]
    folder = _prompt_dataset(tmp_path / "data", rows)
    cfg = tiny_config(tiny_vl, tmp_path / "out", stage="mbpo", dataset="prompts", dataset_dir=str(folder), template="qwen2_vl")
    model_args, data_args, training_args, _, _ = get_train_args(cfg)
    module = load_tokenizer(model_args)
    template = get_template_and_fix_tokenizer(module["tokenizer"], data_args)
    with pytest.raises(RowError) as error:
        load_hybrid_data(template, model_args, data_args, training_args, module)
    assert f"dataset 'rows.json', row 1, field '{field}'" in str(error.value)  # the dataset's file
    assert message in str(error.value)


# ---------------------------------------------------------------- blank media and IIG
def test_blank_media_are_the_processed_black_image_blank_frames_and_silence(tiny_omni, tmp_path):
    """BlankMedia fills a collated batch with exactly what the processor makes of an all-zero image of the
    same size, all-zero video frames and silence (the m_blank of Eq. 4)."""
    import wave

    from PIL import Image
    from llamafactory.data import MultiModalDataCollatorForSeq2Seq, get_template_and_fix_tokenizer
    from llamafactory.hparams import get_infer_args
    from llamafactory.model import load_tokenizer

    from groundpo.blank import BlankMedia

    model_args, data_args, _, _ = get_infer_args(
        {"model_name_or_path": str(tiny_omni), "template": "qwen2_omni", "image_max_pixels": 3136, "video_max_pixels": 3136}
    )
    module = load_tokenizer(model_args)
    template = get_template_and_fix_tokenizer(module["tokenizer"], data_args)
    collator = MultiModalDataCollatorForSeq2Seq(template=template, **module)

    def frames(colour, name, n=4):
        paths = []
        for k in range(n):
            path = tmp_path / f"{name}_{k}.png"
            Image.new("RGB", (84, 56), colour).save(path)
            paths.append(str(path))
        return paths

    def silence(path: Path, samples: int):
        with wave.open(str(path), "wb") as w:
            w.setnchannels(1), w.setsampwidth(2), w.setframerate(8000)
            w.writeframes(np.zeros(samples, dtype="<i2").tobytes())
        return str(path)

    def batch(images, videos, audios):
        text = "<image><video><audio>What is there?"
        messages = template.mm_plugin.process_messages(
            [{"role": "user", "content": text}, {"role": "assistant", "content": "A shape."}], images, videos, audios,
            module["processor"],
        )
        ids, labels = template.encode_oneturn(module["tokenizer"], messages)
        return collator([{"input_ids": ids + labels, "attention_mask": [1] * len(ids + labels), "labels": [-100] * len(ids) + labels,
                          "images": images, "videos": videos, "audios": audios}])

    Image.new("RGB", (84, 56), (200, 30, 40)).save(tmp_path / "red.png")
    Image.new("RGB", (84, 56), (0, 0, 0)).save(tmp_path / "black.png")
    tone = str(DATA_DIR / "demo" / "media" / "mod_000.wav")  # 1 s at 8 kHz
    real = batch([str(tmp_path / "red.png")], [frames((30, 200, 40), "green")], [tone])
    blank = batch([str(tmp_path / "black.png")], [frames((0, 0, 0), "black")], [silence(tmp_path / "silence.wav", 8000)])
    blanked = BlankMedia(module["processor"])(real)
    for key in ("pixel_values", "pixel_values_videos"):
        assert not torch.equal(real[key], blank[key])
        torch.testing.assert_close(blanked[key], blank[key], rtol=0, atol=1e-6)
    mask = real["feature_attention_mask"].bool()
    assert torch.equal(mask, blank["feature_attention_mask"].bool())
    torch.testing.assert_close(blanked["input_features"][0][:, mask[0]], blank["input_features"][0][:, mask[0]], rtol=0, atol=1e-6)
    assert torch.equal(blanked["input_ids"], real["input_ids"]) and torch.equal(blanked["video_grid_thw"], real["video_grid_thw"])


@pytest.fixture(scope="module")
def policy(tiny_vl, tmp_path_factory):
    from groundpo.datagen.mbpo import LocalPolicy, MBPOOptions

    options = MBPOOptions(
        source="unused", output_dir=str(tmp_path_factory.mktemp("out")), model_name_or_path=str(tiny_vl),
        template="qwen2_vl", image_max_pixels=3136, device="cpu",
    )
    return LocalPolicy(options)


def _hand_logp(policy, image, question: str, answer: str) -> float:
    """log π(answer | question, image): template, plugin, one forward, log-softmax, summed by hand."""
    tokenizer, template, processor, model = policy.tokenizer, policy.template, policy.processor, policy.model
    messages = [{"role": "user", "content": f"<image>{question}"}, {"role": "assistant", "content": answer}]
    messages = template.mm_plugin.process_messages(messages, [image], [], [], processor)
    prompt, response = template.encode_oneturn(tokenizer, messages)
    ids = torch.tensor([prompt + response])
    mm = template.mm_plugin.get_mm_inputs([image], [], [], [1], [0], [0], [prompt + response], processor)
    types = (ids == model.config.image_token_id).long()
    with torch.no_grad():
        logits = model(input_ids=ids, mm_token_type_ids=types, **mm).logits[0].double()
    total = 0.0
    for position, token in enumerate(response, start=len(prompt)):
        row = logits[position - 1]
        total += float(row[token] - torch.logsumexp(row, dim=-1))
    return total


def test_iig_equals_its_hand_computation(policy, tmp_path):
    from PIL import Image

    question, answer = "What shape is in the image?", "It is a blue circle."
    source = _image("jompo_000_w.png")
    with Image.open(source) as im:
        Image.new("RGB", im.size, (0, 0, 0)).save(tmp_path / "blank.png")
    feature = policy.feature([{"role": "user", "content": f"<image>{question}"}], answer, {"images": [source]})
    iig, logp = policy.iig(feature)
    clean = _hand_logp(policy, source, question, answer)
    blank = _hand_logp(policy, str(tmp_path / "blank.png"), question, answer)
    assert logp == pytest.approx(clean, abs=1e-4)
    assert iig == pytest.approx(clean - blank, abs=1e-4)
    assert abs(iig) > 1e-4  # the image does move the tiny model's log-probs


def test_pgd_keeps_the_budget_and_lowers_the_log_prob_of_the_chosen_answer(policy, tmp_path):
    from groundpo.datagen.media import save_png

    question, answer = "What shape is in the image?", "It is a blue circle."
    messages = [{"role": "user", "content": f"<image>{question}"}]
    feature = policy.feature(messages, answer, {"images": [_image("jompo_000_w.png")]})
    clean, adversarial = policy.pgd(feature, epsilon=8, step_size=2, steps=6, random_start=False, seed=0)
    delta = adversarial.astype(int) - clean.astype(int)
    assert clean.shape == adversarial.shape and clean.dtype == np.uint8
    assert np.abs(delta).max() <= 8 and np.abs(delta).max() > 0  # ‖δ‖∞ ≤ ε, in the saved pixels
    paths = {name: str(save_png(tmp_path / f"{name}.png", pixels)) for name, pixels in (("clean", clean), ("adv", adversarial))}
    logp = {name: _hand_logp(policy, path, question, answer) for name, path in paths.items()}
    assert logp["adv"] < logp["clean"] - 1e-3, logp  # what the model sees from the PNG file
    # the random-noise negative: the same geometry, seeded
    noisy = policy.noise(feature, std=0.5, seed=3)[1]
    assert noisy.shape == clean.shape and not np.array_equal(noisy, clean)
    assert np.array_equal(noisy, policy.noise(feature, std=0.5, seed=3)[1])


# ---------------------------------------------------------------- the hybrid set and μ repeats
def test_hybrid_dataset_and_the_repeat_block_sampler():
    from groundpo.train.mbpo import SOURCE_KEY, HybridDataset, RepeatBlockSampler

    offline = [{"row_id": 0}, {"row_id": 1}]
    online = [{"row_id": 2}, {"row_id": 3}, {"row_id": 4}]
    hybrid = HybridDataset(offline, online)
    assert len(hybrid) == 5
    assert [hybrid[i][SOURCE_KEY] for i in range(5)] == ["offline"] * 2 + ["online"] * 3
    assert hybrid[3]["row_id"] == 3 and len(HybridDataset(None, online)) == 3
    with pytest.raises(IndexError):
        hybrid[5]
    sampler = RepeatBlockSampler(7, block=3, repeats=2, shuffle=False)
    assert list(sampler) == [0, 1, 2, 0, 1, 2, 3, 4, 5, 3, 4, 5, 6, 6, 6, 6, 6, 6]
    assert len(sampler) == 18
    shuffled = RepeatBlockSampler(7, block=3, repeats=2, seed=5)
    order = list(shuffled)
    assert order == list(RepeatBlockSampler(7, block=3, repeats=2, seed=5))  # every rank draws the same order
    assert sorted(set(order)) == list(range(7)) and order[:3] == order[3:6]
    shuffled.set_epoch(1)
    assert list(shuffled) != order


def test_llamaboard_lists_ranking_and_prompt_datasets_for_mbpo():
    from llamafactory.webui.control import list_datasets

    ours = [value for value, _ in list_datasets(str(DATA_DIR), "MBPO").choices]
    assert {"demo_mbpo_offline", "demo_mbpo_online", "demo_mbpo_omni_online"} <= set(ours)
    dpo = [value for value, _ in list_datasets(str(DATA_DIR), "MoD-DPO").choices]
    assert "demo_mbpo_offline" in dpo and "demo_mbpo_online" not in dpo


# ---------------------------------------------------------------- training
def _log(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "trainer_log.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_mbpo_raises_the_verified_reward_of_online_rows(tiny_vl, tmp_path):
    """GRPO is really optimising: online rows whose gold answer is always "yes"; the tiny random policy
    almost never says it at first, and after a few dozen CPU steps of `stage: mbpo` it mostly does."""
    from llamafactory.train.tuner import run_exp

    rows = [_prompt_row(f"Is there a shape? {YES_NO}", "yes", f"jompo_{i:03d}_w.png") for i in range(16)]
    folder = _prompt_dataset(tmp_path / "data", rows, "always_yes")
    out = tmp_path / "out"
    run_exp(tiny_config(
        tiny_vl, out, stage="mbpo", dataset="always_yes", dataset_dir=str(folder), template="qwen2_vl",
        image_max_pixels=3136, per_device_train_batch_size=4, learning_rate=1e-2, max_steps=24, save_strategy="no",
        mbpo_num_generations=8, mbpo_max_new_tokens=3, mbpo_beta_kl=0.0,
    ))
    rewards = [line["mbpo/reward_online"] for line in _log(out) if "loss" in line]
    assert len(rewards) == 24
    first, last = np.mean(rewards[:6]), np.mean(rewards[-6:])
    assert first < 0.2 and last > 0.6 and last > first + 0.4, rewards


@pytest.mark.slow
def test_gradients_flow_from_video_and_audio_on_the_tiny_omni(tiny_omni, tmp_path, monkeypatch):
    """One MBPO step on offline pairs and online prompts with video + audio: the vision tower, the audio
    tower and the decoder get gradients, from the online groups alone too."""
    from llamafactory.hparams import get_train_args

    import groundpo.train.mbpo as mbpo

    cfg = tiny_config(
        tiny_omni, tmp_path / "out", stage="mbpo", dataset="demo_mbpo_omni_offline,demo_mbpo_omni_online",
        mbpo_num_generations=4, mbpo_max_new_tokens=4, per_device_train_batch_size=4, max_steps=1,
    )
    trainer = mbpo.build_mbpo_trainer(*get_train_args(cfg)[:4])
    # the tiny policy's answers are noise: score by length parity so every group holds both rewards
    monkeypatch.setattr(mbpo, "verified_reward", lambda text, answer, options=None: float(len(text) % 2))
    data, model = trainer.train_dataset, trainer.model
    n = len(data)
    online_rows = [data[n - 1], data[n - 2]]
    model.train()

    def grads(rows) -> dict[str, float]:
        model.zero_grad(set_to_none=True)
        loss, metrics = trainer.get_batch_loss_metrics(model, trainer._prepare_inputs(trainer.data_collator(rows)))
        loss.backward()
        sums = {}
        for part in ("audio_tower", "visual", "model.layers"):
            sums[part] = sum(float(p.grad.abs().sum()) for name, p in model.named_parameters() if part in name and p.grad is not None)
        return sums, metrics

    mixed, metrics = grads([data[0], data[1], *online_rows])
    assert all(value > 0 for value in mixed.values()), mixed
    assert 0 < metrics["mbpo/reward_online"] < 1 and metrics["mbpo/reward_offline"] == 0.5
    assert {"mbpo/iig_chosen", "mbpo/iig_rejected", "mbpo/response_length"} <= set(metrics)
    online, metrics = grads(online_rows)
    assert all(value > 0 for value in online.values()), online
    assert "mbpo/reward_offline" not in metrics


# ---------------------------------------------------------------- keys and configs
def _args(tmp_path, **extra) -> dict:
    return {"model_name_or_path": "unused", "stage": "mbpo", "do_train": True, "dataset": "demo_mbpo_online",
            "template": "qwen2_vl", "output_dir": str(tmp_path), "use_cpu": True, "report_to": "none", **extra}


@pytest.mark.parametrize(
    "extra, message",
    [
        ({"mbpo_num_generations": 1}, "mbpo_num_generations"),
        ({"mbpo_epsilon": 1.5}, "mbpo_epsilon"),
        ({"mbpo_beta_kl": -0.1}, "mbpo_beta_kl"),
        ({"mbpo_top_p": 0.0}, "mbpo_top_p"),
        ({"mbpo_temperature": 0.0}, "mbpo_temperature"),
        ({"mbpo_reward_chosen": 0.0, "mbpo_reward_rejected": 0.0}, "mbpo_reward_chosen"),
        ({"mbpo_loss_aggregation": "token"}, "mbpo_loss_aggregation"),
        ({"pref_ftx": 0.5}, "pref_ftx"),
        ({"mbpo_generation_backend": "vllm"}, "vLLM"),  # not installed here, and no GPU: stops before loading a model
    ],
)
def test_bad_mbpo_values_name_the_key(tmp_path, extra, message):
    from llamafactory.hparams import get_train_args

    with pytest.raises((ValueError, RuntimeError), match=message):
        get_train_args(_args(tmp_path, **extra))


def test_the_reference_model_is_loaded_only_with_a_kl_weight(tmp_path):
    from llamafactory.hparams import get_train_args

    from groundpo.registry import get_stage

    assert get_train_args(_args(tmp_path))[3].use_ref_model is True
    args = get_train_args(_args(tmp_path, mbpo_beta_kl=0.0))[3]
    assert args.use_ref_model is False
    assert [p.model for p in get_stage("mbpo").plan(args).passes] == ["policy"]
    assert [c.key for c in get_stage("mbpo").controls][:3] == ["mbpo_num_generations", "mbpo_epsilon", "mbpo_beta_kl"]


@pytest.mark.parametrize("name, model", [("qwen2_vl_7b_full.yaml", "Qwen/Qwen2-VL-7B-Instruct"), ("qwen2_5_vl_7b_full.yaml", "Qwen/Qwen2.5-VL-7B-Instruct")])
def test_mbpo_paper_setups(name, model):
    import yaml
    from conftest import ROOT

    config = yaml.safe_load((ROOT / "examples" / "mbpo" / name).read_text())
    assert (config["model_name_or_path"], config["template"], config["stage"], config["bf16"]) == (model, "qwen2_vl", "mbpo", True)
    assert yaml.safe_load((ROOT / config["deepspeed"]).read_text())["zero_optimization"]["stage"] == 3
    assert (config["mbpo_reward_chosen"], config["mbpo_reward_rejected"]) == (1.0, 0.0)


def test_data_builder_top_k_keeps_the_highest_iig_rows_and_the_noise_negative(tiny_vl, tmp_path):
    """``groundpo-data mbpo --select top_k --negative noise``: every source row is scored once (the memo),
    the K best become pairs whose y_l comes from a noised image."""
    from groundpo.datagen.mbpo import MBPOOptions, MBPOPipeline
    from groundpo.datagen.options import build_options
    from groundpo.datagen.runner import run

    options = build_options(MBPOOptions, {
        "source": str(DATA_DIR / "demo" / "mbpo_source.json"), "media_dir": str(DATA_DIR), "output_dir": str(tmp_path / "out"),
        "model_name_or_path": str(tiny_vl), "template": "qwen2_vl", "image_max_pixels": 3136, "max_tokens": 8,
        "select": "top_k", "iig_top_k": 3, "negative": "noise", "noise_std": 0.5, "device": "cpu", "progress": False,
    })
    summary = run(MBPOPipeline, options, echo=False)
    assert summary["complete"] and summary["items_selected"] == 3
    memo = [json.loads(line) for line in (tmp_path / "out" / "progress" / "memo.jsonl").read_text().splitlines()]
    scores = {record["key"].split("/", 1)[1]: record["value"]["iig"] for record in memo}
    assert len(scores) == 8  # each source row scored once
    best = sorted(scores, key=lambda i: -scores[i])[:3]
    rows = json.loads((tmp_path / "out" / "rows.json").read_text())
    rejects = [json.loads(line) for line in (tmp_path / "out" / "rejects.jsonl").read_text().splitlines()]
    assert sorted([r["id"].split("#")[0] for r in rows] + [r["item"] for r in rejects]) == sorted(best)
    for row in rows:
        assert row["negative"] == "noise" and row["perturbed_images"][0].startswith("media/noise/")
        assert row["iig"] == pytest.approx(scores[row["id"].split("#")[0]], abs=1e-5)
