"""Logged metrics across ranks, and the log-prob arithmetic every objective is fed."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from groundpo.data.packing import layout_from_labels, pack_pairs
from groundpo.train.logps import block_attention_mask, response_entropy, score_responses
from groundpo.train.metrics import MetricStore, UndeclaredMetricError

KEYS = ("loss_output", "loss_input", "rewards/chosen", "never")
# what each rank adds over two batches, per key: rank 0 holds only output pairs, rank 1 only input pairs
ADDED = {
    0: [{"loss_output": [1.0, 3.0], "rewards/chosen": [0.5, 0.5], "loss_input": []},
        {"loss_output": [5.0], "rewards/chosen": [2.0], "loss_input": []}],
    1: [{"loss_input": [10.0], "rewards/chosen": [-1.0]},
        {"loss_input": [20.0, 30.0], "rewards/chosen": [0.0, 1.0]}],
}


def _rank(rank: int, port: int, results) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    store = MetricStore(KEYS)
    for batch in ADDED[rank]:
        store.add_all("train", {k: torch.tensor(v) for k, v in batch.items()})

    def all_reduce_sum(t):
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t

    results[rank] = store.pop("train", all_reduce_sum)
    results[f"{rank}-again"] = store.pop("train", all_reduce_sum)  # reset after logging
    dist.destroy_process_group()


def test_ranks_with_different_row_kinds_log_identical_row_weighted_means():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    results = mp.Manager().dict()
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_rank, args=(r, port, results)) for r in (0, 1)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0]
    assert results[0] == results[1]  # the same keys, in the same order, with the same values
    assert list(results[0]) == ["loss_output", "loss_input", "rewards/chosen"]  # "never" had no row anywhere
    assert results[0]["loss_output"] == pytest.approx((1 + 3 + 5) / 3)  # mean over rows, not over batch means
    assert results[0]["loss_input"] == pytest.approx((10 + 20 + 30) / 3)
    assert results[0]["rewards/chosen"] == pytest.approx((0.5 + 0.5 + 2.0 - 1.0 + 0.0 + 1.0) / 6)
    assert results["0-again"] == results["1-again"] == {}


def test_an_undeclared_metric_is_an_error_naming_it():
    store = MetricStore(("a",))
    with pytest.raises(UndeclaredMetricError, match="`b` is not declared"):
        store.add("train", "b", torch.ones(2))


def _upstream_logps(logits, labels):
    """The textbook computation (as LLaMA-Factory's get_batch_logps): log_softmax, gather, masked sum."""
    labels = labels[:, 1:].clone()
    logits = logits[:, :-1].double()
    mask = labels != -100
    labels[~mask] = 0
    per_token = torch.gather(logits.log_softmax(-1), 2, labels.unsqueeze(2)).squeeze(2)
    return (per_token * mask).sum(-1), mask.sum(-1)


def test_scored_responses_with_and_without_gradient_match_the_textbook_computation():
    """Rows 0, 1 chosen and 2, 3 rejected of two pairs, unpacked: each response scored as upstream DPO scores it."""
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 7, 11, generator=g)
    labels = torch.randint(0, 11, (4, 7), generator=g)
    labels[:, :3] = -100
    labels[1, 5:] = -100
    labels[3, 4:] = -100
    expected, count = _upstream_logps(logits, labels)
    layout = layout_from_labels(labels, n_pairs=2)
    as_pairs = [[expected[0], expected[2]], [expected[1], expected[3]]]
    with torch.no_grad():
        one_by_one = score_responses(logits, layout)
    assert one_by_one.tokens.tolist() == [[count[0], count[2]], [count[1], count[3]]]
    assert one_by_one.logps.double().flatten().tolist() == pytest.approx(torch.tensor(as_pairs).flatten().tolist(), abs=1e-5)
    leaf = logits.clone().requires_grad_(True)
    with_grad = score_responses(leaf, layout).logps
    assert with_grad.requires_grad
    assert with_grad.double().flatten().tolist() == pytest.approx(torch.tensor(as_pairs).flatten().tolist(), abs=1e-5)
    with_grad.sum().backward()
    assert leaf.grad[:, -1].abs().sum() == 0  # the last position predicts nothing


def test_a_packed_pair_scores_y_l_from_the_prompt_not_from_y_w():
    """pack_pairs turns rows [prompt, y_w] and [prompt, y_l] into one row [prompt, y_w, y_l] with y_l's
    positions restarting after the prompt; y_l's first token is predicted by the prompt's last position,
    the rest by y_l's own positions. Hand computation on random logits."""
    ignore = -100
    batch = {
        "input_ids": torch.tensor([[5, 6, 7, 1, 2, 9], [5, 6, 7, 3, 4, 0]]),
        "attention_mask": torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 0]]),
        "labels": torch.tensor([[ignore, ignore, ignore, 1, 2, 9], [ignore, ignore, ignore, 3, 4, ignore]]),
    }
    counts = {"images": [0, 0], "videos": [0, 0], "audios": [0, 0]}
    packed, _, layout = pack_pairs(batch, counts, n_pairs=1, same_media=[True], pad_token_id=0)
    assert packed["input_ids"].tolist() == [[5, 6, 7, 1, 2, 9, 3, 4]]
    assert packed["position_ids"].tolist() == [[0, 1, 2, 3, 4, 5, 3, 4]]  # y_l restarts where the prompt ends
    assert packed["groundpo_segments"].tolist() == [[1, 1, 1, 2, 2, 2, 3, 3]]
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(1, 8, 11, generator=g, dtype=torch.float64)
    lsm = logits[0].log_softmax(-1)
    y_w = lsm[2, 1] + lsm[3, 2] + lsm[4, 9]
    y_l = lsm[2, 3] + lsm[6, 4]  # token 3 from the prompt's last position (2), token 4 from y_l's first (6)
    scored = score_responses(logits, layout)
    assert scored.logps.flatten().tolist() == pytest.approx([y_w.item(), y_l.item()], abs=1e-9)
    assert scored.tokens.tolist() == [[3, 2]]
    mask = block_attention_mask(packed["groundpo_segments"], "sdpa", torch.float32)[0, 0]
    assert mask[6].tolist() == [True, True, True, False, False, False, True, False]  # y_l sees the prompt, not y_w
    assert mask[5].tolist() == [True] * 6 + [False, False]


def test_response_entropy_is_the_mean_entropy_over_answer_tokens():
    logits = torch.tensor([[[0.0, 0.0], [10.0, -10.0], [0.0, 0.0], [0.0, 0.0]]])
    labels = torch.tensor([[-100, 1, 0, -100]])  # logits at positions 0 (uniform) and 1 (peaked) predict them
    entropy = response_entropy(logits, labels)
    uniform, peaked = torch.log(torch.tensor(2.0)), torch.tensor(0.0)
    assert entropy.item() == pytest.approx(((uniform + peaked) / 2).item(), abs=1e-6)


def test_response_entropy_reads_only_the_answer_positions():
    """Positions that predict no answer token (prompt, padding, the fake media tokens upstream's collator
    appends to row 0 under attention mask 0) may hold anything, NaN included: the score is unchanged."""
    logits = torch.tensor([[[0.0, 0.0], [10.0, -10.0], [0.0, 0.0], [0.0, 0.0]]] * 2)
    labels = torch.tensor([[-100, 1, 0, -100], [-100, -100, -100, -100]])
    logits[0, 2:] = float("nan")  # after the answer
    entropy = response_entropy(logits, labels)
    assert entropy[0].item() == pytest.approx(torch.log(torch.tensor(2.0)).item() / 2, abs=1e-6)
    assert entropy[1].item() == 0.0  # no answer tokens
