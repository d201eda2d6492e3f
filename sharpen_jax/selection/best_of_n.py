"""Best-of-N selection and its accuracy estimators: subsampled accuracy at N, pass@N, standard errors.

Axis legend: B prompts, N the N_max completions sampled per prompt, K subsets, n subset size.

Best-of-N returns, among N completions y_1..y_N ~ pi(.|x), the one maximizing a reward:
    y_hat = argmax_j r(x, y_j)        (ties go to the lowest index j).
Accuracy at n <= N is estimated from one pool of N samples per prompt by subsampling: the
expected correctness of best-of-n over a uniformly random n-subset of the pool,
    acc_n(x) = C(N, n)^-1 * sum_{|S| = n} correct(argmax_{j in S} r(x, y_j)).
For a reward whose score does not depend on the other completions this has a closed form: j is
selected exactly when the subset holds j and n - 1 of the completions j beats, so
    P(j selected) = C(below_j, n - 1) / C(N, n),   below_j = #{k : j beats k}.
A subset-dependent reward (majority vote) is enumerated over all C(N, n) subsets when that is
at most `max_exact_subsets`, and otherwise averaged over `num_draws` random subsets per prompt
(Monte Carlo). pass@n uses the unbiased estimator of Chen et al. (2021),
    pass@n(x) = 1 - C(N - c, n) / C(N, n),   c = #{correct completions}.
Standard errors are over prompts: std_b(acc_n(x_b)) / sqrt(B) (sample std, ddof = 1).
"""

from __future__ import annotations

import itertools
import math
from typing import Callable, Mapping, Sequence

import jax
import numpy as np
from scipy.special import gammaln

SubsetScores = Callable[[np.ndarray], np.ndarray]  # index int[B, K, n] -> scores float[B, K, n]


def select(scores_BN: np.ndarray) -> np.ndarray:
    """Index of the best completion per prompt (argmax, ties to the lowest index), int[B]."""
    return np.argmax(np.asarray(scores_BN), axis=-1)


def take_best(samples_BN, scores_BN: np.ndarray):
    """The best-of-N entry of each prompt from a pytree of arrays with leading axes [B, N] (see `select`)."""
    scores_BN = np.asarray(scores_BN)
    if scores_BN.ndim != 2:
        raise ValueError(f"scores_BN must be [prompts, N], got shape {scores_BN.shape}")
    best_B = select(scores_BN)
    rows_B = np.arange(scores_BN.shape[0])
    return jax.tree.map(lambda x: np.asarray(x)[rows_B, best_B], samples_BN)


def beats_counts(scores_BN: np.ndarray) -> np.ndarray:
    """below_j = #{k : s_j > s_k or (s_j = s_k and j < k)}, the completions j beats, int[B, N]."""
    scores_BN = np.asarray(scores_BN, np.float64)
    n = scores_BN.shape[-1]
    index_N = np.arange(n)
    higher_BNN = scores_BN[..., :, None] > scores_BN[..., None, :]
    tie_first_BNN = (scores_BN[..., :, None] == scores_BN[..., None, :]) & (index_N[:, None] < index_N[None, :])
    return (higher_BNN | tie_first_BNN).sum(axis=-1)


def log_comb(n, k) -> np.ndarray:
    """log C(n, k) elementwise, -inf where k < 0 or k > n."""
    n, k = np.asarray(n, np.float64), np.asarray(k, np.float64)
    valid = (k >= 0) & (k <= n)
    safe_n, safe_k = np.where(valid, n, 0.0), np.where(valid, k, 0.0)
    out = gammaln(safe_n + 1) - gammaln(safe_k + 1) - gammaln(safe_n - safe_k + 1)
    return np.where(valid, out, -np.inf)


def selection_probabilities(scores_BN: np.ndarray, n: int) -> np.ndarray:
    """P(completion j is best-of-n over a uniform n-subset) = C(below_j, n-1) / C(N, n), float[B, N]."""
    scores_BN = np.asarray(scores_BN, np.float64)
    total = scores_BN.shape[-1]
    _check_n(n, total)
    return np.exp(log_comb(beats_counts(scores_BN), n - 1) - log_comb(total, n))


def expected_best_of_n(correct_BN: np.ndarray, scores_BN: np.ndarray, n: int) -> np.ndarray:
    """Exact acc_n(x) for a subset-independent reward: sum_j P(j selected) * correct_j, float[B]."""
    return (selection_probabilities(scores_BN, n) * np.asarray(correct_BN, np.float64)).sum(axis=-1)


def all_subsets(total: int, n: int) -> np.ndarray:
    """Every n-subset of range(total) in lexicographic order, int[C(total, n), n]."""
    return np.asarray(list(itertools.combinations(range(total), n)), np.int64).reshape(-1, n)


def random_subsets(rng: np.random.Generator, batch: int, total: int, n: int, num_draws: int) -> np.ndarray:
    """num_draws uniform n-subsets of range(total) per prompt, sorted within each subset, int[B, K, n]."""
    keys_BKN = rng.random((batch, num_draws, total))
    return np.sort(np.argsort(keys_BKN, axis=-1)[..., :n], axis=-1)


def subset_accuracy(correct_BN: np.ndarray, subset_scores: SubsetScores, index_BKn: np.ndarray) -> np.ndarray:
    """Mean over the K given subsets of the correctness of the subset's argmax, float[B]."""
    correct_BN = np.asarray(correct_BN, np.float64)
    scores_BKn = np.asarray(subset_scores(index_BKn))
    chosen_BK = np.take_along_axis(index_BKn, select(scores_BKn)[..., None], axis=-1)[..., 0]
    return np.take_along_axis(correct_BN, chosen_BK, axis=1).mean(axis=1)


def fixed_subset_scores(scores_BN: np.ndarray) -> SubsetScores:
    """The SubsetScores of a subset-independent reward: each subset keeps its members' scores."""
    scores_BN = np.asarray(scores_BN, np.float64)
    return lambda index_BKn: np.take_along_axis(scores_BN[:, None, :], index_BKn, axis=-1)


def accuracy_at_n(correct_BN: np.ndarray, n: int, *, scores_BN: np.ndarray | None = None,
                  subset_scores: SubsetScores | None = None, max_exact_subsets: int = 2000, num_draws: int = 1000,
                  rng: np.random.Generator | None = None) -> tuple[np.ndarray, str]:
    """Per-prompt acc_n(x), float[B], and the method used ("exact", "enumerated" or "monte_carlo").

    Give `scores_BN` for a subset-independent reward (closed form) or `subset_scores` for one that
    must be recomputed on every subset (enumeration when C(N, n) <= max_exact_subsets, otherwise
    `num_draws` random subsets per prompt drawn from `rng`).
    """
    correct_BN = np.asarray(correct_BN, bool)
    batch, total = correct_BN.shape
    _check_n(n, total)
    if (scores_BN is None) == (subset_scores is None):
        raise ValueError("accuracy_at_n takes exactly one of scores_BN and subset_scores")
    if scores_BN is not None:
        return expected_best_of_n(correct_BN, scores_BN, n), "exact"
    if math.comb(total, n) <= max_exact_subsets:
        index_BKn = np.broadcast_to(all_subsets(total, n), (batch, math.comb(total, n), n))
        return subset_accuracy(correct_BN, subset_scores, index_BKn), "enumerated"
    if rng is None:
        raise ValueError(f"C({total}, {n}) subsets exceed max_exact_subsets={max_exact_subsets}; pass rng for Monte Carlo")
    return subset_accuracy(correct_BN, subset_scores, random_subsets(rng, batch, total, n, num_draws)), "monte_carlo"


def pass_at_n(correct_BN: np.ndarray, n: int) -> np.ndarray:
    """Unbiased pass@n per prompt, 1 - C(N - c, n) / C(N, n), float[B]."""
    correct_BN = np.asarray(correct_BN, bool)
    total = correct_BN.shape[-1]
    _check_n(n, total)
    wrong_B = total - correct_BN.sum(axis=-1)
    return 1.0 - np.exp(log_comb(wrong_B, n) - log_comb(total, n))


def mean_and_se(values_B: np.ndarray) -> dict[str, float]:
    """{"mean": mean over prompts, "se": sample std / sqrt(B)} (se 0 for a single prompt)."""
    values_B = np.asarray(values_B, np.float64)
    if values_B.size == 0:
        raise ValueError("mean_and_se: no values (zero prompts)")
    se = values_B.std(ddof=1) / math.sqrt(values_B.size) if values_B.size > 1 else 0.0
    return {"mean": float(values_B.mean()), "se": float(se)}


def dominance_auc(scores: np.ndarray, correct: np.ndarray) -> float | None:
    """P(score of a random correct sample > that of a random incorrect one), ties counting 1/2.

    The Mann-Whitney form of the ROC AUC over pooled samples; 0.5 means no separation, and > 0.5
    is what stochastic dominance of correct answers' scores implies. None if a class is empty.
    """
    scores, correct = np.ravel(np.asarray(scores, np.float64)), np.ravel(np.asarray(correct, bool))
    pos, neg = scores[correct], scores[~correct]
    if pos.size == 0 or neg.size == 0:
        return None
    combined = np.concatenate([pos, neg])
    order = np.argsort(combined, kind="stable")
    ranks = np.empty(combined.size, np.float64)
    sorted_values = combined[order]
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_values)) + 1]
    ends = np.r_[starts[1:], combined.size]
    for start, end in zip(starts, ends):
        ranks[order[start:end]] = (start + end + 1) / 2.0
    u = ranks[:pos.size].sum() - pos.size * (pos.size + 1) / 2.0
    return float(u / (pos.size * neg.size))


def summarize(correct_BN: np.ndarray, greedy_correct_B: np.ndarray, ns: Sequence[int],
              scores: Mapping[str, np.ndarray], subset_scores: Mapping[str, SubsetScores] | None = None, *,
              max_exact_subsets: int = 2000, num_draws: int = 1000, seed: int = 0) -> dict:
    """The accuracy table of one (model, task): greedy, single sample, pass@n and best-of-n per reward.

    `scores` maps reward names to subset-independent scores [B, N]; `subset_scores` maps names of
    subset-dependent rewards to their SubsetScores. Every entry is {"mean", "se"} over prompts;
    best-of-n entries also name their "method". Monte Carlo draws come from
    numpy.random.default_rng([seed, n]), so the table is a deterministic function of its inputs.
    """
    correct_BN = np.asarray(correct_BN, bool)
    batch, total = correct_BN.shape
    ns = [int(n) for n in ns if int(n) <= total]
    if not ns:
        raise ValueError(f"no subset size in {list(ns)} is <= N_max={total}")
    table = {"num_prompts": batch, "num_samples": total, "greedy": mean_and_se(greedy_correct_B),
             "single_sample": mean_and_se(correct_BN.mean(axis=1)),
             "pass_at_n": {str(n): mean_and_se(pass_at_n(correct_BN, n)) for n in ns}, "best_of_n": {},
             "dominance_auc": {}}
    rewards = [(name, {"scores_BN": s}) for name, s in scores.items()]
    rewards += [(name, {"subset_scores": f}) for name, f in (subset_scores or {}).items()]
    for name, kwargs in rewards:
        table["best_of_n"][name] = {}
        for n in ns:
            values_B, method = accuracy_at_n(correct_BN, n, max_exact_subsets=max_exact_subsets, num_draws=num_draws,
                                             rng=np.random.default_rng([seed, n]), **kwargs)
            table["best_of_n"][name][str(n)] = {**mean_and_se(values_B), "method": method}
    for name, s in scores.items():
        table["dominance_auc"][name] = dominance_auc(s, correct_BN)
    return table


def _check_n(n: int, total: int) -> None:
    if not 1 <= n <= total:
        raise ValueError(f"subset size n={n} must be in [1, N_max={total}]")
