"""Best-of-N estimators against brute-force enumeration written independently of the library."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from sharpen_jax.selection import best_of_n, rewards


def brute_force_accuracy(correct, scores_fn, n):
    """Average over every n-subset (as index tuples) of the correctness of its first-best member."""
    total = len(correct)
    hits = []
    for subset in itertools.combinations(range(total), n):
        subset_scores = scores_fn(subset)
        best = max(range(n), key=lambda i: (subset_scores[i], -i))
        hits.append(correct[subset[best]])
    return float(np.mean(hits))


def brute_force_majority(answers, loglik):
    """Scores per member of a subset: most-voted answer wins; ties by higher log-likelihood, then index."""
    def scores(subset):
        votes = [sum(answers[k] == answers[j] for k in subset) if answers[j] is not None else 0 for j in subset]
        order = sorted(range(len(subset)), key=lambda i: (loglik[subset[i]], -i))
        rank = {i: r for r, i in enumerate(order)}
        return [votes[i] + (rank[i] + 1) / (len(subset) + 1) for i in range(len(subset))]
    return scores


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 7).flatmap(lambda total: st.tuples(
    st.lists(st.booleans(), min_size=total, max_size=total),
    st.lists(st.integers(-3, 3), min_size=total, max_size=total),
    st.integers(1, total))))
def test_exact_estimator_equals_enumeration_with_ties(case):
    correct, scores, n = case
    exact = best_of_n.expected_best_of_n(np.array([correct]), np.array([scores], float), n)[0]
    brute = brute_force_accuracy(correct, lambda s: [scores[j] for j in s], n)
    assert exact == pytest.approx(brute, abs=1e-12)


def test_selection_probabilities_sum_to_one_and_match_counts():
    scores = np.array([[0.3, -1.0, 2.0, 0.3, 5.0, -4.0]])
    for n in range(1, 7):
        probs = best_of_n.selection_probabilities(scores, n)[0]
        assert probs.sum() == pytest.approx(1.0)
        counts = np.zeros(6)
        for subset in itertools.combinations(range(6), n):
            counts[max(subset, key=lambda j: (scores[0, j], -j))] += 1
        np.testing.assert_allclose(probs, counts / math.comb(6, n))


def test_enumerated_majority_equals_brute_force():
    rng = np.random.default_rng(3)
    answers = [["7", "7", None, "3", "3", "9", "7"], [None, None, "1", "2", "2", "1", "1"]]
    loglik = rng.normal(size=(2, 7))
    correct = np.array([[a == "3" for a in row] for row in answers[:1]] + [[a == "2" for a in answers[1]]])
    ids = rewards.answer_ids(rewards.object_array(answers, 2))
    subset_scores = lambda idx: rewards.majority_scores(np.take_along_axis(ids[:, None], idx, -1),  # noqa: E731
                                                        np.take_along_axis(loglik[:, None], idx, -1))
    for n in range(1, 8):
        values, method = best_of_n.accuracy_at_n(correct, n, subset_scores=subset_scores)
        assert method == "enumerated"
        for b in range(2):
            assert values[b] == pytest.approx(brute_force_accuracy(correct[b], brute_force_majority(
                answers[b], loglik[b]), n), abs=1e-12)


def test_monte_carlo_agrees_with_enumeration_within_error():
    rng = np.random.default_rng(0)
    correct = rng.random((5, 12)) < 0.4
    ids = rng.integers(0, 3, (5, 12))
    loglik = rng.normal(size=(5, 12))
    subset_scores = lambda idx: rewards.majority_scores(np.take_along_axis(ids[:, None], idx, -1),  # noqa: E731
                                                        np.take_along_axis(loglik[:, None], idx, -1))
    exact, method = best_of_n.accuracy_at_n(correct, 5, subset_scores=subset_scores)
    assert method == "enumerated"
    mc, method = best_of_n.accuracy_at_n(correct, 5, subset_scores=subset_scores, max_exact_subsets=10,
                                         num_draws=4000, rng=np.random.default_rng(1))
    assert method == "monte_carlo"
    np.testing.assert_allclose(mc, exact, atol=4 * 0.5 / math.sqrt(4000))
    assert not np.allclose(mc, exact, atol=1e-12)  # really sampled, not enumerated


def test_fixed_scores_through_the_subset_path_match_closed_form():
    rng = np.random.default_rng(1)
    correct = rng.random((4, 8)) < 0.5
    scores = rng.integers(0, 4, (4, 8)).astype(float)  # many ties
    for n in (1, 3, 8):
        closed, _ = best_of_n.accuracy_at_n(correct, n, scores_BN=scores)
        enumerated, _ = best_of_n.accuracy_at_n(correct, n, subset_scores=best_of_n.fixed_subset_scores(scores))
        np.testing.assert_allclose(closed, enumerated, atol=1e-12)


def test_select_picks_argmax_and_first_of_ties():
    scores = np.array([[0.1, 0.9, 0.2], [3.0, 3.0, 1.0], [-5.0, -2.0, -2.0]])
    np.testing.assert_array_equal(best_of_n.select(scores), [1, 0, 1])


@pytest.mark.parametrize("total,correct,n", [(10, 3, 1), (10, 3, 4), (10, 0, 5), (10, 10, 2), (6, 1, 6), (50, 2, 49)])
def test_pass_at_n_matches_enumeration(total, correct, n):
    row = np.array([[j < correct for j in range(total)]])
    expected = np.mean([any(row[0, list(s)]) for s in itertools.combinations(range(total), n)]) \
        if math.comb(total, n) < 200_000 else 1 - math.comb(total - correct, n) / math.comb(total, n)
    assert best_of_n.pass_at_n(row, n)[0] == pytest.approx(expected, abs=1e-12)


def test_bad_subset_size_is_rejected():
    with pytest.raises(ValueError, match="n=5"):
        best_of_n.pass_at_n(np.ones((1, 4), bool), 5)
    with pytest.raises(ValueError, match="exactly one"):
        best_of_n.accuracy_at_n(np.ones((1, 4), bool), 2)


def test_dominance_auc_against_pairwise_count():
    rng = np.random.default_rng(2)
    scores = rng.integers(0, 5, 40).astype(float)
    correct = rng.random(40) < 0.5
    pairs = [(1.0 if p > q else 0.5 if p == q else 0.0) for p in scores[correct] for q in scores[~correct]]
    assert best_of_n.dominance_auc(scores, correct) == pytest.approx(np.mean(pairs))
    assert best_of_n.dominance_auc(scores, np.ones(40, bool)) is None


def test_summarize_table_values():
    correct = np.array([[1, 0, 0, 1], [0, 0, 0, 0], [1, 1, 1, 0]], bool)
    scores = np.array([[5.0, 1, 2, 3], [0, 1, 2, 3], [0, 1, 2, 3]])
    table = best_of_n.summarize(correct, np.array([1, 0, 0], bool), [1, 2, 4, 8], {"r": scores})
    assert table["num_samples"] == 4 and list(table["pass_at_n"]) == ["1", "2", "4"]
    assert table["greedy"]["mean"] == pytest.approx(1 / 3)
    assert table["single_sample"]["mean"] == pytest.approx((0.5 + 0 + 0.75) / 3)
    assert table["best_of_n"]["r"]["1"]["mean"] == pytest.approx(table["single_sample"]["mean"])
    assert table["best_of_n"]["r"]["4"]["mean"] == pytest.approx((1 + 0 + 0) / 3)  # argmax over all four
    assert table["pass_at_n"]["4"]["mean"] == pytest.approx(2 / 3)
    se = np.std([1.0, 0.0, 0.0], ddof=1) / math.sqrt(3)
    assert table["best_of_n"]["r"]["4"]["se"] == pytest.approx(se)
