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
* `verifier` (built by `selection.verifiers.make_verifier_reward`, since it needs a model): the
  model is asked whether the completion answers the question correctly and the score is
  log P("Yes") - log P("No") at the next token, from one forward pass (the "multiple-choice"
  verification of Song et al. (2024), "Mind the Gap").

The majority reward depends on which other completions are present (`Reward.subset_dependent`);
best-of-N estimators recompute it on each subset (`RewardInputs.take`).
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import numpy as np


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
        token_logprobs_BNC = np.asarray(token_logprobs_BNC)
        if token_logprobs_BNC.ndim != 3:
            raise ValueError(f"token_logprobs_BNC must be [B, N, C], got shape {token_logprobs_BNC.shape}")
        token_logprobs_BNC = token_logprobs_BNC.astype(np.float64)
        if np.isnan(token_logprobs_BNC).any() or (token_logprobs_BNC == np.inf).any():
            raise ValueError("token_logprobs_BNC holds NaN or +inf; expected log-probabilities (<= 0, -inf allowed)")
        b, n, c = token_logprobs_BNC.shape
        lengths_BN = np.asarray(lengths_BN)
        if lengths_BN.size and not np.issubdtype(lengths_BN.dtype, np.integer):
            raise TypeError(f"lengths_BN has dtype {lengths_BN.dtype}; expected integer token counts")
        lengths_BN = lengths_BN.astype(np.int64)
        if lengths_BN.size and (lengths_BN.min() < 0 or lengths_BN.max() > c):
            raise ValueError(f"lengths_BN holds {int(lengths_BN.min())}..{int(lengths_BN.max())}; expected "
                             f"completion lengths in [0, C = {c}]")
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
MODEL_REWARDS = ("verifier",)  # rewards that run a model; built by `selection.verifiers`
NAMES = (*BUILTIN, *MODEL_REWARDS)
RENAMED = {"logp": "log_likelihood", "mean_logp": "length_normalized"}  # names used before, now errors


def check_reward_name(name: str, *, where: str = "reward", allowed: Sequence[str] = NAMES) -> str:
    """`name` if it is one of `allowed`; otherwise a ValueError naming `where`, the valid names, and the
    current name of a renamed reward."""
    if name in allowed:
        return name
    hint = f" (renamed to {RENAMED[name]!r})" if RENAMED.get(name) in allowed else ""
    raise ValueError(f"{where}={name!r} is not a reward{hint}; valid: {list(allowed)}")


def builtin_reward(name: str) -> Reward:
    """The model-free reward `name` (log_likelihood, length_normalized, majority); others are an error."""
    return BUILTIN[check_reward_name(name, allowed=tuple(BUILTIN))]


