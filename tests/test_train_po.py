"""po_step on an enumerable problem: a tabular policy over X prompts and Y responses whose
probabilities are exact. With the self-reward r = log pi_base the KL-regularized optimum is
pi*_beta ∝ pi_base^(1 + 1/beta); the losses trained with the real step must reach it."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from sharpen_jax.methods import get_loss
from sharpen_jax.training import create_train_state

X, Y = 3, 6


def make_po_step(logprob_fn, tx, *, loss, **kwargs):
    """The registered policy-optimization `loss` through the one train step; of the keyword arguments,
    those the loss entry takes are its hyperparameters, beta/alpha/group_size it does not take are
    dropped, and the rest go to the step."""
    entry = get_loss(loss)
    names = ("beta", "alpha", "group_size")
    hyperparameters = {k: v for k, v in kwargs.items() if k in entry.hyperparameters}
    step_kwargs = {k: v for k, v in kwargs.items() if k not in names}
    return entry.make_step(logprob_fn, tx, hyperparameters=hyperparameters, **step_kwargs)


def tabular_logprob_fn(params, seqs):
    """log softmax(logits[x])[y], one token per sequence."""
    logp_BY = jax.nn.log_softmax(params["logits"][seqs["x"]], axis=-1)
    logp_B = jnp.take_along_axis(logp_BY, seqs["y"][:, None], axis=-1)[:, 0]
    return logp_B, jnp.ones_like(logp_B)


def _base():
    logits = jax.random.normal(jax.random.key(7), (X, Y)) * 1.2
    return {"logits": logits}, jax.nn.log_softmax(logits, -1)


def sharpened(base_logp, beta):
    """pi*_beta ∝ pi_base^(1 + 1/beta), computed in closed form."""
    return jax.nn.softmax((1 + 1 / beta) * base_logp, -1)


def total_variation(p, q):
    return float(jnp.max(0.5 * jnp.sum(jnp.abs(p - q), -1)))


TV_TOLERANCE = 0.02


def assert_tolerance_separates(base_logp, beta):
    """Negative controls for `TV < TV_TOLERANCE` to pi*_beta: pi_base (where training starts) and the
    sharpened policies of beta off by a factor of 2 either way (a mis-scaled beta or log-ratio) all lie
    more than 3 tolerances from pi*_beta (measured: 0.083 at the least, for beta = 0.5 against 0.25)."""
    target = sharpened(base_logp, beta)
    for wrong in (jnp.exp(base_logp), sharpened(base_logp, 2 * beta), sharpened(base_logp, beta / 2)):
        assert total_variation(wrong, target) > 3 * TV_TOLERANCE


def _pairs(key, logits_a, logits_b, base_logp, n):
    kx, ka, kb = jax.random.split(key, 3)
    x = jax.random.randint(kx, (n,), 0, X)
    a = jax.random.categorical(ka, logits_a[x])
    b = jax.random.categorical(kb, logits_b[x])
    return {"a": {"x": x, "y": a}, "b": {"x": x, "y": b},
            "reward_a": base_logp[x, a], "reward_b": base_logp[x, b]}


def _train_pairs(loss, beta, steps, alpha=0.0, on_policy_a=False, lr=0.05):
    base, base_logp = _base()
    tx = optax.adam(optax.linear_schedule(lr, lr * 0.05, steps))
    state = create_train_state(base, tx)
    step = make_po_step(tabular_logprob_fn, tx, loss=loss, beta=beta, alpha=alpha)
    for t in range(steps):
        logits_a = state.params["logits"] if on_policy_a else base["logits"]
        batch = _pairs(jax.random.fold_in(jax.random.key(0), t), logits_a, base["logits"], base_logp, 256)
        state, metrics = step(state, base, batch)
    assert bool(metrics["finite"])
    return jax.nn.softmax(state.params["logits"], -1), base_logp, state


@pytest.mark.parametrize("beta", [0.5, 2.0])
def test_reward_dpo_converges_to_sharpened_policy(beta):
    policy, base_logp, state = _train_pairs("reward_dpo", beta, steps=300)
    assert total_variation(policy, sharpened(base_logp, beta)) < TV_TOLERANCE
    assert_tolerance_separates(base_logp, beta)
    assert int(state.step) == 300


def test_xpo_without_exploration_bonus_reaches_the_same_optimum():
    """Algorithm 1 with y ~ pi (current policy), y' ~ pi_base and alpha = 0: the squared loss is still
    realizable by pi*_beta, so the iterate converges there."""
    policy, base_logp, _ = _train_pairs("xpo", 1.0, steps=300, on_policy_a=True)
    assert total_variation(policy, sharpened(base_logp, 1.0)) < TV_TOLERANCE
    assert_tolerance_separates(base_logp, 1.0)


def test_xpo_exploration_bonus_moves_mass_off_base_samples():
    with_bonus, base_logp, _ = _train_pairs("xpo", 1.0, steps=150, alpha=0.5, on_policy_a=True)
    without, _, _ = _train_pairs("xpo", 1.0, steps=150, alpha=0.0, on_policy_a=True)
    base_p = jnp.exp(base_logp)
    # alpha * E_base[log pi] is minimized: the bonus policy is less likely on base samples.
    assert float(jnp.sum(base_p * jnp.log(with_bonus))) < float(jnp.sum(base_p * jnp.log(without))) - 0.05


def test_online_dpo_sharpens_toward_the_base_argmax():
    policy, base_logp, _ = _train_pairs("online_dpo", 1.0, steps=100)
    idx = (jnp.arange(X), jnp.argmax(base_logp, -1))
    assert float(jnp.min(policy[idx] - jnp.exp(base_logp)[idx])) > 0.1


def test_kl_policy_gradient_converges_to_sharpened_policy():
    beta, groups, k, steps = 1.0, 96, 8, 400
    base, base_logp = _base()
    tx = optax.adam(optax.linear_schedule(0.05, 0.0, steps))
    state = create_train_state(base, tx)
    step = make_po_step(tabular_logprob_fn, tx, loss="kl_pg", beta=beta, group_size=k, grad_accum_steps=2)
    metric_kl, expected_kl, variance, last = [], [], [], 50
    for t in range(steps):
        kx, ky = jax.random.split(jax.random.fold_in(jax.random.key(1), t))
        x = jnp.repeat(jax.random.randint(kx, (groups,), 0, X), k)
        sampling_logits = np.asarray(state.params["logits"], np.float64)  # the policy that draws this batch
        y = jax.random.categorical(ky, state.params["logits"][x])
        batch = {"seqs": {"x": x, "y": y}, "reward": base_logp[x, y]}
        state, metrics = step(state, base, batch)
        if t >= steps - last:
            # Given the prompts, the batch's KL metric (mean of log pi/pi_base over its 768 samples of the
            # policy that drew them) has mean avg_i KL(pi(.|x_i) || pi_base(.|x_i)) and an exact variance.
            logp_XY = sampling_logits - np.logaddexp.reduce(sampling_logits, axis=-1, keepdims=True)
            ratio_XY = logp_XY - np.asarray(base_logp, np.float64)
            kl_X = np.sum(np.exp(logp_XY) * ratio_XY, -1)
            var_X = np.sum(np.exp(logp_XY) * ratio_XY**2, -1) - kl_X**2
            xs = np.asarray(x)
            metric_kl.append(float(metrics["kl"]))
            expected_kl.append(kl_X[xs].mean())
            variance.append(var_X[xs].sum() / xs.size**2)
            reverse = np.sum(np.exp(np.asarray(base_logp, np.float64)) * -ratio_XY, -1)[xs].mean()
    policy = jax.nn.softmax(state.params["logits"], -1)
    assert total_variation(policy, sharpened(base_logp, beta)) < TV_TOLERANCE
    assert_tolerance_separates(base_logp, beta)
    # The KL estimate over the last 50 batches is within 4 standard errors (from the exact variances) of
    # its exact mean; 4 s.e. is about 6% of the KL, so a 25% error in the estimate fails.
    got, expected, se = np.mean(metric_kl), np.mean(expected_kl), np.sqrt(np.sum(variance)) / last
    assert abs(got - expected) < 4 * se, (got, expected, se)
    assert 4 * se < 0.1 * expected  # the check has power
    # Negative control: the reverse divergence KL(pi_base || pi) is a wrong answer the tolerance rejects.
    assert abs(got - reverse) > 4 * se, (got, reverse, se)


def test_reference_is_separate_and_untouched():
    base, base_logp = _base()
    tx = optax.sgd(0.5)
    state = create_train_state(base, tx)
    step = make_po_step(tabular_logprob_fn, tx, loss="reward_dpo", beta=1.0)
    batch = _pairs(jax.random.key(3), base["logits"], base["logits"], base_logp, 64)
    state, metrics = step(state, base, batch)
    # At pi = pi_base the log-ratios vanish, so the first loss is the mean squared reward gap.
    gap = batch["reward_a"] - batch["reward_b"]
    np.testing.assert_allclose(metrics["loss"], jnp.mean(gap**2), rtol=1e-5)
    np.testing.assert_array_equal(base["logits"], _base()[0]["logits"])
    assert float(jnp.abs(state.params["logits"] - base["logits"]).max()) > 0
    assert int(state.step) == 1  # the update was applied and counted


def test_bad_po_batches_are_rejected_by_name():
    base, _ = _base()
    tx = optax.sgd(0.1)
    state = create_train_state(base, tx)
    with pytest.raises(ValueError, match="loss='ppo'"):
        make_po_step(tabular_logprob_fn, tx, loss="ppo", beta=1.0)
    with pytest.raises(ValueError, match="beta"):
        make_po_step(tabular_logprob_fn, tx, loss="kl_pg", beta=0.0)
    with pytest.raises(ValueError, match="group_size"):
        make_po_step(tabular_logprob_fn, tx, loss="kl_pg", beta=1.0)
    pg = make_po_step(tabular_logprob_fn, tx, loss="kl_pg", beta=1.0, group_size=4)
    seqs = {"x": jnp.zeros(6, jnp.int32), "y": jnp.zeros(6, jnp.int32)}
    with pytest.raises(ValueError, match="multiple of 4"):
        pg(state, base, {"seqs": seqs, "reward": jnp.zeros(6)})
    dpo = make_po_step(tabular_logprob_fn, tx, loss="reward_dpo", beta=1.0)
    with pytest.raises(ValueError, match="reward_b"):
        dpo(state, base, {"a": seqs, "b": seqs, "reward_a": jnp.zeros(6)})
