"""Verifier rewards: the model scores its own completions by answering a question about them.

`make_verifier_reward` asks the model whether a completion answers the question correctly and
scores log P("Yes") - log P("No") at the next token, from one forward pass: the "multiple-choice"
verification of Song et al. (2024), "Mind the Gap". It has the signature of every self-reward,
`RewardInputs -> float64[B, N]` (`selection.rewards`).
"""

from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from sharpen_jax.config import TransformerConfig
from sharpen_jax.model import fork_cache, forward_hidden, init_cache, unembed
from sharpen_jax.scoring import positions_from_valid
from sharpen_jax.selection.rewards import Reward, RewardInputs
from sharpen_jax.tokenizer import pad_batch

VERIFIER_TEMPLATE = ("Question: {question}\nProposed answer:{completion}\n\n"
                     "Is the proposed answer correct? Reply Yes or No.\nReply:")


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


def choice_margins(params, config: TransformerConfig, tokenizer, prefixes: Sequence[Sequence[int]],
                   suffixes: Sequence[Sequence[Sequence[int]]], choice_ids, *, batch_size: int = 32,
                   progress: str = "") -> np.ndarray:
    """log P(choice 0) - log P(choice 1) after prefix_b ++ suffix_{b, r}, one forward pass each, float64[B, R].

    Every prompt b has R suffixes; its prefix runs once and is shared by its R suffixes through the
    KV cache (`_yes_no_logprobs`). About `batch_size` rows run per call, with prefix and suffix widths
    padded to multiples of 32 and 16 tokens so few shapes compile. A non-empty `progress` shows a bar.
    """
    b, r = len(prefixes), len(suffixes[0]) if len(suffixes) else 0
    if any(len(row) != r for row in suffixes):
        raise ValueError("choice_margins: every prefix needs the same number of suffixes")
    per_call = max(1, batch_size // max(r, 1))
    margins_BR = np.zeros((b, r), np.float64)
    starts = range(0, b, per_call)
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc=progress, unit="batch", leave=False)
    for start in starts:
        rows = list(range(start, min(start + per_call, b)))
        group = rows + [rows[0]] * (per_call - len(rows))
        prefix = pad_batch([prefixes[i] for i in group], tokenizer.pad_id, "left",
                           -(-max(len(prefixes[i]) for i in group) // 32) * 32)
        flat = [suffixes[i][j] for i in group for j in range(r)]
        suffix = pad_batch(flat, tokenizer.pad_id, "right", -(-max(len(t) for t in flat) // 16) * 16)
        logprobs_R2 = np.asarray(_yes_no_logprobs(
            params, config, jnp.asarray(prefix.tokens), jnp.asarray(prefix.valid), jnp.asarray(suffix.tokens),
            jnp.asarray(suffix.lengths, jnp.int32), choice_ids, r), np.float64)
        margins_BR[rows] = (logprobs_R2[:, 0] - logprobs_R2[:, 1]).reshape(per_call, r)[:len(rows)]
    return margins_BR


def single_token_ids(tokenizer, words: Sequence[str]) -> jax.Array:
    """The token id of each word, int32[len(words)]; a word that is not one token is an error naming it."""
    ids = [tokenizer.encode(word, add_bos=False) for word in words]
    if any(len(i) != 1 for i in ids):
        raise ValueError(f"verifier words {list(words)} must be single tokens; they encode to {ids}")
    return jnp.asarray([i[0] for i in ids], jnp.int32)


def make_verifier_reward(params, config: TransformerConfig, tokenizer, *, template: str = VERIFIER_TEMPLATE,
                         yes: str = " Yes", no: str = " No", batch_size: int = 32, progress: bool = False,
                         name: str = "verifier") -> Reward:
    """Reward log P(yes | v) - log P(no | v), v = template(question, completion), one forward pass each.

    `yes` / `no` must each encode to a single token. The question part of v is run once per prompt
    and shared by its N completions through the KV cache (`choice_margins`).
    """
    split_template(template)
    yes_no_ids = single_token_ids(tokenizer, (yes, no))

    def verifier(inputs: RewardInputs) -> np.ndarray:
        """log P(yes) - log P(no) for every completion, float64[B, N]."""
        prefixes, suffixes = verifier_tokens(inputs, tokenizer, template)
        return choice_margins(params, config, tokenizer, prefixes, suffixes, yes_no_ids, batch_size=batch_size,
                              progress=name if progress else "")

    return Reward(name, verifier)
