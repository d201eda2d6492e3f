"""PIT inference: iterated improvement y^0 ~ M_P(.|x), y^{t+1} ~ M_PIT(.|x, y^t) (Wang et al., 2023, Sec. 3.5),
and the improvement rate Δ of its evaluation.

On verifiable tasks "better" is exact, and PIT's Δ = win rate - lose rate between y^{t+1} and y^t becomes
Δ = P(wrong -> right) - P(right -> wrong), which equals accuracy(y^{t+1}) - accuracy(y^t) exactly.

If M_PIT is a fixed kernel K(y'|y) on a finite response set, the distribution of y^t is μ_0 K^t and
the expected quality E[q(y^t)] = μ_0 K^t q, which need not be monotone in t (the paper's "response
quality does not monotonically improve with more iterations", Sec. 4.7).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

ImproveFn = Callable[[list, int], list]  # (y^t for every prompt, t) -> y^{t+1} for every prompt
GapFn = Callable[[list, list], np.ndarray]  # (y^{t+1}, y^t) -> r_gap(x, y^{t+1}, y^t), float[B]


def check_iterations(num_iterations: Any) -> int:
    """T, the number of improvement steps; it must be an integer >= 1."""
    if isinstance(num_iterations, bool) or not isinstance(num_iterations, (int, np.integer)) or num_iterations < 1:
        raise ValueError(f"num_iterations={num_iterations!r}; expected an integer >= 1 (T = 5 in the paper)")
    return int(num_iterations)


def iterate_improvement(improve: ImproveFn, y0: Sequence, num_iterations: int, gap: GapFn | None = None
                        ) -> tuple[list[list], np.ndarray]:
    """([y^0, ..., y^T], stopped_at int[B]): T rounds of y^{t+1} = improve(y^t, t).

    With `gap`, the optional stopping rule: a row stops at the first t with r_gap(x, y^{t+1}, y^t) <= 0
    and keeps y^t from then on; stopped_at[b] is that t (T for rows that never stop).
    """
    num_iterations = check_iterations(num_iterations)
    current = list(y0)
    history = [current]
    stopped_at = np.full(len(current), num_iterations, np.int64)
    for t in range(num_iterations):
        proposed = list(improve(current, t))
        if len(proposed) != len(current):
            raise ValueError(f"improve returned {len(proposed)} responses for {len(current)} prompts")
        if gap is not None:
            active = stopped_at == num_iterations
            gains = np.asarray(gap(proposed, current), np.float64)
            stop_now = active & (gains <= 0)
            stopped_at[stop_now] = t
            keep = stopped_at < num_iterations
            proposed = [old if kept else new for old, new, kept in zip(current, proposed, keep)]
        current = proposed
        history.append(current)
    return history, stopped_at


def win_lose_counts(correct_before_B, correct_after_B) -> tuple[int, int, int]:
    """(#wrong -> right, #right -> wrong, number of prompts)."""
    before, after = np.asarray(correct_before_B, bool), np.asarray(correct_after_B, bool)
    if before.shape != after.shape or before.ndim != 1:
        raise ValueError(f"correct_before_B {before.shape} and correct_after_B {after.shape}; expected equal 1-D")
    return int(np.sum(~before & after)), int(np.sum(before & ~after)), before.size


def improvement_rate(correct_before_B, correct_after_B) -> float:
    """Δ = P(wrong -> right) - P(right -> wrong) between two graded iterations of the same prompts."""
    wins, losses, n = win_lose_counts(correct_before_B, correct_after_B)
    if n == 0:
        raise ValueError("improvement_rate of zero prompts")
    return (wins - losses) / n


def markov_quality_curve(mu0_Y, kernel_YY, quality_Y, num_iterations: int) -> np.ndarray:
    """E[q(y^t)] = μ_0 K^t q for t = 0..T, float64[T + 1] (the exact curve of a fixed improver kernel)."""
    mu = np.asarray(mu0_Y, np.float64)
    kernel = np.asarray(kernel_YY, np.float64)
    if kernel.ndim != 2 or kernel.shape[0] != kernel.shape[1] or mu.shape != kernel.shape[:1]:
        raise ValueError(f"mu0_Y {mu.shape} and kernel_YY {kernel.shape}; expected [Y] and a square [Y, Y]")
    if not np.allclose(kernel.sum(axis=1), 1.0) or (kernel < 0).any():
        raise ValueError("kernel_YY rows must be probability distributions")
    curve = []
    for _ in range(check_iterations(num_iterations) + 1):
        curve.append(float(mu @ np.asarray(quality_Y, np.float64)))
        mu = mu @ kernel
    return np.asarray(curve)
