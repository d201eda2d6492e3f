"""On-device sampling of N completions per prompt with one shared prompt prefill and exact log-probs.

Per micro-batch of B prompts: `_prefill` runs the model once over the left-padded prompts [B, P]
and returns the cache and the next-token logits; `_decode` forks the cache N ways on device (rows
R = B * N, sample j of prompt b at row b * N + j; the prompt keys and values stay shared, see
`model.fork_cache`) and the logits with it, then runs a `lax.while_loop` that samples a
token, records its log-probs, advances the stop automata and feeds the token back, until every
row has finished or max_new_tokens is reached. No host sync happens per token.

Two log-probs are reported per token, named so they are not confused:
  * sampling_logprobs: log q(y_t) under the distribution actually sampled from (logits / T, then
    top-k, then top-p, renormalized); 0 for greedy decoding (a deterministic choice).
  * model_logprobs: log pi(y_t | x, y_<t) under the untempered, untruncated model; these equal
    what `scoring.score_completions` computes for the same tokens.

Randomness: the key of sample j of prompt i is fold_in(fold_in(rng, i), j), and step t uses
fold_in(key, t). Samples therefore do not depend on micro-batching, bucketing or the mesh.
Shapes are bucketed (prompt length to a power of two >= 16, prompt count to a power of two) so
new lengths reuse compiled code.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable, Sequence

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from sharpen_jax import checks, distributed, sharding
from sharpen_jax.config import TransformerConfig
from sharpen_jax.model import fork_cache, forward_hidden, init_cache, unembed
from sharpen_jax.scoring import positions_from_valid
from sharpen_jax.stopping import StopSpec
from sharpen_jax.tokenizer import pad_batch


@dataclasses.dataclass(frozen=True)
class SampleOutput:
    """Completions of B prompts x N samples (numpy, on host)."""

    tokens: np.ndarray  # int32[B, N, M]; pad id after the end
    lengths: np.ndarray  # int32[B, N]; tokens generated, including the EOS / stop-completing token
    finished: np.ndarray  # bool[B, N]; ended by EOS or stop string (False: cut at max_new_tokens)
    sampling_logprobs: np.ndarray  # float32[B, N, M]; under the sampled (tempered, truncated) distribution
    model_logprobs: np.ndarray  # float32[B, N, M]; under the untempered model distribution


@dataclasses.dataclass(frozen=True)
class _Settings:
    num_samples: int
    max_new_tokens: int
    greedy: bool
    top_k: int
    use_top_p: bool
    pad_id: int


@flax.struct.dataclass
class _LoopState:
    step: jax.Array
    cache: dict
    logits_RV: jax.Array
    tokens_RM: jax.Array
    sampling_logprobs_RM: jax.Array
    model_logprobs_RM: jax.Array
    done_R: jax.Array
    lengths_R: jax.Array
    stop_state_RS: jax.Array


def _bucket(n: int, minimum: int = 1, multiple_of: int = 1) -> int:
    """Smallest power of two >= max(n, minimum), rounded up to a multiple of `multiple_of`."""
    power = max(minimum, 1 << max(0, (n - 1).bit_length()))
    return -(-power // multiple_of) * multiple_of


def _constrain_rows(tree, mesh: Mesh | None, axis: int = 0):
    """Shard the row axis of every array in `tree` over the mesh's batch axes."""
    if mesh is None:
        return tree

    def one(x):
        spec = [None] * x.ndim
        spec[axis] = sharding.BATCH_AXES
        return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, P(*spec)))

    return jax.tree.map(one, tree)


def _constrain_cache(cache: dict, mesh: Mesh | None) -> dict:
    """Rows of k/v ([L, R, K, S, H]) and pos ([R, S]), and of a shared prefix, sharded over the batch axes."""
    row_axis = {"k": 1, "v": 1, "pos": 0, "prefix_k": 1, "prefix_v": 1, "prefix_pos": 0}
    return {name: _constrain_rows(x, mesh, row_axis[name]) if name in row_axis else x for name, x in cache.items()}


@functools.partial(jax.jit, static_argnames=("config", "cache_len", "mesh"))
def _prefill(params, config: TransformerConfig, tokens_BP, valid_BP, cache_len: int, mesh: Mesh | None = None):
    """Run the prompts once: (cache with P filled slots of cache_len, next-token logits [B, V])."""
    cache = _constrain_cache(init_cache(config, tokens_BP.shape[0], cache_len), mesh)
    hidden_BPD, cache = forward_hidden(params, config, tokens_BP, positions_from_valid(valid_BP), valid_BP, cache)
    return cache, unembed(params, config, hidden_BPD[:, -1:])[:, 0]


def sampling_logits(logits_RV, temperature, top_k: int, top_p, use_top_p: bool):
    """Unnormalized log-probs of the distribution sampled from: logits / T, top-k, then top-p (nucleus).

    Tokens outside the kept set get -inf; log_softmax of the result is the sampling distribution.
    top_k = 0 disables top-k; with top-p the smallest set of most likely tokens whose mass reaches
    top_p is kept.
    """
    scaled_RV = logits_RV / temperature
    if top_k:
        kth_R1 = jax.lax.top_k(scaled_RV, top_k)[0][:, -1:]
        scaled_RV = jnp.where(scaled_RV < kth_R1, -jnp.inf, scaled_RV)
    if use_top_p:
        sorted_RV = -jnp.sort(-scaled_RV, axis=-1)
        probs_RV = jax.nn.softmax(sorted_RV, axis=-1)
        mass_before_RV = jnp.cumsum(probs_RV, axis=-1) - probs_RV
        threshold_R1 = jnp.min(jnp.where(mass_before_RV < top_p, sorted_RV, jnp.inf), axis=-1, keepdims=True)
        scaled_RV = jnp.where(scaled_RV < threshold_R1, -jnp.inf, scaled_RV)
    return scaled_RV


def draw_tokens(keys_R, logits_RV, block: int = 128):
    """(token_R, logsumexp_R): one draw per row from softmax(logits_RV), and the row's log normalizer.

    Inverse-CDF sampling in two levels: the row's probability mass is summed in blocks of `block`
    token ids, one uniform picks the block from the cumulative block masses and then the id inside
    the block. Exact like Gumbel-max (`jax.random.categorical`), but it draws one uniform per row
    instead of V Gumbel variates, which on CPU cost more than the model's forward step at
    256 rows x 49152 ids; that is why this is ours.
    """
    rows, vocab = logits_RV.shape
    padded_RV = jnp.pad(logits_RV, ((0, 0), (0, -vocab % block)), constant_values=-jnp.inf)
    max_R1 = jnp.max(padded_RV, axis=-1, keepdims=True)
    weights_RCB = jnp.exp(padded_RV - max_R1).reshape(rows, -1, block)  # C blocks of B ids
    block_mass_RC = weights_RCB.sum(axis=-1)
    block_cdf_RC = jnp.cumsum(block_mass_RC, axis=-1)
    total_R = block_cdf_RC[:, -1]
    target_R = jax.vmap(jax.random.uniform)(keys_R) * total_R
    block_R = jnp.minimum(jnp.sum(block_cdf_RC <= target_R[:, None], axis=-1), block_cdf_RC.shape[1] - 1)
    mass_before_R = jnp.take_along_axis(block_cdf_RC - block_mass_RC, block_R[:, None], axis=-1)[:, 0]
    inside_RB = jnp.take_along_axis(weights_RCB, block_R[:, None, None], axis=1)[:, 0]
    inside_cdf_RB = jnp.cumsum(inside_RB, axis=-1)
    offset_R = jnp.sum(inside_cdf_RB <= jnp.maximum(target_R - mass_before_R, 0.0)[:, None], axis=-1)
    # float rounding can push the target past the block's last token with mass; clamp to it
    last_positive_R = block - 1 - jnp.argmax((inside_RB > 0)[:, ::-1], axis=-1)
    token_R = block_R * block + jnp.minimum(offset_R, last_positive_R)
    return token_R.astype(jnp.int32), max_R1[:, 0] + jnp.log(total_R)


@functools.partial(jax.jit, static_argnames=("config", "settings", "mesh"))
def _decode(params, config: TransformerConfig, settings: _Settings, cache, first_logits_BV, prompt_len_B, keys_R,
            temperature, top_p, stop_transitions, stop_matched, eos_ids, mesh: Mesh | None = None):
    """Fork the prompt cache N ways (shared, not copied) and decode up to max_new_tokens tokens per row on device."""
    n, m = settings.num_samples, settings.max_new_tokens
    cache = _constrain_cache(fork_cache(config, cache, n, m), mesh)
    logits_RV = _constrain_rows(jnp.repeat(first_logits_BV, n, axis=0), mesh)
    position_R = jnp.repeat(prompt_len_B, n)
    rows = logits_RV.shape[0]
    num_stops = stop_transitions.shape[0]

    def body(state: _LoopState) -> _LoopState:
        t = state.step
        logit_of = lambda x_RV, token_R: jnp.take_along_axis(x_RV, token_R[:, None], axis=-1)[:, 0]  # noqa: E731
        if settings.greedy:
            token_R = jnp.argmax(state.logits_RV, axis=-1).astype(jnp.int32)
            sampled_logprob_R = jnp.zeros((rows,), jnp.float32)
        else:
            masked_RV = sampling_logits(state.logits_RV, temperature, settings.top_k, top_p, settings.use_top_p)
            step_keys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(keys_R, t)
            token_R, sampling_lse_R = draw_tokens(step_keys, masked_RV)
            sampled_logprob_R = logit_of(masked_RV, token_R) - sampling_lse_R
        model_logprob_R = logit_of(state.logits_RV, token_R) - jax.nn.logsumexp(state.logits_RV, axis=-1)
        live_R = ~state.done_R
        tokens_RM = state.tokens_RM.at[:, t].set(jnp.where(live_R, token_R, settings.pad_id))
        sampling_RM = state.sampling_logprobs_RM.at[:, t].set(jnp.where(live_R, sampled_logprob_R, 0.0))
        model_RM = state.model_logprobs_RM.at[:, t].set(jnp.where(live_R, model_logprob_R, 0.0))
        stop_idx = jnp.arange(num_stops)[None, :]
        stop_state_RS = stop_transitions[stop_idx, state.stop_state_RS, token_R[:, None]]
        hit_R = stop_matched[stop_idx, state.stop_state_RS, token_R[:, None]].any(axis=-1)
        hit_R |= (token_R[:, None] == eos_ids[None, :]).any(axis=-1)
        hidden_R1D, cache = forward_hidden(params, config, token_R[:, None], (position_R + t)[:, None],
                                           jnp.ones((rows, 1), bool), state.cache)
        return _LoopState(step=t + 1, cache=cache, logits_RV=unembed(params, config, hidden_R1D)[:, 0],
                          tokens_RM=tokens_RM, sampling_logprobs_RM=sampling_RM, model_logprobs_RM=model_RM,
                          done_R=state.done_R | hit_R, lengths_R=state.lengths_R + live_R.astype(jnp.int32),
                          stop_state_RS=stop_state_RS)

    def cond(state: _LoopState):
        return (state.step < m) & ~jnp.all(state.done_R)

    init = _LoopState(step=jnp.zeros((), jnp.int32), cache=cache, logits_RV=logits_RV,
                      tokens_RM=jnp.full((rows, m), settings.pad_id, jnp.int32),
                      sampling_logprobs_RM=jnp.zeros((rows, m), jnp.float32),
                      model_logprobs_RM=jnp.zeros((rows, m), jnp.float32), done_R=jnp.zeros((rows,), bool),
                      lengths_R=jnp.zeros((rows,), jnp.int32), stop_state_RS=jnp.zeros((rows, num_stops), jnp.int32))
    final = jax.lax.while_loop(cond, body, init)
    return (final.tokens_RM, final.lengths_R, final.done_R, final.sampling_logprobs_RM, final.model_logprobs_RM)


def _validate(config, prompts, num_samples, max_new_tokens, temperature, top_k, top_p, max_rows) -> list[list[int]]:
    """The prompts as lists of ints (`LocalPrompts` as they are: each process checks its own rows when it
    encodes them), after checking every argument on the host (sharpen_jax.checks)."""
    if isinstance(prompts, LocalPrompts):
        checks.integer("prompts.count", prompts.count, 1)
    elif isinstance(prompts, (str, bytes)) or not hasattr(prompts, "__len__"):
        raise TypeError(f"prompts is a {type(prompts).__name__}; expected a sequence of prompts, each a sequence "
                        f"of token ids")
    elif len(prompts) == 0:
        raise ValueError("prompts is empty; expected at least one prompt (a sequence of token ids)")
    checks.integer("num_samples", num_samples, 1)
    checks.integer("max_new_tokens", max_new_tokens, 1)
    checks.number("temperature", temperature, minimum=0)
    checks.integer("top_k", top_k, 0)
    checks.number("top_p", top_p, minimum=0, maximum=1, strict_minimum=True)
    checks.integer("max_rows", max_rows, 1)
    if isinstance(prompts, LocalPrompts):
        return prompts
    return _token_lists(config, prompts, range(len(prompts)), max_new_tokens)


def _token_lists(config, prompts, indices, max_new_tokens) -> list[list[int]]:
    """prompts[k] (the prompt numbered indices[k]) as a checked list of token ids, for every k."""
    token_lists = [checks.token_list(f"prompts[{i}]", prompt, config.vocab_size) for i, prompt in zip(indices, prompts)]
    for i, prompt in zip(indices, token_lists):
        if len(prompt) == 0:
            raise ValueError(f"prompts[{i}] is empty; every prompt needs at least one token")
        if len(prompt) + max_new_tokens > config.max_seq_len:
            raise ValueError(f"prompts[{i}] has {len(prompt)} tokens; with max_new_tokens={max_new_tokens} it exceeds "
                             f"the model context of {config.max_seq_len} tokens")
    return token_lists


@dataclasses.dataclass(frozen=True)
class LocalPrompts:
    """`count` prompts, each process encoding only the rows it supplies: encode(indices) -> the token
    lists of the prompts numbered `indices` (a numpy int array, possibly empty)."""

    count: int
    encode: Callable[[np.ndarray], Sequence[Sequence[int]]]


def _micro_batch(prompts, start: int, group: int, batch: int, pad_id: int, mesh, config, max_new_tokens):
    """(tokens_BP, valid_BP, lengths_B) of the micro-batch of prompts [start, start + group), filled up
    to `batch` rows. From a token-list sequence every process pads every row (the filler rows copy the
    first prompt). From `LocalPrompts` each process encodes only its own rows
    (`distributed.process_local_rows`; its filler rows copy its first real row, or are one pad token),
    the rows' lengths are gathered from every process to fix the common width, and the global arrays
    are assembled with `distributed.from_process_local`. The real rows are the same either way."""
    if not isinstance(prompts, LocalPrompts):
        rows = list(prompts[start:start + group])
        encoded = pad_batch(rows + [rows[0]] * (batch - group), pad_id, "left", _bucket(max(map(len, rows)), 16))
        if mesh is None:
            return encoded.tokens, encoded.valid, encoded.lengths
        return (*distributed.to_global((encoded.tokens, encoded.valid), sharding.batch_sharding(mesh)),
                encoded.lengths)
    if mesh is None and jax.process_count() > 1:
        raise ValueError("LocalPrompts on several processes need a mesh that spans them")
    own = range(batch)[distributed.process_local_rows(batch)]
    real = np.arange(own.start, min(own.stop, group))
    rows = _token_lists(config, list(prompts.encode(start + real)), start + real, max_new_tokens)
    rows += [rows[0] if rows else [pad_id]] * (len(own) - len(rows))
    lengths_B = distributed.all_process_rows(np.asarray([len(r) for r in rows], np.int32))
    encoded = pad_batch(rows, pad_id, "left", _bucket(int(lengths_B[:group].max()), 16))
    if mesh is None:
        return encoded.tokens, encoded.valid, lengths_B
    return (*distributed.from_process_local((encoded.tokens, encoded.valid), sharding.batch_sharding(mesh)),
            lengths_B)


def sample(params, config: TransformerConfig, prompts: Sequence[Sequence[int]] | LocalPrompts, *,
           num_samples: int = 1,
           max_new_tokens: int, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
           stop: StopSpec | None = None, rng: jax.Array | None = None, mesh: Mesh | None = None,
           max_rows: int = 256, pad_id: int = 0, progress: bool = False) -> SampleOutput:
    """Sample `num_samples` completions for each prompt (token-id lists); temperature 0 is greedy.

    Prompts are processed in micro-batches of at most max(1, max_rows // num_samples) prompts.
    With a mesh, rows are sharded over its data x fsdp axes (params should be placed with
    `sharding.param_shardings(..., decode=True)`); the mesh may span several processes
    (`distributed.global_mesh`), each passing the same prompts and receiving every output, or each
    passing `LocalPrompts` and encoding only the rows it supplies (`_micro_batch`); the samples are
    the same either way.
    """
    prompts = _validate(config, prompts, num_samples, max_new_tokens, temperature, top_k, top_p, max_rows)
    if rng is None and temperature > 0:
        raise ValueError("rng is required when temperature > 0")
    rng = jax.random.key(0) if rng is None else rng
    stop = stop or StopSpec.none(config.vocab_size)
    settings = _Settings(num_samples, max_new_tokens, temperature == 0, min(top_k, config.vocab_size), top_p < 1, pad_id)
    divisor = sharding.batch_divisor(mesh)
    per_batch = max(1, max_rows // num_samples)
    per_batch = _bucket(1 << (per_batch.bit_length() - 1), multiple_of=divisor)
    stop_args = (jnp.asarray(stop.transitions), jnp.asarray(stop.matched),
                 jnp.asarray(stop.eos_ids or (-1,), jnp.int32))
    num_prompts = prompts.count if isinstance(prompts, LocalPrompts) else len(prompts)
    chunks = range(0, num_prompts, per_batch)
    if progress:
        from tqdm.auto import tqdm

        chunks = tqdm(chunks, desc="sampling", unit="batch")
    outputs = []
    for start in chunks:
        group = min(per_batch, num_prompts - start)
        batch = _bucket(group, multiple_of=divisor)
        tokens, valid, lengths = _micro_batch(prompts, start, group, batch, pad_id, mesh, config, max_new_tokens)
        width = tokens.shape[1]
        prompt_keys = jax.vmap(lambda i: jax.random.fold_in(rng, i))(jnp.arange(start, start + batch))
        keys_R = jax.vmap(lambda k: jax.vmap(lambda j: jax.random.fold_in(k, j))(jnp.arange(num_samples)))(
            prompt_keys).reshape(-1)
        cache, logits = _prefill(params, config, tokens, valid, width, mesh)
        result = _decode(params, config, settings, cache, logits, jnp.asarray(lengths, jnp.int32), keys_R,
                         jnp.float32(max(temperature, 1e-6)), jnp.float32(top_p), *stop_args, mesh)
        rows = group * num_samples
        outputs.append([x[:rows] for x in distributed.to_host(result)])
    tokens, lengths, done, sampling_lp, model_lp = (np.concatenate(parts) for parts in zip(*outputs))
    b = num_prompts
    return SampleOutput(tokens.reshape(b, num_samples, -1), lengths.reshape(b, num_samples),
                        done.reshape(b, num_samples), sampling_lp.reshape(b, num_samples, -1),
                        model_lp.reshape(b, num_samples, -1))


@dataclasses.dataclass(frozen=True)
class Generation:
    """One decoded completion with its log-likelihoods (sums over its tokens)."""

    text: str  # decoded, cut before the first stop string, special tokens dropped
    tokens: list[int]  # up to and including the EOS / stop-completing token
    finished: bool
    sampling_logprob: float
    model_logprob: float


def generate(config: TransformerConfig, params, tokenizer, prompts: Sequence[str | Sequence[dict]], *,
             num_samples: int = 1, max_new_tokens: int = 64, temperature: float = 1.0, top_k: int = 0,
             top_p: float = 1.0, stop_strings: Sequence[str] = (), rng: jax.Array | None = None,
             chat: bool = False, mesh: Mesh | None = None, max_rows: int = 256,
             progress: bool = False) -> list[list[Generation]]:
    """Text in, text out: sample completions of text prompts (or chat message lists when chat=True)."""
    texts = [tokenizer.apply_chat_template(p) if chat else p for p in prompts]
    token_lists = [tokenizer.encode(t) for t in texts]
    stop = StopSpec.from_tokenizer(tokenizer, stop_strings)
    out = sample(params, config, token_lists, num_samples=num_samples, max_new_tokens=max_new_tokens,
                 temperature=temperature, top_k=top_k, top_p=top_p, stop=stop, rng=rng, mesh=mesh,
                 max_rows=max_rows, pad_id=tokenizer.pad_id, progress=progress)
    results = []
    for b in range(len(prompts)):
        row = []
        for j in range(num_samples):
            n = int(out.lengths[b, j])
            tokens = out.tokens[b, j, :n].tolist()
            text, _ = stop.cut_text(tokenizer.decode(tokens))
            row.append(Generation(text, tokens, bool(out.finished[b, j]),
                                  float(out.sampling_logprobs[b, j, :n].sum()), float(out.model_logprobs[b, j, :n].sum())))
        results.append(row)
    return results
