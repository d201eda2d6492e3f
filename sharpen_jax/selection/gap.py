"""The generation-verification gap (Song et al., 2024, "Mind the Gap", Sec. 2): weights, filters, gaps.

Axis legend: B prompts, N samples per prompt, R bootstrap resamples, V verifiers of an ensemble.

For a generator f, a task utility u(x, y) in {0, 1} and a verifier score û(x, y) (from a verifier
model g, `selection.gv_verifiers`):

    J(f|x)     = E_{y~f(.|x)}[u(x, y)],   estimated by the mean of u over the N samples of x;
    f[w](y|x) ∝ f(y|x) w(û(x, y)),        the reweighted generator, with
                 w = exp(û / beta)         (the optimum of KL-regularized RL, weight "exp"), or
                 w = 1[û >= tau]           (rejection: "threshold" with a global tau, or "quantile"
                                            with tau the prompt's own q-quantile of û);
    J(f[w]|x)  = sum_j w_j u_j / sum_j w_j over the same N samples (self-normalized importance
                 estimate). Convention: when a filter keeps nothing (sum_j w_j = 0),
                 J(f[w]|x) = J(f|x), i.e. no change; `gap_table` counts those prompts ("num_empty").
    gap        = E_x[J(f[w]|x) - J(f|x)]                                    (Def. 2.1)
    gap_rel    = E_x[(J(f[w]|x) - J(f|x)) / (1 - J(f|x))] over prompts with J(f|x) < 1   (Def. 2.2)

The relative gap is a per-prompt average, not gap / (1 - J(f)): the paper's Table 2 has Qwen-2 1.5B
on Sudoku at gap +0.14 and relative gap -0.61, which an aggregate ratio cannot give.

Quantile filter ("top n%"): tau_x = the lower empirical q-quantile of û(x, .), the smallest score s
of the row with #{j : û_j <= s} >= q N (numpy's "inverted_cdf"); samples with û >= tau_x are kept,
so all samples tied at tau_x are kept, the mask does not depend on sample order, q = 1 keeps the
row's maximum (with its ties) and q <= 1/N keeps everything.

AND ensemble (Sec. 6.3): a sample is kept only when every member verifier's filter keeps it, so it
never keeps more than any member. Standard errors come from a bootstrap over prompts.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Mapping, Sequence

import numpy as np

RULES = ("quantile", "threshold", "exp")  # per-prompt quantile q, global threshold tau, exp(û / beta)


@dataclasses.dataclass(frozen=True)
class Filter:
    """One reweighting rule and its parameter: quantile q in (0, 1], threshold tau, or exp with beta > 0."""

    rule: str
    value: float

    def __post_init__(self):
        if self.rule not in RULES:
            raise ValueError(f"filter rule {self.rule!r} is not one of {list(RULES)}")
        value = float(self.value)
        if not math.isfinite(value):
            raise ValueError(f"filter {self.rule}:{self.value!r}; expected a finite number")
        if self.rule == "quantile" and not 0.0 < value <= 1.0:
            raise ValueError(f"filter quantile:{value:g}; the quantile must lie in (0, 1]")
        if self.rule == "exp" and not value > 0.0:
            raise ValueError(f"filter exp:{value:g}; beta must be > 0")

    @property
    def name(self) -> str:
        return f"{self.rule}:{self.value:g}"

    @classmethod
    def parse(cls, spec: str, *, where: str = "filter") -> Filter:
        """A filter from "RULE:VALUE" ("quantile:0.7", "threshold:0.5", "exp:1"); errors name `where`."""
        rule, sep, value = str(spec).partition(":")
        if not sep or rule not in RULES:
            raise ValueError(f"{where}={spec!r}; expected RULE:VALUE with RULE one of {list(RULES)}")
        try:
            number = float(value)
        except ValueError:
            raise ValueError(f"{where}={spec!r}; the value after ':' must be a number") from None
        try:
            return cls(rule, number)
        except ValueError as err:
            raise ValueError(f"{where}: {err}") from None

    def weights(self, scores_BN: np.ndarray) -> np.ndarray:
        """w(û) per sample, float64[B, N] (0/1 for the rejection rules)."""
        scores_BN = np.asarray(scores_BN, np.float64)
        if self.rule == "exp":
            return exp_weights(scores_BN, self.value)
        if self.rule == "threshold":
            return (scores_BN >= self.value).astype(np.float64)
        return quantile_mask(scores_BN, self.value).astype(np.float64)


def exp_weights(scores_BN: np.ndarray, beta: float) -> np.ndarray:
    """exp((û - max_j û_j) / beta), float64[B, N]: exp(û / beta) up to a per-prompt factor, which
    the self-normalized estimate cancels (so no overflow at small beta)."""
    scores_BN = np.asarray(scores_BN, np.float64)
    return np.exp((scores_BN - scores_BN.max(axis=-1, keepdims=True)) / beta)


def quantile_thresholds(scores_BN: np.ndarray, q: float) -> np.ndarray:
    """tau_x = the ceil(q N)-th smallest score of each row (lower empirical q-quantile), float64[B]."""
    scores_BN = np.asarray(scores_BN, np.float64)
    n = scores_BN.shape[-1]
    rank = min(max(math.ceil(q * n - 1e-9), 1), n)
    return np.sort(scores_BN, axis=-1)[..., rank - 1]


def quantile_mask(scores_BN: np.ndarray, q: float) -> np.ndarray:
    """1[û >= tau_x] with tau_x = `quantile_thresholds`: the per-prompt "top" filter, ties kept, bool[B, N]."""
    scores_BN = np.asarray(scores_BN, np.float64)
    return scores_BN >= quantile_thresholds(scores_BN, q)[..., None]


def and_ensemble(weights_VBN: Sequence[np.ndarray]) -> np.ndarray:
    """Keep a sample only where every member keeps it: the product of 0/1 weights, float64[B, N]."""
    if not len(weights_VBN):
        raise ValueError("an AND ensemble needs at least one member")
    stacked_VBN = np.asarray(weights_VBN, np.float64)
    if np.any((stacked_VBN != 0) & (stacked_VBN != 1)):
        raise ValueError("an AND ensemble combines rejection filters (0/1 weights), not exp weights")
    return stacked_VBN.prod(axis=0)


def prompt_accuracy(correct_BN: np.ndarray) -> np.ndarray:
    """J(f|x): the mean utility of each prompt's samples, float64[B]."""
    return np.asarray(correct_BN, np.float64).mean(axis=-1)


def reweighted_accuracy(correct_BN: np.ndarray, weights_BN: np.ndarray) -> np.ndarray:
    """J(f[w]|x) = sum_j w_j u_j / sum_j w_j, and J(f|x) where sum_j w_j = 0 (empty filter), float64[B]."""
    u_BN = np.asarray(correct_BN, np.float64)
    w_BN = np.asarray(weights_BN, np.float64)
    if w_BN.shape != u_BN.shape:
        raise ValueError(f"weights have shape {w_BN.shape}; the utilities have {u_BN.shape}")
    if np.any(w_BN < 0) or not np.all(np.isfinite(w_BN)):
        raise ValueError("weights must be finite and >= 0")
    total_B = w_BN.sum(axis=-1)
    weighted_B = (w_BN * u_BN).sum(axis=-1) / np.where(total_B > 0, total_B, 1.0)
    return np.where(total_B > 0, weighted_B, u_BN.mean(axis=-1))


def prompt_gains(correct_BN: np.ndarray, weights_BN: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(J(f[w]|x) - J(f|x), J(f|x)), float64[B] each."""
    base_B = prompt_accuracy(correct_BN)
    return reweighted_accuracy(correct_BN, weights_BN) - base_B, base_B


def gap(gain_B: np.ndarray) -> float:
    """gap = mean_x (J(f[w]|x) - J(f|x)) (Def. 2.1)."""
    return float(np.mean(gain_B))


def relative_gap(gain_B: np.ndarray, base_B: np.ndarray) -> float:
    """gap_rel = mean over prompts with J(f|x) < 1 of gain_x / (1 - J(f|x)) (Def. 2.2); NaN if there are none."""
    gain_B, base_B = np.asarray(gain_B, np.float64), np.asarray(base_B, np.float64)
    open_B = base_B < 1.0
    if not open_B.any():
        return math.nan
    return float(np.mean(gain_B[open_B] / (1.0 - base_B[open_B])))


def bootstrap_indices(num_prompts: int, num_resamples: int, seed: int) -> np.ndarray:
    """Prompt indices of `num_resamples` bootstrap resamples (with replacement), int[R, B]."""
    return np.random.default_rng(seed).integers(0, num_prompts, size=(num_resamples, num_prompts))


def bootstrap_se(gain_B: np.ndarray, base_B: np.ndarray, index_RB: np.ndarray) -> tuple[float, float]:
    """Bootstrap standard errors over prompts of (gap, relative gap): the std (ddof 1) of each statistic
    over the resamples (resamples with no prompt below J = 1 are left out of the relative gap's)."""
    gain_RB, base_RB = np.asarray(gain_B)[index_RB], np.asarray(base_B)[index_RB]
    gaps_R = gain_RB.mean(axis=1)
    open_RB = base_RB < 1.0
    ratio_RB = np.where(open_RB, gain_RB / np.where(open_RB, 1.0 - base_RB, 1.0), 0.0)
    count_R = open_RB.sum(axis=1)
    rel_R = ratio_RB.sum(axis=1)[count_R > 0] / count_R[count_R > 0]
    se = lambda v: float(np.std(v, ddof=1)) if v.size > 1 else math.nan  # noqa: E731
    return se(gaps_R), se(rel_R)


def gap_entry(correct_BN: np.ndarray, weights_BN: np.ndarray, index_RB: np.ndarray) -> dict:
    """The summary entry of one (verifier, filter): gap and relative gap with bootstrap SEs, kept fraction,
    prompts with an empty filter and prompts entering the relative gap."""
    gain_B, base_B = prompt_gains(correct_BN, weights_BN)
    gap_se, rel_se = bootstrap_se(gain_B, base_B, index_RB)
    weights_BN = np.asarray(weights_BN, np.float64)
    rel = relative_gap(gain_B, base_B)
    return {"gap": {"mean": gap(gain_B), "se": gap_se},
            "relative_gap": {"mean": None if math.isnan(rel) else rel, "se": None if math.isnan(rel_se) else rel_se},
            "filtered_accuracy": float(reweighted_accuracy(correct_BN, weights_BN).mean()),
            "kept_fraction": float((weights_BN > 0).mean()),
            "num_empty": int((weights_BN.sum(axis=-1) == 0).sum()),
            "num_relative_prompts": int((base_B < 1.0).sum())}


def ensemble_weights(scores: Mapping[str, np.ndarray], members: Sequence[tuple[str, Filter]]) -> np.ndarray:
    """The AND of each member verifier's rejection filter on its own scores, float64[B, N] (0/1)."""
    missing = [name for name, _ in members if name not in scores]
    if missing:
        raise ValueError(f"ensemble names verifiers without scores: {missing}")
    return and_ensemble([f.weights(scores[name]) for name, f in members])


def gap_table(correct_BN: np.ndarray, weights: Mapping[str, Mapping[str, np.ndarray]], *, num_resamples: int = 1000,
              seed: int = 0) -> dict:
    """{"accuracy": J(f), ..., "gaps": {verifier: {filter: `gap_entry`}}} for one (model, task), where
    weights[verifier][filter] = w(û), float[B, N] (an ensemble is one more "verifier").

    Every entry uses the same bootstrap resamples (numpy.random.default_rng(seed)), so the table is a
    deterministic function of its inputs.
    """
    correct_BN = np.asarray(correct_BN, bool)
    index_RB = bootstrap_indices(correct_BN.shape[0], num_resamples, seed)
    return {"accuracy": float(prompt_accuracy(correct_BN).mean()), "num_prompts": int(correct_BN.shape[0]),
            "num_samples": int(correct_BN.shape[1]),
            "gaps": {name: {f: gap_entry(correct_BN, w_BN, index_RB) for f, w_BN in by_filter.items()}
                     for name, by_filter in weights.items()}}
