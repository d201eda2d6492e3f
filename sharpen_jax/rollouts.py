"""Rollouts: sample completions of encoded prompts, turn them into training rows, rescore them under
a reference model, grade them, and score their self-rewards through the selection layer.

Axis legend: B prompts, N samples per prompt, P prompt tokens, C completion tokens.

`SampleFn` is the sampling source the methods take as an argument:

    sample_fn(params, prompt_tokens_BP, prompt_valid_BP, key, num_samples, temperature)
        -> (tokens_BNC int32, valid_BNC bool, logp_BNC float32)

with prompts left-padded, completions right-padded, and logp_BNC the log-probability of each
sampled token under the *untempered* model (0 on padding), so that logp_BNC.sum(-1) is the
log-likelihood log pi(y|x) under the sampling policy. `make_sampler` adapts the project's sampler
(`sharpen_jax.sampling.sample`: shared prefill, on-device decode, stop strings); any function with
this signature fits (a remote sampler, a cached results file, a test double).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import jax
import numpy as np

from sharpen_jax import distributed, sampling
from sharpen_jax.config import TransformerConfig
from sharpen_jax.scoring import score_completions
from sharpen_jax.selection import best_of_n
from sharpen_jax.selection.rewards import Reward, RewardInputs
from sharpen_jax.stopping import StopSpec, cut_at_stop
from sharpen_jax.tokenizer import pad_batch
from sharpen_jax.training.policies import completion_rows

SampleFn = Callable[..., tuple[np.ndarray, np.ndarray, np.ndarray]]
ScoreFn = Callable[["PromptSet", np.ndarray, np.ndarray, np.ndarray], np.ndarray]


def make_sampler(config: TransformerConfig, tokenizer: Any, *, max_new_tokens: int,
                 stop_strings: Sequence[str] = (), max_rows: int = 256, mesh=None) -> SampleFn:
    """A `SampleFn` over `sharpen_jax.sampling.sample`; temperature 0 is greedy. Completions end with
    (and include) the EOS or stop-string-completing token. With a `mesh`, rows are sharded over it and
    each process hands the sampler only the prompt rows its devices hold (`sampling.LocalPrompts`)."""
    stop = StopSpec.from_tokenizer(tokenizer, tuple(stop_strings))

    def sample_fn(params, prompt_tokens_BP, prompt_valid_BP, key, num_samples: int, temperature: float):
        tokens_BP, valid_BP = np.asarray(prompt_tokens_BP), np.asarray(prompt_valid_BP, bool)
        rows = lambda idx: [tokens_BP[i][valid_BP[i]].tolist() for i in idx]  # noqa: E731
        prompts = rows(range(len(tokens_BP))) if mesh is None else sampling.LocalPrompts(len(tokens_BP), rows)
        out = sampling.sample(params, config, prompts, num_samples=num_samples, max_new_tokens=max_new_tokens,
                              temperature=float(temperature), stop=stop, rng=key, max_rows=max_rows,
                              pad_id=tokenizer.pad_id, mesh=mesh)
        valid_BNC = np.arange(out.tokens.shape[-1]) < out.lengths[..., None]
        return out.tokens, valid_BNC, np.where(valid_BNC, out.model_logprobs, 0.0).astype(np.float32)

    return sample_fn


@dataclasses.dataclass(frozen=True)
class PromptSet:
    """Left-padded prompts with their texts and the task examples they ask about."""

    tokens: np.ndarray  # int32 [B, P]
    valid: np.ndarray  # bool [B, P]
    examples: tuple
    texts: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.examples)

    def take(self, idx: np.ndarray) -> PromptSet:
        """The prompts at `idx`, in that order."""
        texts = tuple(self.texts[i] for i in idx) if self.texts else ()
        return PromptSet(self.tokens[idx], self.valid[idx], tuple(self.examples[i] for i in idx), texts)

    def batches(self, batch_size: int):
        """(prompts, n_real) per batch; the last batch is filled up with copies of its first row so that
        every batch has the same shape (one compilation) and only the first n_real rows count."""
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size}; expected >= 1")
        for start in range(0, len(self), batch_size):
            idx = np.arange(start, min(start + batch_size, len(self)))
            yield self.take(np.concatenate([idx, np.full(batch_size - len(idx), idx[0])])), len(idx)


def encode_prompts(tokenizer: Any, task: Any, examples: Sequence, num_shots: int, length: int | None = None
                   ) -> PromptSet:
    """Plain-text k-shot prompts of `examples`, encoded and left-padded (to `length` if given)."""
    if not examples:
        raise ValueError("no examples to build prompts from")
    texts = tuple(task.format_prompt(e, num_shots=num_shots) for e in examples)
    ids = [tokenizer.encode(t) for t in texts]
    if length is not None and max(map(len, ids)) > length:
        raise ValueError(f"a prompt has {max(map(len, ids))} tokens, more than prompt_length={length}")
    padded = pad_batch(ids, tokenizer.pad_id, "left", length)
    return PromptSet(padded.tokens, padded.valid, tuple(examples), texts)


def progress_bar(iterable, label: str, total: int):
    """`iterable` wrapped in a tqdm bar (count, rate, ETA) labelled `label`; unchanged when `label` is empty."""
    if not label:
        return iterable
    import tqdm

    return tqdm.tqdm(iterable, desc=label, total=total, unit="batch", leave=False, dynamic_ncols=True)


def sampled_batches(sample_fn: SampleFn, params, prompts: PromptSet, key: jax.Array, *, num_samples: int,
                    temperature: float, batch_size: int, progress: str = ""):
    """N samples per prompt from `params`, one batch of `batch_size` prompts at a time: yields (the
    batch's real prompts, tokens_BNC, valid_BNC, logp_BNC) with padding rows dropped. Batch i draws
    with the i-th split of `key`, so the samples depend only on the prompts, key and batch size."""
    for chunk, n in progress_bar(prompts.batches(batch_size), progress, -(-len(prompts) // batch_size)):
        key, sub = jax.random.split(key)
        tokens, valid, logp = jax.device_get(sample_fn(params, chunk.tokens, chunk.valid, sub, num_samples,
                                                       temperature))
        yield chunk.take(np.arange(n)), tokens[:n], valid[:n], logp[:n]


def completion_texts(tokenizer: Any, tokens_NC: np.ndarray, valid_NC: np.ndarray,
                     stop_strings: Sequence[str]) -> list[str]:
    """Decoded completions, each cut before its first stop string."""
    return [cut_at_stop(tokenizer.decode(tokens_C[valid_C].tolist()), stop_strings)[0]
            for tokens_C, valid_C in zip(np.asarray(tokens_NC), np.asarray(valid_NC, bool))]


def sample_rows(prompts: PromptSet, tokens_BNC, valid_BNC) -> dict[str, np.ndarray]:
    """Training rows [B*N, P+C] for the N samples of each prompt (the samples of a prompt consecutive)."""
    b, n, c = np.shape(tokens_BNC)
    repeat = lambda x: np.repeat(x, n, axis=0)  # noqa: E731
    return completion_rows(repeat(prompts.tokens), repeat(prompts.valid), np.reshape(tokens_BNC, (b * n, c)),
                           np.reshape(valid_BNC, (b * n, c)))


def rescore(params, config: TransformerConfig, prompt_tokens_BP, prompt_valid_BP, tokens_BNC, valid_BNC, *,
            batch_size: int | None = None) -> np.ndarray:
    """Per-token log-probs float32[B, N, C] of sampled completions under the model (`params`, `config`),
    0 on padding: the reference model's view of samples another policy drew.

    Rows (prompt b, sample n) are scored in chunks of `batch_size` rows (all at once when None); the
    last chunk is filled up with copies of its first row so every chunk has one shape. Parameters on
    a mesh that spans processes work too: every process gets every row's log-probs.
    """
    prompt_tokens_BP, prompt_valid_BP = np.asarray(prompt_tokens_BP), np.asarray(prompt_valid_BP, bool)
    tokens_BNC, valid_BNC = np.asarray(tokens_BNC), np.asarray(valid_BNC, bool)
    b, n, c = tokens_BNC.shape
    if prompt_tokens_BP.shape[0] != b:
        raise ValueError(f"{prompt_tokens_BP.shape[0]} prompts but completions for {b}")
    rows = b * n
    chunk = rows if batch_size is None else batch_size
    if chunk < 1:
        raise ValueError(f"batch_size={batch_size}; expected >= 1")
    prompt_R = np.repeat(np.arange(b), n)
    flat_tokens, flat_valid = tokens_BNC.reshape(rows, c), valid_BNC.reshape(rows, c)
    out_RC = np.zeros((rows, c), np.float32)
    for start in range(0, rows, chunk):
        idx = np.arange(start, min(start + chunk, rows))
        padded = np.concatenate([idx, np.full(chunk - len(idx), idx[0])])
        scores = score_completions(params, config, prompt_tokens_BP[prompt_R[padded]],
                                   prompt_valid_BP[prompt_R[padded]], flat_tokens[padded], flat_valid[padded])
        out_RC[idx] = distributed.to_host(scores.token_logprobs)[:len(idx)]
    return out_RC.reshape(b, n, c)


@dataclasses.dataclass(frozen=True)
class Graded:
    """The grader's view of B x N completions."""

    texts: list[list[str]]  # decoded, cut at the task's stop strings
    answers: list[list[str | None]]  # extracted answers (None where there is none)
    correct_BN: np.ndarray  # bool[B, N]


def grade(task: Any, tokenizer: Any, examples: Sequence, tokens_BNC, valid_BNC) -> Graded:
    """Decode, cut at the task's stop strings, extract and grade every completion."""
    b, n, _ = np.shape(tokens_BNC)
    flat = completion_texts(tokenizer, np.asarray(tokens_BNC).reshape(b * n, -1),
                            np.asarray(valid_BNC).reshape(b * n, -1), task.stop)
    texts = [flat[i * n:(i + 1) * n] for i in range(b)]
    grades = [[task.grade(examples[i], t) for t in row] for i, row in enumerate(texts)]
    return Graded(texts, [[g.extracted for g in row] for row in grades],
                  np.asarray([[g.correct for g in row] for row in grades], bool).reshape(b, n))


def reward_inputs(prompts: PromptSet, graded: Graded, token_logprobs_BNC, valid_BNC) -> RewardInputs:
    """The selection layer's `RewardInputs` for graded samples of `prompts`, with the given reference
    token log-probs."""
    questions = [getattr(e, "question", str(e)) for e in prompts.examples]
    texts = list(prompts.texts) if prompts.texts else questions
    return RewardInputs.build(texts, questions, graded.texts, token_logprobs_BNC,
                              np.asarray(valid_BNC, bool).sum(-1), graded.answers)


def self_reward_fn(reward: Reward, task: Any, tokenizer: Any) -> ScoreFn:
    """score_fn(prompts, tokens_BNC, valid_BNC, ref_token_logprobs_BNC) -> float64[B, N]: `reward` of each
    sample, read through the selection layer (texts and answers from the task's grader)."""

    def score_fn(prompts: PromptSet, tokens_BNC, valid_BNC, ref_token_logprobs_BNC) -> np.ndarray:
        graded = grade(task, tokenizer, prompts.examples, tokens_BNC, valid_BNC)
        return reward(reward_inputs(prompts, graded, ref_token_logprobs_BNC, valid_BNC))

    return score_fn


def evaluate(sample_fn: SampleFn, params, prompts: PromptSet, task: Any, tokenizer: Any, key: jax.Array, *,
             num_samples: int, temperature: float, batch_size: int,
             base_logprob_fn: Callable | None = None, progress: str = "") -> dict[str, float]:
    """The columns of the paper's Table 1 for one model on held-out prompts.

    greedy_accuracy: the temperature-0 completion is correct. sample_accuracy: a single sample at
    `temperature` is correct (mean over N samples). bon_accuracy: the sample with the highest
    log-likelihood under the evaluated model among N is correct (`best_of_n.select`). sample_logp:
    mean log pi(y|x) of the samples under the evaluated model; sample_base_logp: under the base model
    (the objective that sharpening raises), when `base_logprob_fn(prompt_tokens, prompt_valid, tokens,
    valid) -> float[B, N]` is given. A non-empty `progress` shows a progress bar with that label.
    """
    totals = {"greedy_accuracy": 0.0, "sample_accuracy": 0.0, "bon_accuracy": 0.0, "sample_logp": 0.0,
              "sample_length": 0.0}
    if base_logprob_fn is not None:
        totals["sample_base_logp"] = 0.0
    for chunk, n in progress_bar(prompts.batches(batch_size), progress, -(-len(prompts) // batch_size)):
        key, k_greedy, k_sample = jax.random.split(key, 3)
        g_tokens, g_valid, _ = jax.device_get(sample_fn(params, chunk.tokens, chunk.valid, k_greedy, 1, 0.0))
        totals["greedy_accuracy"] += grade(task, tokenizer, chunk.examples[:n], g_tokens[:n], g_valid[:n]).correct_BN.sum()
        tokens, valid, logp = jax.device_get(sample_fn(params, chunk.tokens, chunk.valid, k_sample, num_samples,
                                                       temperature))
        correct_BN = grade(task, tokenizer, chunk.examples[:n], tokens[:n], valid[:n]).correct_BN
        logp_BN = np.asarray(logp).sum(-1)[:n]
        totals["sample_accuracy"] += correct_BN.mean(1).sum()
        totals["bon_accuracy"] += correct_BN[np.arange(n), best_of_n.select(logp_BN)].sum()
        totals["sample_logp"] += logp_BN.mean(1).sum()
        totals["sample_length"] += np.asarray(valid)[:n].sum(-1).mean(1).sum()
        if base_logprob_fn is not None:
            base_BN = np.asarray(base_logprob_fn(chunk.tokens, chunk.valid, tokens, valid))[:n]
            totals["sample_base_logp"] += base_BN.mean(1).sum()
    return {k: float(v) / len(prompts) for k, v in totals.items()}
