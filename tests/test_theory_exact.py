"""Closed forms of the sharpening paper against direct computation, and bad input."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from sharpen_jax.theory import exact, families, validation
from sharpen_jax.theory.policies import TabularPolicyClass
from sharpen_jax.theory.rlhf_sharpening import RlhfConfig


def _random_base(seed, num_prompts=4, num_responses=9, scale=1.5):
    logits = scale * np.random.default_rng(seed).normal(size=(num_prompts, num_responses))
    return jax.nn.log_softmax(jnp.asarray(logits, jnp.float32))


@pytest.mark.parametrize("beta", [0.1, 0.5, 2.0])
def test_sharpened_policy_is_the_direct_optimum(beta):
    base_logp = _random_base(0)
    closed = exact.sharpened_logprobs(base_logp, beta)
    direct = validation.solve_kl_regularized(base_logp, beta)
    np.testing.assert_allclose(np.exp(direct), np.exp(closed), atol=1e-6)
    j_closed = exact.kl_regularized_objective(closed, base_logp, beta)
    j_direct = exact.kl_regularized_objective(direct.astype(np.float32), base_logp, beta)
    np.testing.assert_allclose(j_closed, j_direct, rtol=1e-5)
    np.testing.assert_allclose(j_closed, exact.optimal_kl_regularized_value(base_logp, beta), rtol=1e-5)
    # The closed form is pi_base^(1 + 1/beta), not pi_base and not the argmax.
    assert np.abs(np.exp(closed) - np.exp(base_logp)).max() > 1e-2


def test_direct_optimum_with_an_external_reward():
    base_logp = _random_base(1)
    reward = jnp.asarray(np.random.default_rng(2).normal(size=base_logp.shape), jnp.float32)
    direct = validation.solve_kl_regularized(base_logp, 0.7, reward_XY=reward)
    expected = jax.nn.log_softmax(base_logp + reward / 0.7)
    np.testing.assert_allclose(np.exp(direct), np.exp(expected), atol=1e-6)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), beta=st.floats(0.05, 5.0), mix=st.floats(0.01, 1.0))
def test_no_policy_beats_the_closed_form(seed, beta, mix):
    base_logp = _random_base(seed % 97, 2, 6)
    closed = exact.sharpened_logprobs(base_logp, beta)
    other_p = np.random.default_rng(seed).dirichlet(np.ones(6), size=2)
    candidate = jnp.log((1 - mix) * jnp.exp(closed) + mix * jnp.asarray(other_p, jnp.float32))
    assert np.all(exact.kl_regularized_objective(closed, base_logp, beta)
                  >= exact.kl_regularized_objective(candidate, base_logp, beta) - 1e-5)


def test_coverage_target_and_sharpness_on_known_tables():
    probs = np.array([[0.5, 0.3, 0.2], [0.1, 0.1, 0.8]])
    logp = jnp.log(jnp.asarray(probs, jnp.float32))
    np.testing.assert_array_equal(exact.target_responses(logp), [0, 2])
    np.testing.assert_allclose(exact.coverage_coefficient(logp), (2.0 + 1.25) / 2, rtol=1e-6)
    np.testing.assert_allclose(exact.coverage_coefficient(logp, jnp.array([0.25, 0.75])), 0.5 + 0.75 * 1.25, rtol=1e-6)
    policy = jnp.log(jnp.asarray([[0.95, 0.04, 0.01], [0.2, 0.0, 0.8]], jnp.float32))
    y_star = jnp.array([0, 2])
    assert float(exact.sharpness(policy, y_star, 0.1)) == 0.5
    assert float(exact.sharpness(policy, y_star, 0.25)) == 1.0
    assert bool(exact.is_sharpened(policy, y_star, eps=0.6, delta=0.1))
    assert not bool(exact.is_sharpened(policy, y_star, eps=0.4, delta=0.1))


@pytest.mark.parametrize("c_cov", [3.0, 17.0, 100.0])
def test_spiked_family_has_the_requested_coverage(c_cov):
    problem = families.spiked_problem(c_cov, num_prompts=8, num_responses=512)
    np.testing.assert_allclose(problem.c_cov, c_cov, rtol=1e-5)
    np.testing.assert_array_equal(problem.y_star_X, np.arange(8))


def test_kl_divergence_known_values():
    p = jnp.log(jnp.array([[0.5, 0.5], [1.0, 0.0]]))
    q = jnp.log(jnp.array([[0.25, 0.75], [0.5, 0.5]]))
    expected = [0.5 * math.log(2) + 0.5 * math.log(2 / 3), math.log(2)]
    np.testing.assert_allclose(exact.kl_divergence(p, q), expected, rtol=1e-6)
    np.testing.assert_allclose(exact.kl_divergence(q, q), [0.0, 0.0], atol=1e-7)


@settings(max_examples=40, deadline=None)
@given(p=st.floats(1e-3, 0.9), rho=st.floats(1e-3, 0.5))
def test_best_of_n_bound_suffices(p, rho):
    n = int(exact.best_of_n_sufficient_samples(p, rho))
    assert float(exact.best_of_n_success_probability(p, n)) >= 1 - rho - 1e-6
    np.testing.assert_allclose(exact.best_of_n_success_probability(p, 3), 1 - (1 - p) ** 3, rtol=1e-5)


def test_best_of_n_bound_is_tight_for_small_mass():
    p, rho = 1e-3, 0.05
    half = int(exact.best_of_n_sufficient_samples(p, rho)) // 2
    assert float(exact.best_of_n_success_probability(p, half)) < 1 - rho


def test_sft_sample_sizes_follow_the_bound():
    sizes = exact.sft_sharpening_sample_sizes(c_cov=10.0, eps=0.1, delta=0.1, log_class_size=5.0, rho=0.1)
    assert sizes["N"] == math.ceil(10 * math.log(10) / 0.1)
    assert sizes["n"] == math.ceil((5.0 + math.log(10)) / 0.01)
    assert sizes["m"] == sizes["n"] * sizes["N"]


def test_probabilities_not_summing_to_one_are_rejected():
    bad = np.array([[0.5, 0.4, 0.2]])
    with pytest.raises(ValueError, match="probs_XY.*sum to one.*1.1"):
        TabularPolicyClass(1, 3).params_from_probs(bad)
    with pytest.raises(ValueError, match="base_logp_XY"):
        exact.coverage_coefficient(np.log(bad))
    with pytest.raises(ValueError, match="logp_XY"):
        exact.sharpness(np.log(bad), np.array([0]), 0.1)
    with pytest.raises(ValueError, match="negative"):
        TabularPolicyClass(1, 3).params_from_probs(np.array([[1.2, -0.2, 0.0]]))
    with pytest.raises(ValueError, match="prompt_probs_X"):
        exact.coverage_coefficient(jnp.log(jnp.full((2, 2), 0.5)), np.array([0.7, 0.7]))


@pytest.mark.parametrize("beta", [0.0, -1.0, float("nan")])
def test_nonpositive_beta_is_rejected(beta):
    base_logp = _random_base(3)
    with pytest.raises(ValueError, match="beta"):
        exact.sharpened_logprobs(base_logp, beta)
    with pytest.raises(ValueError, match="beta"):
        exact.kl_regularized_objective(base_logp, base_logp, beta)
    with pytest.raises(ValueError, match="beta"):
        validation.solve_kl_regularized(base_logp, beta)
    with pytest.raises(ValueError, match="beta"):
        RlhfConfig(beta=beta)


def test_out_of_range_eps_delta_rho_are_rejected():
    logp = jnp.log(jnp.full((1, 2), 0.5))
    with pytest.raises(ValueError, match="delta"):
        exact.sharpness(logp, jnp.array([0]), 1.5)
    with pytest.raises(ValueError, match="eps"):
        exact.is_sharpened(logp, jnp.array([0]), 0.0, 0.1)
    with pytest.raises(ValueError, match="rho"):
        exact.best_of_n_sufficient_samples(0.5, 2.0)
