"""Self-rewards: scores a model gives its own completions, behind one signature.

Axis legend: B prompts, N completions per prompt, C completion tokens, K a subset of the N.

Every reward is a function `RewardInputs -> float64[B, N]` (one score per completion, higher is
better). `RewardInputs` holds, for B prompts with N completions each, the prompt and question
texts, the completion texts, the per-token log-probs that the *reference* model assigns to the
completion tokens (the scorer's output; the reference may differ from the sampling model, as in
the paper, which scores under the base model), the completion lengths and the answers the task
extracted. The rewards of Huang et al. (2024), "Self-Improvement in Language Models: The
Sharpening Mechanism", Section 3:

* `log_likelihood`:     r(x, y) = log pi_ref(y | x) = sum_c log pi_ref(y_c | x, y_<c)
* `length_normalized`:  r(x, y) = log pi_ref(y | x) / |y|
* `majority`:           r(x, y) = #{j : answer(y_j) = answer(y)} over the N completions of x, ties
                        broken by log-likelihood (a completion without an answer gets count 0)
* `make_verifier_reward`: the model is asked whether the completion answers the question
  correctly and the score is log P("Yes") - log P("No") at the next token, from one forward pass
  (the "multiple-choice" verification of Song et al. (2024), "Mind the Gap").

The majority reward depends on which other completions are present (`Reward.subset_dependent`);
best-of-N estimators recompute it on each subset (`RewardInputs.take`).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from sharpen_jax.config import TransformerConfig
from sharpen_jax.model import fork_cache, forward_hidden, init_cache, unembed
from sharpen_jax.scoring import positions_from_valid
from sharpen_jax.tokenizer import pad_batch

VERIFIER_TEMPLATE = ("Question: {question}\nProposed answer:{completion}\n\n"
                     "Is the proposed answer correct? Reply Yes or No.\nReply:")


@dataclasses.dataclass(frozen=True)
class RewardInputs:
    """What a self-reward may read about the N completions of each of B prompts (numpy arrays)."""

    prompts: np.ndarray  # object[B], the prompt texts the completions continue
    questions: np.ndarray  # object[B], the bare questions (no few-shot examples)
    completions: np.ndarray  # object[B, N], completion texts
    token_logprobs_BNC: np.ndarray  # float[B, N, C], log pi_ref(y_c | x, y_<c), 0 on padding
    lengths_BN: np.ndarray  # int[B, N], completion lengths in tokens
    answers: np.ndarray  # object[B, N], extracted answers (None where there is none)

    @classmethod
    def build(cls, prompts: Sequence[str], questions: Sequence[str], completions: Sequence[Sequence[str]],
              token_logprobs_BNC, lengths_BN, answers: Sequence[Sequence[str | None]]) -> RewardInputs:
        """Validate shapes and convert lists to arrays; errors name the mismatched input."""
        token_logprobs_BNC = np.asarray(token_logprobs_BNC, np.float64)
        lengths_BN = np.asarray(lengths_BN, np.int64)
        if token_logprobs_BNC.ndim != 3:
            raise ValueError(f"token_logprobs_BNC must be [B, N, C], got shape {token_logprobs_BNC.shape}")
        b, n, _ = token_logprobs_BNC.shape
        fields = {"prompts": object_array(prompts, 1), "questions": object_array(questions, 1),
                  "completions": object_array(completions, 2), "answers": object_array(answers, 2),
                  "lengths_BN": lengths_BN}
        for name, value in fields.items():
            expected = (b,) if name in ("prompts", "questions") else (b, n)
            if value.shape != expected:
                raise ValueError(f"{name} has shape {value.shape}; token_logprobs_BNC implies {expected}")
        return cls(token_logprobs_BNC=token_logprobs_BNC, **fields)

    @property
    def shape(self) -> tuple[int, int]:
        """(B, N)."""
        return self.lengths_BN.shape

    def take(self, index_BK: np.ndarray) -> RewardInputs:
        """The inputs restricted to completions `index_BK[b]` of each prompt b (a subset of size K)."""
        index_BK = np.asarray(index_BK)
        return RewardInputs(
            prompts=self.prompts, questions=self.questions,
            completions=np.take_along_axis(self.completions, index_BK, axis=1),
            token_logprobs_BNC=np.take_along_axis(self.token_logprobs_BNC, index_BK[..., None], axis=1),
            lengths_BN=np.take_along_axis(self.lengths_BN, index_BK, axis=1),
            answers=np.take_along_axis(self.answers, index_BK, axis=1))


def object_array(values, ndim: int) -> np.ndarray:
    """A numpy object array of exactly `ndim` dims holding the given strings / None."""
    if ndim == 1:
        out = np.empty(len(values), object)
        out[:] = list(values)
        return out
    rows = [list(r) for r in values]
    width = len(rows[0]) if rows else 0
    if any(len(r) != width for r in rows):
        raise ValueError(f"ragged input: rows have lengths {sorted({len(r) for r in rows})}")
    out = np.empty((len(rows), width), object)
    for i, row in enumerate(rows):
        out[i, :] = row
    return out


@dataclasses.dataclass(frozen=True)
class Reward:
    """A named self-reward; `subset_dependent` when a completion's score depends on the others."""

    name: str
    fn: Callable[[RewardInputs], np.ndarray]
    subset_dependent: bool = False

    def __call__(self, inputs: RewardInputs) -> np.ndarray:
        scores_BN = np.asarray(self.fn(inputs), np.float64)
        if scores_BN.shape != inputs.shape:
            raise ValueError(f"reward {self.name!r} returned shape {scores_BN.shape}, expected {inputs.shape}")
        if not np.all(np.isfinite(scores_BN)):
            raise ValueError(f"reward {self.name!r} returned non-finite scores")
        return scores_BN


def sequence_log_likelihood(inputs: RewardInputs) -> np.ndarray:
    """log pi_ref(y|x): the sum of the completion's token log-probs, float64[B, N]."""
    return inputs.token_logprobs_BNC.sum(axis=-1)


def length_normalized_log_likelihood(inputs: RewardInputs) -> np.ndarray:
    """log pi_ref(y|x) / |y| (0 for an empty completion), float64[B, N]."""
    return sequence_log_likelihood(inputs) / np.maximum(inputs.lengths_BN, 1)


def answer_ids(answers: np.ndarray) -> np.ndarray:
    """int64[B, N]: equal ids for equal answers within a prompt's row, -1 where there is no answer."""
    ids_BN = np.full(answers.shape, -1, np.int64)
    for b in range(answers.shape[0]):
        seen: dict[str, int] = {}
        for j, answer in enumerate(answers[b]):
            if answer is not None:
                ids_BN[b, j] = seen.setdefault(answer, len(seen))
    return ids_BN


def majority_scores(answer_ids_BN: np.ndarray, tiebreak_BN: np.ndarray) -> np.ndarray:
    """Votes for each completion's answer plus a tie-break fraction in (0, 1), float64[B, N].

    votes_j = #{k : id_k = id_j} (0 when id_j = -1, i.e. no answer). The fraction is
    (rank of tiebreak_j within the row + 1) / (N + 1), ranks counted from the lowest and an equal
    tie-break score ranking the earlier completion higher, so argmax picks the most-voted answer, between equally
    voted answers the one holding the highest tie-break score, and within it that completion.
    Works on any leading batch shape: [..., N].
    """
    answer_ids_BN = np.asarray(answer_ids_BN)
    n = answer_ids_BN.shape[-1]
    same_BNN = (answer_ids_BN[..., :, None] == answer_ids_BN[..., None, :]) & (answer_ids_BN[..., :, None] >= 0)
    votes_BN = same_BNN.sum(axis=-1)
    tiebreak_BN = np.broadcast_to(np.asarray(tiebreak_BN, np.float64), answer_ids_BN.shape)
    later_first_BN = np.broadcast_to(-np.arange(n), answer_ids_BN.shape)
    order_BN = np.lexsort((later_first_BN, tiebreak_BN), axis=-1)
    rank_BN = np.argsort(order_BN, axis=-1)
    return votes_BN + (rank_BN + 1) / (n + 1)


def majority_vote(inputs: RewardInputs) -> np.ndarray:
    """Majority vote over extracted answers, ties broken by log pi_ref(y|x); see `majority_scores`."""
    return majority_scores(answer_ids(inputs.answers), sequence_log_likelihood(inputs))


LOG_LIKELIHOOD = Reward("log_likelihood", sequence_log_likelihood)
LENGTH_NORMALIZED = Reward("length_normalized", length_normalized_log_likelihood)
MAJORITY = Reward("majority", majority_vote, subset_dependent=True)
BUILTIN = {r.name: r for r in (LOG_LIKELIHOOD, LENGTH_NORMALIZED, MAJORITY)}
NAMES = (*BUILTIN, "verifier")


@functools.partial(jax.jit, static_argnames=("config", "num_samples"))
def _yes_no_logprobs(params, config: TransformerConfig, prefix_BP, prefix_valid_BP, suffix_RS, suffix_len_R,
                     yes_no_ids, num_samples: int):
    """log P(Yes), log P(No) after prefix_b ++ suffix_r for the N = num_samples suffixes of each prefix: [R, 2].

    Prefixes (left-padded) run once into a KV cache that is shared by N rows (R = B * N rows, row
    b * N + j; `model.fork_cache`); the right-padded suffixes then run on top of it, and the next-token distribution
    is read after each suffix's last real token.
    """
    b, p = prefix_BP.shape
    s = suffix_RS.shape[1]
    cache = init_cache(config, b, p)
    _, cache = forward_hidden(params, config, prefix_BP, positions_from_valid(prefix_valid_BP), prefix_valid_BP, cache)
    cache = fork_cache(config, cache, num_samples, s)
    start_R = jnp.repeat(prefix_valid_BP.sum(axis=1), num_samples)
    positions_RS = start_R[:, None] + jnp.arange(s)[None, :]
    valid_RS = jnp.arange(s)[None, :] < suffix_len_R[:, None]
    hidden_RSD, _ = forward_hidden(params, config, suffix_RS, positions_RS, valid_RS, cache)
    last_R1D = jnp.take_along_axis(hidden_RSD, (suffix_len_R - 1)[:, None, None], axis=1)
    logprobs_RV = jax.nn.log_softmax(unembed(params, config, last_R1D)[:, 0], axis=-1)
    return jnp.take(logprobs_RV, yes_no_ids, axis=-1)


def split_template(template: str) -> tuple[str, str]:
    """(prefix, suffix) of a verifier template around "{completion}"; the question must be in the prefix."""
    if template.count("{completion}") != 1 or template.count("{question}") != 1:
        raise ValueError(f"verifier template must hold {{question}} and {{completion}} once each: {template!r}")
    prefix, suffix = template.split("{completion}")
    if "{question}" not in prefix:
        raise ValueError(f"verifier template must put {{question}} before {{completion}}: {template!r}")
    return prefix, "{completion}" + suffix


def verifier_tokens(inputs: RewardInputs, tokenizer, template: str = VERIFIER_TEMPLATE
                    ) -> tuple[list[list[int]], list[list[list[int]]]]:
    """Token ids of each prompt's verifier prefix [B] and of each completion's suffix [B][N].

    The verifier reads tokens(prefix(question)) ++ tokens(suffix(completion)), the two parts
    tokenized separately at the completion boundary (as the completion was sampled after the prompt).
    """
    prefix, suffix = split_template(template)
    b, n = inputs.shape
    prefixes = [tokenizer.encode(prefix.format(question=inputs.questions[i])) for i in range(b)]
    suffixes = [[tokenizer.encode(suffix.format(completion=inputs.completions[i, j]), add_bos=False)
                 for j in range(n)] for i in range(b)]
    return prefixes, suffixes


def make_verifier_reward(params, config: TransformerConfig, tokenizer, *, template: str = VERIFIER_TEMPLATE,
                         yes: str = " Yes", no: str = " No", batch_size: int = 32, progress: bool = False) -> Reward:
    """Reward log P(yes | v) - log P(no | v), v = template(question, completion), one forward pass each.

    `yes` / `no` must each encode to a single token. The question part of v is run once per prompt
    and shared by its N completions through the KV cache; about `batch_size` rows run per call,
    with prefix and suffix widths padded to multiples of 32 and 16 tokens so few shapes compile.
    """
    split_template(template)
    ids = [tokenizer.encode(word, add_bos=False) for word in (yes, no)]
    if any(len(i) != 1 for i in ids):
        raise ValueError(f"verifier words {yes!r} and {no!r} must be single tokens; they encode to {ids}")
    yes_no_ids = jnp.asarray([ids[0][0], ids[1][0]], jnp.int32)

    def verifier(inputs: RewardInputs) -> np.ndarray:
        """log P(yes) - log P(no) for every completion, float64[B, N]."""
        b, n = inputs.shape
        prefixes, suffixes = verifier_tokens(inputs, tokenizer, template)
        per_call = max(1, batch_size // n)
        scores_BN = np.zeros((b, n), np.float64)
        starts = range(0, b, per_call)
        if progress:
            from tqdm.auto import tqdm

            starts = tqdm(starts, desc="verifier", unit="batch", leave=False)
        for start in starts:
            rows = list(range(start, min(start + per_call, b)))
            group = rows + [rows[0]] * (per_call - len(rows))
            prefix = pad_batch([prefixes[i] for i in group], tokenizer.pad_id, "left",
                               -(-max(len(prefixes[i]) for i in group) // 32) * 32)
            flat = [suffixes[i][j] for i in group for j in range(n)]
            suffix = pad_batch(flat, tokenizer.pad_id, "right", -(-max(len(t) for t in flat) // 16) * 16)
            logprobs_R2 = np.asarray(_yes_no_logprobs(
                params, config, jnp.asarray(prefix.tokens), jnp.asarray(prefix.valid), jnp.asarray(suffix.tokens),
                jnp.asarray(suffix.lengths, jnp.int32), yes_no_ids, n), np.float64)
            margin_BN = (logprobs_R2[:, 0] - logprobs_R2[:, 1]).reshape(per_call, n)
            scores_BN[rows] = margin_BN[:len(rows)]
        return scores_BN

    return Reward("verifier", verifier)
