"""The generation-verification gap estimators against closed forms (selection.gap, selection.tournament,
theory.gv_gap): noisy binary verifiers, KL reweighting limits, oracle and random verifiers, the
per-prompt relative gap, filters and ensembles, tournaments, and the link to sharpening."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sharpen_jax.selection import gap
from sharpen_jax.selection.tournament import tournament_scores
from sharpen_jax.theory import exact, families, gv_gap


def binary_prompt(n: int, p: float, a: float, b: float):
    """One prompt of n samples with exactly p n correct, a of them and b of the incorrect ones scored 1."""
    correct, wrong = round(p * n), n - round(p * n)
    u = np.r_[np.ones(correct), np.zeros(wrong)]
    s = np.r_[np.arange(correct) < round(a * correct), np.arange(wrong) < round(b * wrong)].astype(float)
    return u[None], s[None]


@pytest.mark.parametrize("p, a, b", [(0.3, 0.8, 0.2), (0.5, 0.6, 0.4), (0.2, 0.5, 0.75), (0.4, 1.0, 0.0),
                                     (0.4, 0.5, 0.5)])
def test_noisy_binary_verifier_gap_and_relative_gap_match_the_closed_forms(p, a, b):
    u, s = binary_prompt(1000, p, a, b)
    gain, base = gap.prompt_gains(u, gap.Filter("threshold", 0.5).weights(s))
    assert gap.gap(gain) == pytest.approx(gv_gap.noisy_binary_gap(p, a, b), abs=1e-12)
    assert gap.relative_gap(gain, base) == pytest.approx(gv_gap.noisy_binary_relative_gap(p, a, b), abs=1e-12)
    assert gv_gap.noisy_binary_relative_gap(p, 1.0, 0.0) == pytest.approx(1.0)
    assert gv_gap.noisy_binary_relative_gap(p, 0.7, 0.7) == 0.0


@pytest.mark.parametrize("beta", [0.3, 1.0, 4.0])
def test_kl_reweighting_with_a_binary_score_matches_the_closed_form_and_its_limits(beta):
    p, a, b = 0.3, 0.8, 0.2
    u, s = binary_prompt(1000, p, a, b)
    estimate = gap.reweighted_accuracy(u, gap.Filter("exp", beta).weights(s))[0]
    assert estimate == pytest.approx(gv_gap.kl_binary_accuracy(p, a, b, beta), abs=1e-12)
    small = gap.reweighted_accuracy(u, gap.exp_weights(s, 1e-3))[0]
    large = gap.reweighted_accuracy(u, gap.exp_weights(s, 1e4))[0]
    assert small == pytest.approx(gv_gap.rejection_accuracy(p, a, b), abs=1e-9)  # beta -> 0: rejection
    assert large == pytest.approx(p, abs=1e-4)  # beta -> inf: no reweighting


def test_oracle_verifier_relative_gap_is_the_fraction_of_open_prompts_with_a_correct_sample():
    rng = np.random.default_rng(0)
    p_B = rng.choice([0.0, 0.05, 0.2, 0.5, 0.9, 1.0], size=300)
    u = rng.random((300, 8)) < p_B[:, None]
    for f in (gap.Filter("threshold", 0.5), gap.Filter("quantile", 1.0)):
        gain, base = gap.prompt_gains(u, f.weights(u.astype(float)))
        open_B = base < 1
        assert open_B.sum() < 300 and (~u.any(1)).sum() > 0  # both kinds of prompt present
        assert gap.relative_gap(gain, base) == pytest.approx(u[open_B].any(axis=1).mean(), abs=1e-12)


def test_random_verifier_has_no_gap_within_three_bootstrap_standard_errors():
    rng = np.random.default_rng(1)
    u = rng.random((400, 16)) < rng.random((400, 1))
    scores = rng.random((400, 16))
    filters = [gap.Filter("quantile", 0.5), gap.Filter("threshold", 0.7), gap.Filter("exp", 0.2)]
    table = gap.gap_table(u, {"random": {f.name: f.weights(scores) for f in filters}}, num_resamples=400, seed=0)
    assert list(table["gaps"]["random"]) == ["quantile:0.5", "threshold:0.7", "exp:0.2"]
    for entry in table["gaps"]["random"].values():
        assert 0 < entry["gap"]["se"] < 0.02
        assert abs(entry["gap"]["mean"]) < 3 * entry["gap"]["se"]


def test_bootstrap_se_of_the_gap_is_the_standard_error_of_a_mean():
    rng = np.random.default_rng(2)
    gain, base = rng.normal(size=500), np.full(500, 0.5)
    gap_se, rel_se = gap.bootstrap_se(gain, base, gap.bootstrap_indices(500, 2000, seed=3))
    assert gap_se == pytest.approx(gain.std() / math.sqrt(500), rel=0.08)
    assert rel_se == pytest.approx(2 * gap_se, rel=1e-9)  # relative gain = gain / 0.5 on every prompt


def test_positive_gap_with_negative_relative_gap_is_per_prompt_not_aggregate():
    # prompt 0: 10/20 correct, the filter keeps 9 correct + 1 wrong (0.5 -> 0.9, relative +0.8);
    # prompt 1: 19/20 correct, it keeps 3 correct + 1 wrong (0.95 -> 0.75, relative -4).
    u = np.array([[1] * 10 + [0] * 10, [1] * 19 + [0]], float)
    keep = np.zeros_like(u)
    keep[0, :9], keep[0, 10] = 1, 1
    keep[1, :3], keep[1, 19] = 1, 1
    gain, base = gap.prompt_gains(u, keep)
    assert gap.gap(gain) == pytest.approx(0.1)
    assert gap.relative_gap(gain, base) == pytest.approx((0.8 - 4.0) / 2)
    assert gap.gap(gain) / (1 - base.mean()) > 0  # the aggregate ratio has the other sign


def test_empty_filter_leaves_the_prompt_unchanged_and_is_counted():
    u = np.array([[1, 0, 0, 1], [0, 1, 0, 0]], float)
    s = np.array([[0.1, 0.2, 0.3, 0.4], [0.9, 0.95, 0.1, 0.2]])
    weights = gap.Filter("threshold", 0.5).weights(s)
    np.testing.assert_allclose(gap.reweighted_accuracy(u, weights), [0.5, 0.5])  # row 0 keeps nothing
    entry = gap.gap_entry(u, weights, gap.bootstrap_indices(2, 10, 0))
    assert entry["num_empty"] == 1 and entry["gap"]["mean"] == pytest.approx(0.125)


def test_quantile_ties_are_kept_and_the_mask_does_not_depend_on_sample_order():
    s = np.array([[1.0, 2.0, 2.0, 2.0, 3.0]])
    np.testing.assert_array_equal(gap.quantile_mask(s, 0.5), [[False, True, True, True, True]])
    np.testing.assert_array_equal(gap.quantile_mask(s, 1.0), [[False, False, False, False, True]])
    np.testing.assert_array_equal(gap.quantile_mask(s, 0.2), [[True] * 5])
    rng = np.random.default_rng(4)
    scores = rng.integers(1, 4, size=(50, 12)).astype(float)  # many ties
    for q in (0.1, 0.3, 0.5, 0.7, 0.9, 1.0):
        perm = rng.permutation(12)
        np.testing.assert_array_equal(gap.quantile_mask(scores, q)[:, perm], gap.quantile_mask(scores[:, perm], q))
        kept = gap.quantile_mask(scores, q).sum(1)
        assert np.all(kept >= 12 - math.ceil(q * 12) + 1)  # at least the top (1 - q) share plus the threshold


def test_and_ensemble_never_keeps_more_than_a_member():
    rng = np.random.default_rng(5)
    members = [gap.Filter("quantile", 0.6).weights(rng.random((30, 10))),
               gap.Filter("threshold", 0.4).weights(rng.random((30, 10))),
               gap.Filter("quantile", 0.3).weights(rng.integers(0, 3, (30, 10)).astype(float))]
    both = gap.and_ensemble(members)
    for m in members:
        assert np.all(both <= m)
    assert both.sum() < min(m.sum() for m in members)
    with pytest.raises(ValueError, match="rejection"):
        gap.and_ensemble([gap.exp_weights(rng.random((2, 3)), 1.0)])


def test_bad_filters_are_named():
    for spec, message in [("quantile:0", r"\(0, 1\]"), ("quantile:1.5", r"\(0, 1\]"), ("exp:0", "beta must be > 0"),
                          ("exp:-1", "beta must be > 0"), ("top:0.5", "RULE one of"), ("quantile", "RULE:VALUE"),
                          ("threshold:x", "must be a number")]:
        with pytest.raises(ValueError, match=message):
            gap.Filter.parse(spec, where="config.filters[0]")
    assert gap.Filter.parse("quantile:1").name == "quantile:1"


def judge_by_correctness(correct_BN: np.ndarray, q: float, rng: np.random.Generator):
    """A synthetic comparator: a mixed pair goes to the correct sample with probability q, others by a coin."""
    def compare(prompt_P, first_P, second_P):
        a, b = correct_BN[prompt_P, first_P], correct_BN[prompt_P, second_P]
        coin = rng.random(prompt_P.size)
        return np.where(a == b, coin < 0.5, np.where(a, coin < q, coin >= q))
    return compare


@pytest.mark.parametrize("q", [0.5, 0.8])
def test_tournament_dynamic_program_agrees_with_simulated_brackets(q):
    n, c, prompts = 8, 3, 4000
    correct = np.zeros((prompts, n), bool)
    correct[:, :c] = True
    scores = tournament_scores(prompts, n, judge_by_correctness(correct, q, np.random.default_rng(6)), seed=7)
    assert np.all(scores.sum(1) == n - 1)  # n - 1 matches per prompt
    for rounds in (1, 2, 3):
        survivors = scores >= rounds
        assert np.all(survivors.sum(1) == n // 2 ** rounds)
        simulated = (survivors & correct).sum(1)
        law = gv_gap.tournament_exact(n, c, rounds, q)
        assert law.sum() == pytest.approx(1.0)
        empirical = np.bincount(simulated, minlength=law.size) / prompts
        assert np.abs(empirical - law).max() < 4 * np.sqrt(law * (1 - law) / prompts).max() + 1e-3


def test_tournament_infinite_population_recursion():
    for p in (0.1, 0.4, 0.7):
        assert gv_gap.tournament_round(p, 0.5) == pytest.approx(p)  # q = 1/2: no gain
        assert gv_gap.tournament_round(p, 0.9) > p
        # the finite-N dynamic program tends to the recursion as N grows (one round, N p correct)
        finite = gv_gap.tournament_survivor_accuracy(400, round(400 * p), 1, 0.8)
        assert finite == pytest.approx(gv_gap.tournament_round(p, 0.8), abs=0.005)
    assert gv_gap.tournament_survivor_accuracy(64, 20, 3, 0.5) == pytest.approx(20 / 64)


def test_exp_reweighting_by_log_likelihood_is_the_sharpened_policy():
    problem = families.spiked_problem(3.0, num_prompts=4, num_responses=6)
    base_logp = np.asarray(problem.base_logp_XY, np.float64)
    beta, draws = 0.7, 20000
    target = np.exp(np.asarray(exact.sharpened_logprobs(problem.base_logp_XY, beta), np.float64))
    rng = np.random.default_rng(8)
    for x in range(4):
        y = rng.choice(6, size=draws, p=np.exp(base_logp[x]) / np.exp(base_logp[x]).sum())
        weights = gap.exp_weights(base_logp[x, y][None], beta)  # û = log f(y|x), w = exp(û / beta)
        estimate = [gap.reweighted_accuracy((y == k)[None], weights)[0] for k in range(6)]
        np.testing.assert_allclose(estimate, target[x], atol=0.02)  # f[w] ∝ f^(1 + 1/beta) = pi*_beta
