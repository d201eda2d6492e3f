"""Enumerable policy classes: exact sequence probabilities over a finite response set.

Axis legend: X prompts, Y enumerated responses, B batch, H tokens per response (horizon),
V vocabulary, P prefixes of length < H, D features.

Each class exposes the same surface, so the exact quantities of `exact.py`, the samplers and the
project's training steps work on all of them:

    logprobs_XY(params)          the full table log pi(y|x), exact (enumeration or closed form)
    logprob_fn(params, seqs)     the policy contract of `sharpen_jax.training`:
                                 -> (logp_B float32[B], num_tokens_B float32[B])
    seqs(x_B, y_B)               policy inputs for prompts x_B and response ids y_B

A response id is an integer in [0, Y). For autoregressive policies it is the base-V number whose
digits are the tokens (first token most significant), and `seqs` carries the tokens themselves.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from sharpen_jax.theory.exact import check_log_probabilities, check_probabilities


@dataclasses.dataclass(frozen=True, eq=False)
class TabularPolicyClass:
    """pi(y|x) = softmax(logits[x])[y]: every conditional over Y responses is in the class."""

    num_prompts: int
    num_responses: int

    def params_from_probs(self, probs_XY) -> dict:
        """Parameters whose policy is `probs_XY` (checked to be a probability table); logits = log probs."""
        check_probabilities(probs_XY, "probs_XY")
        if jnp.shape(probs_XY) != (self.num_prompts, self.num_responses):
            raise ValueError(f"probs_XY has shape {jnp.shape(probs_XY)}; "
                             f"expected ({self.num_prompts}, {self.num_responses})")
        return {"logits": jnp.log(jnp.asarray(probs_XY, jnp.float32))}

    def logprobs_XY(self, params) -> jax.Array:
        """log pi(y|x) = log_softmax(logits[x])[y] for every (x, y)."""
        return jax.nn.log_softmax(params["logits"], axis=-1)

    def logprob_fn(self, params, seqs) -> tuple[jax.Array, jax.Array]:
        """(log pi(y_b|x_b), 1) for seqs = {"x": int[B], "y": int[B]}; one scored token per response."""
        logp_B = self.logprobs_XY(params)[seqs["x"], seqs["y"]]
        return logp_B, jnp.ones_like(logp_B)

    def seqs(self, x_B, y_B) -> dict:
        return {"x": jnp.asarray(x_B, jnp.int32), "y": jnp.asarray(y_B, jnp.int32)}


@dataclasses.dataclass(frozen=True, eq=False)
class AutoregressivePolicyClass:
    """pi(y|x) = prod_h softmax(logits[x, prefix(y_<h)])[y_h] over sequences y in V^H.

    One logit vector per prompt and prefix (a full tree of depth H), so every distribution over
    V^H is in the class; sequence probabilities are exact by enumerating all V^H sequences.
    """

    num_prompts: int
    vocab_size: int
    horizon: int

    def __post_init__(self):
        if self.vocab_size < 2 or self.horizon < 1:
            raise ValueError(f"vocab_size={self.vocab_size}, horizon={self.horizon}; expected V >= 2, H >= 1")

    @property
    def num_responses(self) -> int:
        return self.vocab_size ** self.horizon

    @property
    def num_prefixes(self) -> int:
        return (self.vocab_size ** self.horizon - 1) // (self.vocab_size - 1)

    @functools.cached_property
    def tokens_YH(self) -> np.ndarray:
        """All V^H sequences, row y holding the base-V digits of y (first token most significant)."""
        ids_Y = np.arange(self.num_responses)
        powers_H = self.vocab_size ** np.arange(self.horizon - 1, -1, -1)
        return ((ids_Y[:, None] // powers_H[None, :]) % self.vocab_size).astype(np.int32)

    def params_from_sequence_probs(self, probs_XY) -> dict:
        """Conditional logits reproducing the sequence distribution `probs_XY` exactly.

        pi(v | x, prefix) = P(prefix v) / P(prefix), uniform where P(prefix) = 0.
        """
        check_probabilities(probs_XY, "probs_XY")
        p = np.asarray(probs_XY, np.float64)
        if p.shape != (self.num_prompts, self.num_responses):
            raise ValueError(f"probs_XY has shape {p.shape}; expected ({self.num_prompts}, {self.num_responses})")
        v, blocks = self.vocab_size, []
        for h in range(self.horizon):
            marginal = p.reshape(self.num_prompts, v ** h, v, v ** (self.horizon - h - 1)).sum(-1)
            total = marginal.sum(-1, keepdims=True)
            cond = np.where(total > 0, marginal / np.where(total > 0, total, 1.0), 1.0 / v)
            with np.errstate(divide="ignore"):
                blocks.append(np.log(cond))
        return {"logits": jnp.asarray(np.concatenate(blocks, axis=1), jnp.float32)}

    def logprobs_XY(self, params) -> jax.Array:
        """Exact log pi(y|x) of all V^H sequences: the sum of the conditional log-probs along each."""
        return _sequence_logprobs(params["logits"], jnp.asarray(self.tokens_YH), self.vocab_size)

    def logprob_fn(self, params, seqs) -> tuple[jax.Array, jax.Array]:
        """(log pi(y|x), H) for seqs = {"x": int[B], "y": int[B, H] tokens}."""
        logp_B = _batch_logprobs(params["logits"], seqs["x"], seqs["y"], self.vocab_size)
        return logp_B, jnp.full_like(logp_B, float(self.horizon))

    def seqs(self, x_B, y_B) -> dict:
        return {"x": jnp.asarray(x_B, jnp.int32), "y": jnp.asarray(self.tokens_YH)[y_B]}

    def response_ids(self, tokens_BH) -> jax.Array:
        """The id of each token sequence (inverse of `tokens_YH`)."""
        powers_H = self.vocab_size ** jnp.arange(self.horizon - 1, -1, -1)
        return jnp.sum(tokens_BH * powers_H[None, :], axis=-1).astype(jnp.int32)

    def greedy_decode(self, params) -> jax.Array:
        """Response ids of token-by-token greedy decoding, y_h = argmax_v pi(v | x, y_<h), int32[X]."""
        return _greedy_decode(params["logits"], self.vocab_size, self.horizon)

    def sample(self, key, params, x_B) -> jax.Array:
        """Token-by-token ancestral sampling y_h ~ pi(. | x, y_<h); returns response ids int32[B]."""
        return _ancestral_sample(key, params["logits"], jnp.asarray(x_B, jnp.int32), self.vocab_size, self.horizon)


def _prefix_rows_BH(tokens_BH, vocab_size: int) -> jax.Array:
    """Row of the logit table used at position h: (V^h - 1)/(V - 1) + base-V code of y_<h."""
    horizon = tokens_BH.shape[-1]
    h_H = jnp.arange(horizon)
    j_H = jnp.arange(horizon)
    # code_h = sum_{j<h} y_j V^(h-1-j)
    exponent_JH = jnp.maximum(h_H[None, :] - 1 - j_H[:, None], 0)
    weights_JH = jnp.where(j_H[:, None] < h_H[None, :], vocab_size ** exponent_JH, 0)
    codes_BH = jnp.einsum("bj,jh->bh", tokens_BH, weights_JH)
    return ((vocab_size ** h_H - 1) // (vocab_size - 1))[None, :] + codes_BH


@functools.partial(jax.jit, static_argnums=(2,))
def _sequence_logprobs(logits_XPV, tokens_YH, vocab_size: int):
    logp_XPV = jax.nn.log_softmax(logits_XPV, axis=-1)
    return jnp.sum(logp_XPV[:, _prefix_rows_BH(tokens_YH, vocab_size), tokens_YH], axis=-1)


def _batch_logprobs(logits_XPV, x_B, tokens_BH, vocab_size: int):
    logp_XPV = jax.nn.log_softmax(logits_XPV, axis=-1)
    prefix_BH = _prefix_rows_BH(tokens_BH, vocab_size)
    return jnp.sum(logp_XPV[x_B[:, None], prefix_BH, tokens_BH], axis=-1)


@functools.partial(jax.jit, static_argnums=(1, 2))
def _greedy_decode(logits_XPV, vocab_size: int, horizon: int):
    rows_X = jnp.arange(logits_XPV.shape[0])
    code_X = jnp.zeros(logits_XPV.shape[0], jnp.int32)
    for h in range(horizon):
        token_X = jnp.argmax(logits_XPV[rows_X, (vocab_size ** h - 1) // (vocab_size - 1) + code_X], axis=-1)
        code_X = code_X * vocab_size + token_X.astype(jnp.int32)
    return code_X


@functools.partial(jax.jit, static_argnums=(3, 4))
def _ancestral_sample(key, logits_XPV, x_B, vocab_size: int, horizon: int):
    code_B = jnp.zeros(x_B.shape[0], jnp.int32)
    for h, step_key in enumerate(jax.random.split(key, horizon)):
        row_B = (vocab_size ** h - 1) // (vocab_size - 1) + code_B
        token_B = jax.random.categorical(step_key, logits_XPV[x_B, row_B], axis=-1)
        code_B = code_B * vocab_size + token_B.astype(jnp.int32)
    return code_B


FeatureFn = Callable[[jax.Array, jax.Array], jax.Array]
LogNormalizerFn = Callable[[jax.Array, jax.Array], jax.Array]


@dataclasses.dataclass(frozen=True, eq=False)
class LinearSoftmaxPolicyClass:
    """pi_theta(y|x) = exp(<theta, phi(x, y)> - log Z_theta(x)), theta in R^D.

    `feature_fn(x_B, y_B) -> float32[B, D]` gives phi. log Z_theta(x) is computed by enumerating all Y
    responses, or by `log_normalizer_fn(theta_D, x_B) -> float32[B]` when the features admit a closed
    form (`tests/test_theory_policies.py` checks such closed forms against enumeration).
    """

    num_prompts: int
    num_responses: int
    dim: int
    feature_fn: FeatureFn
    log_normalizer_fn: LogNormalizerFn | None = None

    def features_XYD(self) -> jax.Array:
        """phi(x, y) for every prompt and response."""
        x_XY, y_XY = jnp.meshgrid(jnp.arange(self.num_prompts), jnp.arange(self.num_responses), indexing="ij")
        return self.feature_fn(x_XY.reshape(-1), y_XY.reshape(-1)).reshape(
            self.num_prompts, self.num_responses, self.dim)

    def params_from_theta(self, theta_D) -> dict:
        theta_D = jnp.asarray(theta_D, jnp.float32)
        if theta_D.shape != (self.dim,):
            raise ValueError(f"theta_D has shape {theta_D.shape}; expected ({self.dim},)")
        return {"theta": theta_D}

    def logprobs_XY(self, params) -> jax.Array:
        """Exact log pi_theta(y|x) for every (x, y) by enumeration of the responses."""
        return _linear_logprobs(self, params["theta"])

    def _log_normalizer_X(self, theta_D) -> jax.Array:
        if self.log_normalizer_fn is not None:
            return self.log_normalizer_fn(theta_D, jnp.arange(self.num_prompts))
        return jax.nn.logsumexp(self.features_XYD() @ theta_D, axis=-1)

    def logprob_fn(self, params, seqs) -> tuple[jax.Array, jax.Array]:
        """(<theta, phi(x, y)> - log Z_theta(x), 1) for seqs = {"x": int[B], "y": int[B]}."""
        theta_D = params["theta"]
        logp_B = (self.feature_fn(seqs["x"], seqs["y"]) @ theta_D
                  - self._log_normalizer_X(theta_D)[seqs["x"]])
        return logp_B, jnp.ones_like(logp_B)

    def seqs(self, x_B, y_B) -> dict:
        return {"x": jnp.asarray(x_B, jnp.int32), "y": jnp.asarray(y_B, jnp.int32)}


@functools.partial(jax.jit, static_argnums=(0,))
def _linear_logprobs(policy: LinearSoftmaxPolicyClass, theta_D):
    return jax.nn.log_softmax(policy.features_XYD() @ theta_D, axis=-1)


EnumerablePolicyClass = TabularPolicyClass | AutoregressivePolicyClass | LinearSoftmaxPolicyClass


def policy_logprobs_XY(policy: Any, params) -> jax.Array:
    """The exact table log pi(y|x) of `policy` at `params`, checked to be normalized when concrete."""
    logp_XY = policy.logprobs_XY(params)
    check_log_probabilities(logp_XY, f"{type(policy).__name__} log-probabilities")
    return logp_XY
