"""Samplers with explicit keys on enumerable policies, best-of-N selection and adaptive sample sizes.

Axis legend: X prompts, Y responses, B prompts in a batch, N samples per prompt, G sample-size grid.

Sampling draws from the exact table log pi(y|x) by inverse CDF (a binary search per sample), so
it costs O(log Y) per sample and is vectorized over prompts and samples. Best-of-N keeps, among N
samples, one with the largest reward (the first on ties); with the self-reward r = log pi_base it
returns y*(x) exactly when y* was sampled.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from sharpen_jax.theory.exact import check_log_probabilities, check_unit_interval


def _check_sizes(sample_sizes: tuple[int, ...]) -> None:
    if not sample_sizes or any(int(n) < 1 for n in sample_sizes):
        raise ValueError(f"sample_sizes={sample_sizes}: expected a non-empty tuple of positive integers")


@functools.partial(jax.jit, static_argnames=("num_samples",))
def _sample(key, logp_XY, x_B, num_samples):
    cdf_BY = jnp.cumsum(jnp.exp(logp_XY[x_B]), axis=-1)
    u_BN = jax.random.uniform(key, (x_B.shape[0], num_samples)) * cdf_BY[:, -1:]
    y_BN = jax.vmap(functools.partial(jnp.searchsorted, side="right"))(cdf_BY, u_BN)
    return jnp.minimum(y_BN, logp_XY.shape[-1] - 1).astype(jnp.int32)


def sample_responses(key, logp_XY, x_B, num_samples: int) -> jax.Array:
    """num_samples i.i.d. response ids y ~ pi(.|x_b) for each prompt of x_B, int32[B, N]."""
    check_log_probabilities(logp_XY, "logp_XY")
    return _sample(key, jnp.asarray(logp_XY), jnp.asarray(x_B, jnp.int32), int(num_samples))


def running_best(y_BN, reward_BN) -> tuple[jax.Array, jax.Array]:
    """(best reward, its response) among the first k samples, for every k: float32[B, N], int32[B, N].

    Earlier samples win ties, so the k-th column is best-of-k on the first k samples.
    """
    def step(best, sample):
        take = sample[0] > best[0]
        best = (jnp.where(take, sample[0], best[0]), jnp.where(take, sample[1], best[1]))
        return best, best

    first = (reward_BN[:, 0], y_BN[:, 0])
    _, (best_r_NB, best_y_NB) = jax.lax.scan(step, first, (reward_BN.T, y_BN.T))
    return best_r_NB.T, best_y_NB.T


def best_of_n_along_grid(key, base_logp_XY, reward_XY, x_B, sample_sizes: tuple[int, ...]) -> jax.Array:
    """Best-of-N responses for each N in `sample_sizes`, on one shared stream of samples, int32[G, B].

    Draws max(sample_sizes) samples from pi_base(.|x_b) and returns, for each N, the response with
    the largest reward(y|x) among the first N. Sharing the stream (a coupling) makes success
    monotone in N and the grid cheaper than independent draws; each column is still exact best-of-N.
    """
    _check_sizes(sample_sizes)
    check_log_probabilities(base_logp_XY, "base_logp_XY")
    return _best_of_n_grid(key, jnp.asarray(base_logp_XY), jnp.asarray(reward_XY), jnp.asarray(x_B, jnp.int32),
                           tuple(int(n) for n in sample_sizes))


@functools.partial(jax.jit, static_argnums=(4,))
def _best_of_n_grid(key, base_logp_XY, reward_XY, x_B, sample_sizes):
    y_BN = _sample(key, base_logp_XY, x_B, max(sample_sizes))
    _, best_y_BN = running_best(y_BN, reward_XY[x_B[:, None], y_BN])
    return best_y_BN[:, jnp.asarray(sample_sizes) - 1].T


def best_of_n(key, base_logp_XY, reward_XY, x_B, num_samples: int) -> jax.Array:
    """The best-of-N response under `reward_XY` for each prompt of x_B, N = num_samples, int32[B]."""
    return best_of_n_along_grid(key, base_logp_XY, reward_XY, x_B, (int(num_samples),))[0]


def adaptive_sample_sizes(key, base_logp_XY, x_B, delta, max_samples: int) -> dict[str, jax.Array]:
    """Adaptive SFT-Sharpening sample sizes (paper Sec. 4.1):

        N(x) = inf{k : 1 / max_{j<=k} pi_base(y_j|x) <= k / mu},   mu = ln(2/delta),

    with y_j ~ pi_base(.|x). Stopping without having seen y* has probability at most delta/2,
    because it needs k > mu / pi_base(y*|x) samples that all missed y*. Returns the stopping times
    "num_samples" int32[B] (max_samples where the rule did not fire, flagged in "truncated") and the
    best-of-N(x) responses "best" int32[B].
    """
    check_unit_interval(delta, "delta")
    check_log_probabilities(base_logp_XY, "base_logp_XY")
    return _adaptive(key, jnp.asarray(base_logp_XY), jnp.asarray(x_B, jnp.int32), delta, int(max_samples))


@functools.partial(jax.jit, static_argnums=(4,))
def _adaptive(key, base_logp_XY, x_B, delta, max_samples):
    y_BN = _sample(key, base_logp_XY, x_B, max_samples)
    best_logp_BN, best_y_BN = running_best(y_BN, base_logp_XY[x_B[:, None], y_BN])
    mu = jnp.log(2.0 / delta)
    k_N = jnp.arange(1, max_samples + 1, dtype=jnp.float32)
    stop_BN = k_N[None, :] * jnp.exp(best_logp_BN) >= mu
    fired_B = jnp.any(stop_BN, axis=1)
    index_B = jnp.where(fired_B, jnp.argmax(stop_BN, axis=1), max_samples - 1)
    return {"num_samples": (index_B + 1).astype(jnp.int32),
            "best": jnp.take_along_axis(best_y_BN, index_B[:, None], axis=1)[:, 0],
            "truncated": ~fired_B}


def sample_prompts(key, prompt_probs_X, num_prompts: int) -> jax.Array:
    """num_prompts i.i.d. prompts x ~ mu, int32[num_prompts]."""
    return jax.random.categorical(key, jnp.log(jnp.asarray(prompt_probs_X)), shape=(num_prompts,)).astype(jnp.int32)
