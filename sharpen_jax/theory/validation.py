"""Numerical checks of the paper's closed-form statements, used by notebooks 1 and 4 and the tests.

* `solve_kl_regularized`: maximize E_pi[r] - beta KL(pi || pi_base) by mirror ascent with autodiff
  gradients, to compare with the closed form pi*_beta ∝ pi_base^(1 + 1/beta).
* `greedy_threshold_scan`: pi(y*|x) and whether token-by-token greedy decoding returns y*, over
  many random autoregressive policies (the proposition: it does whenever pi(y*|x) > 1/2).
* `best_of_n_scan`: Monte Carlo success rate of best-of-N under r_self against the exact
  1 - (1 - p)^N and the bound N >= log(1/rho)/p.
* `notebook_size`: the size flag the notebooks read from SHARPEN_NOTEBOOK_SIZE.
"""

from __future__ import annotations

import functools
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from sharpen_jax.theory import exact, families
from sharpen_jax.theory.sampling import best_of_n_along_grid

SIZE_ENV_VAR = "SHARPEN_NOTEBOOK_SIZE"
SIZES = ("small", "full")


def notebook_size(default: str = "full") -> str:
    """The experiment size notebooks run at: $SHARPEN_NOTEBOOK_SIZE ("small" in the test suite, "full" by default)."""
    size = os.environ.get(SIZE_ENV_VAR, default)
    if size not in SIZES:
        raise ValueError(f"{SIZE_ENV_VAR}={size!r}; expected one of {SIZES}")
    return size


@functools.partial(jax.jit, static_argnames=("num_steps",))
def _mirror_ascent_kl(base_logp_XY, reward_XY, beta, num_steps):
    def objective(probs_XY):
        return jnp.sum(exact.kl_regularized_objective(jnp.log(probs_XY), base_logp_XY, beta, reward_XY))

    step_size = 0.5 / beta

    def step(logp_XY, _):
        grad_XY = jax.grad(objective)(jnp.exp(logp_XY))
        return jax.nn.log_softmax(logp_XY + step_size * grad_XY), None

    logp_XY, _ = jax.lax.scan(step, base_logp_XY, None, length=num_steps)
    return logp_XY


def solve_kl_regularized(base_logp_XY, beta, reward_XY=None, num_steps: int = 100) -> np.ndarray:
    """argmax_pi E_pi[r] - beta KL(pi || pi_base) found numerically, in float64, log-probs [X, Y].

    Mirror ascent on the simplex from pi_base: log pi <- log pi + eta grad_pi J(pi), renormalized, with
    the gradient of J taken by autodiff. J is beta-strongly concave relative to the entropy, so with
    eta = 1/(2 beta) the iterates contract to the maximizer by a factor 1/2 per step. The reward
    defaults to r_self = log pi_base; pi_base must be positive everywhere.
    """
    exact.check_beta(beta)
    exact.check_log_probabilities(base_logp_XY, "base_logp_XY")
    base = np.asarray(base_logp_XY, np.float64)
    if not np.all(np.isfinite(base)):
        raise ValueError("base_logp_XY: direct optimization needs pi_base > 0 everywhere")
    base = base - np.log(np.exp(base).sum(-1, keepdims=True))
    reward = base if reward_XY is None else np.asarray(reward_XY, np.float64)
    with jax.enable_x64(True):
        return np.asarray(_mirror_ascent_kl(jnp.asarray(base), jnp.asarray(reward), jnp.float64(beta), num_steps))


def greedy_threshold_scan(key, num_policies: int = 2000, vocab_size: int = 3, horizon: int = 4,
                          min_scale: float = 0.3, max_scale: float = 4.0) -> dict[str, np.ndarray]:
    """pi(y*|x) and greedy success for random autoregressive policies (one per prompt).

    Logit scales are log-uniform in [min_scale, max_scale] so that pi(y*|x) covers (0, 1).
    Returns "target_prob" [P], "greedy_correct" [P] (greedy decoding returned y*) and
    "violations" (policies with pi(y*|x) > 1/2 where greedy missed y*; the proposition says 0).
    """
    k_scale, k_logits = jax.random.split(key)
    scale_P = jnp.exp(jax.random.uniform(k_scale, (num_policies,), minval=np.log(min_scale), maxval=np.log(max_scale)))
    problem = families.random_autoregressive_problem(k_logits, num_policies, vocab_size, horizon, scale_P)
    logp_PY = problem.base_logp_XY
    y_star_P = exact.target_responses(logp_PY)
    target_P = np.asarray(exact.target_probabilities(logp_PY, y_star_P))
    correct_P = np.asarray(problem.policy.greedy_decode(problem.base_params) == y_star_P)
    return {"target_prob": target_P, "greedy_correct": correct_P,
            "violations": int(np.sum((target_P > 0.5) & ~correct_P))}


def greedy_threshold_examples(epsilons, vocab_size: int = 2, horizon: int = 3) -> dict[str, np.ndarray]:
    """The tight example `families.greedy_threshold_problem` at pi(y*) = 1/2 - eps and 1/2 + eps.

    Returns "epsilon" [E], "below_correct" [E] and "above_correct" [E]: whether greedy decoding returned
    y* (the proposition: False below 1/2, True above), and "below_is_argmax" [E] (y* is still the mode).
    """
    below, above, argmax = [], [], []
    for eps in epsilons:
        for mass, out in ((0.5 - eps, below), (0.5 + eps, above)):
            problem = families.greedy_threshold_problem(mass, vocab_size, horizon)
            out.append(bool(problem.policy.greedy_decode(problem.base_params)[0] == problem.y_star_X[0]))
        low = families.greedy_threshold_problem(0.5 - eps, vocab_size, horizon)
        argmax.append(bool(problem.y_star_X[0] == 0 and low.y_star_X[0] == 0))
    return {"epsilon": np.asarray(epsilons, np.float64), "below_correct": np.array(below),
            "above_correct": np.array(above), "below_is_argmax": np.array(argmax)}


def best_of_n_scan(key, target_probs, sample_sizes: tuple[int, ...], num_trials: int,
                   num_responses: int = 1024) -> dict[str, Any]:
    """Best-of-N success rate for each target mass p = pi_base(y*|x) and N, over `num_trials` draws.

    Returns "target_prob" [P], "sample_sizes" [G], "success_rate" [P, G] (Monte Carlo),
    "standard_error" [P, G] and "exact" [P, G] = 1 - (1 - p)^N.
    """
    problem = families.target_mass_problem(target_probs, num_responses, "best_of_n")
    num_p = len(target_probs)
    x_B = jnp.tile(jnp.arange(num_p, dtype=jnp.int32), num_trials)
    logp_XY = problem.base_logp_XY
    winners_GB = best_of_n_along_grid(key, logp_XY, logp_XY, x_B, tuple(sample_sizes))
    hits_GTP = (winners_GB == problem.y_star_X[x_B][None]).reshape(len(sample_sizes), num_trials, num_p)
    rate_PG = np.asarray(jnp.mean(hits_GTP, axis=1)).T
    p_P = np.asarray(target_probs, np.float64)
    exact_PG = np.asarray(exact.best_of_n_success_probability(p_P[:, None], np.asarray(sample_sizes)[None, :]))
    return {"target_prob": p_P, "sample_sizes": np.asarray(sample_sizes), "success_rate": rate_PG,
            "standard_error": np.sqrt(np.maximum(exact_PG * (1 - exact_PG), 1e-12) / num_trials),
            "exact": exact_PG}
