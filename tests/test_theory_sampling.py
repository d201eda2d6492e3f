"""Samplers, best-of-N and the adaptive sample-size rule against exact probabilities."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sharpen_jax.theory import families, sampling, validation


def test_inverse_cdf_sampler_matches_the_table():
    probs = np.array([[0.5, 0.0, 0.3, 0.2], [0.05, 0.05, 0.0, 0.9]])
    logp = jnp.log(jnp.asarray(probs, jnp.float32))
    y = np.asarray(sampling.sample_responses(jax.random.key(0), logp, jnp.array([0, 1]), 50_000))
    for x in range(2):
        freq = np.bincount(y[x], minlength=4) / 50_000
        bound = 4 * np.sqrt(probs[x] * (1 - probs[x]) / 50_000) + 1e-9
        np.testing.assert_array_less(np.abs(freq - probs[x]), bound)
        # Power: the same 4-sigma bound rejects a table on the same support with 10% of each probability
        # moved between alternate responses (shifts >= 0.018 against a bound <= 0.009).
        support = np.flatnonzero(probs[x])
        wrong = probs[x].copy()
        wrong[support[::2]] *= 1.1
        wrong[support[1::2]] *= 0.9
        wrong /= wrong.sum()
        assert np.any(np.abs(freq - wrong) > bound), (freq, wrong)
    assert not np.any(y[0] == 1) and not np.any(y[1] == 2)   # zero-probability responses never drawn


def test_best_of_n_grid_is_the_best_of_the_first_n_samples():
    problem = families.random_autoregressive_problem(jax.random.key(1), 3, 2, 4, scale=0.5)
    logp = problem.base_logp_XY
    x_B = jnp.array([0, 1, 2, 2])
    sizes = (1, 3, 10, 40)
    key = jax.random.key(2)
    winners = np.asarray(sampling.best_of_n_along_grid(key, logp, logp, x_B, sizes))
    draws = np.asarray(sampling.sample_responses(key, logp, x_B, 40))   # the same stream
    rewards = np.asarray(logp)[np.asarray(x_B)[:, None], draws]
    for g, n in enumerate(sizes):
        np.testing.assert_array_equal(winners[g], draws[np.arange(4), np.argmax(rewards[:, :n], axis=1)])


def test_best_of_n_success_rate_is_one_minus_one_minus_p_to_the_n():
    scan = validation.best_of_n_scan(jax.random.key(3), [0.4, 0.05, 0.01], (1, 5, 20, 100), num_trials=2000)
    p_PG, n_PG = np.meshgrid(scan["target_prob"], scan["sample_sizes"], indexing="ij")
    np.testing.assert_allclose(scan["exact"], 1 - (1 - p_PG) ** n_PG, rtol=1e-6)
    z = np.abs(scan["success_rate"] - scan["exact"]) / np.maximum(scan["standard_error"], 1 / 2000)
    assert z.max() < 4.5
    # Power: the same 4.5-s.e. test rejects the success rates of a target mass 20% smaller, 0.8 p.
    z_wrong = np.abs(scan["success_rate"] - (1 - (1 - 0.8 * p_PG) ** n_PG)) / scan["standard_error"]
    assert z_wrong.max() > 4.5, z_wrong
    bound = math.ceil(math.log(1 / 0.1) / 0.05)   # N >= log(1/rho)/p gives success >= 1 - rho
    rate = validation.best_of_n_scan(jax.random.key(4), [0.05], (bound,), num_trials=4000)["success_rate"][0, 0]
    assert rate >= 0.9 - 3 * math.sqrt(0.09 / 4000)


@pytest.mark.parametrize("delta", [0.05, 0.3])
def test_adaptive_rule_misses_rarely_and_stops_after_mu_over_p(delta):
    p_X = np.array([0.3, 0.05, 0.01])
    problem = families.target_mass_problem(p_X, 128)
    repeats = 1000
    x_B = jnp.tile(jnp.arange(3), repeats)
    out = sampling.adaptive_sample_sizes(jax.random.key(5), problem.base_logp_XY, x_B, delta, 2048)
    n_B = np.asarray(out["num_samples"]).reshape(repeats, 3)
    miss = np.asarray(out["best"] != problem.y_star_X[x_B]).reshape(repeats, 3)
    mu = math.log(2 / delta)
    assert not np.any(out["truncated"])
    # It never stops before mu / p(x) samples, and on average not much after (mu + 1) / p(x).
    assert np.all(n_B >= np.ceil(mu / p_X) - 1)
    assert np.all(n_B.mean(0) <= (mu + 1) / p_X + 1)
    # Stopping without y* needs more than mu / p(x) misses in a row: probability <= delta / 2.
    assert np.all(miss.mean(0) <= delta / 2 + 3 * math.sqrt(delta / 2 / repeats))


def test_sampler_inputs_are_checked():
    with pytest.raises(ValueError, match="logp_XY"):
        sampling.sample_responses(jax.random.key(0), jnp.log(jnp.array([[0.6, 0.6]])), jnp.array([0]), 3)
    with pytest.raises(ValueError, match="sample_sizes"):
        sampling.best_of_n_along_grid(jax.random.key(0), jnp.log(jnp.array([[0.5, 0.5]])),
                                      jnp.zeros((1, 2)), jnp.array([0]), (0, 2))
    with pytest.raises(ValueError, match="delta"):
        sampling.adaptive_sample_sizes(jax.random.key(0), jnp.log(jnp.array([[0.5, 0.5]])), jnp.array([0]), 0.0, 4)
