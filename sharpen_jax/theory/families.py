"""Sharpening problems with known answers: a base policy, its class, the prompt distribution.

Each family is chosen from the theory, before any measurement:

* `spiked_problem` (tabular): pi_base(y*(x)|x) = p(x) and the rest spread evenly, with 1/p(x)
  set so that C_cov = E_x[1/p(x)] takes a requested value. SFT-Sharpening needs
  N ~ log(1/delta)/p(x) samples per prompt, so its sample complexity should grow linearly in C_cov.
* `bit_agreement_problem` (linear softmax, D = d features): responses are d-bit strings, prompt x
  prefers the bit string s(x), and phi_i(x, y) = 1[y_i = s_i(x)]. With theta = logit(q) 1,
  pi_base(y*|x) = q^d, so C_cov = q^(-d) is exponential in the dimension, while the class has d
  parameters and r_self is linear in phi: the paper's separation example for RLHF vs SFT.
* `prefix_lock_problem` (linear softmax, D = H features, a "combination lock"): responses are
  V^H token strings, phi_h(x, y) = 1[y_1..y_h = s_1..s_h(x)]. theta_base is the autoregressive lock
  (a correct prefix is continued correctly w.p. q, tokens after the first error are uniform), so
  pi_base(y*|x) = q^H and C_cov = q^(-H). The value of theta_H enters only log pi(y*|x): no other
  response reveals it, so the class cannot extrapolate to y* from what pi_base shows
  (`theory/exploration.py` derives what that does to reward-DPO and XPO).
* `greedy_threshold_problem` (autoregressive): mass t on y* = (0, ..., 0) and 1 - t spread over
  the sequences starting with token 1; greedy decoding returns y* iff t > 1/2.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from sharpen_jax.theory import exact
from sharpen_jax.theory.policies import (AutoregressivePolicyClass, EnumerablePolicyClass, LinearSoftmaxPolicyClass,
                                         TabularPolicyClass, policy_logprobs_XY)


@dataclasses.dataclass(frozen=True, eq=False)
class SharpeningProblem:
    """A base policy `base_params` in the class `policy`, prompts x ~ prompt_probs_X."""

    policy: EnumerablePolicyClass
    base_params: Any
    prompt_probs_X: jax.Array
    name: str

    @functools.cached_property
    def base_logp_XY(self) -> jax.Array:
        return policy_logprobs_XY(self.policy, self.base_params)

    @functools.cached_property
    def y_star_X(self) -> jax.Array:
        return exact.target_responses(self.base_logp_XY)

    @functools.cached_property
    def c_cov(self) -> float:
        return float(exact.coverage_coefficient(self.base_logp_XY, self.prompt_probs_X))


def _uniform_prompts(num_prompts: int) -> jax.Array:
    return jnp.full((num_prompts,), 1.0 / num_prompts, jnp.float32)


def spiked_target_probs(c_cov: float, num_prompts: int, spread: float) -> np.ndarray:
    """p(x) with 1/p(x) ∝ spread^t, t evenly spaced in [-1, 1], scaled so that mean_x 1/p(x) = c_cov."""
    weights_X = spread ** np.linspace(-1.0, 1.0, num_prompts)
    return 1.0 / (c_cov * weights_X / weights_X.mean())


def target_mass_problem(target_probs_X, num_responses: int, name: str = "target_mass") -> SharpeningProblem:
    """Tabular base policy with pi_base(y*(x)|x) = target_probs_X[x] at y*(x) = x mod Y and the remaining
    mass spread evenly over the other Y - 1 responses (so y* is the unique argmax when p(x) > 1/Y)."""
    p_X = np.asarray(target_probs_X, np.float64)
    if np.any(p_X >= 1.0) or np.any(p_X * num_responses <= 1.0):
        raise ValueError(f"target_probs_X ranges over [{p_X.min():.3g}, {p_X.max():.3g}]; with "
                         f"num_responses={num_responses} y* is the unique argmax only when 1/Y < p(x) < 1")
    num_prompts = p_X.shape[0]
    probs_XY = np.tile(((1.0 - p_X) / (num_responses - 1))[:, None], (1, num_responses))
    probs_XY[np.arange(num_prompts), np.arange(num_prompts) % num_responses] = p_X
    policy = TabularPolicyClass(num_prompts, num_responses)
    return SharpeningProblem(policy, policy.params_from_probs(probs_XY), _uniform_prompts(num_prompts), name)


def spiked_problem(c_cov: float, num_prompts: int = 16, num_responses: int = 256,
                   spread: float = 2.0) -> SharpeningProblem:
    """`target_mass_problem` with p(x) from `spiked_target_probs`, so that C_cov = c_cov exactly."""
    return target_mass_problem(spiked_target_probs(c_cov, num_prompts, spread), num_responses,
                               f"spiked(C_cov={c_cov:g})")


def _bits_BD(y_B, dim: int) -> jax.Array:
    return (y_B[:, None] >> jnp.arange(dim - 1, -1, -1)[None, :]) & 1


def bit_agreement_problem(dim: int, agree_prob: float = 0.6, num_prompts: int = 8,
                          seed: int = 0) -> SharpeningProblem:
    """Linear-softmax class over d-bit responses with phi_i(x, y) = 1[bit_i(y) = s_i(x)].

    s(x) is a random bit string per prompt (from `seed`); theta_base = logit(q) 1 so each bit agrees
    with s(x) independently with probability q = agree_prob, y*(x) = s(x), pi_base(y*|x) = q^d and
    C_cov = q^(-d). log Z_theta(x) = sum_i log(1 + exp(theta_i)) in closed form. Problems with the same
    (dim, num_prompts, seed) share one policy object, so they stack and share compiled simulations.
    """
    if not 0.5 < agree_prob < 1.0:
        raise ValueError(f"agree_prob={agree_prob}: expected 1/2 < q < 1 so that y* = s(x) is the unique argmax")
    if not 1 <= dim <= 20:
        raise ValueError(f"dim={dim}: expected 1 <= d <= 20 (responses are enumerated, Y = 2^d)")
    policy = _bit_agreement_class(dim, num_prompts, seed)
    theta_D = jnp.full((dim,), math.log(agree_prob / (1.0 - agree_prob)), jnp.float32)
    return SharpeningProblem(policy, policy.params_from_theta(theta_D), _uniform_prompts(num_prompts),
                             f"bit_agreement(d={dim}, q={agree_prob:g})")


@functools.cache
def _bit_agreement_class(dim: int, num_prompts: int, seed: int) -> LinearSoftmaxPolicyClass:
    signs_XD = jnp.asarray(np.random.default_rng(seed).integers(0, 2, (num_prompts, dim)), jnp.int32)

    def feature_fn(x_B, y_B):
        return (_bits_BD(y_B, dim) == signs_XD[x_B]).astype(jnp.float32)

    def log_normalizer_fn(theta_D, x_B):
        return jnp.full(x_B.shape, jnp.sum(jax.nn.softplus(theta_D)))

    return LinearSoftmaxPolicyClass(num_prompts, 2 ** dim, dim, feature_fn, log_normalizer_fn)


def prefix_lock_theta(horizon: int, agree_prob: float, vocab_size: int) -> np.ndarray:
    """theta_base of the autoregressive lock, float64[H]: theta_h = log(qV) for h < H and
    theta_H = log(q(V-1)/(1-q)).

    A string of depth k < H (its first k tokens match the key, token k+1 does not) has
    pi = q^k (1-q)/(V-1) V^-(H-k-1) and the key has q^H; the ratios between consecutive depths are
    these exp(theta_h).
    """
    q, v = agree_prob, vocab_size
    return np.array([math.log(q * v)] * (horizon - 1) + [math.log(q * (v - 1) / (1.0 - q))])


def prefix_lock_problem(horizon: int, agree_prob: float, vocab_size: int = 2, num_prompts: int = 8,
                        seed: int = 0) -> SharpeningProblem:
    """Linear-softmax "combination lock" over V^H token strings, phi_h(x, y) = 1[y_1..y_h = s_1..s_h(x)].

    s(x) is a random key per prompt (from `seed`), theta_base = `prefix_lock_theta`, y*(x) = s(x),
    pi_base(y*|x) = q^H and C_cov = q^(-H); y* is the unique argmax iff q > 1/V (each step deeper
    multiplies the probability by qV > 1). With depth k(y) = the number of leading tokens that match,
    log Z_theta(x) = logsumexp over k < H of [log((V-1) V^(H-k-1)) + sum_{h<=k} theta_h], and sum_h theta_h.
    Problems with the same (horizon, vocab_size, num_prompts, seed) share one policy object.
    """
    if not (isinstance(vocab_size, int) and vocab_size >= 2):
        raise ValueError(f"vocab_size={vocab_size!r}: expected an integer >= 2")
    if not (isinstance(horizon, int) and horizon >= 1 and vocab_size ** horizon <= 2 ** 20):
        raise ValueError(f"horizon={horizon!r}: expected an integer H >= 1 with V^H <= 2^20 (responses are enumerated)")
    if not 1.0 / vocab_size < agree_prob < 1.0:
        raise ValueError(f"agree_prob={agree_prob}: expected 1/V = {1.0 / vocab_size:.3g} < q < 1 so that "
                         "y* = s(x) is the unique argmax")
    policy = _prefix_lock_class(horizon, vocab_size, num_prompts, seed)
    theta_H = prefix_lock_theta(horizon, agree_prob, vocab_size)
    return SharpeningProblem(policy, policy.params_from_theta(theta_H), _uniform_prompts(num_prompts),
                             f"prefix_lock(H={horizon}, V={vocab_size}, q={agree_prob:g})")


@functools.cache
def _prefix_lock_class(horizon: int, vocab_size: int, num_prompts: int, seed: int) -> LinearSoftmaxPolicyClass:
    keys_XH = jnp.asarray(np.random.default_rng(seed).integers(0, vocab_size, (num_prompts, horizon)), jnp.int32)
    powers_H = vocab_size ** jnp.arange(horizon - 1, -1, -1)
    # log of the number of strings whose depth is exactly k, for k = 0..H-1: (V-1) V^(H-k-1)
    log_count_K = jnp.asarray([math.log(vocab_size - 1) + (horizon - k - 1) * math.log(vocab_size)
                               for k in range(horizon)], jnp.float32)

    def feature_fn(x_B, y_B):
        tokens_BH = (y_B[:, None] // powers_H[None, :]) % vocab_size
        return jnp.cumprod((tokens_BH == keys_XH[x_B]).astype(jnp.float32), axis=-1)

    def log_normalizer_fn(theta_H, x_B):
        partial_K = jnp.concatenate([jnp.zeros(1), jnp.cumsum(theta_H)[:-1]])
        log_z = jax.nn.logsumexp(jnp.append(log_count_K + partial_K, jnp.sum(theta_H)))
        return jnp.full(x_B.shape, log_z)

    return LinearSoftmaxPolicyClass(num_prompts, vocab_size ** horizon, horizon, feature_fn, log_normalizer_fn)


def greedy_threshold_problem(target_mass: float, vocab_size: int = 2, horizon: int = 3) -> SharpeningProblem:
    """One prompt; pi(y* = 0...0) = target_mass and 1 - target_mass spread evenly over the V^(H-1)
    sequences whose first token is 1 (the other sequences get 0).

    y* is the argmax whenever target_mass > (1 - target_mass) / V^(H-1); greedy decoding picks
    token 1 first, and so misses y*, exactly when target_mass < 1/2.
    """
    policy = AutoregressivePolicyClass(1, vocab_size, horizon)
    rest = vocab_size ** (horizon - 1)
    if not (1.0 - target_mass) / rest < target_mass < 1.0:
        raise ValueError(f"target_mass={target_mass}: expected (1 - t)/V^(H-1) < t < 1 so that y* is the unique argmax")
    probs_Y = np.zeros(policy.num_responses)
    probs_Y[0] = target_mass
    probs_Y[rest:2 * rest] = (1.0 - target_mass) / rest
    return SharpeningProblem(policy, policy.params_from_sequence_probs(probs_Y[None, :]), _uniform_prompts(1),
                             f"greedy_threshold(t={target_mass:g})")


def random_autoregressive_problem(key, num_prompts: int, vocab_size: int, horizon: int,
                                  scale=2.0) -> SharpeningProblem:
    """Autoregressive policy with i.i.d. N(0, scale^2) conditional logits (`scale` a number or one per
    prompt, float[X]); the larger the scale, the sharper the policy."""
    policy = AutoregressivePolicyClass(num_prompts, vocab_size, horizon)
    scale_X = jnp.broadcast_to(jnp.asarray(scale, jnp.float32), (num_prompts,))
    logits_XPV = scale_X[:, None, None] * jax.random.normal(key, (num_prompts, policy.num_prefixes, vocab_size))
    return SharpeningProblem(policy, {"logits": logits_XPV}, _uniform_prompts(num_prompts),
                             f"random_autoregressive(V={vocab_size}, H={horizon})")
