"""Teacher-forced scoring: per-token and sequence log-probabilities (the self-reward core).

For a prompt x and completion y = (y_1..y_C) the sequence log-likelihood is
    log pi(y|x) = sum_c log pi(y_c | x, y_<c),
its length-normalized variant is that sum divided by C, and the temperature-scaled variant uses
softmax(logits / tau). Memory: the [B, T, V] logits are never materialized in float32 at once; the
unembedding and log-softmax run over time chunks of `chunk_size` tokens (lax.map), so peak logits
memory is B * chunk_size * V floats.

Batch layout: prompts LEFT-padded [B, P], completions RIGHT-padded [B, C]; concatenated they form
one contiguous real-token span per row, so the logit for completion token c is read at column
P - 1 + c. Positions count real tokens only, so padding does not change any real token's score.
"""

from __future__ import annotations

import functools

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from sharpen_jax import checks
from sharpen_jax.config import TransformerConfig
from sharpen_jax.model import forward_hidden, unembed


@flax.struct.dataclass
class ScoreResult:
    """Scores of a batch of completions; padded completion tokens contribute 0."""

    token_logprobs: jax.Array  # float32[B, C], log pi(y_c | x, y_<c), 0 on padding
    sum_logprob: jax.Array  # float32[B], log pi(y|x)
    mean_logprob: jax.Array  # float32[B], log pi(y|x) / |y| (0 for empty completions)
    length: jax.Array  # int32[B], |y|


def positions_from_valid(valid_BT: jax.Array) -> jax.Array:
    """Position of each token counting real tokens only (padding gets the next position, unused)."""
    return jnp.maximum(jnp.cumsum(valid_BT.astype(jnp.int32), axis=1) - 1, 0)


def chunked_target_logprobs(params: dict, config: TransformerConfig, hidden_BTD: jax.Array, targets_BT: jax.Array,
                            temperature: float | jax.Array = 1.0, chunk_size: int = 32) -> jax.Array:
    """log softmax(unembed(h_t) / temperature)[target_t] for every t, float32[B, T].

    Logits are computed chunk by chunk over time so at most [B, chunk_size, V] exists at once.
    """
    b, t, d = hidden_BTD.shape
    chunk = min(chunk_size, t)
    padded = -(-t // chunk) * chunk
    hidden_BTD = jnp.pad(hidden_BTD, ((0, 0), (0, padded - t), (0, 0)))
    targets_BT = jnp.pad(targets_BT, ((0, 0), (0, padded - t)))
    hidden_nBcD = hidden_BTD.reshape(b, padded // chunk, chunk, d).swapaxes(0, 1)
    targets_nBc = targets_BT.reshape(b, padded // chunk, chunk).swapaxes(0, 1)

    def one_chunk(args):
        h_BcD, y_Bc = args
        logits_BcV = unembed(params, config, h_BcD) / temperature
        logz_Bc = jax.nn.logsumexp(logits_BcV, axis=-1)
        picked_Bc = jnp.take_along_axis(logits_BcV, y_Bc[..., None], axis=-1)[..., 0]
        return picked_Bc - logz_Bc

    logprobs_nBc = jax.lax.map(one_chunk, (hidden_nBcD, targets_nBc))
    return logprobs_nBc.swapaxes(0, 1).reshape(b, padded)[:, :t]


def _check_temperature_and_chunk(temperature, chunk_size: int) -> None:
    if not checks.is_traced(temperature) and np.ndim(temperature) == 0:
        checks.number("temperature", float(temperature), minimum=0, strict_minimum=True)
    checks.integer("chunk_size", chunk_size, 1)


def _check_tokens(config: TransformerConfig, name: str, tokens, valid) -> tuple:
    checks.token_array(name, tokens, config.vocab_size)
    checks.mask_array(name.replace("tokens", "valid"), valid, np.shape(tokens))
    return np.shape(tokens)


def score_completions(params: dict, config: TransformerConfig, prompt_tokens_BP: jax.Array,
                      prompt_valid_BP: jax.Array, completion_tokens_BC: jax.Array, completion_valid_BC: jax.Array,
                      temperature: float | jax.Array = 1.0, chunk_size: int = 32) -> ScoreResult:
    """Score completions given prompts: per-token log-probs, log pi(y|x), its length-normalized mean.

    Prompts must be left-padded and completions right-padded (see the module docstring); every
    prompt needs at least one real token. Works under a mesh: shard the batch axis of the inputs
    and the parameters (sharpen_jax.sharding) and XLA partitions the computation. The arguments are
    checked on the host first (ids < vocab, matching shapes, P + C <= max_seq_len, temperature > 0).
    """
    b, p = _check_tokens(config, "prompt_tokens_BP", prompt_tokens_BP, prompt_valid_BP)
    b_c, c = _check_tokens(config, "completion_tokens_BC", completion_tokens_BC, completion_valid_BC)
    if b_c != b:
        raise ValueError(f"completion_tokens_BC has {b_c} rows and prompt_tokens_BP {b}; expected one completion "
                         f"per prompt row")
    if p + c > config.max_seq_len:
        raise ValueError(f"prompt ({p}) + completion ({c}) tokens exceed the model context of {config.max_seq_len}")
    if not checks.is_traced(prompt_valid_BP) and not np.asarray(prompt_valid_BP).any(axis=1).all():
        raise ValueError("prompt_valid_BP has a row with no real token; every prompt needs at least one token")
    _check_temperature_and_chunk(temperature, chunk_size)
    return _score_completions(params, config, prompt_tokens_BP, prompt_valid_BP, completion_tokens_BC,
                              completion_valid_BC, temperature, chunk_size)


@functools.partial(jax.jit, static_argnames=("config", "chunk_size"))
def _score_completions(params, config: TransformerConfig, prompt_tokens_BP, prompt_valid_BP, completion_tokens_BC,
                       completion_valid_BC, temperature, chunk_size: int) -> ScoreResult:
    """The jitted body of `score_completions` (arguments already checked)."""
    p = prompt_tokens_BP.shape[1]
    tokens_BT = jnp.concatenate([prompt_tokens_BP, completion_tokens_BC], axis=1)
    valid_BT = jnp.concatenate([prompt_valid_BP, completion_valid_BC], axis=1)
    hidden_BTD, _ = forward_hidden(params, config, tokens_BT, positions_from_valid(valid_BT), valid_BT)
    c = completion_tokens_BC.shape[1]
    predicting_BCD = jax.lax.dynamic_slice_in_dim(hidden_BTD, p - 1, c, axis=1)
    logprobs_BC = chunked_target_logprobs(params, config, predicting_BCD, completion_tokens_BC, temperature, chunk_size)
    return summarize(logprobs_BC, completion_valid_BC)


def summarize(logprobs_BC: jax.Array, valid_BC: jax.Array) -> ScoreResult:
    """Mask padded tokens to 0 and reduce to sums, means and lengths."""
    logprobs_BC = jnp.where(valid_BC, logprobs_BC, 0.0)
    length_B = valid_BC.sum(axis=1).astype(jnp.int32)
    total_B = logprobs_BC.sum(axis=1)
    return ScoreResult(logprobs_BC, total_B, total_B / jnp.maximum(length_B, 1), length_B)


def score_sequences(params: dict, config: TransformerConfig, tokens_BT: jax.Array, valid_BT: jax.Array,
                    target_mask_BT: jax.Array, temperature: float | jax.Array = 1.0,
                    chunk_size: int = 32) -> ScoreResult:
    """Teacher-forced scores of the tokens marked by `target_mask_BT` within full sequences.

    Entry t of the result is log pi(tokens[t] | tokens[<t]) (t >= 1; t = 0 has no prefix and must
    not be a target). Use this for training batches that already hold prompt + completion in one
    row: rows are right-padded (or left-padded), so each real token's predecessor is the column
    before it. The arguments are checked on the host first, as in `score_completions`.
    """
    _, t = _check_tokens(config, "tokens_BT", tokens_BT, valid_BT)
    checks.mask_array("target_mask_BT", target_mask_BT, np.shape(tokens_BT))
    if t > config.max_seq_len:
        raise ValueError(f"tokens_BT has {t} tokens per row; expected at most the model context of "
                         f"{config.max_seq_len}")
    _check_temperature_and_chunk(temperature, chunk_size)
    return _score_sequences(params, config, tokens_BT, valid_BT, target_mask_BT, temperature, chunk_size)


@functools.partial(jax.jit, static_argnames=("config", "chunk_size"))
def _score_sequences(params, config: TransformerConfig, tokens_BT, valid_BT, target_mask_BT, temperature,
                     chunk_size: int) -> ScoreResult:
    """The jitted body of `score_sequences` (arguments already checked)."""
    hidden_BTD, _ = forward_hidden(params, config, tokens_BT, positions_from_valid(valid_BT), valid_BT)
    logprobs_BT1 = chunked_target_logprobs(params, config, hidden_BTD[:, :-1], tokens_BT[:, 1:], temperature,
                                           chunk_size)
    logprobs_BT = jnp.pad(logprobs_BT1, ((0, 0), (1, 0)))
    return summarize(logprobs_BT, target_mask_BT & valid_BT)
