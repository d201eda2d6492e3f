"""Exact quantities of the sharpening paper on enumerable policies (Huang et al., 2024).

Every function works on tables over an enumerated response set:

    logp_XY[x, y] = log pi(y|x)        X prompts, Y responses
    prompt_probs_X[x] = mu(x)          the prompt distribution (uniform when None)

Statements computed here:

    self-reward          r_self(y|x) = log pi_base(y|x)
    target               y*(x) = argmax_y pi_base(y|x)
    coverage             C_cov = E_{x~mu}[1 / pi_base(y*(x)|x)]
    sharpness            P_{x~mu}[pi(y*(x)|x) >= 1 - delta]; (eps, delta)-sharpened when >= 1 - eps
    KL-regularized       max_pi E_pi[r_self] - beta KL(pi || pi_base) is attained by
                         pi*_beta ∝ pi_base^(1 + 1/beta), value beta log sum_y pi_base(y)^(1 + 1/beta)
    best-of-N            P[BoN returns y*] = 1 - (1 - pi_base(y*|x))^N >= 1 - rho once
                         N >= log(1/rho) / pi_base(y*|x)
    SFT-Sharpening       n ~ log(|Pi|/rho)/(delta eps) prompts, N ~ C_cov log(1/delta)/eps samples each

Public functions check concrete inputs eagerly (a ValueError names the bad input: probabilities
that do not sum to one, beta <= 0, delta outside (0, 1)) and skip the checks under tracing, so they
can also be called inside jitted code.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

PROB_ATOL = 1e-4


def _concrete(x) -> bool:
    return not isinstance(x, jax.core.Tracer)


def check_probabilities(probs, name: str, atol: float = PROB_ATOL) -> None:
    """Raise ValueError unless `probs` is finite, >= 0 and sums to one over its last axis."""
    if not _concrete(probs):
        return
    p = np.asarray(probs, np.float64)
    if p.ndim == 0:
        raise ValueError(f"{name} must have a response axis; got a scalar")
    if not np.all(np.isfinite(p)):
        raise ValueError(f"{name} has non-finite probabilities")
    if np.any(p < -atol):
        raise ValueError(f"{name} has negative probabilities (min {p.min():.3g})")
    sums = p.sum(-1)
    worst = np.unravel_index(np.argmax(np.abs(sums - 1.0)), sums.shape)
    if abs(sums[worst] - 1.0) > atol:
        raise ValueError(f"{name} does not sum to one over its last axis: row {tuple(int(i) for i in worst)} "
                         f"sums to {sums[worst]:.6g} (expected 1 within {atol})")


def check_log_probabilities(logp, name: str, atol: float = PROB_ATOL) -> None:
    """Raise ValueError unless exp(`logp`) is a probability table over its last axis (-inf allowed)."""
    if not _concrete(logp):
        return
    lp = np.asarray(logp, np.float64)
    if np.any(np.isnan(lp)) or np.any(lp == np.inf):
        raise ValueError(f"{name} has NaN or +inf log-probabilities")
    check_probabilities(np.exp(lp), f"exp({name})", atol)


def check_beta(beta, name: str = "beta") -> None:
    """Raise ValueError unless the KL coefficient is finite and > 0."""
    if not _concrete(beta):
        return
    b = np.asarray(beta, np.float64)
    if not np.all(np.isfinite(b)) or np.any(b <= 0):
        raise ValueError(f"{name}={beta}: the KL coefficient must be finite and > 0")


def check_unit_interval(value, name: str) -> None:
    """Raise ValueError unless `value` lies strictly between 0 and 1 (eps, delta, rho)."""
    if not _concrete(value):
        return
    v = np.asarray(value, np.float64)
    if not np.all((v > 0) & (v < 1)):
        raise ValueError(f"{name}={value}: expected a number strictly between 0 and 1")


def _prompt_weights(prompt_probs_X, num_prompts: int) -> jax.Array:
    if prompt_probs_X is None:
        return np.full((num_prompts,), 1.0 / num_prompts, np.float32)
    check_probabilities(prompt_probs_X, "prompt_probs_X")
    if jnp.shape(prompt_probs_X) != (num_prompts,):
        raise ValueError(f"prompt_probs_X has shape {jnp.shape(prompt_probs_X)}; expected ({num_prompts},)")
    return jnp.asarray(prompt_probs_X, jnp.float32)


def target_responses(base_logp_XY) -> jax.Array:
    """y*(x) = argmax_y pi_base(y|x) (the smallest index among ties), int32[X]."""
    check_log_probabilities(base_logp_XY, "base_logp_XY")
    return _argmax(jnp.asarray(base_logp_XY))


@jax.jit
def _argmax(logp_XY):
    return jnp.argmax(logp_XY, axis=-1).astype(jnp.int32)


def target_probabilities(logp_XY, y_star_X) -> jax.Array:
    """pi(y*(x)|x) for every prompt, float32[X]."""
    return _target_probs(jnp.asarray(logp_XY), jnp.asarray(y_star_X))


@jax.jit
def _target_probs(logp_XY, y_star_X):
    return jnp.exp(jnp.take_along_axis(logp_XY, y_star_X[:, None], axis=-1)[:, 0])


def coverage_coefficient(base_logp_XY, prompt_probs_X=None) -> jax.Array:
    """C_cov = E_{x~mu}[1 / pi_base(y*(x)|x)] with y*(x) = argmax_y pi_base(y|x) (paper Sec. 4)."""
    check_log_probabilities(base_logp_XY, "base_logp_XY")
    mu_X = _prompt_weights(prompt_probs_X, jnp.shape(base_logp_XY)[0])
    return _coverage(jnp.asarray(base_logp_XY), mu_X)


@jax.jit
def _coverage(base_logp_XY, mu_X):
    return jnp.sum(mu_X * jnp.exp(-jnp.max(base_logp_XY, axis=-1)))


def sharpened_logprobs(base_logp_XY, beta) -> jax.Array:
    """log pi*_beta with pi*_beta(y|x) ∝ pi_base(y|x)^(1 + 1/beta), the maximizer of
    E_pi[log pi_base] - beta KL(pi || pi_base) (paper Sec. 4.2)."""
    check_beta(beta)
    check_log_probabilities(base_logp_XY, "base_logp_XY")
    return _sharpened(jnp.asarray(base_logp_XY), beta)


@jax.jit
def _sharpened(base_logp_XY, beta):
    return jax.nn.log_softmax((1.0 + 1.0 / beta) * base_logp_XY, axis=-1)


def kl_divergence(logp_XY, logq_XY) -> jax.Array:
    """KL(p || q) = sum_y p(y|x) (log p(y|x) - log q(y|x)) per prompt, float32[X]; 0 log 0 = 0."""
    check_log_probabilities(logp_XY, "logp_XY")
    check_log_probabilities(logq_XY, "logq_XY")
    return _kl(jnp.asarray(logp_XY), jnp.asarray(logq_XY))


@jax.jit
def _kl(logp_XY, logq_XY):
    p_XY = jnp.exp(logp_XY)
    return jnp.sum(jnp.where(p_XY > 0, p_XY * (logp_XY - logq_XY), 0.0), axis=-1)


def kl_regularized_objective(logp_XY, base_logp_XY, beta, reward_XY=None) -> jax.Array:
    """J_beta(pi; x) = E_{y~pi(.|x)}[r(y|x)] - beta KL(pi(.|x) || pi_base(.|x)) per prompt, float32[X].

    The reward defaults to the self-reward r_self = log pi_base.
    """
    check_beta(beta)
    check_log_probabilities(logp_XY, "logp_XY")
    check_log_probabilities(base_logp_XY, "base_logp_XY")
    reward_XY = base_logp_XY if reward_XY is None else reward_XY
    return _kl_objective(jnp.asarray(logp_XY), jnp.asarray(base_logp_XY), beta, jnp.asarray(reward_XY))


@jax.jit
def _kl_objective(logp_XY, base_logp_XY, beta, reward_XY):
    p_XY = jnp.exp(logp_XY)
    expected_reward_X = jnp.sum(jnp.where(p_XY > 0, p_XY * reward_XY, 0.0), axis=-1)
    return expected_reward_X - beta * _kl(logp_XY, base_logp_XY)


def optimal_kl_regularized_value(base_logp_XY, beta) -> jax.Array:
    """max_pi J_beta(pi; x) = beta log E_{pi_base}[exp(r_self/beta)] = beta logsumexp((1+1/beta) log pi_base)."""
    check_beta(beta)
    check_log_probabilities(base_logp_XY, "base_logp_XY")
    return _optimal_value(jnp.asarray(base_logp_XY), beta)


@jax.jit
def _optimal_value(base_logp_XY, beta):
    return beta * jax.nn.logsumexp((1.0 + 1.0 / beta) * base_logp_XY, axis=-1)


def sharpness_from_target_probs(target_probs_X, delta, prompt_probs_X=None) -> jax.Array:
    """P_{x~mu}[pi(y*(x)|x) >= 1 - delta] from the per-prompt masses pi(y*(x)|x) on the last axis
    (leading axes, e.g. seeds and grid points, are kept)."""
    check_unit_interval(delta, "delta")
    mu_X = _prompt_weights(prompt_probs_X, jnp.shape(target_probs_X)[-1])
    return _sharpness(jnp.asarray(target_probs_X), delta, mu_X)


@jax.jit
def _sharpness(target_probs_X, delta, mu_X):
    mu_X = mu_X.reshape((1,) * (target_probs_X.ndim - 1) + (-1,))
    return jnp.sum(mu_X * (target_probs_X >= 1.0 - delta), axis=-1)


def sharpness(logp_XY, y_star_X, delta, prompt_probs_X=None) -> jax.Array:
    """P_{x~mu}[pi(y*(x)|x) >= 1 - delta] for the policy with table `logp_XY`."""
    check_log_probabilities(logp_XY, "logp_XY")
    return sharpness_from_target_probs(target_probabilities(logp_XY, y_star_X), delta, prompt_probs_X)


def is_sharpened(logp_XY, y_star_X, eps, delta, prompt_probs_X=None) -> jax.Array:
    """Whether pi is (eps, delta)-sharpened: P_x[pi(y*(x)|x) >= 1 - delta] >= 1 - eps (paper Def. 3.1)."""
    check_unit_interval(eps, "eps")
    return sharpness(logp_XY, y_star_X, delta, prompt_probs_X) >= 1.0 - eps


def best_of_n_success_probability(target_prob, num_samples) -> jax.Array:
    """P[best-of-N under r_self returns y*] = 1 - (1 - pi_base(y*|x))^N (y* the unique argmax)."""
    if _concrete(target_prob) and np.any((np.asarray(target_prob) <= 0) | (np.asarray(target_prob) > 1)):
        raise ValueError(f"target_prob={target_prob}: expected probabilities in (0, 1]")
    p = jnp.asarray(target_prob, jnp.float32)
    return -jnp.expm1(num_samples * jnp.log1p(-jnp.minimum(p, 1.0 - 1e-7)))


def best_of_n_sufficient_samples(target_prob, rho) -> np.ndarray:
    """The paper's inference-time bound: N = ceil(log(1/rho) / pi_base(y*|x)) gives success >= 1 - rho."""
    check_unit_interval(rho, "rho")
    p = np.asarray(target_prob, np.float64)
    if np.any((p <= 0) | (p > 1)):
        raise ValueError(f"target_prob={target_prob}: expected probabilities in (0, 1]")
    return np.ceil(np.log(1.0 / rho) / p).astype(np.int64)


def sft_sharpening_sample_sizes(c_cov: float, eps: float, delta: float, log_class_size: float,
                                rho: float = 0.1) -> dict[str, int]:
    """The SFT-Sharpening sizes of the paper's upper bound with all constants set to one:

        n = log(|Pi|/rho) / (delta eps)   prompts,
        N = C_cov log(1/delta) / eps      samples per prompt,
        m = n N                           total samples.

    The bound holds up to absolute constants, so these are orders of magnitude, not thresholds.
    """
    check_unit_interval(eps, "eps")
    check_unit_interval(delta, "delta")
    check_unit_interval(rho, "rho")
    if not c_cov >= 1:
        raise ValueError(f"c_cov={c_cov}: the coverage coefficient is at least 1")
    n = math.ceil((log_class_size + math.log(1.0 / rho)) / (delta * eps))
    big_n = math.ceil(c_cov * math.log(1.0 / delta) / eps)
    return {"n": n, "N": big_n, "m": n * big_n}
