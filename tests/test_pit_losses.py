"""PIT's gap reward loss (Eq. 2) and the Bradley-Terry loss: numpy oracle, analytic gradient, shift
invariance, the difference parameterisation and its optimum Δ* under label noise reached by the
real training step, and the orderings of a trained tabular gap reward."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from sharpen_jax import methods
from sharpen_jax.training import create_train_state
from sharpen_jax.training.reward_losses import bradley_terry_loss, gap_reward_loss


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _np_margins(r):
    wl, ww, ll, lw = r
    return [(wl, ww), (wl, ll), (wl, lw), (ww, lw), (ll, lw)]  # (winner, loser) of each of the five terms


def _random_r(seed, n=12):
    rng = np.random.default_rng(seed)
    return [rng.normal(0, 2, n).astype(np.float32) for _ in range(4)]


@pytest.mark.parametrize("seed", [0, 1])
def test_gap_loss_matches_numpy_and_the_analytic_gradient(seed):
    r = _random_r(seed)
    weight = np.random.default_rng(seed + 10).uniform(0.2, 2.0, 12).astype(np.float32)
    loss, metrics = gap_reward_loss(*r, weight_B=weight)
    per_pair = sum(np.logaddexp(0.0, -(a - b)) for a, b in _np_margins(r))  # -log σ(m) = log(1 + e^-m)
    np.testing.assert_allclose(loss, np.sum(weight * per_pair) / weight.sum(), rtol=1e-5)
    assert float(metrics["denominator"]) == pytest.approx(weight.sum())
    wl, ww, ll, lw = r
    expected_order = (wl > ww) & (wl > ll) & (wl > lw) & (ww > lw) & (ll > lw)
    np.testing.assert_allclose(metrics["ordering"], np.sum(weight * expected_order) / weight.sum(), rtol=1e-6)

    # d/da -log σ(a - b) = -σ(b - a) and d/db = +σ(b - a), summed over the terms each r appears in.
    grads = jax.grad(lambda *rs: gap_reward_loss(*rs, weight_B=weight)[0], argnums=(0, 1, 2, 3))(*r)
    index = {"wl": 0, "ww": 1, "ll": 2, "lw": 3}
    analytic = [np.zeros(12) for _ in range(4)]
    for a, b in [("wl", "ww"), ("wl", "ll"), ("wl", "lw"), ("ww", "lw"), ("ll", "lw")]:
        s = _sigmoid(r[index[b]] - r[index[a]]) * weight / weight.sum()
        analytic[index[a]] -= s
        analytic[index[b]] += s
    for got, want in zip(grads, analytic):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-7)


def test_gap_loss_is_invariant_to_a_constant_shift():
    r = _random_r(3)
    base, _ = gap_reward_loss(*r)
    for shift in (-3.7, 12.5):
        shifted, _ = gap_reward_loss(*(x + np.float32(shift) for x in r))
        np.testing.assert_allclose(shifted, base, rtol=1e-5)
    moved, _ = gap_reward_loss(r[0] + 1.0, *r[1:])  # a change of one r does move it (the check can fail)
    assert abs(float(moved) - float(base)) > 1e-3


def test_difference_parameterisation_reduces_to_four_plus_one_terms():
    g = np.random.default_rng(4).normal(0, 1.5, (2, 16)).astype(np.float32)  # g(w), g(l) per pair
    w, l = g
    loss, _ = gap_reward_loss(w - l, w - w, l - l, l - w)
    delta = w - l
    np.testing.assert_allclose(loss, np.mean(-(4 * np.log(_sigmoid(delta)) + np.log(_sigmoid(2 * delta)))),
                               rtol=1e-5)


def _delta_star(eps):
    """The root of (1-ε)(4σ(-Δ) + 2σ(-2Δ)) = ε(4σ(Δ) + 2σ(2Δ)) by bisection (the left side falls in Δ)."""
    f = lambda d: (1 - eps) * (4 * _sigmoid(-d) + 2 * _sigmoid(-2 * d)) - eps * (4 * _sigmoid(d) + 2 * _sigmoid(2 * d))
    lo, hi = 0.0, 20.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if f(mid) > 0 else (lo, mid)
    return 0.5 * (lo + hi)


def _scalar_batch(eps, n=1000):
    """n pairs of responses 0 (better) and 1, a fraction eps with the label flipped."""
    flipped = np.arange(n) < round(eps * n)
    w, l = np.where(flipped, 1, 0).astype(np.int32), np.where(flipped, 0, 1).astype(np.int32)
    side = lambda y, ref: {"y": jnp.asarray(y), "ref": jnp.asarray(ref)}  # noqa: E731
    return {"wl": side(w, l), "ww": side(w, w), "ll": side(l, l), "lw": side(l, w)}, {"w": side(w, w), "l": side(l, l)}


def _train_scalar(entry_name, reward_fn, batch, steps=250):
    tx = optax.adam(optax.cosine_decay_schedule(0.1, steps, alpha=0.01))
    state = create_train_state({"g": jnp.zeros(2)}, tx)
    step = methods.get_loss(entry_name).make_step(reward_fn, tx, grad_accum_steps=2)
    for _ in range(steps):
        state, metrics = step(state, None, batch)
    assert bool(metrics["finite"])
    return float(state.params["g"][0] - state.params["g"][1])


@pytest.mark.parametrize("eps,quoted,bradley_terry", [(0.1, 1.8355, 2.1972), (0.2, 1.0986, 1.3863)])
def test_a_scalar_trained_by_the_real_step_reaches_delta_star(eps, quoted, bradley_terry):
    assert _delta_star(eps) == pytest.approx(quoted, abs=1e-4)
    gap_batch, bt_batch = _scalar_batch(eps)
    difference = lambda params, seqs: params["g"][seqs["y"]] - params["g"][seqs["ref"]]  # noqa: E731
    assert _train_scalar("pit_gap_reward", difference, gap_batch) == pytest.approx(quoted, abs=2e-3)
    plain = lambda params, seqs: params["g"][seqs["y"]]  # noqa: E731
    assert np.log((1 - eps) / eps) == pytest.approx(bradley_terry, abs=1e-4)
    assert _train_scalar("bt_reward", plain, bt_batch) == pytest.approx(bradley_terry, abs=2e-3)


def test_bradley_terry_loss_matches_numpy():
    rw, rl = _random_r(5)[:2]
    loss, metrics = bradley_terry_loss(rw, rl)
    np.testing.assert_allclose(loss, np.mean(np.logaddexp(0.0, -(rw - rl))), rtol=1e-5)
    np.testing.assert_allclose(metrics["pair_accuracy"], np.mean(rw > rl), rtol=1e-6)


def test_tabular_gap_reward_learns_the_ordering():
    """Three responses with quality 2 > 1 > 0; noisy pairs (15% flipped) train a free table r[y, y_ref]
    through the real step. On a fresh held-out sample of pairs, for every pair with q(a) > q(b):
    r(a,b) > r(a,a), r(b,b) > r(b,a) and r(a,b) > r(b,a)."""
    quality = np.array([0, 1, 2])
    tx = optax.adam(optax.cosine_decay_schedule(0.1, 150, alpha=0.05))
    state = create_train_state({"table": jnp.zeros((3, 3))}, tx)
    table_fn = lambda params, seqs: params["table"][seqs["y"], seqs["ref"]]  # noqa: E731
    step = methods.get_loss("pit_gap_reward").make_step(table_fn, tx)

    def noisy_pairs(rng, n):
        a, b = rng.choice(3, size=(2, n))
        a, b = a[a != b], b[a != b]
        w, l = np.where(quality[a] > quality[b], a, b), np.where(quality[a] > quality[b], b, a)
        flip = rng.random(w.size) < 0.15
        w, l = np.where(flip, l, w), np.where(flip, w, l)
        side = lambda y, ref: {"y": jnp.asarray(y, jnp.int32), "ref": jnp.asarray(ref, jnp.int32)}  # noqa: E731
        return {"wl": side(w, l), "ww": side(w, w), "ll": side(l, l), "lw": side(l, w)}, flip

    rng = np.random.default_rng(0)
    for _ in range(150):
        batch, _ = noisy_pairs(rng, 256)
        batch = jax.tree.map(lambda x: x[:128], batch)
        state, _ = step(state, None, batch)
    r = np.asarray(state.params["table"])
    held_out, flip = noisy_pairs(np.random.default_rng(99), 2000)
    w, l = np.asarray(held_out["wl"]["y"]), np.asarray(held_out["wl"]["ref"])
    a, b = np.where(flip, l, w), np.where(flip, w, l)  # the truly better and worse response of each pair
    assert np.all(r[a, b] > r[a, a]) and np.all(r[b, b] > r[b, a]) and np.all(r[a, b] > r[b, a])
    # Accuracy on the noisy held-out labels is the fraction of unflipped labels.
    assert np.mean(r[w, l] > r[l, w]) == pytest.approx(1 - flip.mean(), abs=1e-12)
