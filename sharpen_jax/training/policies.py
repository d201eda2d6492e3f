"""The transformer as a policy for the train steps: logprob_fn(params, seqs) -> (logp_B, num_tokens_B).

A training sequence is one row holding prompt and completion (`completion_rows` builds them: a
left-padded prompt followed by a right-padded completion; the scorer accepts padding anywhere):

    seqs = {"tokens": int32[B, T], "valid": bool[B, T], "target": bool[B, T]}

`target` marks the completion tokens whose log-probabilities are summed (log pi(y|x)); padding and
prompt tokens contribute nothing. The computation is the scorer's own (`scoring.score_sequences`),
so training, self-reward scoring and sampling agree.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from sharpen_jax.config import TransformerConfig
from sharpen_jax.scoring import score_sequences
from sharpen_jax.tokenizer import pad_batch
from sharpen_jax.training import lora
from sharpen_jax.training.train_state import LogprobFn, TrainState, create_train_state

SEQ_KEYS = ("tokens", "valid", "target")


def make_transformer_logprob_fn(config: TransformerConfig, *, chunk_size: int = 128) -> LogprobFn:
    """log pi(y|x) = sum over target tokens t of log softmax(logits_{t-1})[tokens_t], and |y|."""

    def logprob_fn(params, seqs):
        scores = score_sequences(params, config, *(seqs[k] for k in SEQ_KEYS), chunk_size=chunk_size)
        return scores.sum_logprob, scores.length.astype(jnp.float32)

    return logprob_fn


def make_policy(config: TransformerConfig, *, lora_rank: int = 0, lora_alpha: float = 16.0,
                chunk_size: int = 128) -> tuple[LogprobFn, LogprobFn]:
    """(policy logprob_fn, reference logprob_fn): with LoRA the policy reads {"frozen", "trainable"}
    and the reference is the plain model on the base parameters; without LoRA both are the model."""
    base = make_transformer_logprob_fn(config, chunk_size=chunk_size)
    if lora_rank:
        return lora.make_lora_logprob_fn(base, rank=lora_rank, alpha=lora_alpha), base
    return base, base


@dataclasses.dataclass(frozen=True)
class Policy:
    """The trained policy's functions: log-likelihoods for training, and plain params for sampling."""

    logprob_fn: LogprobFn
    ref_logprob_fn: LogprobFn
    lora_rank: int
    lora_alpha: float

    def sampling_params(self, state: TrainState) -> dict:
        """Plain model parameters of the current policy (LoRA adapters merged into the kernels)."""
        if not self.lora_rank:
            return state.params
        return _merge_adapters(state.frozen, state.params, self.lora_alpha / self.lora_rank)


_merge_adapters = jax.jit(lora.merge_adapters, static_argnums=2)


def make_policy_state(config: TransformerConfig, base_params: dict, tx: optax.GradientTransformation,
                      rng: jax.Array, *, lora_rank: int = 0, lora_alpha: float = 16.0,
                      lora_targets: Sequence[str] = lora.ALL_PROJECTIONS) -> tuple[Policy, TrainState]:
    """(policy, initial state): full fine-tuning of a copy of `base_params`, or LoRA adapters on them
    (initialized from `rng`, the base weights kept in `state.frozen`)."""
    logprob_fn, ref_logprob_fn = make_policy(config, lora_rank=lora_rank, lora_alpha=lora_alpha)
    if lora_rank:
        adapters = lora.init_lora(base_params, lora_rank, rng, targets=tuple(lora_targets))
        state = create_train_state(adapters, tx, frozen=base_params)
    else:
        state = create_train_state(base_params, tx)
    return Policy(logprob_fn, ref_logprob_fn, lora_rank, lora_alpha), state


def completion_rows(prompt_tokens_BP, prompt_valid_BP, tokens_BC, valid_BC) -> dict[str, np.ndarray]:
    """Training rows [B, P + C] = left-padded prompt ++ right-padded completion (one contiguous span
    of real tokens per row), with `target` on the completion tokens: the `seqs` layout above."""
    prompt_tokens_BP, prompt_valid_BP = np.asarray(prompt_tokens_BP), np.asarray(prompt_valid_BP, bool)
    tokens_BC, valid_BC = np.asarray(tokens_BC), np.asarray(valid_BC, bool)
    if prompt_tokens_BP.shape[0] != tokens_BC.shape[0]:
        raise ValueError(f"{prompt_tokens_BP.shape[0]} prompts but {tokens_BC.shape[0]} completions")
    empty = np.flatnonzero(~prompt_valid_BP.any(axis=1))
    if empty.size:
        raise ValueError(f"prompt {int(empty[0])} is empty; a completion needs at least one prompt token to "
                         "condition on")
    return {"tokens": np.concatenate([prompt_tokens_BP, tokens_BC], 1).astype(np.int32),
            "valid": np.concatenate([prompt_valid_BP, valid_BC], 1),
            "target": np.concatenate([np.zeros_like(prompt_valid_BP), valid_BC], 1)}


def pack_token_lists(prompts: Sequence[Sequence[int]], completions: Sequence[Sequence[int]], *,
                     completion_length: int, prompt_length: int | None = None, pad_id: int = 0
                     ) -> dict[str, np.ndarray]:
    """`completion_rows` from token-id lists: prompts left-padded to `prompt_length` (default: the
    longest), completions cut to `completion_length` tokens (their log-likelihood then covers the
    kept tokens) and right-padded to it."""
    if len(prompts) != len(completions):
        raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions")
    if not prompts:
        raise ValueError("no sequences to pack: the dataset is empty")
    width = max(map(len, prompts)) if prompt_length is None else prompt_length
    for i, prompt in enumerate(prompts):
        if len(prompt) > width:
            raise ValueError(f"prompt {i} has {len(prompt)} tokens, more than prompt_length={width}")
    p = pad_batch(prompts, pad_id, "left", width)
    c = pad_batch([list(y)[:completion_length] for y in completions], pad_id, "right", completion_length)
    return completion_rows(p.tokens, p.valid, c.tokens, c.valid)
