"""sft_step on a tabular policy: the contract, exact gradient accumulation, the safety stop, frozen
parameters, and SFT-Sharpening converging to the argmax of the base policy."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from sharpen_jax.methods import get_loss
from sharpen_jax.selection import best_of_n
from sharpen_jax.training import create_train_state, grad_accum

X, Y = 3, 6


def make_sft_step(logprob_fn, tx, **step_kwargs):
    """The registered "sft" loss through the one train step, as step(state, batch) for these tests."""
    step = get_loss("sft").make_step(logprob_fn, tx, **step_kwargs)
    return lambda state, batch: step(state, None, batch)


def tabular_logprob_fn(params, seqs):
    """log softmax(logits[x])[y], one token per sequence."""
    logp_BY = jax.nn.log_softmax(params["logits"][seqs["x"]], axis=-1)
    logp_B = jnp.take_along_axis(logp_BY, seqs["y"][:, None], axis=-1)[:, 0]
    return logp_B, jnp.ones_like(logp_B)


def lengthy_logprob_fn(params, seqs):
    """Like the tabular policy but each y counts y + 1 tokens, so micro-batch token counts differ."""
    logp_B, _ = tabular_logprob_fn(params, seqs)
    return logp_B, (seqs["y"] + 1).astype(jnp.float32)


def _base_logits(seed=0):
    return jax.random.normal(jax.random.key(seed), (X, Y)) * 1.5


def _batch(seed, n=24):
    rng = np.random.default_rng(seed)
    return {"seqs": {"x": rng.integers(0, X, n).astype(np.int32), "y": rng.integers(0, Y, n).astype(np.int32)},
            "weight": rng.uniform(0.5, 2.0, n).astype(np.float32)}


def test_sft_step_matches_direct_gradient_descent():
    logits = _base_logits()
    tx = optax.sgd(0.1)
    state = create_train_state({"logits": logits}, tx)
    batch = _batch(1)
    step = make_sft_step(tabular_logprob_fn, tx)
    new_state, metrics = step(state, batch)

    x, y, w = batch["seqs"]["x"], batch["seqs"]["y"], batch["weight"]
    probs = np.asarray(jax.nn.softmax(logits, -1), np.float64)
    expected_loss = -np.sum(w * np.log(probs[x, y])) / w.sum()
    grad = np.zeros((X, Y))
    for xi, yi, wi in zip(x, y, w):  # d(-log p_y)/d logits = p - onehot(y)
        grad[xi] += wi * (probs[xi] - np.eye(Y)[yi])
    grad /= w.sum()
    np.testing.assert_allclose(metrics["loss"], expected_loss, rtol=1e-5)
    np.testing.assert_allclose(new_state.params["logits"], np.asarray(logits) - 0.1 * grad, atol=1e-6)
    assert int(new_state.step) == 1 and bool(metrics["finite"])
    np.testing.assert_allclose(metrics["grad_norm"], np.linalg.norm(grad), rtol=1e-5)


def _direct_lengthy_gradient(logits, batch):
    """numpy oracle: d/dlogits of -sum_i w_i log p(y_i|x_i) / sum_i w_i (y_i + 1) (lengthy_logprob_fn)."""
    x, y, w = batch["seqs"]["x"], batch["seqs"]["y"], batch["weight"].astype(np.float64)
    probs = np.asarray(jax.nn.softmax(np.asarray(logits, np.float64), -1))
    grad = np.zeros((X, Y))
    for xi, yi, wi in zip(x, y, w):
        grad[xi] += wi * (probs[xi] - np.eye(Y)[yi])
    return grad / np.sum(w * (y + 1))


@pytest.mark.parametrize("clip", [0.05, 100.0])
def test_gradient_accumulation_equals_full_batch(clip):
    """SGD after clip_by_global_norm (the experiments' optimizer chain; the gradient norm is 0.099, so
    clip 0.05 is active and 100 is not):
    1 and 4 micro-batches give the direct gradient's norm and the same update. Under SGD the update is
    -lr * clip(g), so a gradient off by a constant factor moves the parameters or grad_norm visibly
    (Adam's first update, ~lr sign(g), would hide it)."""
    lr = 0.5
    tx = optax.chain(optax.clip_by_global_norm(clip), optax.sgd(lr))
    batch = _batch(2, n=32)
    logits = _base_logits()
    grad = _direct_lengthy_gradient(logits, batch)
    norm = np.linalg.norm(grad)
    expected = np.asarray(logits, np.float64) - lr * grad * min(1.0, clip / norm)
    assert (norm > clip) == (clip < 1)  # the clip is active in one case and not in the other
    for accum in (1, 4):
        state = create_train_state({"logits": logits}, tx)
        step = make_sft_step(lengthy_logprob_fn, tx, grad_accum_steps=accum)
        state, metrics = step(state, batch)
        np.testing.assert_allclose(metrics["grad_norm"], norm, rtol=1e-5)
        np.testing.assert_allclose(state.params["logits"], expected, atol=1e-6)
        # grad_accum on its own: the accumulated gradient itself equals the oracle.
        loss_fn = lambda p, b: get_loss("sft").build(lengthy_logprob_fn, None)(p, None, b)  # noqa: E731
        grads, _ = grad_accum.accumulate_gradients(loss_fn, {"logits": logits}, batch, accum)
        np.testing.assert_allclose(grads["logits"], grad, atol=1e-6)


def test_non_finite_loss_leaves_state_unchanged():
    tx = optax.adam(0.1)
    state = create_train_state({"logits": _base_logits()}, tx)
    before = np.asarray(state.params["logits"])
    batch = _batch(3)
    batch["weight"][4] = np.nan
    new_state, metrics = make_sft_step(tabular_logprob_fn, tx)(state, batch)
    assert not bool(metrics["finite"])
    np.testing.assert_array_equal(new_state.params["logits"], before)
    assert int(new_state.step) == 0


def test_non_finite_gradient_with_finite_loss_leaves_state_unchanged():
    """sqrt at 0 has a finite value and an infinite derivative: the step must refuse the update."""
    tx = optax.adam(0.1)
    state = create_train_state({"logits": _base_logits(), "kink": jnp.zeros(())}, tx)
    before = jax.tree.map(np.asarray, state.params)

    def kinked_logprob_fn(params, seqs):
        logp, num_tokens = tabular_logprob_fn(params, seqs)
        return logp - jnp.sqrt(params["kink"]), num_tokens

    new_state, metrics = make_sft_step(kinked_logprob_fn, tx)(state, _batch(3))
    assert np.isfinite(float(metrics["loss"])) and not bool(metrics["finite"])
    for name in before:
        np.testing.assert_array_equal(new_state.params[name], before[name])
    assert int(new_state.step) == 0


def test_frozen_parameters_are_read_not_trained():
    base = _base_logits()
    tx = optax.adam(0.1)

    def delta_logprob_fn(params, seqs):
        logits = params["frozen"]["logits"] + params["trainable"]["delta"]
        return tabular_logprob_fn({"logits": logits}, seqs)

    state = create_train_state({"delta": jnp.zeros((X, Y))}, tx, frozen={"logits": base})
    step = make_sft_step(delta_logprob_fn, tx)
    for seed in range(3):
        state, _ = step(state, _batch(seed))
    assert state.frozen["logits"] is base  # not donated, not copied
    assert float(jnp.abs(state.params["delta"]).max()) > 0.1
    chex.assert_trees_all_equal_structs(state.opt_state[0].mu, {"delta": jnp.zeros((X, Y))})


def test_bad_batches_are_rejected_by_name():
    tx = optax.sgd(0.1)
    state = create_train_state({"logits": _base_logits()}, tx)
    step = make_sft_step(tabular_logprob_fn, tx, grad_accum_steps=4)
    with pytest.raises(ValueError, match="'seqs'"):
        step(state, {"x": np.zeros(4, np.int32)})
    with pytest.raises(ValueError, match="0 rows"):
        step(state, {"seqs": {"x": np.zeros(0, np.int32), "y": np.zeros(0, np.int32)}})
    with pytest.raises(ValueError, match=r"\['weight'\] has 3 rows"):
        step(state, {"seqs": {"x": np.zeros(8, np.int32), "y": np.zeros(8, np.int32)},
                     "weight": np.ones(3, np.float32)})
    with pytest.raises(ValueError, match="multiple of 4"):
        step(state, {"seqs": {"x": np.zeros(6, np.int32), "y": np.zeros(6, np.int32)}})


def test_sft_sharpening_with_large_n_converges_to_the_argmax():
    """Best-of-N with the base log-likelihood as self-reward, then maximum likelihood: as N grows the
    selected response is the base argmax, and the trained policy puts its mass there."""
    base = _base_logits(3)
    base_logp = jax.nn.log_softmax(base, -1)
    n, prompts_per_step = 64, 48
    tx = optax.adam(0.1)
    state = create_train_state({"logits": base}, tx)
    step = make_sft_step(tabular_logprob_fn, tx)
    key = jax.random.key(2)
    for _ in range(150):
        key, kx, ky = jax.random.split(key, 3)
        x_P = jax.random.randint(kx, (prompts_per_step,), 0, X)
        y_PN = jax.random.categorical(ky, base[x_P][:, None, :], axis=-1, shape=(prompts_per_step, n))
        reward_PN = base_logp[x_P[:, None], y_PN]
        best_P = best_of_n.select(reward_PN)
        y_P = jnp.take_along_axis(y_PN, best_P[:, None], 1)[:, 0]
        state, _ = step(state, {"seqs": {"x": x_P, "y": y_P}})
    policy = jax.nn.softmax(state.params["logits"], -1)
    argmax = jnp.argmax(base, -1)
    assert float(jnp.min(policy[jnp.arange(X), argmax])) > 0.98
