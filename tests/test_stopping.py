"""Stop strings: the per-token automaton tables find the first token that completes a stop string."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings, strategies as st

from sharpen_jax.stopping import StopSpec, kmp_automaton

VOCAB = [b"a", b"b", b"\n", b"\n\n", b"Q", b"uestion", b":", b"Question:", b"b\nQ", b"x", b"ab", b"ba"]


def _first_stop_token(token_ids, stop: bytes) -> int | None:
    """Reference: index of the first token after which the decoded bytes contain `stop`."""
    text = b""
    for i, t in enumerate(token_ids):
        text += VOCAB[t]
        if stop in text:
            return i
    return None


def _run_tables(spec: StopSpec, token_ids) -> int | None:
    state = np.zeros(len(spec.strings), np.int32)
    for i, t in enumerate(token_ids):
        idx = np.arange(len(spec.strings))
        if spec.matched[idx, state, t].any():
            return i
        state = spec.transitions[idx, state, t]
    return None


def test_kmp_automaton_handles_self_overlap():
    dfa = kmp_automaton(b"abab")
    state = 0
    for byte in b"ababab":
        state = dfa[state, byte] if state < 4 else state
    assert state == 4
    state = 0
    for byte in b"abaab":
        state = dfa[state, byte]
    assert state == 2  # "ab" is the longest prefix of the pattern that ends the text


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(0, len(VOCAB) - 1), max_size=12), st.sampled_from([b"\n\nQuestion:", b"aba", b"b\n"]))
def test_tables_find_the_first_completing_token(token_ids, stop):
    spec = StopSpec.from_token_bytes(VOCAB, [stop.decode()])
    assert _run_tables(spec, token_ids) == _first_stop_token(token_ids, stop)


def test_several_stop_strings_and_eos():
    spec = StopSpec.from_token_bytes(VOCAB, ["\n", "Question:"], eos_ids=[9])
    assert spec.eos_ids == (9,)
    assert _run_tables(spec, [0, 4, 5, 1]) is None  # "aQuestionb": "Question" without ":"
    assert _run_tables(spec, [0, 4, 5, 6]) == 3
    assert _run_tables(spec, [0, 8]) == 1  # "b\nQ" contains "\n"


def test_cut_text_at_the_earliest_stop():
    spec = StopSpec.from_token_bytes(VOCAB, ["\n\nQuestion:", "\n"])
    assert spec.cut_text(" 85\n\nQuestion: next") == (" 85", True)
    assert spec.cut_text(" 85") == (" 85", False)


def test_bad_stop_input():
    import pytest

    with pytest.raises(ValueError, match="non-empty"):
        StopSpec.from_token_bytes(VOCAB, [""])
    with pytest.raises(ValueError, match="outside the vocabulary"):
        StopSpec.from_token_bytes(VOCAB, [], eos_ids=[99])
