"""Enumerable policy classes: exact tables, the policy contract, greedy decoding and its 1/2 threshold."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from sharpen_jax.theory import exact, families, validation
from sharpen_jax.theory.policies import AutoregressivePolicyClass, TabularPolicyClass


def test_autoregressive_enumeration_is_normalized_and_matches_logprob_fn():
    problem = families.random_autoregressive_problem(jax.random.key(0), 3, 3, 4)
    policy, params = problem.policy, problem.base_params
    logp_XY = policy.logprobs_XY(params)
    np.testing.assert_allclose(jnp.exp(logp_XY).sum(-1), 1.0, rtol=1e-5)
    x_B = jnp.array([0, 1, 2, 2])
    y_B = jnp.array([0, 17, 80, 41])
    logp_B, ntok_B = jax.jit(policy.logprob_fn)(params, policy.seqs(x_B, y_B))
    np.testing.assert_allclose(logp_B, logp_XY[x_B, y_B], rtol=1e-6)
    np.testing.assert_array_equal(ntok_B, 4.0)
    np.testing.assert_array_equal(policy.response_ids(policy.tokens_YH), np.arange(81))


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), zeros=st.integers(0, 5))
def test_sequence_distribution_roundtrips_through_conditionals(seed, zeros):
    rng = np.random.default_rng(seed)
    probs = rng.dirichlet(np.ones(8), size=2)
    probs[:, rng.choice(8, zeros, replace=False)] = 0.0
    probs /= probs.sum(-1, keepdims=True)
    policy = AutoregressivePolicyClass(2, 2, 3)
    params = policy.params_from_sequence_probs(probs)
    np.testing.assert_allclose(np.exp(policy.logprobs_XY(params)), probs, atol=1e-6)


def test_token_by_token_sampler_matches_the_exact_distribution():
    problem = families.random_autoregressive_problem(jax.random.key(1), 1, 2, 3, scale=1.0)
    ids = problem.policy.sample(jax.random.key(2), problem.base_params, jnp.zeros(40_000, jnp.int32))
    freq = np.bincount(np.asarray(ids), minlength=8) / 40_000
    p = np.exp(np.asarray(problem.base_logp_XY[0]))
    bound = 4 * np.sqrt(p * (1 - p) / 40_000) + 1e-4
    np.testing.assert_array_less(np.abs(freq - p), bound)
    # Power: the bound rejects the sequence distribution with 10% of each probability moved between
    # alternate sequences (the same support), so a sampler drawing a slightly wrong conditional fails.
    wrong = p * np.where(np.arange(8) % 2 == 0, 1.1, 0.9)
    wrong /= wrong.sum()
    assert np.any(np.abs(freq - wrong) > bound), (freq, wrong)


def test_tabular_logprob_fn_matches_table():
    policy = TabularPolicyClass(2, 3)
    params = policy.params_from_probs(np.array([[0.2, 0.3, 0.5], [0.6, 0.3, 0.1]]))
    logp_B, ntok_B = policy.logprob_fn(params, policy.seqs(jnp.array([0, 1]), jnp.array([2, 0])))
    np.testing.assert_allclose(np.exp(logp_B), [0.5, 0.6], rtol=1e-6)
    np.testing.assert_array_equal(ntok_B, 1.0)


@pytest.mark.parametrize("dim", [3, 7])
def test_bit_agreement_family(dim):
    problem = families.bit_agreement_problem(dim, agree_prob=0.7, num_prompts=5, seed=3)
    policy = problem.policy
    np.testing.assert_allclose(problem.c_cov, 0.7 ** -dim, rtol=1e-4)
    theta = {"theta": jnp.linspace(-1.0, 2.0, dim)}
    enumerated = dataclasses.replace(policy, log_normalizer_fn=None)
    np.testing.assert_allclose(policy.logprobs_XY(theta), enumerated.logprobs_XY(theta), atol=1e-5)
    seqs = policy.seqs(jnp.array([0, 4, 2]), jnp.array([1, 2 ** dim - 1, 5]))
    np.testing.assert_allclose(jax.jit(policy.logprob_fn)(theta, seqs)[0],
                               jax.jit(enumerated.logprob_fn)(theta, seqs)[0], atol=1e-5)
    # y*(x) is the preferred bit string: all features of (x, y*(x)) are 1.
    phi = jax.jit(policy.feature_fn)(jnp.arange(5), problem.y_star_X)
    np.testing.assert_array_equal(phi, 1.0)


@pytest.mark.parametrize("eps", [1e-3, 0.01, 0.1])
@pytest.mark.parametrize("vocab,horizon", [(2, 2), (2, 4), (3, 3)])
def test_greedy_threshold_at_one_half_plus_minus_eps(eps, vocab, horizon):
    below = families.greedy_threshold_problem(0.5 - eps, vocab, horizon)
    above = families.greedy_threshold_problem(0.5 + eps, vocab, horizon)
    for problem in (below, above):
        assert int(problem.y_star_X[0]) == 0
    np.testing.assert_allclose(exact.target_probabilities(below.base_logp_XY, below.y_star_X), 0.5 - eps, rtol=1e-5)
    assert int(below.policy.greedy_decode(below.base_params)[0]) != 0   # misses y* below 1/2
    assert int(above.policy.greedy_decode(above.base_params)[0]) == 0   # returns y* above 1/2


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), eps=st.floats(1e-4, 0.49), target=st.integers(0, 26),
       adversarial=st.booleans())
def test_greedy_returns_any_target_with_mass_above_one_half(seed, eps, target, adversarial):
    """Whatever the other 1/2 - eps of mass does, greedy decoding returns y* when pi(y*) = 1/2 + eps."""
    policy = AutoregressivePolicyClass(1, 3, 3)
    rng = np.random.default_rng(seed)
    rest = rng.dirichlet(np.ones(27))
    if adversarial:  # all other mass on the sibling sequences that branch off y* at its first token
        first = policy.tokens_YH[:, 0]
        rest = np.where(first != policy.tokens_YH[target, 0], rng.random(27), 0.0)
        rest /= rest.sum()
    rest[target] = 0.0
    probs = (0.5 - eps) * rest / rest.sum()
    probs[target] = 0.5 + eps
    params = policy.params_from_sequence_probs(probs[None])
    assert int(policy.greedy_decode(params)[0]) == target


def test_random_policies_respect_the_threshold_and_fail_below_it():
    scan = validation.greedy_threshold_scan(jax.random.key(4), num_policies=500)
    above = scan["target_prob"] > 0.5
    assert above.sum() > 20 and (~above).sum() > 20
    assert scan["violations"] == 0
    assert np.all(scan["greedy_correct"][above])
    assert (~scan["greedy_correct"][~above]).sum() > 0


def test_policy_classes_reject_bad_shapes_and_degenerate_sizes():
    with pytest.raises(ValueError, match="probs_XY has shape"):
        TabularPolicyClass(2, 3).params_from_probs(np.full((2, 4), 0.25))
    with pytest.raises(ValueError, match="vocab_size"):
        AutoregressivePolicyClass(1, 1, 3)
    with pytest.raises(ValueError, match="agree_prob"):
        families.bit_agreement_problem(4, agree_prob=0.4)
    with pytest.raises(ValueError, match="target_mass"):
        families.greedy_threshold_problem(0.1, 2, 2)
