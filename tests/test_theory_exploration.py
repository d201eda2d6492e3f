"""The exploration separation (issue 16): reward-DPO grows like C_cov on the prefix lock and XPO does not;
the same assertions fail on the bit-agreement family, where reward-DPO stays flat.

Oracles: the autoregressive lock's probabilities written out in numpy, enumeration of the normalizer,
autodiff of the registered loss, and the derivation's floor (reward-DPO cannot be sharpened before
pi_base has drawn y*), checked seed by seed.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bad_inputs_lib import Case, check_case, ids
from sharpen_jax.methods import get_loss
from sharpen_jax.theory import exploration, families
from sharpen_jax.theory.rlhf_sharpening import RlhfConfig


def _lock_probs_numpy(keys_XH, horizon, vocab, q):
    """pi_base(y|x) of the autoregressive lock from its definition: depth k = matching leading tokens,
    pi = q^k (1-q)/(V-1) V^-(H-k-1) for k < H and q^H for the key."""
    ids_Y = np.arange(vocab ** horizon)
    tokens_YH = (ids_Y[:, None] // vocab ** np.arange(horizon - 1, -1, -1)[None, :]) % vocab
    match_XYH = tokens_YH[None] == keys_XH[:, None, :]
    depth_XY = np.cumprod(match_XYH, axis=-1).sum(-1)
    probs = q ** depth_XY * (1 - q) / (vocab - 1) * float(vocab) ** (-(horizon - depth_XY - 1.0))
    return np.where(depth_XY == horizon, q ** horizon, probs)


@pytest.mark.parametrize("horizon,vocab,q", [(5, 2, 0.7), (4, 3, 0.45)])
def test_prefix_lock_is_the_autoregressive_lock(horizon, vocab, q):
    problem = families.prefix_lock_problem(horizon, q, vocab, num_prompts=4, seed=3)
    y_star_X = np.asarray(problem.y_star_X)
    keys_XH = (y_star_X[:, None] // vocab ** np.arange(horizon - 1, -1, -1)[None, :]) % vocab
    expected_XY = _lock_probs_numpy(keys_XH, horizon, vocab, q)
    np.testing.assert_allclose(expected_XY.sum(-1), 1.0, rtol=1e-12)
    np.testing.assert_allclose(np.exp(np.asarray(problem.base_logp_XY)), expected_XY, rtol=2e-5, atol=1e-7)
    np.testing.assert_allclose(problem.c_cov, q ** -horizon, rtol=1e-4)
    phi_XYH = np.asarray(problem.policy.features_XYD())
    assert np.all(phi_XYH[:, :, -1].sum(-1) == 1) and np.all(phi_XYH[np.arange(4), y_star_X, -1] == 1)
    # the closed-form log Z of logprob_fn against enumeration, at a random theta
    params = problem.policy.params_from_theta(jax.random.normal(jax.random.key(0), (horizon,)) * 2)
    x_B, y_B = jnp.repeat(jnp.arange(4), 7), jax.random.randint(jax.random.key(1), (28,), 0, vocab ** horizon)
    logp_B, _ = problem.policy.logprob_fn(params, problem.policy.seqs(x_B, y_B))
    np.testing.assert_allclose(logp_B, problem.policy.logprobs_XY(params)[x_B, y_B], rtol=1e-5, atol=1e-5)


def test_prefix_lock_rejects_a_key_that_is_not_the_argmax():
    with pytest.raises(ValueError, match=r"agree_prob=0.5: expected 1/V = 0.5 < q < 1"):
        families.prefix_lock_problem(4, 0.5, 2)


def test_without_y_star_no_reward_dpo_pair_moves_theta_H_and_then_pi_y_star_is_at_most_q():
    """The derivation's two steps, by autodiff of the registered losses and by enumeration."""
    horizon, q, beta = 6, 0.65, 0.05
    problem = families.prefix_lock_problem(horizon, q, 2, num_prompts=3)
    policy, base = problem.policy, problem.base_params
    x_B = jnp.array([0, 1, 2, 0, 1, 2])
    a_B = jnp.array([0, 5, 17, 40, 63, 2]) % 64
    b_B = (a_B + 9) % 64
    assert not np.any((a_B == problem.y_star_X[x_B]) | (b_B == problem.y_star_X[x_B]))
    batch = {"a": policy.seqs(x_B, a_B), "b": policy.seqs(x_B, b_B),
             "reward_a": problem.base_logp_XY[x_B, a_B], "reward_b": problem.base_logp_XY[x_B, b_B]}
    moved = {"theta": base["theta"] + jnp.linspace(-1.0, 2.0, horizon)}
    dpo = get_loss("reward_dpo").build(policy.logprob_fn, policy.logprob_fn, beta=beta)
    dpo_grad = jax.jit(jax.grad(lambda p, b: dpo(p, base, b)[0]))
    grad_H = np.asarray(dpo_grad(moved, batch)["theta"])
    phi = policy.feature_fn
    differs_H = np.any(np.asarray(phi(x_B, a_B) != phi(x_B, b_B)), axis=0)   # levels some pair tells apart
    assert not differs_H[-1] and differs_H[0]
    # zero where no pair tells the level apart: log Z cancels analytically, so up to float rounding
    scale = np.abs(grad_H).max()
    assert np.all(np.abs(grad_H[~differs_H]) <= 1e-6 * scale) and np.all(np.abs(grad_H[differs_H]) > 1e-3 * scale)
    xpo = get_loss("xpo").build(policy.logprob_fn, policy.logprob_fn, beta=beta, alpha=0.01)
    assert jax.jit(jax.grad(lambda p: xpo(p, base, batch)[0]))(moved)["theta"][-1] < 0   # optimism raises theta_H
    with_key = dict(batch, a=policy.seqs(x_B, a_B.at[0].set(problem.y_star_X[0])),
                    reward_a=batch["reward_a"].at[0].set(problem.base_logp_XY[0, problem.y_star_X[0]]))
    assert abs(dpo_grad(moved, with_key)["theta"][-1]) > 1e-3 * scale
    # theta_H at its base value: pi(y*) = q * pi(first H-1 tokens right) <= q, whatever theta_<H
    phi_XYH = np.asarray(policy.features_XYD())
    for shift in (0.0, 3.0, 30.0):
        theta = base["theta"].at[:-1].add(shift)
        probs_XY = np.exp(np.asarray(policy.logprobs_XY({"theta": theta}), np.float64))
        prefix_X = (probs_XY * phi_XYH[:, :, -2]).sum(-1)
        np.testing.assert_allclose(probs_XY[np.arange(3), problem.y_star_X], q * prefix_X, rtol=1e-4)


@pytest.fixture(scope="module")
def lock():
    """The full-size sweep (slow); notebook 6 asserts the same claim and floor at small size in the default
    suite (tests/test_notebooks.py runs it)."""
    return exploration.exploration_sweep(exploration.EXPLORATION_PRESETS["full"], jax.random.key(0))


@pytest.fixture(scope="module")
def control():
    return exploration.exploration_sweep(exploration.EXPLORATION_PRESETS["control_small"], jax.random.key(0))


@pytest.mark.slow
def test_reward_dpo_grows_with_c_cov_and_xpo_does_not(lock):
    verdict = exploration.check_claim(lock)
    assert lock["c_cov"][-1] / lock["c_cov"][0] > 50
    assert verdict["reward_dpo_slope"] >= 0.7, verdict
    assert verdict["xpo_slope"] <= 0.3, verdict


@pytest.mark.slow
def test_xpo_needs_5x_fewer_samples_than_reward_dpo_at_the_largest_c_cov(lock):
    assert math.isfinite(lock["xpo"]["median"][-1]) and math.isfinite(lock["reward_dpo"]["median"][-1])
    assert lock["ratio"][-1] >= 5, lock["ratio"]
    assert exploration.check_claim(lock)["held"]


@pytest.mark.slow
def test_reward_dpo_is_never_sharpened_before_pi_base_draws_y_star(lock):
    dpo = lock["reward_dpo"]
    assert np.all(dpo["per_seed"] >= dpo["first_target_draw"]), (dpo["per_seed"], dpo["first_target_draw"])
    # the floor itself is a geometric wait of mean C_cov: its median is ln 2 C_cov within sampling error
    floor_C = np.median(dpo["first_target_draw"], axis=1)
    assert np.all((floor_C > 0.15 * lock["c_cov"]) & (floor_C < 3.0 * lock["c_cov"])), (floor_C, lock["c_cov"])


def test_the_same_assertions_fail_on_the_bit_agreement_family(control):
    """Falsifiability: where the class extrapolates, reward-DPO escapes C_cov and the claim must not hold."""
    verdict = exploration.check_claim(control)
    assert not verdict["held"], verdict
    assert not verdict["checks"]["reward_dpo_slope"] and not verdict["checks"]["ratio"], verdict


def test_reward_dpo_stays_flat_in_c_cov_on_the_bit_agreement_family(control):
    assert np.all(np.isfinite(control["reward_dpo"]["median"]))
    assert control["reward_dpo"]["slope"] <= 0.3, control["reward_dpo"]
    assert np.all(control["reward_dpo"]["median"] < 0.5 * control["c_cov"][-1])


BAD_CONFIGS = [
    Case("family", lambda _: exploration.ExplorationSweepConfig(family="tabular"), ValueError,
         r"family='tabular'; expected one of \('prefix_lock', 'bit_agreement'\)"),
    Case("one-c-cov", lambda _: exploration.ExplorationSweepConfig(c_covs=(5.0,)), ValueError,
         r"c_covs=\(5.0,\): expected at least two increasing values > 1"),
    Case("c-cov-below-1", lambda _: exploration.ExplorationSweepConfig(c_covs=(0.5, 4.0)), ValueError,
         r"c_covs=\(0.5, 4.0\)"),
    Case("c-cov-too-large", lambda _: exploration.ExplorationSweepConfig(horizon=4, c_covs=(4.0, 64.0)), ValueError,
         r"c_covs: the largest, 64, needs q = C_cov\^\(-1/H\) = 0.354 > 0.5 .*horizon=4"),
    Case("bit-agreement-vocab", lambda _: exploration.ExplorationSweepConfig(family="bit_agreement", vocab_size=3),
         ValueError, r"vocab_size=3: the bit-agreement family has binary responses"),
    Case("dpo-on-policy", lambda _: exploration.ExplorationSweepConfig(
        reward_dpo=RlhfConfig(loss="reward_dpo", on_policy=True)), ValueError,
         r"reward_dpo=\('reward_dpo', on_policy=True\): expected .* on pairs from pi_base"),
    Case("one-seed", lambda _: exploration.ExplorationSweepConfig(num_seeds=1), ValueError,
         r"num_seeds=1.*expected >= 2 seeds"),
]


@pytest.mark.parametrize("case", BAD_CONFIGS, ids=ids(BAD_CONFIGS))
def test_bad_sweep_configs_are_rejected_before_any_step(case, tmp_path, monkeypatch):
    check_case(case, tmp_path, monkeypatch)
