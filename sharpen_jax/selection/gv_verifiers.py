"""The four verifiers of Song et al. (2024), "Mind the Gap", Sec. 3, behind `RewardInputs -> float64[B, N]`.

Axis legend: B prompts, N samples per prompt, R rows (B * N verifications).

* `mc`          log P(yes-word) - log P(no-word) after the filled template, one forward pass with the
                question part shared through the KV cache (`verifiers.make_verifier_reward`, generalized
                to any two single-token words; the sigmoid of it is P(yes) / (P(yes) + P(no))).
* `cot_binary`  the verifier writes its reasoning, then "Verdict: correct" or "Verdict: incorrect";
                û = 1 or 0 (`parse_verdict`).
* `cot_score`   the verifier writes its reasoning, then "Score: K" with K an integer in 1..10; û = K
                (`parse_score`).
* `tournament`  a single-elimination tournament among the N samples of each prompt
                (`selection.tournament`); each pair is asked in both orders, "A" = the first shown, and
                sample i beats j when [m(i, j) - m(j, i)] >= 0, m(x, y) = log P(A) - log P(B) with x
                shown first, which cancels a constant position bias. û = rounds won.

The CoT verifiers generate for all B * N (question, completion) pairs in one call of the project's
batched sampler (`sampling.sample`, greedy), never a loop per sample. An output that does not parse
is a parse failure: it is counted (`VerifierResult.failed_BN`) and scored with the lowest score
(0 for cot_binary, 1 for cot_score); it never raises. Templates are the config's (ours: the paper's
few-shot verification prompts are not available).
"""

from __future__ import annotations

import dataclasses
import re
from typing import Sequence

import numpy as np

from sharpen_jax import sampling
from sharpen_jax.config import TransformerConfig
from sharpen_jax.selection.rewards import Reward, RewardInputs
from sharpen_jax.selection.tournament import tournament_scores
from sharpen_jax.selection.verifiers import choice_margins, make_verifier_reward, single_token_ids, verifier_tokens
from sharpen_jax.stopping import StopSpec

VERIFIERS = ("mc", "cot_binary", "cot_score", "tournament")
SCORE_RANGE = (1, 10)
_VERDICT = re.compile(r"verdict\s*:\s*(correct|incorrect)\b", re.IGNORECASE)
_SCORE = re.compile(r"score\s*:\s*(-?\d+(?:\.\d+)?)", re.IGNORECASE)


@dataclasses.dataclass(frozen=True)
class VerifierResult:
    """One verifier's scores û, float64[B, N], its parse failures, bool[B, N], the tokens it generated and
    the tokens it processed (read by forward passes, prompts included, plus generated)."""

    scores_BN: np.ndarray
    failed_BN: np.ndarray
    generated_tokens: int = 0
    processed_tokens: int = 0


def check_verifier_name(name: str, *, where: str = "verifier") -> str:
    """`name` if it is one of VERIFIERS; otherwise a ValueError naming `where` and the valid names."""
    if name not in VERIFIERS:
        raise ValueError(f"{where}={name!r} is not a verifier; valid: {list(VERIFIERS)}")
    return name


def parse_verdict(text: str) -> tuple[float, bool]:
    """(1.0 for "Verdict: correct", 0.0 for "incorrect", parsed?); no verdict or conflicting verdicts fail."""
    verdicts = {m.lower() for m in _VERDICT.findall(text)}
    if len(verdicts) != 1:
        return 0.0, False
    return (1.0 if verdicts == {"correct"} else 0.0), True


def parse_score(text: str) -> tuple[float, bool]:
    """(K, parsed?) for "Score: K", K an integer in 1..10; none, conflicting, fractional or out-of-range fail
    (score 1, the lowest)."""
    values = set(_SCORE.findall(text))
    if len(values) != 1:
        return float(SCORE_RANGE[0]), False
    value = float(values.pop())
    if value != int(value) or not SCORE_RANGE[0] <= value <= SCORE_RANGE[1]:
        return float(SCORE_RANGE[0]), False
    return value, True


PARSERS = {"cot_binary": parse_verdict, "cot_score": parse_score}


def check_template(template: str, placeholders: Sequence[str], *, where: str) -> str:
    """`template` if it holds each placeholder exactly once, in the given order (the question first, so
    its tokens can be shared); a ValueError naming `where` otherwise."""
    if not isinstance(template, str):
        raise ValueError(f"{where} must be a string, got {type(template).__name__}")
    missing = [p for p in placeholders if template.count("{" + p + "}") != 1]
    if missing:
        raise ValueError(f"{where} must hold {', '.join('{' + p + '}' for p in missing)} exactly once: {template!r}")
    try:
        template.format(**{p: "" for p in placeholders})
    except (KeyError, IndexError, ValueError) as err:
        raise ValueError(f"{where} has braces other than {list(placeholders)}: {err}") from None
    for first, second in zip(placeholders, placeholders[1:]):
        if template.index("{" + first + "}") > template.index("{" + second + "}"):
            raise ValueError(f"{where} must put {{{first}}} before {{{second}}}: {template!r}")
    return template


TEMPLATE_PLACEHOLDERS = {"mc": ("question", "completion"), "cot_binary": ("question", "completion"),
                         "cot_score": ("question", "completion"), "tournament": ("question", "first", "second")}


def cot_prompts(inputs: RewardInputs, template: str) -> list[str]:
    """The verification prompt of every sample, row b * N + j: template(question_b, completion_bj)."""
    b, n = inputs.shape
    return [template.format(question=inputs.questions[i], completion=inputs.completions[i, j])
            for i in range(b) for j in range(n)]


def cot_verify(params, config: TransformerConfig, tokenizer, inputs: RewardInputs, *, kind: str, template: str,
               max_new_tokens: int, stop_strings: Sequence[str] = (), max_rows: int = 256, mesh=None
               ) -> VerifierResult:
    """CoT-Binary or CoT-Score: one greedy batched sampler call over all B * N verification prompts, parsed."""
    parse = PARSERS[kind]
    b, n = inputs.shape
    prompts = [tokenizer.encode(p) for p in cot_prompts(inputs, template)]
    stop = StopSpec.from_tokenizer(tokenizer, tuple(stop_strings))
    out = sampling.sample(params, config, prompts, num_samples=1, max_new_tokens=max_new_tokens, temperature=0.0,
                          stop=stop, mesh=mesh, max_rows=max_rows, pad_id=tokenizer.pad_id)
    parsed = [parse(stop.cut_text(tokenizer.decode(out.tokens[r, 0, :out.lengths[r, 0]]))[0]) for r in range(b * n)]
    scores_BN = np.asarray([s for s, _ in parsed], np.float64).reshape(b, n)
    failed_BN = ~np.asarray([ok for _, ok in parsed], bool).reshape(b, n)
    generated = int(out.lengths.sum())
    return VerifierResult(scores_BN, failed_BN, generated, generated + sum(map(len, prompts)))


def tournament_verify(params, config: TransformerConfig, tokenizer, inputs: RewardInputs, *, template: str,
                      words: tuple[str, str] = (" A", " B"), batch_size: int = 32, seed: int = 0) -> VerifierResult:
    """Tournament scores: each round's pairs of every prompt in one batch of forward passes, both orders."""
    check_template(template, TEMPLATE_PLACEHOLDERS["tournament"], where="tournament template")
    prefix_text, rest = template.split("{first}")
    suffix_text = "{first}" + rest
    ids = single_token_ids(tokenizer, words)
    b, n = inputs.shape
    prefixes = [tokenizer.encode(prefix_text.format(question=inputs.questions[i])) for i in range(b)]
    processed = [0]

    def compare(prompt_P, first_P, second_P):
        pairs = prompt_P.size // b
        if pairs * b != prompt_P.size or np.any(prompt_P.reshape(b, pairs) != np.arange(b)[:, None]):
            raise ValueError("tournament rounds must hold the same pairs count for every prompt, prompt-major")
        first_BP, second_BP = first_P.reshape(b, pairs), second_P.reshape(b, pairs)
        text = lambda i, x, y: suffix_text.format(first=inputs.completions[i, x],  # noqa: E731
                                                  second=inputs.completions[i, y])
        suffixes = [[tokenizer.encode(text(i, x, y), add_bos=False)
                     for k in range(pairs) for x, y in ((first_BP[i, k], second_BP[i, k]),
                                                         (second_BP[i, k], first_BP[i, k]))] for i in range(b)]
        margins_BR = choice_margins(params, config, tokenizer, prefixes, suffixes, ids, batch_size=batch_size)
        processed[0] += sum(map(len, prefixes)) + sum(len(t) for row in suffixes for t in row)
        forward_BP, backward_BP = margins_BR[:, 0::2], margins_BR[:, 1::2]
        return (forward_BP - backward_BP >= 0).ravel()

    scores_BN = tournament_scores(b, n, compare, seed=seed)
    return VerifierResult(scores_BN, np.zeros((b, n), bool), 0, processed[0])


def mc_verify(params, config: TransformerConfig, tokenizer, inputs: RewardInputs, *, template: str,
              words: tuple[str, str] = (" Yes", " No"), batch_size: int = 32) -> VerifierResult:
    """MC: log P(words[0]) - log P(words[1]) after the template, one forward pass (`make_verifier_reward`)."""
    reward = make_verifier_reward(params, config, tokenizer, template=template, yes=words[0], no=words[1],
                                  batch_size=batch_size, name="mc")
    scores_BN = reward(inputs)
    prefixes, suffixes = verifier_tokens(inputs, tokenizer, template)
    processed = sum(map(len, prefixes)) + sum(len(t) for row in suffixes for t in row)
    return VerifierResult(scores_BN, np.zeros(scores_BN.shape, bool), 0, processed)


def as_reward(name: str, verify) -> Reward:
    """A `verify(inputs) -> VerifierResult` as a selection-layer Reward (`RewardInputs -> float64[B, N]`)."""
    return Reward(name, lambda inputs: verify(inputs).scores_BN)


def score_report(scores_BN: np.ndarray, failed_BN: np.ndarray, max_distinct: int = 12) -> dict:
    """Parse failures and the distribution of û: counts per value when there are at most `max_distinct`
    values (small models often collapse to one score), else the 0/10/50/90/100% quantiles."""
    scores = np.asarray(scores_BN, np.float64).ravel()
    values, counts = np.unique(scores, return_counts=True)
    report = {"parse_failures": int(np.asarray(failed_BN).sum()), "num_scores": int(scores.size),
              "distinct_values": int(values.size)}
    if values.size <= max_distinct:
        report["histogram"] = {f"{v:g}": int(c) for v, c in zip(values, counts)}
    else:
        report["quantiles"] = {f"{q:g}": float(np.quantile(scores, q)) for q in (0, 0.1, 0.5, 0.9, 1)}
    return report


__all__ = ["VERIFIERS", "VerifierResult", "check_verifier_name", "parse_verdict", "parse_score", "check_template",
           "cot_verify", "tournament_verify", "mc_verify", "as_reward", "score_report"]
