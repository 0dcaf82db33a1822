"""OmniDPO, mDPO, JoMPO, MFPO and ACPO objectives against float64 hand computations of the papers'
equations, written with Python ``math`` only (no torch ops on the expected side)."""

import inspect
import math

import pytest
import torch

from groundpo.losses import acpo_loss, dpo_loss, jompo_loss, mdpo_loss, mfpo_loss, omni_dpo_loss
from groundpo.losses.jompo import plackett_luce_nll

SEEDS = [0, 1, 2, 3, 4]
B = 6


# ---------------------------------------------------------------- hand-computation helpers (math only)


def _neg_log_sigmoid(x: float) -> float:
    return math.log1p(math.exp(-x)) if x > 0 else -x + math.log1p(math.exp(x))


def _logsumexp(xs: list[float]) -> float:
    m = max(xs)
    return m + math.log(sum(math.exp(x - m) for x in xs))


def _hand_pl(a: float, b: float, c: float) -> float:
    """Plackett–Luce NLL of the ranking a ≻ b ≻ c, every sum written out."""
    first = a - _logsumexp([a, b, c])
    second = b - _logsumexp([b, c])
    third = c - _logsumexp([c])  # = 0
    return -(first + second + third)


def _hand_dpo(pc, pr, rc, rr, beta):
    return _neg_log_sigmoid(beta * ((pc - pr) - (rc - rr)))


def _rand(seed: int, rows: int, n: int = B) -> list[list[float]]:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(rows, n, generator=g, dtype=torch.float64) * 3 - 20).tolist()


def _tensors(v):
    return [torch.tensor(x, dtype=torch.float64) for x in v]


def _close(actual: torch.Tensor, expected: list[float]) -> None:
    assert actual.dtype == torch.float64
    assert actual.tolist() == pytest.approx(expected, rel=1e-12, abs=1e-12)


# ---------------------------------------------------------------- OmniDPO


def _hand_omni(v, beta, lv, la):
    pc, pr, rc, rr, pv, rv, pa, ra = v
    out, l_vis, l_aud = [], [], []
    for i in range(len(pc)):
        dpo = _hand_dpo(pc[i], pr[i], rc[i], rr[i], beta)
        vis = _neg_log_sigmoid(beta * ((pc[i] - rc[i]) - (pv[i] - rv[i])))
        aud = _neg_log_sigmoid(beta * ((pc[i] - rc[i]) - (pa[i] - ra[i])))
        out.append(dpo + lv * vis + la * aud)
        l_vis.append(vis)
        l_aud.append(aud)
    return out, l_vis, l_aud


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("beta,lv,la", [(0.1, 1.0, 1.0), (0.3, 0.5, 2.0)])
def test_omni_dpo_matches_hand_computation(seed, beta, lv, la):
    v = _rand(seed, 8)
    losses, metrics = omni_dpo_loss(*_tensors(v), beta=beta, lambda_v=lv, lambda_a=la)
    expected, l_vis, l_aud = _hand_omni(v, beta, lv, la)
    assert losses.shape == (B,)
    _close(losses, expected)
    _close(metrics["omni_dpo/l_vis"], l_vis)
    _close(metrics["omni_dpo/l_aud"], l_aud)
    _close(metrics["rewards/chosen"], [beta * (a - b) for a, b in zip(v[0], v[2])])
    _close(metrics["omni_dpo/rewards_vcorrupt"], [beta * (a - b) for a, b in zip(v[4], v[5])])


def test_omni_dpo_without_modality_terms_is_dpo():
    v = _tensors(_rand(21, 8))
    l_omni, _ = omni_dpo_loss(*v, beta=0.1, lambda_v=0.0, lambda_a=0.0)
    l_dpo, _ = dpo_loss(*v[:4], beta=0.1)
    assert l_omni.tolist() == pytest.approx(l_dpo.tolist(), rel=1e-12)


# ---------------------------------------------------------------- mDPO


def _hand_mdpo(v, beta, delta):
    pc, pr, rc, rr, pk, rk = v
    out = []
    for i in range(len(pc)):
        dpo = _hand_dpo(pc[i], pr[i], rc[i], rr[i], beta)
        copo = _neg_log_sigmoid(beta * ((pc[i] - rc[i]) - (pk[i] - rk[i])))
        ancpo = _neg_log_sigmoid(beta * (pc[i] - rc[i]) - delta)
        out.append(dpo + copo + ancpo)
    return out


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("beta,delta", [(0.1, 0.0), (0.2, 0.5)])
def test_mdpo_matches_hand_computation(seed, beta, delta):
    v = _rand(seed + 100, 6)
    losses, metrics = mdpo_loss(*_tensors(v), beta=beta, anchor_delta=delta)
    _close(losses, _hand_mdpo(v, beta, delta))
    pc, _, rc, _, pk, rk = v
    _close(metrics["mdpo/l_ancpo"], [_neg_log_sigmoid(beta * (pc[i] - rc[i]) - delta) for i in range(B)])
    _close(metrics["mdpo/rewards_corrupt"], [beta * (pk[i] - rk[i]) for i in range(B)])


def test_mdpo_without_regularisers_is_dpo():
    """The fixed signature has no term weights: remove the two extra terms via their metrics, and
    drive them to exactly 0 in float64 (anchor δ → −∞, y_w unlikely under the crop)."""
    v = _tensors(_rand(22, 6))
    l_dpo, _ = dpo_loss(*v[:4], beta=0.1)
    losses, metrics = mdpo_loss(*v, beta=0.1)
    assert metrics["mdpo/l_dpo"].tolist() == pytest.approx(l_dpo.tolist(), rel=1e-12)
    stripped = losses - metrics["mdpo/l_copo"] - metrics["mdpo/l_ancpo"]
    assert stripped.tolist() == pytest.approx(l_dpo.tolist(), rel=1e-12)

    very_unlikely = torch.full_like(v[4], -1e12)
    saturated, m = mdpo_loss(*v[:4], very_unlikely, v[5], beta=0.1, anchor_delta=-1e12)
    assert m["mdpo/l_copo"].abs().max() == 0 and m["mdpo/l_ancpo"].abs().max() == 0
    assert saturated.tolist() == pytest.approx(l_dpo.tolist(), rel=1e-12)


# ---------------------------------------------------------------- JoMPO


def _jompo_inputs(seed: int):
    g = torch.Generator().manual_seed(seed)
    policy = torch.randn(B, 3, 2, generator=g, dtype=torch.float64) * 8 - 30
    reference = torch.randn(B, 3, 2, generator=g, dtype=torch.float64) * 8 - 30
    return policy, reference


def _hand_jompo(policy, reference, beta):
    p, r = policy.tolist(), reference.tolist()
    W, NONE, L = 0, 1, 2  # view axis
    YW, YL = 0, 1  # response axis
    rows = []
    for i in range(len(p)):
        s = [[beta * (p[i][m][y] - r[i][m][y]) for y in range(2)] for m in range(3)]
        dpo_w = _neg_log_sigmoid(s[W][YW] - s[W][YL])
        dpo_l = _neg_log_sigmoid(s[L][YL] - s[L][YW])
        pl_w = _hand_pl(s[W][YW], s[NONE][YW], s[L][YW])  # y_w: m_w ≻ m_none ≻ m_l
        pl_l = _hand_pl(s[L][YL], s[NONE][YL], s[W][YL])  # y_l: m_l ≻ m_none ≻ m_w
        rows.append((dpo_w + dpo_l + pl_w + pl_l, dpo_w, dpo_l, pl_w, pl_l, s[W][YW], s[W][YL]))
    return [list(col) for col in zip(*rows)]


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("beta", [0.05, 0.5])
def test_jompo_matches_hand_computation(seed, beta):
    policy, reference = _jompo_inputs(seed + 200)
    losses, metrics = jompo_loss(policy, reference, beta=beta)
    total, dpo_w, dpo_l, pl_w, pl_l, r_chosen, r_rejected = _hand_jompo(policy, reference, beta)
    assert losses.shape == (B,)
    _close(losses, total)
    _close(metrics["jompo/dpo_w"], dpo_w)
    _close(metrics["jompo/dpo_l"], dpo_l)
    _close(metrics["jompo/pl_w"], pl_w)
    _close(metrics["jompo/pl_l"], pl_l)
    _close(metrics["rewards/chosen"], r_chosen)
    _close(metrics["rewards/rejected"], r_rejected)
    _close(metrics["rewards/margins"], [a - b for a, b in zip(r_chosen, r_rejected)])


@pytest.mark.parametrize("seed", SEEDS)
def test_plackett_luce_on_random_scores(seed):
    g = torch.Generator().manual_seed(seed + 300)
    scores = torch.randn(B, 3, generator=g, dtype=torch.float64) * 5
    expected = [_hand_pl(*row) for row in scores.tolist()]
    _close(plackett_luce_nll(scores), expected)


def test_plackett_luce_is_stable_for_large_scores():
    scores = torch.tensor([[800.0, -700.0, 750.0], [-900.0, 900.0, 0.0]], dtype=torch.float64)
    out = plackett_luce_nll(scores)
    assert torch.isfinite(out).all()
    _close(out, [_hand_pl(*row) for row in scores.tolist()])


def test_plackett_luce_prefers_the_target_order():
    ordered = torch.tensor([[3.0, 0.0, -3.0]], dtype=torch.float64)
    reversed_ = torch.tensor([[-3.0, 0.0, 3.0]], dtype=torch.float64)
    assert plackett_luce_nll(ordered).item() < plackett_luce_nll(reversed_).item()


@pytest.mark.parametrize("shape", [(4, 3), (4, 2, 3), (4, 3, 3), (4, 3, 2, 1), (3, 2)])
def test_jompo_rejects_wrong_shapes(shape):
    bad = torch.zeros(shape)
    with pytest.raises(ValueError, match=r"\[B, 3, 2\].*m_w, m_none, m_l.*y_w, y_l"):
        jompo_loss(bad, bad)


def test_jompo_rejects_mismatched_policy_and_reference():
    with pytest.raises(ValueError, match="same shape"):
        jompo_loss(torch.zeros(4, 3, 2), torch.zeros(5, 3, 2))
    with pytest.raises(ValueError, match="reference_logps"):
        jompo_loss(torch.zeros(4, 3, 2), torch.zeros(4, 2, 3))


# ---------------------------------------------------------------- MFPO


def _hand_mfpo(v, beta, eta, weights):
    pc, pr, rc, rr, pm, rm = v
    wt, wi, wm = weights
    out = []
    for i in range(len(pc)):
        text = _hand_dpo(pc[i], pr[i], rc[i], rr[i], beta)
        image = _neg_log_sigmoid(beta * (pc[i] - rc[i]) - beta * (pm[i] - rm[i]))
        margin = _neg_log_sigmoid(beta * (pc[i] - rc[i]) - eta)
        out.append(wt * text + wi * image + wm * margin)
    return out


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("beta,eta,weights", [(0.1, 0.0, (1.0, 1.0, 1.0)), (0.2, 0.4, (1.0, 5.0, 0.5))])
def test_mfpo_matches_hand_computation(seed, beta, eta, weights):
    v = _rand(seed + 400, 6)
    losses, metrics = mfpo_loss(*_tensors(v), beta=beta, margin_eta=eta, weights=weights)
    _close(losses, _hand_mfpo(v, beta, eta, weights))
    _close(metrics["mfpo/l_margin"], _hand_mfpo(v, beta, eta, (0.0, 0.0, 1.0)))
    _close(metrics["mfpo/l_image"], _hand_mfpo(v, beta, eta, (0.0, 1.0, 0.0)))


def test_mfpo_text_only_is_dpo():
    v = _tensors(_rand(23, 6))
    l_mfpo, _ = mfpo_loss(*v, beta=0.1, weights=(1.0, 0.0, 0.0))
    l_dpo, _ = dpo_loss(*v[:4], beta=0.1)
    assert l_mfpo.tolist() == pytest.approx(l_dpo.tolist(), rel=1e-12)


def test_mfpo_rejects_wrong_number_of_weights():
    v = _tensors(_rand(24, 6))
    with pytest.raises(ValueError, match="w_text, w_image, w_margin"):
        mfpo_loss(*v, weights=(1.0, 1.0))


# ---------------------------------------------------------------- ACPO


def _hand_acpo(v, mask, beta, lo, li):
    pc, pr, rc, rr = v
    out, out_rows, in_rows = [], [], []
    for i in range(len(pc)):
        pair = _hand_dpo(pc[i], pr[i], rc[i], rr[i], beta)
        out.append((li if mask[i] else lo) * pair)
        (in_rows if mask[i] else out_rows).append(pair)
    return out, out_rows, in_rows


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize(
    "mask",
    [
        [True, False, False, True, False, True],  # mixed
        [False] * B,  # output-contrastive only
        [True] * B,  # input-contrastive only
    ],
    ids=["mixed", "all_output", "all_input"],
)
def test_acpo_matches_hand_computation(seed, mask):
    v = _rand(seed + 500, 4)
    beta, lo, li = 0.1, 0.7, 1.3
    losses, metrics = acpo_loss(
        *_tensors(v), torch.tensor(mask), beta=beta, lambda_output=lo, lambda_input=li
    )
    expected, out_rows, in_rows = _hand_acpo(v, mask, beta, lo, li)
    _close(losses, expected)
    assert metrics["acpo/loss_output"].shape == (len(out_rows),)
    assert metrics["acpo/loss_input"].shape == (len(in_rows),)
    _close(metrics["acpo/loss_output"], out_rows)
    _close(metrics["acpo/loss_input"], in_rows)
    _close(metrics["rewards/chosen"], [beta * (a - b) for a, b in zip(v[0], v[2])])


def test_acpo_with_unit_weights_is_dpo():
    v = _tensors(_rand(25, 4))
    mask = torch.tensor([True, False, True, False, False, True])
    l_acpo, _ = acpo_loss(*v, mask)
    l_dpo, _ = dpo_loss(*v, beta=0.1)
    assert l_acpo.tolist() == pytest.approx(l_dpo.tolist(), rel=1e-12)


def test_acpo_rejects_mask_of_wrong_shape():
    v = _tensors(_rand(26, 4))
    with pytest.raises(ValueError, match="input_contrastive"):
        acpo_loss(*v, torch.tensor([True, False]))


# ---------------------------------------------------------------- gradients


def _leaves(n: int, shape=(B,)):
    g = torch.Generator().manual_seed(n)
    return [(torch.randn(shape, generator=g, dtype=torch.float64) * 3 - 20).requires_grad_() for _ in range(n)]


def _grad_case(name):
    """(loss function call, all inputs, which inputs are policy inputs)."""
    if name == "omni_dpo":
        x = _leaves(8)
        return lambda: omni_dpo_loss(*x), x, [True, True, False, False, True, False, True, False]
    if name == "mdpo":
        x = _leaves(6)
        return lambda: mdpo_loss(*x), x, [True, True, False, False, True, False]
    if name == "mfpo":
        x = _leaves(6)
        return lambda: mfpo_loss(*x), x, [True, True, False, False, True, False]
    if name == "jompo":
        x = _leaves(2, shape=(B, 3, 2))
        return lambda: jompo_loss(*x), x, [True, False]
    if name == "acpo":
        x = _leaves(4)
        mask = torch.tensor([True, False, False, True, False, True])
        return lambda: acpo_loss(*x, mask), x, [True, True, False, False]
    raise AssertionError(name)


@pytest.mark.parametrize("name", ["omni_dpo", "mdpo", "mfpo", "jompo", "acpo"])
def test_gradient_flows_only_through_policy_inputs(name):
    call, inputs, is_policy = _grad_case(name)
    losses, metrics = call()
    grads = torch.autograd.grad(losses.sum(), inputs, allow_unused=True)
    for g, policy in zip(grads, is_policy):
        if policy:  # every policy entry, clean and corrupted views alike, gets a gradient
            assert g is not None and (g != 0).all()
        else:
            assert g is None
    assert all(not m.requires_grad for m in metrics.values())


# ---------------------------------------------------------------- signatures and paper defaults


def _params(fn):
    return inspect.signature(fn).parameters


def test_signatures_are_the_fixed_contracts():
    assert list(_params(omni_dpo_loss)) == [
        "policy_chosen_logps", "policy_rejected_logps", "reference_chosen_logps", "reference_rejected_logps",
        "policy_chosen_vcorrupt_logps", "reference_chosen_vcorrupt_logps",
        "policy_chosen_acorrupt_logps", "reference_chosen_acorrupt_logps", "beta", "lambda_v", "lambda_a",
    ]
    assert list(_params(mdpo_loss)) == [
        "policy_chosen_logps", "policy_rejected_logps", "reference_chosen_logps", "reference_rejected_logps",
        "policy_chosen_corrupt_logps", "reference_chosen_corrupt_logps", "beta", "anchor_delta",
    ]
    assert list(_params(jompo_loss)) == ["policy_logps", "reference_logps", "beta"]
    assert list(_params(mfpo_loss)) == [
        "policy_chosen_logps", "policy_rejected_logps", "reference_chosen_logps", "reference_rejected_logps",
        "policy_chosen_perturbed_logps", "reference_chosen_perturbed_logps", "beta", "margin_eta", "weights",
    ]
    assert list(_params(acpo_loss)) == [
        "policy_chosen_logps", "policy_rejected_logps", "reference_chosen_logps", "reference_rejected_logps",
        "input_contrastive", "beta", "lambda_output", "lambda_input",
    ]
    for fn in (omni_dpo_loss, mdpo_loss, jompo_loss, mfpo_loss, acpo_loss):  # hyper-parameters are keyword-only
        kw = [n for n, p in _params(fn).items() if p.kind is inspect.Parameter.KEYWORD_ONLY]
        assert kw and kw[0] == "beta"


def test_defaults_match_the_papers():
    omni = _params(omni_dpo_loss)
    assert omni["lambda_v"].default == 1.0 and omni["lambda_a"].default == 1.0
    assert _params(jompo_loss)["beta"].default == 0.05  # JoMPO Sec. 5.1.4
    mfpo = _params(mfpo_loss)
    assert mfpo["margin_eta"].default == 0.0  # MFPO Tab. 5
    assert tuple(mfpo["weights"].default) == (1.0, 1.0, 1.0)  # MFPO Tab. 6
    assert _params(mdpo_loss)["anchor_delta"].default == 0.0  # mDPO's released trainer
