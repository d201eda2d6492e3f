"""The transformer as a policy for the train steps: logprob_fn(params, seqs) -> (logp_B, num_tokens_B).

A training sequence is one row holding prompt and completion, padded anywhere:

    seqs = {"tokens": int32[B, T], "valid": bool[B, T], "target": bool[B, T]}

`target` marks the completion tokens whose log-probabilities are summed (log pi(y|x)); padding and
prompt tokens contribute nothing. The computation is the scorer's own (`scoring.score_sequences`),
so training, self-reward scoring and sampling agree.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from sharpen_jax.algorithms.lora import make_lora_logprob_fn
from sharpen_jax.algorithms.train_state import LogprobFn
from sharpen_jax.config import TransformerConfig
from sharpen_jax.scoring import score_sequences

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
        return make_lora_logprob_fn(base, rank=lora_rank, alpha=lora_alpha), base
    return base, base


def pack_sequences(prompts: list[list[int]], completions: list[list[int]], length: int, pad_id: int = 0,
                   ) -> dict[str, np.ndarray]:
    """Right-padded rows prompt ++ completion of `length` tokens with `valid` and `target` masks.

    A completion that does not fit is cut at `length` (its log-likelihood then covers the kept
    tokens); a prompt that leaves no room for one completion token is an error naming the row.
    """
    if len(prompts) != len(completions):
        raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions")
    if not prompts:
        raise ValueError("no sequences to pack: the SFT dataset is empty")
    tokens = np.full((len(prompts), length), pad_id, np.int32)
    valid = np.zeros((len(prompts), length), bool)
    target = np.zeros((len(prompts), length), bool)
    for i, (prompt, completion) in enumerate(zip(prompts, completions)):
        if not prompt:
            raise ValueError(f"prompt {i} is empty; a completion needs at least one prompt token to condition on")
        if len(prompt) >= length:
            raise ValueError(f"prompt {i} has {len(prompt)} tokens, no room for a completion in length={length}")
        row = (list(prompt) + list(completion))[:length]
        tokens[i, :len(row)] = row
        valid[i, :len(row)] = True
        target[i, len(prompt):len(row)] = True
    return {"tokens": tokens, "valid": valid, "target": target}
