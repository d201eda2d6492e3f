"""Each loss against a direct numpy implementation, finite gradients, weights and bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special

from sharpen_jax.training import losses


def _random_pairs(seed, n=16):
    rng = np.random.default_rng(seed)
    logp_a, logp_b, ref_a, ref_b = (rng.normal(-20, 5, n).astype(np.float32) for _ in range(4))
    reward_a, reward_b = (rng.normal(0, 3, n).astype(np.float32) for _ in range(2))
    reward_b[:3] = reward_a[:3]  # ties, which online DPO must ignore
    return logp_a, logp_b, ref_a, ref_b, reward_a, reward_b


def _np_residual(logp_a, logp_b, ref_a, ref_b, reward_a, reward_b, beta):
    return beta * ((logp_a - ref_a) - (logp_b - ref_b)) - (reward_a - reward_b)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sft_loss_matches_numpy(seed):
    rng = np.random.default_rng(seed)
    logp = rng.normal(-30, 10, 12).astype(np.float32)
    ntok = rng.integers(1, 40, 12).astype(np.float32)
    w = rng.uniform(0, 2, 12).astype(np.float32)
    loss, metrics = losses.sft_loss(logp, ntok, w)
    np.testing.assert_allclose(loss, -(w * logp).sum() / (w * ntok).sum(), rtol=1e-5)
    np.testing.assert_allclose(metrics["denominator"], (w * ntok).sum(), rtol=1e-6)
    unweighted, _ = losses.sft_loss(logp, ntok)
    np.testing.assert_allclose(unweighted, -logp.sum() / ntok.sum(), rtol=1e-5)


@pytest.mark.parametrize("beta", [0.1, 1.0, 4.0])
def test_reward_dpo_loss_matches_numpy(beta):
    args = _random_pairs(int(beta * 10))
    loss, metrics = losses.reward_dpo_loss(*args, beta=beta)
    np.testing.assert_allclose(loss, np.mean(_np_residual(*args, beta) ** 2), rtol=1e-5)
    np.testing.assert_allclose(metrics["logratio_a"], np.mean(args[0] - args[2]), rtol=1e-5)


@pytest.mark.parametrize("alpha", [0.0, 0.05, 1.0])
def test_xpo_loss_matches_numpy(alpha):
    args = _random_pairs(3)
    loss, metrics = losses.xpo_loss(*args, beta=0.5, alpha=alpha)
    expected = alpha * np.mean(args[1]) + np.mean(_np_residual(*args, 0.5) ** 2)
    np.testing.assert_allclose(loss, expected, rtol=1e-5)
    np.testing.assert_allclose(metrics["squared_loss"], np.mean(_np_residual(*args, 0.5) ** 2), rtol=1e-5)


def test_online_dpo_loss_matches_numpy_and_skips_ties():
    logp_a, logp_b, ref_a, ref_b, reward_a, reward_b = _random_pairs(4)
    beta = 0.7
    loss, metrics = losses.online_dpo_loss(logp_a, logp_b, ref_a, ref_b, reward_a, reward_b, beta=beta)
    s = np.sign(reward_a - reward_b)
    margin = beta * s * ((logp_a - ref_a) - (logp_b - ref_b))
    keep = s != 0
    expected = np.mean(np.logaddexp(0.0, -margin[keep]))  # -log sigmoid(m) = log(1 + e^-m)
    np.testing.assert_allclose(loss, expected, rtol=1e-5)
    assert float(metrics["denominator"]) == keep.sum() == 13
    np.testing.assert_allclose(metrics["preference_accuracy"], np.mean(margin[keep] > 0), rtol=1e-6)


def test_kl_policy_gradient_loss_matches_numpy():
    rng = np.random.default_rng(5)
    groups, k, beta = 4, 5, 0.3
    logp = rng.normal(-10, 2, groups * k).astype(np.float32)
    ref = rng.normal(-10, 2, groups * k).astype(np.float32)
    reward = rng.normal(0, 1, groups * k).astype(np.float32)
    loss, metrics = losses.kl_policy_gradient_loss(logp, ref, reward, group_size=k, beta=beta)
    shaped = (reward - beta * (logp - ref)).reshape(groups, k)
    advantage = np.stack([[shaped[g, i] - np.delete(shaped[g], i).mean() for i in range(k)]
                          for g in range(groups)]).reshape(-1)
    np.testing.assert_allclose(loss, -np.mean(advantage * logp), rtol=1e-4)
    np.testing.assert_allclose(metrics["kl"], np.mean(logp - ref), rtol=1e-5)
    # The gradient with respect to logp is -A_i / N: the shaped reward is a constant, not differentiated.
    grad = jax.grad(lambda lp: losses.kl_policy_gradient_loss(lp, ref, reward, group_size=k, beta=beta)[0])(logp)
    np.testing.assert_allclose(grad, -advantage / (groups * k), rtol=1e-4, atol=1e-7)


def test_reward_dpo_gradient_matches_closed_form():
    args = _random_pairs(6)
    beta = 0.5
    grad_a, grad_b = jax.grad(lambda a, b: losses.reward_dpo_loss(a, b, *args[2:], beta=beta)[0],
                              argnums=(0, 1))(args[0], args[1])
    residual = _np_residual(*args, beta)
    np.testing.assert_allclose(grad_a, 2 * beta * residual / len(residual), rtol=1e-4)
    np.testing.assert_allclose(grad_b, -2 * beta * residual / len(residual), rtol=1e-4)


@pytest.mark.parametrize("name", ["reward_dpo", "xpo", "online_dpo"])
def test_pair_losses_weights_zero_rows_contribute_nothing(name):
    fn = {"reward_dpo": losses.reward_dpo_loss, "xpo": lambda *a, **k: losses.xpo_loss(*a, alpha=0.1, **k),
          "online_dpo": losses.online_dpo_loss}[name]
    args = _random_pairs(7)
    weight = np.ones(16, np.float32)
    weight[10:] = 0.0
    corrupted = [a.copy() for a in args]
    corrupted[0][10:] = 1e4  # garbage in padded rows
    corrupted[1][10:] = -1e4
    full, _ = fn(*corrupted, beta=0.5, weight_B=weight)
    head, _ = fn(*[a[:10] for a in args], beta=0.5)
    np.testing.assert_allclose(full, head, rtol=1e-5)
    grads = jax.grad(lambda a: fn(a, *corrupted[1:], beta=0.5, weight_B=weight)[0])(corrupted[0])
    assert np.all(np.isfinite(grads)) and np.all(grads[10:] == 0)


def test_all_zero_weights_give_zero_loss_and_gradient():
    args = _random_pairs(8)
    loss, metrics = losses.reward_dpo_loss(*args, beta=1.0, weight_B=np.zeros(16, np.float32))
    assert float(loss) == 0.0 and float(metrics["denominator"]) == 0.0
    grad = jax.grad(lambda a: losses.reward_dpo_loss(a, *args[1:], beta=1.0, weight_B=jnp.zeros(16))[0])(args[0])
    assert np.all(grad == 0)


def test_shape_mismatch_names_the_input():
    args = list(_random_pairs(9))
    args[3] = args[3][:5]
    with pytest.raises(ValueError, match="ref_b"):
        losses.reward_dpo_loss(*args, beta=1.0)
    with pytest.raises(ValueError, match="group_size"):
        losses.kl_policy_gradient_loss(np.zeros(6), np.zeros(6), np.zeros(6), group_size=4, beta=1.0)
    with pytest.raises(ValueError, match="at least 2"):
        losses.kl_policy_gradient_loss(np.zeros(6), np.zeros(6), np.zeros(6), group_size=1, beta=1.0)


LOSS_FNS = {
    "sft": lambda a, b, ra, rb, wa, wb: losses.sft_loss(a, jnp.full_like(a, 7.0)),
    "reward_dpo": lambda a, b, ra, rb, wa, wb: losses.reward_dpo_loss(a, b, ra, rb, wa, wb, beta=0.1),
    "xpo": lambda a, b, ra, rb, wa, wb: losses.xpo_loss(a, b, ra, rb, wa, wb, beta=0.1, alpha=0.5),
    "online_dpo": lambda a, b, ra, rb, wa, wb: losses.online_dpo_loss(a, b, ra, rb, wa, wb, beta=10.0),
    "kl_pg": lambda a, b, ra, rb, wa, wb: losses.kl_policy_gradient_loss(a, ra, wa, group_size=4, beta=0.1),
}


def _extreme_gradient_oracle(name, a, b, ra, rb, wa, wb):
    """d loss / d (logp_a, logp_b) of LOSS_FNS[name] in float64 closed form (n = 16 rows, unit weights)."""
    a, b, ra, rb, wa, wb = (np.asarray(v, np.float64) for v in (a, b, ra, rb, wa, wb))
    n = a.size
    if name == "sft":  # -sum(logp) / sum(7 tokens)
        return np.full(n, -1 / (7 * n)), np.zeros(n)
    if name in ("reward_dpo", "xpo"):  # 2 beta r / n, and XPO's alpha mean(logp_b) adds alpha / n to b
        r = _np_residual(a, b, ra, rb, wa, wb, 0.1)
        return 2 * 0.1 * r / n, -2 * 0.1 * r / n + (0.5 / n if name == "xpo" else 0.0)
    if name == "online_dpo":  # -log sigmoid(m), m = beta s margin: d/da = -beta s sigmoid(-m) / #kept
        s = np.sign(wa - wb)
        m = 10.0 * s * ((a - ra) - (b - rb))
        g = -10.0 * s * special.expit(-m) / np.count_nonzero(s)
        return g, -g
    shaped = (wa - 0.1 * (a - ra)).reshape(-1, 4)  # kl_pg: -A_i / n, A the leave-one-out advantage
    advantage = shaped - (shaped.sum(1, keepdims=True) - shaped) / 3
    return -advantage.reshape(-1) / n, np.zeros(n)


@pytest.mark.parametrize("name", sorted(LOSS_FNS))
def test_gradients_are_finite_at_extreme_log_probs(name):
    """Long sequences have log-probs in the thousands; with beta = 10 the DPO margins reach 1e5, where a
    naive log(sigmoid(m)) is log(0) = -inf. Every loss and its gradient stay finite there, and the gradient
    is the float64 closed form (a loss that stays finite by clipping or zeroing its gradient fails)."""
    rng = np.random.default_rng(10)
    logp_a, logp_b, ref_a, ref_b = (rng.uniform(-5e3, -1.0, 16).astype(np.float32) for _ in range(4))
    reward_a, reward_b = (rng.uniform(-5e3, -1.0, 16).astype(np.float32) for _ in range(2))
    fn = LOSS_FNS[name]
    loss, _ = fn(logp_a, logp_b, ref_a, ref_b, reward_a, reward_b)
    grads = jax.grad(lambda a, b: fn(a, b, ref_a, ref_b, reward_a, reward_b)[0], argnums=(0, 1))(logp_a, logp_b)
    assert np.isfinite(float(loss))
    assert all(np.all(np.isfinite(g)) for g in grads)
    assert float(np.abs(grads[0]).max()) > 0
    expected = _extreme_gradient_oracle(name, logp_a, logp_b, ref_a, ref_b, reward_a, reward_b)
    for got, want in zip(grads, expected):
        scale = np.abs(want).max()
        np.testing.assert_allclose(np.asarray(got, np.float64), want, rtol=1e-4, atol=1e-6 * max(scale, 1e-3))
