"""VCD / AVCD decoding and batched generation: the pure functions against hand computations, and
the engine on the tiny offline Qwen2-VL (and Qwen2.5-Omni for AVCD's audio-visual streams)."""

from __future__ import annotations

import math

import pytest
import torch

from groundpo.eval.decoding import (
    ContrastiveLogitsProcessor,
    DecodingConfig,
    avcd_logits,
    concat_streams,
    contrastive_logits,
    dominant,
    entropy,
    item_seed,
    plan_streams,
)
from groundpo.eval.readers import EvalItem
from groundpo.eval.synthetic import write_image

NEG = float("-inf")

# ------------------------------------------------------------------------------ pure functions


def test_contrastive_logits_hand_computed():
    logits = torch.tensor([[2.0, 1.0, -1.0, 0.0]])
    cd = torch.tensor([[1.0, 2.0, 0.0, 3.0]])
    # (1 + 1) * l - 1 * cd = [3, 0, -2, -3]; cutoff log(0.3) + 2 = 0.796: l < cutoff for 1.0? no (1.0 > 0.796);
    # -1.0 and 0.0 are below -> masked
    out = contrastive_logits(logits, cd, alpha=1.0, beta=0.3)
    assert out.tolist() == [[3.0, 0.0, NEG, NEG]]
    # alpha 0.5, beta 0 (no mask): 1.5 l - 0.5 cd
    assert contrastive_logits(logits, cd, 0.5, 0.0).tolist() == [[2.5, 0.5, -1.5, -1.5]]
    # beta 1: only the maximum survives
    assert contrastive_logits(logits, cd, 1.0, 1.0).tolist() == [[3.0, NEG, NEG, NEG]]
    # alpha 0: the logits themselves, masked
    assert contrastive_logits(logits, cd, 0.0, 0.3).tolist() == [[2.0, 1.0, NEG, NEG]]
    # batched rows are independent (the cutoff is per row)
    two = contrastive_logits(torch.cat([logits, logits + 10]), torch.cat([cd, cd]), 1.0, 0.3)
    assert two[1].tolist() == [23.0, 20.0, NEG, NEG]


def test_avcd_logits_and_entropy_hand_computed():
    l = torch.tensor([1.0, 0.0, -5.0])
    both, first, second = torch.tensor([0.0, 1.0, 0.0]), torch.tensor([1.0, 1.0, 1.0]), torch.tensor([0.5, 0.0, 0.0])
    # (2 + 2 * 0.5) l - 2 * 0.5 * both + first + second = [3+0+1+0.5, 0-1+1+0, -15-0+1+0] = [4.5, 0, -14]
    out = avcd_logits(l, both, first, second, alpha=0.5, beta=0.2)
    assert out[:2].tolist() == [4.5, 0.0] and out[2].item() == NEG  # -5 < log 0.2 + 1
    assert entropy(torch.zeros(4)).item() == pytest.approx(math.log(4))
    p = torch.tensor([0.7, 0.2, 0.1])
    assert entropy(p.log()).item() == pytest.approx(-(p * p.log()).sum().item())


def test_processor_combines_streams_and_the_entropy_gate():
    clean = torch.tensor([[3.0, 0.0, 0.0], [0.0, 0.0, 0.0]])  # item 0 confident, item 1 uniform
    contrast = torch.tensor([[0.0, 5.0, 0.0], [0.0, 5.0, 0.0]])
    scores = torch.cat([clean, contrast])  # stream-major rows: clean 0, clean 1, contrast 0, contrast 1
    proc = ContrastiveLogitsProcessor(2, 2, ["vcd", "vcd"], DecodingConfig("vcd", alpha=1.0, beta=0.0))
    out = proc(None, scores.clone())
    expected = torch.stack([contrastive_logits(clean[i], contrast[i], 1.0, 0.0) for i in range(2)])
    assert torch.equal(out[:2], expected) and torch.equal(out[2:], expected)  # every stream row gets its item's scores
    assert proc.contrast_steps == [1, 1]
    # entropy gate 0.6: item 0 (entropy ~0.2) keeps its clean logits, item 1 (log 3) is contrasted
    gated = ContrastiveLogitsProcessor(2, 2, ["vcd", "vcd"], DecodingConfig("vcd", alpha=1.0, beta=0.0, entropy_threshold=0.6))
    out = gated(None, scores.clone())
    assert torch.equal(out[0], clean[0]) and torch.equal(out[1], expected[1]) and gated.contrast_steps == [0, 1]
    # AVCD with both non-dominant modalities: four streams
    four = torch.cat([clean[:1], torch.zeros(1, 3), torch.ones(1, 3), torch.full((1, 3), 2.0)])
    proc = ContrastiveLogitsProcessor(1, 4, ["avcd2"], DecodingConfig("avcd", alpha=0.5, beta=0.0, entropy_threshold=0.0))
    assert torch.equal(proc(None, four)[0], avcd_logits(clean[0], four[1], four[2], four[3], 0.5, 0.0))
    with pytest.raises(RuntimeError, match="rows of scores"):
        proc(None, torch.zeros(3, 3))


def test_decoding_config_defaults_and_checks():
    assert DecodingConfig("vcd").resolved() == DecodingConfig("vcd", 1.0, 0.1, 500, 0.0)
    assert DecodingConfig("avcd").resolved() == DecodingConfig("avcd", 0.5, 0.2, 500, 0.6)
    assert DecodingConfig("vcd", alpha=2.0).resolved().alpha == 2.0 and not DecodingConfig().contrastive
    for bad, match in (
        (DecodingConfig("dola"), "--decoding"),
        (DecodingConfig("vcd", alpha=-1), "--cd_alpha"),
        (DecodingConfig("vcd", beta=1.5), "--cd_beta"),
        (DecodingConfig("vcd", noise_step=1000), "--cd_noise_step"),
    ):
        with pytest.raises(ValueError, match=match):
            bad.resolved()


def test_dominance_plans_and_stream_batches():
    assert dominant({"language": 0.1, "visual": 0.3, "audio": 0.2}) == "visual"
    assert dominant({"language": 0.2, "visual": 0.2}) == "language"  # ties: language first
    plan, sides = plan_streams(["language", "visual", "audio"], "visual")
    assert plan == "avcd2" and sides == [frozenset({"language", "audio"}), frozenset({"language"}), frozenset({"audio"})]
    assert plan_streams(["language", "visual"], "language") == ("avcd1", [frozenset({"visual"})] * 3)
    a = {"input_ids": torch.tensor([[1, 2]]), "pixel_values": torch.zeros(4, 3), "second_per_grid_ts": [1.0], "flag": True}
    b = {"input_ids": torch.tensor([[3, 4]]), "pixel_values": torch.ones(4, 3), "second_per_grid_ts": [2.0], "flag": True}
    both = concat_streams([a, b])
    assert both["input_ids"].tolist() == [[1, 2], [3, 4]] and both["pixel_values"].shape == (8, 3)
    assert both["second_per_grid_ts"] == [1.0, 2.0] and both["flag"] is True
    with pytest.raises(ValueError, match="disagree"):
        concat_streams([a, {**b, "flag": False}])
    assert item_seed("x", 0) == item_seed("x", 0) != item_seed("y", 0)


# ---------------------------------------------------------------------------- the tiny models

MODEL_ARGS = {"template": "qwen2_vl", "infer_backend": "huggingface", "image_max_pixels": 3136}
PROMPTS = ["What colour is the shape?", "Is there a dog?", "Describe the picture.", "What shape is moving?"]


@pytest.fixture(scope="module")
def tiny_vl(tmp_path_factory):
    from groundpo.testing.tiny_vl import build_tiny_qwen2_vl

    return build_tiny_qwen2_vl(tmp_path_factory.mktemp("tiny-vl"))


@pytest.fixture(scope="module")
def items(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    out = []
    for i, prompt in enumerate(PROMPTS):
        image = str(write_image(folder / f"{i}.png", size=40 + 8 * i, seed=i))  # different sizes: different token counts
        kind = "caption" if i == 2 else "yesno"
        out.append(EvalItem(id=f"q{i}", task="t", prompt=prompt, gold=None if kind == "caption" else "yes", kind=kind, images=[image]))
    return out


@pytest.fixture(scope="module")
def engine(tiny_vl):
    """One loaded model for every test here; each test sets batch size, decoding and cache use."""
    from groundpo.eval.batched import BatchedEngine

    return BatchedEngine(
        {"model_name_or_path": str(tiny_vl), **MODEL_ARGS}, max_new_tokens=6, caption_max_new_tokens=9, batch_size=1, system=None
    )


def _configure(engine, batch_size=1, decoding=None, use_cache=True):
    engine.batch_size, engine.use_cache = batch_size, use_cache
    engine.decoding = (decoding or DecodingConfig()).resolved()
    return engine


def _answers(engine, items):
    return [(it.id, r.text, r.response_length, r.finish_reason) for it, r in engine.generate(items)]


@pytest.fixture(scope="module")
def greedy(engine, items):
    return _answers(_configure(engine), items)


def test_batched_generation_equals_batch_size_one(engine, items, greedy):
    _configure(engine, batch_size=3)
    prepared = [engine.prepare(it) for it in items[:3]]
    assert len({len(p.ids) for p in prepared}) == 3  # the batch really is left-padded
    batch, counts = engine.collate(prepared)
    assert (batch["attention_mask"][:, 0] == 0).sum() == 2 and counts["images"] == [1, 1, 1]
    assert "mm_token_type_ids" in batch and int((batch["mm_token_type_ids"] == 1).sum()) > 0
    assert _answers(engine, items) == greedy  # item 2 (a caption) goes in its own budget group
    assert [a[0] for a in greedy] == [it.id for it in items]
    assert all(a[2] >= 1 for a in greedy)


def test_vcd_alpha_zero_is_greedy(engine, items, greedy):
    _configure(engine, batch_size=2, decoding=DecodingConfig("vcd", alpha=0.0))
    results = list(engine.generate(items))
    assert [(it.id, r.text, r.response_length, r.finish_reason) for it, r in results] == greedy
    assert all(r.info["decoding"] == "vcd" and r.info["contrast_steps"] == r.response_length for _, r in results)


def _reference_vcd(engine, item, alpha, beta, steps):
    """VCD the slow way: two full forwards (clean, noised image) per token, no cache."""
    from groundpo.corruption import VISUAL, CorruptionSpec, corrupt_batch

    model = engine.model
    batch, counts = engine.collate([engine.prepare(item)])
    noised = corrupt_batch(batch, counts, [frozenset({VISUAL})], {VISUAL: CorruptionSpec("diffusion", 500)}, seed=0, row_keys=[item_seed(item.id, 0)])
    assert not torch.equal(noised["pixel_values"], batch["pixel_values"])
    ids, tokens = batch["input_ids"], []
    with torch.no_grad():
        for _ in range(steps):
            extra = ids.shape[1] - batch["input_ids"].shape[1]
            common = {
                "input_ids": ids,
                "attention_mask": torch.ones_like(ids),
                "mm_token_type_ids": torch.cat([batch["mm_token_type_ids"], torch.zeros(1, extra, dtype=torch.long)], 1),
            }
            clean = model(**{**batch, **common}).logits[:, -1].float()
            contrast = model(**{**noised, **common}).logits[:, -1].float()
            assert not torch.equal(clean, contrast)  # the noise reaches the logits
            token = int(contrastive_logits(clean, contrast, alpha, beta).argmax(-1))
            if token in engine.stop_ids:
                break
            tokens.append(token)
            ids = torch.cat([ids, torch.tensor([[token]])], 1)
    return engine.tokenizer.decode(tokens, skip_special_tokens=True, clean_up_tokenization_spaces=True)


def test_vcd_runs_the_contrast_stream_with_and_without_cache(engine, items, greedy):
    decoding = DecodingConfig("vcd", alpha=3.0, beta=0.1)
    results = list(_configure(engine, batch_size=2, decoding=decoding).generate(items))
    texts = [r.text for _, r in results]
    assert texts != [g[1] for g in greedy]  # the contrast changes answers of this model
    assert all(r.info["contrast_steps"] == r.response_length for _, r in results)
    it, r = results[0]
    assert r.text == _reference_vcd(engine, it, 3.0, 0.1, r.response_length)
    uncached = _configure(engine, batch_size=2, decoding=decoding, use_cache=False)
    assert [r.text for _, r in uncached.generate(items)] == texts  # the KV cache changes no token


def test_avcd_on_video_with_audio(tiny_omni, tmp_path):
    """AVCD's four streams on the tiny Qwen2.5-Omni: a video with its audio track."""
    from groundpo.eval.batched import BatchedEngine
    from groundpo.eval.synthetic import write_video

    video = str(write_video(tmp_path / "v.mp4", seconds=1.0, fps=4, size=56))
    item = EvalItem(id="av", task="t", prompt="Is there a dog barking?", gold="no", kind="yesno", videos=[video], audios=[video])
    args = {
        "model_name_or_path": str(tiny_omni), "template": "qwen2_omni", "infer_backend": "huggingface",
        "video_max_pixels": 3136, "video_maxlen": 4, "use_audio_in_video": True,
    }  # fmt: skip
    engine = BatchedEngine(args, max_new_tokens=4, caption_max_new_tokens=4, batch_size=1, system=None, decoding=DecodingConfig("avcd"))
    prepared = engine.prepare(item)
    start, end = prepared.question
    assert engine.tokenizer.decode(prepared.ids[start:end]).strip().startswith("Is there a dog")
    [(_, result)] = list(engine.generate([item]))
    info = result.info
    assert set(info["attention"]) == {"language", "visual", "audio"} and info["dominant"] in info["attention"]
    assert info["contrast_steps"] <= result.response_length  # the entropy gate may skip steps
    greedy = BatchedEngine(args, max_new_tokens=4, caption_max_new_tokens=4, batch_size=1, system=None)
    zero = BatchedEngine(args, max_new_tokens=4, caption_max_new_tokens=4, batch_size=1, system=None,
                         decoding=DecodingConfig("avcd", alpha=0.0, beta=0.0, entropy_threshold=1e9))  # fmt: skip
    [(_, g)], [(_, z)] = list(greedy.generate([item])), list(zero.generate([item]))
    assert z.info["contrast_steps"] == 0 and z.text == g.text  # gate always closed: the clean stream alone decides
