"""MoD-DPO and DPO objectives against float64 hand computations of the papers' equations."""

import math

import pytest
import torch

from groundpo.losses import dpo_loss, mod_dpo_loss, mod_dpo_tau


def _neg_log_sigmoid(x: float) -> float:
    return math.log1p(math.exp(-x)) if x > 0 else -x + math.log1p(math.exp(x))


def _rand(seed: int, n: int = 5) -> list[list[float]]:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(10, n, generator=g, dtype=torch.float64) * 3 - 20).tolist()


def _hand_mod_dpo(v, *, beta, beta_inv, beta_sens, gamma, tau, with_inv, with_text):
    pc, pr, rc, rr, sc, sr, ic, ir, tc, tr = v
    t = beta + (beta_inv if with_inv else 0.0) + (beta_sens if tau == "paper" else -beta_sens)
    out = []
    for i in range(len(pc)):
        m = t * (pc[i] - pr[i]) - beta * (rc[i] - rr[i]) + beta_sens * (sc[i] - sr[i])
        if with_inv:
            m -= beta_inv * (ic[i] - ir[i])
        if with_text:
            m -= gamma * (tc[i] - tr[i])
        out.append(_neg_log_sigmoid(m))
    return out


@pytest.mark.parametrize("tau", ["paper", "derived"])
@pytest.mark.parametrize("gamma", [0.0, 0.05])
@pytest.mark.parametrize("modality", ["visual", "audio", "audiovisual"])
def test_mod_dpo_matches_hand_computation(tau, gamma, modality):
    v = _rand(seed=hash((tau, gamma, modality)) % 1000)
    t = [torch.tensor(x, dtype=torch.float64) for x in v]
    with_inv = modality != "audiovisual"  # Supp. A.5: no invariance term for audiovisual prompts
    losses, metrics = mod_dpo_loss(
        *t[:6],
        *(t[6:8] if with_inv else (None, None)),
        *(t[8:10] if gamma > 0 else (None, None)),
        beta=0.1, beta_inv=0.02, beta_sens=0.05, gamma_lpd=gamma, tau=tau,
    )
    expected = _hand_mod_dpo(v, beta=0.1, beta_inv=0.02, beta_sens=0.05, gamma=gamma, tau=tau,
                             with_inv=with_inv, with_text=gamma > 0)
    assert losses.dtype == torch.float64 and losses.shape == (5,)
    assert losses.tolist() == pytest.approx(expected, rel=1e-12, abs=1e-12)
    assert ("mod/lr_inv" in metrics) == with_inv
    assert metrics["mod/reliance_relevant"].tolist() == pytest.approx([a - b for a, b in zip(v[0], v[4])])


def test_tau_readings_of_the_paper():
    assert mod_dpo_tau(0.1, 0.02, 0.05, "paper") == pytest.approx(0.17)  # Eq. 8
    assert mod_dpo_tau(0.1, 0.02, 0.05, "derived") == pytest.approx(0.07)  # Eq. 13-16
    with pytest.raises(ValueError, match="tau"):
        mod_dpo_tau(0.1, 0.02, 0.05, "other")


def test_lpd_sits_inside_the_sigmoid():
    """Eq. 11: a larger text-only log-ratio lowers the margin, so it changes the loss and its gradient."""
    base = [torch.zeros(1, dtype=torch.float64, requires_grad=True) for _ in range(2)]
    rest = [torch.zeros(1, dtype=torch.float64) for _ in range(4)]
    text_lo = (torch.zeros(1, dtype=torch.float64), torch.zeros(1, dtype=torch.float64))
    text_hi = (torch.full((1,), 5.0, dtype=torch.float64), torch.zeros(1, dtype=torch.float64))
    l_lo, _ = mod_dpo_loss(*base, *rest, None, None, *text_lo, gamma_lpd=0.05)
    l_hi, _ = mod_dpo_loss(*base, *rest, None, None, *text_hi, gamma_lpd=0.05)
    assert l_hi.item() == pytest.approx(_neg_log_sigmoid(-0.05 * 5.0))
    g_lo = torch.autograd.grad(l_lo.sum(), base[0])[0]
    g_hi = torch.autograd.grad(l_hi.sum(), base[0])[0]
    assert g_lo.item() != pytest.approx(g_hi.item())


def test_gamma_without_text_logps_is_an_error():
    t = [torch.zeros(2) for _ in range(6)]
    with pytest.raises(ValueError, match="text-only"):
        mod_dpo_loss(*t, gamma_lpd=0.05)


def test_inv_mask_mixes_rows_with_and_without_invariance():
    v = _rand(seed=7, n=4)
    t = [torch.tensor(x, dtype=torch.float64) for x in v]
    mask = torch.tensor([True, False, True, False])
    losses, metrics = mod_dpo_loss(*t[:8], inv_mask=mask)
    with_inv = _hand_mod_dpo(v, beta=0.1, beta_inv=0.02, beta_sens=0.05, gamma=0, tau="paper", with_inv=True, with_text=False)
    without = _hand_mod_dpo(v, beta=0.1, beta_inv=0.02, beta_sens=0.05, gamma=0, tau="paper", with_inv=False, with_text=False)
    expected = [with_inv[i] if mask[i] else without[i] for i in range(4)]
    assert losses.tolist() == pytest.approx(expected, rel=1e-12)
    assert metrics["mod/lr_inv"].shape == (2,)


def test_gradient_flows_only_through_policy_inputs():
    inputs = [torch.randn(3, dtype=torch.float64, requires_grad=True) for _ in range(10)]
    losses, metrics = mod_dpo_loss(*inputs, gamma_lpd=0.05)
    grads = torch.autograd.grad(losses.sum(), inputs, allow_unused=True)
    assert grads[0] is not None and grads[1] is not None
    assert grads[0].abs().sum() > 0 and grads[1].abs().sum() > 0
    assert all(g is None for g in grads[2:])  # reference, sens, inv and text inputs are detached
    assert all(not m.requires_grad for m in metrics.values())


def test_dpo_matches_hand_computation_and_trl():
    v = _rand(seed=3)
    t = [torch.tensor(x, dtype=torch.float64) for x in v[:4]]
    losses, metrics = dpo_loss(*t, beta=0.1)
    pc, pr, rc, rr = v[:4]
    expected = [_neg_log_sigmoid(0.1 * ((pc[i] - pr[i]) - (rc[i] - rr[i]))) for i in range(5)]
    assert losses.tolist() == pytest.approx(expected, rel=1e-12)
    assert metrics["rewards/chosen"].tolist() == pytest.approx([0.1 * (pc[i] - rc[i]) for i in range(5)])

    from types import SimpleNamespace

    from llamafactory.train.dpo.trainer import CustomDPOTrainer  # imports TRL the way upstream does

    trl_self = SimpleNamespace(
        beta=0.1, loss_type="sigmoid", label_smoothing=0.0, reference_free=False,
        f_divergence_type="reverse_kl", f_divergence_params={}, use_weighting=False,
        accelerator=SimpleNamespace(device=torch.device("cpu")), args=SimpleNamespace(),
    )
    trl_losses, chosen_rewards, _ = CustomDPOTrainer.dpo_loss(trl_self, *t)  # TRL's sigmoid DPO
    assert losses.tolist() == pytest.approx(trl_losses.tolist(), rel=1e-12)
    assert metrics["rewards/chosen"].tolist() == pytest.approx(chosen_rewards.tolist(), rel=1e-12)


def test_mod_dpo_reduces_to_dpo_when_regularisers_vanish():
    v = _rand(seed=11)
    t = [torch.tensor(x, dtype=torch.float64) for x in v]
    l_mod, _ = mod_dpo_loss(*t[:8], beta=0.1, beta_inv=0.0, beta_sens=0.0)
    l_dpo, _ = dpo_loss(*t[:4], beta=0.1)
    assert l_mod.tolist() == pytest.approx(l_dpo.tolist(), rel=1e-12)
