"""MBPO's GRPO objective against float64 hand computations (Python ``math`` only on the expected side):
group advantages (Eq. 2), the clipped per-token objective with the k3 KL (Eq. 1, 3) and the hybrid
batch average of Eq. 7."""

import math
import statistics

import pytest
import torch

from groundpo.losses.grpo import group_advantages, grpo_loss, hybrid_batch_loss


def _close(actual: torch.Tensor, expected: list[float]) -> None:
    assert actual.dtype == torch.float64
    assert actual.tolist() == pytest.approx(expected, rel=1e-12, abs=1e-12)


# ---------------------------------------------------------------- Eq. 2
def _hand_advantages(rewards: list[float], eps: float) -> list[float]:
    mean = sum(rewards) / len(rewards)
    std = math.sqrt(sum((r - mean) ** 2 for r in rewards) / (len(rewards) - 1))  # unbiased
    return [(r - mean) / (std + eps) for r in rewards]


def test_group_advantages_equal_the_hand_computation():
    groups = [[1.0, 0.0], [1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 0.0, 1.0], [0.3, -1.2, 2.5, 0.0], [1.0, 1.0, 1.0]]
    for rewards in groups:
        for eps in (1e-4, 0.5):
            out = group_advantages(torch.tensor([rewards], dtype=torch.float64), eps=eps)
            _close(out[0], _hand_advantages(rewards, eps))
    # the offline pair (1, 0): std = 1/sqrt(2), so A = ±0.5 / (0.70710678 + 1e-4)
    pair = group_advantages(torch.tensor([[1.0, 0.0]], dtype=torch.float64))
    assert pair[0, 0].item() == pytest.approx(0.5 / (math.sqrt(0.5) + 1e-4), rel=1e-12)
    assert statistics.stdev([1.0, 0.0]) == pytest.approx(math.sqrt(0.5))
    # all-equal rewards carry no signal
    assert group_advantages(torch.ones(2, 4, dtype=torch.float64)).abs().max().item() == 0.0


def test_group_advantages_normalise_each_group_alone():
    rewards = torch.tensor([[1.0, 0.0, 0.0, 0.0], [5.0, 5.0, 7.0, 9.0]], dtype=torch.float64)
    out = group_advantages(rewards)
    _close(out[0], _hand_advantages([1.0, 0.0, 0.0, 0.0], 1e-4))
    _close(out[1], _hand_advantages([5.0, 5.0, 7.0, 9.0], 1e-4))
    with pytest.raises(ValueError, match="G >= 2"):
        group_advantages(torch.ones(3, 1))


# ---------------------------------------------------------------- Eq. 1 and 3
def _hand_grpo(policy, old, ref, adv, mask, eps, beta):
    """-(1/|o|) Σ_t [min(ρ A, clip(ρ, 1-ε, 1+ε) A) - β k3] and the clip shares, one response."""
    terms, low, high, kl = [], 0, 0, []
    for p, o, r, m in zip(policy, old, ref, mask):
        if not m:
            continue
        rho = math.exp(p - o)
        clipped = min(max(rho, 1 - eps), 1 + eps)
        k3 = math.exp(r - p) - (r - p) - 1
        terms.append(min(rho * adv, clipped * adv) - beta * k3)
        kl.append(k3)
        low += rho < 1 - eps and adv < 0
        high += rho > 1 + eps and adv > 0
    n = len(terms)
    return -sum(terms) / n, low / n, high / n, sum(kl) / n


def _case():
    """Four responses, 5 tokens: ρ above 1+ε and below 1−ε, A > 0 and A < 0, padding masked out."""
    policy = [
        [-1.0, -2.0, -0.5, -3.0, -9.0],
        [-1.0, -2.0, -0.5, -3.0, -1.0],
        [-0.7, -1.1, -2.4, -0.2, -0.3],
        [-2.0, -0.1, -1.0, -1.5, -0.9],
    ]
    old = [
        [-1.5, -1.0, -0.5, -2.0, -9.0],  # ρ = e^0.5 (> 1.2), e^-1 (< 0.8), 1, e^-1
        [-1.5, -1.0, -0.5, -3.3, -0.2],
        [-0.7, -1.0, -2.5, -0.4, -0.3],  # within the clip range
        [-2.3, -0.4, -0.6, -1.0, -9.9],
    ]
    ref = [
        [-1.2, -2.5, -0.4, -2.6, -0.1],
        [-0.9, -2.2, -0.7, -3.1, -1.4],
        [-0.5, -1.3, -2.0, -0.6, -0.8],
        [-1.7, -0.3, -1.2, -1.1, -0.5],
    ]
    adv = [1.3, -0.8, 0.4, -1.7]
    mask = [
        [True, True, True, True, False],
        [True, True, True, True, True],
        [False, True, True, True, True],
        [True, True, True, True, True],
    ]
    return policy, old, ref, adv, mask


@pytest.mark.parametrize("eps, beta", [(0.2, 0.04), (0.1, 0.0), (0.3, 1.0)])
def test_grpo_loss_equals_the_hand_computation(eps, beta):
    policy, old, ref, adv, mask = _case()
    f64 = lambda v: torch.tensor(v, dtype=torch.float64)  # noqa: E731
    losses, metrics = grpo_loss(
        f64(policy), f64(old), f64(ref), f64(adv), torch.tensor(mask), epsilon=eps, beta_kl=beta
    )
    hand = [_hand_grpo(*row, eps, beta) for row in zip(policy, old, ref, adv, mask)]
    _close(losses, [h[0] for h in hand])
    _close(metrics["mbpo/clip_ratio_low"], [h[1] for h in hand])
    _close(metrics["mbpo/clip_ratio_high"], [h[2] for h in hand])
    _close(metrics["mbpo/clip_ratio"], [h[1] + h[2] for h in hand])
    if beta:
        _close(metrics["mbpo/kl"], [h[3] for h in hand])
    # the case exercises the clip on both sides, with advantages of both signs
    assert any(h[1] > 0 for h in hand) and any(h[2] > 0 for h in hand)


def test_gradient_flows_through_the_policy_only_and_the_clip_stops_it():
    policy, old, ref, adv, mask = _case()
    p = torch.tensor(policy, dtype=torch.float64, requires_grad=True)
    o = torch.tensor(old, dtype=torch.float64, requires_grad=True)
    r = torch.tensor(ref, dtype=torch.float64, requires_grad=True)
    a = torch.tensor(adv, dtype=torch.float64, requires_grad=True)
    losses, _ = grpo_loss(p, o, r, a, torch.tensor(mask), epsilon=0.2, beta_kl=0.0)
    losses.sum().backward()
    assert o.grad is None and r.grad is None and a.grad is None  # detached inside
    # response 0 (A > 0), token 0: ρ = e^0.5 > 1.2, clipped -> no gradient; token 2: ρ = 1 -> -A/|o|·ρ
    assert p.grad[0, 0].item() == 0.0
    assert p.grad[0, 2].item() == pytest.approx(-adv[0] / 4, rel=1e-12)
    # response 1 (A < 0), token 1: ρ = e^-1 < 0.8, clipped -> no gradient; token 3: ρ = e^0.3 -> -A·ρ/|o|
    assert p.grad[1, 1].item() == 0.0
    assert p.grad[1, 3].item() == pytest.approx(-adv[1] * math.exp(0.3) / 5, rel=1e-12)
    assert p.grad[0, 4].item() == 0.0  # masked padding


def test_on_policy_ratio_is_one_and_the_gradient_is_the_advantage():
    """μ = 1: old = policy (detached), ρ = 1, ∂L/∂log π_t = −A/|o| (+ the KL's β(1 − e^{ref−policy})/|o|)."""
    policy, _, ref, adv, mask = _case()
    p = torch.tensor(policy, dtype=torch.float64, requires_grad=True)
    losses, metrics = grpo_loss(p, p, torch.tensor(ref, dtype=torch.float64), torch.tensor(adv, dtype=torch.float64),
                                torch.tensor(mask), beta_kl=0.04)
    losses.sum().backward()
    assert metrics["mbpo/clip_ratio"].abs().max().item() == 0.0
    for i in range(4):
        n = sum(mask[i])
        for t in range(5):
            want = 0.0 if not mask[i][t] else (-adv[i] + 0.04 * (1 - math.exp(ref[i][t] - policy[i][t]))) / n
            assert p.grad[i, t].item() == pytest.approx(want, rel=1e-12, abs=1e-15)


def test_reference_is_needed_only_with_a_kl_weight():
    x = torch.zeros(1, 2, dtype=torch.float64)
    mask = torch.ones(1, 2, dtype=torch.bool)
    losses, metrics = grpo_loss(x, x, None, torch.ones(1, dtype=torch.float64), mask, beta_kl=0.0)
    assert losses.tolist() == [-1.0] and "mbpo/kl" not in metrics
    with pytest.raises(ValueError, match="reference_logps"):
        grpo_loss(x, x, None, torch.ones(1, dtype=torch.float64), mask, beta_kl=0.04)


# ---------------------------------------------------------------- Eq. 7
def test_hybrid_batch_loss_averages_responses_per_row_then_rows():
    # two offline pairs (rows 0, 1) and one online group of G = 4 (row 2); the order of responses is free
    losses = torch.tensor([1.0, 2.0, 3.0, 4.0, 10.0, 20.0, 30.0, 40.0], dtype=torch.float64)
    groups = torch.tensor([0, 1, 0, 1, 2, 2, 2, 2])
    row = hybrid_batch_loss(losses, groups, "row")
    assert row.item() == pytest.approx(((1 + 3) / 2 + (2 + 4) / 2 + (10 + 20 + 30 + 40) / 4) / 3, rel=1e-12)
    response = hybrid_batch_loss(losses, groups, "response")
    assert response.item() == pytest.approx(sum(losses.tolist()) / 8, rel=1e-12)
    with pytest.raises(ValueError, match="aggregation"):
        hybrid_batch_loss(losses, groups, "token")
