"""Stop conditions that run on device: end-of-sequence ids and stop strings matched exactly.

A stop string can span several tokens, and one token can contain it with text around it, so
matching token ids is not enough. Each stop string gets a Knuth-Morris-Pratt automaton over
bytes; we precompute, for every automaton state and every token id, the state after reading that
token's bytes and whether the string completed inside the token. On device, the decode loop then
carries one small integer per (sequence, stop string) and does one table lookup per token.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np


def kmp_automaton(pattern: bytes) -> np.ndarray:
    """int32[m, 256]: next state after reading a byte in state j (state m means matched)."""
    m = len(pattern)
    dfa = np.zeros((m, 256), np.int32)
    dfa[0, pattern[0]] = 1
    fallback = 0
    for j in range(1, m):
        dfa[j] = dfa[fallback]
        dfa[j, pattern[j]] = j + 1
        fallback = dfa[fallback, pattern[j]]
    return dfa


def token_transitions(pattern: bytes, token_bytes: Sequence[bytes]) -> tuple[np.ndarray, np.ndarray]:
    """For each state s < m and token v: (state after the token's bytes, whether the pattern completed).

    Vectorized over the vocabulary: one pass per byte column. Returns int32[m, V], bool[m, V].
    """
    dfa = kmp_automaton(pattern)
    m, vocab = len(pattern), len(token_bytes)
    lengths = np.array([len(b) for b in token_bytes])
    width = max(int(lengths.max()), 1)
    bytes_VW = np.zeros((vocab, width), np.uint8)
    for v, b in enumerate(token_bytes):
        bytes_VW[v, : len(b)] = np.frombuffer(b, np.uint8)
    next_state = np.zeros((m, vocab), np.int32)
    matched = np.zeros((m, vocab), bool)
    for s in range(m):
        state = np.full(vocab, s, np.int32)
        hit = np.zeros(vocab, bool)
        for col in range(width):
            active = (col < lengths) & ~hit
            stepped = dfa[state, bytes_VW[:, col]]
            hit |= active & (stepped == m)
            state = np.where(active & (stepped < m), stepped, state)
        next_state[s], matched[s] = state, hit
    return next_state, matched


@dataclasses.dataclass(frozen=True, eq=False)
class StopSpec:
    """EOS ids and stop strings, compiled to per-token automaton tables.

    transitions: int32[num_strings, max_states, V]; matched: bool[num_strings, max_states, V].
    A sequence ends with (and includes) the token that is an EOS id or completes a stop string.
    """

    eos_ids: tuple[int, ...]
    strings: tuple[str, ...]
    transitions: np.ndarray
    matched: np.ndarray

    @classmethod
    def from_token_bytes(cls, token_bytes: Sequence[bytes], stop_strings: Sequence[str] = (),
                         eos_ids: Sequence[int] = ()) -> StopSpec:
        """Compile stop strings against a vocabulary given as the bytes of each token."""
        for text in stop_strings:
            if not isinstance(text, str) or not text:
                raise ValueError(f"stop strings must be non-empty str, got {text!r}")
        vocab = len(token_bytes)
        bad = [i for i in eos_ids if not 0 <= int(i) < vocab]
        if bad:
            raise ValueError(f"eos ids {bad} are outside the vocabulary of size {vocab}")
        max_states = max([len(s.encode()) for s in stop_strings], default=1)
        transitions = np.zeros((max(len(stop_strings), 1), max_states, vocab), np.int32)
        matched = np.zeros(transitions.shape, bool)
        for i, text in enumerate(stop_strings):
            pattern = text.encode("utf-8")
            transitions[i, : len(pattern)], matched[i, : len(pattern)] = token_transitions(pattern, token_bytes)
        return cls(tuple(int(i) for i in eos_ids), tuple(stop_strings), transitions, matched)

    @classmethod
    def from_tokenizer(cls, tokenizer, stop_strings: Sequence[str] = (), include_eos: bool = True) -> StopSpec:
        """Stop on the tokenizer's EOS ids (when include_eos) and on any of `stop_strings`."""
        eos = tokenizer.eos_ids if include_eos else ()
        return cls.from_token_bytes(tokenizer.token_bytes(), tuple(stop_strings), eos)

    @classmethod
    def none(cls, vocab_size: int) -> StopSpec:
        """Never stop early: sequences run to max_new_tokens."""
        return cls((), (), np.zeros((1, 1, vocab_size), np.int32), np.zeros((1, 1, vocab_size), bool))

    def cut_text(self, text: str) -> tuple[str, bool]:
        """Text before the first stop string (and whether one was found)."""
        return cut_at_stop(text, self.strings)


def cut_at_stop(text: str, stop_strings: Sequence[str]) -> tuple[str, bool]:
    """(text before the earliest occurrence of any non-empty stop string, whether one occurs)."""
    cuts = [i for i in (text.find(s) for s in stop_strings if s) if i >= 0]
    return (text[: min(cuts)], True) if cuts else (text, False)
