"""Closed forms of the generation-verification gap (Song et al., 2024) that the estimators are tested on.

Notation: a prompt whose samples are correct with probability p; a noisy binary verifier with true
positive rate a = P(û = 1 | u = 1) and false positive rate b = P(û = 1 | u = 0).

    rejection 1[û = 1]:   J(f[w]) = a p / (a p + b (1 - p))
                          gap     = p (1 - p)(a - b) / (a p + b (1 - p))
                          gap_rel = gap / (1 - p) = p (a - b) / (a p + b (1 - p))
    exp weights, beta:    J(f[w]) = p (a e^{1/beta} + 1 - a) / [p (a e^{1/beta} + 1 - a) + (1 - p)(b e^{1/beta} + 1 - b)]
                          -> the rejection value as beta -> 0 (a, b > 0) and -> p as beta -> inf.
    tournament, one round between two independent samples, where a mixed pair (one correct, one
    not) is won by the correct one with probability q and a same-type pair by either:
                          p' = p^2 + 2 p (1 - p) q       (infinite population; q = 1/2 gives p' = p)
    `tournament_exact` is the exact finite-N law: n samples, c correct, a uniformly random matching.
    Link to sharpening: with û = log f and w = exp(û / beta), f[w] ∝ f^{1 + 1/beta} = `exact`'s pi*_beta.
"""

from __future__ import annotations

import functools
import math

import numpy as np


def rejection_accuracy(p: float, a: float, b: float) -> float:
    """J(f[w]) of a noisy binary verifier under rejection: a p / (a p + b (1 - p))."""
    return a * p / (a * p + b * (1.0 - p))


def noisy_binary_gap(p: float, a: float, b: float) -> float:
    """gap = p (1 - p)(a - b) / (a p + b (1 - p))."""
    return p * (1.0 - p) * (a - b) / (a * p + b * (1.0 - p))


def noisy_binary_relative_gap(p: float, a: float, b: float) -> float:
    """gap_rel = p (a - b) / (a p + b (1 - p)) (one prompt, so per-prompt = aggregate)."""
    return p * (a - b) / (a * p + b * (1.0 - p))


def kl_binary_accuracy(p: float, a: float, b: float, beta: float) -> float:
    """J(f[w]) under w = exp(û / beta) with binary û (module docstring)."""
    e = math.exp(1.0 / beta)
    good, bad = p * (a * e + 1.0 - a), (1.0 - p) * (b * e + 1.0 - b)
    return good / (good + bad)


def tournament_round(p: float, q: float) -> float:
    """Infinite-population accuracy after one round: p' = p^2 + 2 p (1 - p) q."""
    return p * p + 2.0 * p * (1.0 - p) * q


def _double_factorial_odd(n: int) -> int:
    """(n - 1)!! for even n: the number of perfect matchings of n items (1 for n = 0)."""
    return math.prod(range(n - 1, 0, -2)) if n > 0 else 1


@functools.lru_cache(maxsize=None)
def _matching_law(n: int, c: int) -> tuple[tuple[int, int, float], ...]:
    """((k, m, prob)) over uniformly random perfect matchings of n items, c of them marked: k pairs of
    two marked items and m = c - 2k mixed pairs."""
    total = _double_factorial_odd(n)
    out = []
    for k in range(c // 2 + 1):
        m = c - 2 * k
        if m > n - c:
            continue
        ways = (math.comb(c, 2 * k) * _double_factorial_odd(2 * k) * math.comb(n - c, m) * math.factorial(m)
                * _double_factorial_odd(n - c - m))
        out.append((k, m, ways / total))
    return tuple(out)


def tournament_exact(num_samples: int, num_correct: int, rounds: int, q: float) -> np.ndarray:
    """P(c correct among the survivors after `rounds` rounds), float64[num_samples / 2^rounds + 1].

    Dynamic program over (survivors, correct): each round is a uniformly random matching (law
    `_matching_law`); of its m mixed pairs Binomial(m, q) are won by the correct sample, so the
    correct survivors are k + Binomial(m, q). num_samples must be divisible by 2^rounds.
    """
    if num_samples % (2 ** rounds):
        raise ValueError(f"num_samples={num_samples} is not divisible by 2^rounds={2 ** rounds}")
    law = np.zeros(num_samples + 1)
    law[num_correct] = 1.0
    n = num_samples
    for _ in range(rounds):
        nxt = np.zeros(n // 2 + 1)
        for c in np.flatnonzero(law):
            for k, m, prob in _matching_law(n, int(c)):
                wins = np.array([math.comb(m, i) * q ** i * (1 - q) ** (m - i) for i in range(m + 1)])
                nxt[k:k + m + 1] += law[c] * prob * wins
        law, n = nxt, n // 2
    return law


def tournament_survivor_accuracy(num_samples: int, num_correct: int, rounds: int, q: float) -> float:
    """E[fraction correct among the survivors after `rounds` rounds] from `tournament_exact`."""
    law = tournament_exact(num_samples, num_correct, rounds, q)
    return float((law * np.arange(law.size)).sum() / (law.size - 1))
