"""Rollouts for the sharpening experiments: sample completions, score self-rewards, grade, evaluate.

`SampleFn` is the sampling source the experiments take as an argument:

    sample_fn(params, prompt_tokens_BP, prompt_valid_BP, key, num_samples, temperature)
        -> (tokens_BNC int32, valid_BNC bool, logp_BNC float32)

with prompts left-padded, completions right-padded, and logp_BNC the log-probability of each
sampled token under the *untempered* model (0 on padding), so that logp_BNC.sum(-1) is the
self-reward log pi(y|x) of the sampling policy. `make_sampler` adapts the project's sampler
(`sharpen_jax.sampling.sample`: shared prefill, on-device decode, stop strings); any function with
this signature fits (a remote sampler, a cached results file).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from sharpen_jax import sampling
from sharpen_jax.config import TransformerConfig
from sharpen_jax.scoring import score_completions
from sharpen_jax.stopping import StopSpec

SampleFn = Callable[..., tuple[np.ndarray, np.ndarray, np.ndarray]]


def make_sampler(config: TransformerConfig, tokenizer: Any, *, max_new_tokens: int,
                 stop_strings: Sequence[str] = (), max_rows: int = 256) -> SampleFn:
    """A `SampleFn` over `sharpen_jax.sampling.sample`; temperature 0 is greedy. Completions end with
    (and include) the EOS or stop-string-completing token."""
    stop = StopSpec.from_tokenizer(tokenizer, tuple(stop_strings))

    def sample_fn(params, prompt_tokens_BP, prompt_valid_BP, key, num_samples: int, temperature: float):
        prompts = [row[valid].tolist() for row, valid in zip(np.asarray(prompt_tokens_BP),
                                                             np.asarray(prompt_valid_BP, bool))]
        out = sampling.sample(params, config, prompts, num_samples=num_samples, max_new_tokens=max_new_tokens,
                              temperature=float(temperature), stop=stop, rng=key, max_rows=max_rows,
                              pad_id=tokenizer.pad_id)
        valid_BNC = np.arange(out.tokens.shape[-1]) < out.lengths[..., None]
        return out.tokens, valid_BNC, np.where(valid_BNC, out.model_logprobs, 0.0).astype(np.float32)

    return sample_fn


def completion_texts(tokenizer: Any, tokens_NC: np.ndarray, valid_NC: np.ndarray,
                     stop_strings: Sequence[str]) -> list[str]:
    """Decoded completions cut at the first stop string."""
    texts = []
    for tokens_C, valid_C in zip(np.asarray(tokens_NC), np.asarray(valid_NC)):
        text = tokenizer.decode(tokens_C[valid_C].tolist())
        cuts = [text.find(s) for s in stop_strings if s and s in text]
        texts.append(text[:min(cuts)] if cuts else text)
    return texts


def base_logprob(base_params, config: TransformerConfig, prompt_tokens_BP, prompt_valid_BP, tokens_BNC,
                 valid_BNC) -> jax.Array:
    """log pi_base(y|x) [B, N] of completions sampled from another policy (the self-reward r)."""
    b, n, c = tokens_BNC.shape
    fork = lambda x: jnp.repeat(x, n, axis=0)  # noqa: E731
    scores = score_completions(base_params, config, fork(prompt_tokens_BP), fork(prompt_valid_BP),
                               tokens_BNC.reshape(b * n, c), valid_BNC.reshape(b * n, c))
    return scores.sum_logprob.reshape(b, n)


@dataclasses.dataclass(frozen=True)
class PromptSet:
    """Left-padded prompts with the task examples they ask about."""

    tokens: np.ndarray  # int32 [P, L]
    valid: np.ndarray  # bool [P, L]
    examples: tuple

    def __len__(self) -> int:
        return len(self.examples)

    def take(self, idx: np.ndarray) -> PromptSet:
        """The prompts at `idx`, in that order."""
        return PromptSet(self.tokens[idx], self.valid[idx], tuple(self.examples[i] for i in idx))

    def batches(self, batch_size: int):
        """(prompts, n_real) per batch; the last batch is filled up with copies of its first row so that
        every batch has the same shape (one compilation) and only the first n_real rows count."""
        for start in range(0, len(self), batch_size):
            idx = np.arange(start, min(start + batch_size, len(self)))
            yield self.take(np.concatenate([idx, np.full(batch_size - len(idx), idx[0])])), len(idx)


def encode_prompts(tokenizer: Any, task: Any, examples: Sequence, num_shots: int, length: int | None = None
                   ) -> PromptSet:
    """Plain-text k-shot prompts of `examples`, encoded and left-padded (to `length` if given)."""
    if not examples:
        raise ValueError("no examples to build prompts from")
    ids = [tokenizer.encode(task.format_prompt(e, num_shots=num_shots)) for e in examples]
    width = max(map(len, ids)) if length is None else length
    if max(map(len, ids)) > width:
        raise ValueError(f"a prompt has {max(map(len, ids))} tokens, more than prompt_length={width}")
    tokens = np.full((len(ids), width), tokenizer.pad_id, np.int32)
    valid = np.zeros((len(ids), width), bool)
    for i, row in enumerate(ids):
        tokens[i, width - len(row):] = row
        valid[i, width - len(row):] = True
    return PromptSet(tokens, valid, tuple(examples))


def grade(task: Any, tokenizer: Any, examples: Sequence, tokens_BNC, valid_BNC) -> np.ndarray:
    """bool [B, N]: whether each completion's extracted answer is correct."""
    b, n, _ = np.shape(tokens_BNC)
    texts = completion_texts(tokenizer, np.asarray(tokens_BNC).reshape(b * n, -1),
                             np.asarray(valid_BNC).reshape(b * n, -1), task.stop)
    return np.asarray([task.grade(examples[i // n], t).correct for i, t in enumerate(texts)]).reshape(b, n)


def evaluate(sample_fn: SampleFn, params, prompts: PromptSet, task: Any, tokenizer: Any, key: jax.Array, *,
             num_samples: int, temperature: float, batch_size: int,
             base_logprob_fn: Callable | None = None) -> dict[str, float]:
    """The columns of the paper's Table 1 for one model on held-out prompts.

    greedy_accuracy: the temperature-0 completion is correct. sample_accuracy: a single sample at
    `temperature` is correct (mean over N samples). bon_accuracy: the sample with the highest
    self-reward (the model's own log-likelihood) among N is correct. sample_logp: mean log pi(y|x) of
    the samples under the evaluated model; sample_base_logp: under the base model (the objective that
    sharpening raises), when `base_logprob_fn(prompt_tokens, prompt_valid, tokens, valid)` is given.
    """
    totals = {"greedy_accuracy": 0.0, "sample_accuracy": 0.0, "bon_accuracy": 0.0, "sample_logp": 0.0,
              "sample_length": 0.0}
    if base_logprob_fn is not None:
        totals["sample_base_logp"] = 0.0
    for chunk, n in prompts.batches(batch_size):
        key, k_greedy, k_sample = jax.random.split(key, 3)
        greedy = jax.device_get(sample_fn(params, chunk.tokens, chunk.valid, k_greedy, 1, 0.0))
        totals["greedy_accuracy"] += grade(task, tokenizer, chunk.examples[:n], greedy[0][:n], greedy[1][:n]).sum()
        tokens, valid, logp = sample_fn(params, chunk.tokens, chunk.valid, k_sample, num_samples, temperature)
        correct_BN = grade(task, tokenizer, chunk.examples[:n], np.asarray(tokens)[:n], np.asarray(valid)[:n])
        logp_BN = np.asarray(logp.sum(-1))[:n]
        totals["sample_accuracy"] += correct_BN.mean(1).sum()
        totals["bon_accuracy"] += correct_BN[np.arange(n), logp_BN.argmax(1)].sum()
        totals["sample_logp"] += logp_BN.mean(1).sum()
        totals["sample_length"] += np.asarray(valid)[:n].sum(-1).mean(1).sum()
        if base_logprob_fn is not None:
            base_BN = np.asarray(base_logprob_fn(chunk.tokens, chunk.valid, tokens, valid))[:n]
            totals["sample_base_logp"] += base_BN.mean(1).sum()
    return {k: float(v) / len(prompts) for k, v in totals.items()}
