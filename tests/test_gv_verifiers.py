"""The gap study's verifiers (selection.gv_verifiers): CoT parsing, one batched sampler call, parse
failures counted, the tournament against a brute-force bracket of full forward passes."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sharpen_jax import sampling
from sharpen_jax.config import TransformerConfig
from sharpen_jax.model import forward, init_params
from sharpen_jax.scoring import positions_from_valid
from sharpen_jax.selection import gv_verifiers as gv, rewards
from sharpen_jax.selection.tournament import bracket_orders
from sharpen_jax.testing import CharTokenizer
from sharpen_jax.tokenizer import pad_batch

TOURNAMENT = "Q: {question}\nA:{first}\nB:{second}\nBetter? Reply A or B.\nReply:"
COT = "Q: {question}\nProposed:{completion}\nCheck it.\n"


@pytest.mark.parametrize("text, expected", [
    ("2 + 2 = 4. Verdict: correct", (1.0, True)), ("verdict:Incorrect.", (0.0, True)),
    ("The steps hold. VERDICT: correct\nVerdict: correct", (1.0, True)),
    ("Verdict: correct ... Verdict: incorrect", (0.0, False)),  # conflicting
    ("It looks right to me.", (0.0, False)), ("Verdict: corrected", (0.0, False)), ("", (0.0, False))])
def test_parse_verdict(text, expected):
    assert gv.parse_verdict(text) == expected


@pytest.mark.parametrize("text, expected", [
    ("Fine. Score: 7", (7.0, True)), ("score:10", (10.0, True)), ("Score: 3 and again Score: 3", (3.0, True)),
    ("Score: 7 ... on reflection Score: 9", (1.0, False)),  # several different numbers
    ("Score: 11", (1.0, False)), ("Score: 0", (1.0, False)), ("Score: -2", (1.0, False)),  # out of range
    ("Score: 6.5", (1.0, False)), ("I would give it 8/10", (1.0, False)), ("Score: high", (1.0, False))])
def test_parse_score(text, expected):
    assert gv.parse_score(text) == expected


def test_templates_missing_a_placeholder_are_named():
    with pytest.raises(ValueError, match=r"config.cot_template must hold \{completion\}"):
        gv.check_template("Q: {question}", gv.TEMPLATE_PLACEHOLDERS["cot_score"], where="config.cot_template")
    with pytest.raises(ValueError, match=r"\{second\}"):
        gv.check_template("{question}{first}", gv.TEMPLATE_PLACEHOLDERS["tournament"], where="t")
    with pytest.raises(ValueError, match=r"t must put \{first\} before \{second\}"):
        gv.check_template("{question}{second}{first}", gv.TEMPLATE_PLACEHOLDERS["tournament"], where="t")
    with pytest.raises(ValueError, match="braces other than"):
        gv.check_template("{question}{completion}{extra}", gv.TEMPLATE_PLACEHOLDERS["mc"], where="t")
    with pytest.raises(ValueError, match="not a verifier; valid: .*'cot_score'"):
        gv.check_verifier_name("cot_vibes")


def make_inputs(completions):
    b, n = len(completions), len(completions[0])
    return rewards.RewardInputs.build([f"p{i}" for i in range(b)], [f"question {i}" for i in range(b)], completions,
                                      np.zeros((b, n, 1)), np.ones((b, n), int), [[None] * n for _ in range(b)])


@pytest.fixture(scope="module")
def tiny():
    tok = CharTokenizer(words=(" A", " B"))
    config = TransformerConfig.tiny(vocab_size=tok.vocab_size, max_seq_len=512)
    return config, init_params(config, jax.random.key(0)), tok


def test_cot_verifier_is_one_sampler_call_and_counts_parse_failures(tiny, monkeypatch):
    config, params, tok = tiny
    inputs = make_inputs([[" 12", " 13", " 7"], [" x", " y", " z"]])
    replies = ["ok. Score: 9\n\nQ: next", "Score: 12\n\n", "hmm", "Score: 2", "Score: 2 Score: 5", "Score: 10"]
    calls = []

    def fake_sample(params, config, prompts, *, num_samples, max_new_tokens, **kwargs):
        calls.append(len(prompts))
        assert num_samples == 1 and kwargs["temperature"] == 0.0
        tokens = pad_batch([tok.encode(r) for r in replies], 0, "right", 32)
        return sampling.SampleOutput(tokens.tokens[:, None], np.asarray(tokens.lengths)[:, None],
                                     np.ones((6, 1), bool), np.zeros((6, 1, 32)), np.zeros((6, 1, 32)))

    monkeypatch.setattr(sampling, "sample", fake_sample)
    result = gv.cot_verify(params, config, tok, inputs, kind="cot_score", template=COT, max_new_tokens=32,
                           stop_strings=("\n\n",))
    assert calls == [6]  # all B * N verifications in one batched call
    np.testing.assert_array_equal(result.scores_BN, [[9, 1, 1], [2, 1, 10]])
    np.testing.assert_array_equal(result.failed_BN, [[False, True, True], [False, True, False]])
    report = gv.score_report(result.scores_BN, result.failed_BN)
    assert report["parse_failures"] == 3 and report["histogram"] == {"1": 3, "2": 1, "9": 1, "10": 1}


def test_cot_verifier_on_a_random_model_never_crashes(tiny):
    config, params, tok = tiny
    inputs = make_inputs([[" 1", " 2"], [" 3", " 4"]])
    result = gv.cot_verify(params, config, tok, inputs, kind="cot_binary", template=COT, max_new_tokens=6)
    assert result.scores_BN.shape == (2, 2) and result.failed_BN.all()  # gibberish: every one a counted failure
    assert np.all(result.scores_BN == 0) and 0 < result.generated_tokens <= 24


def full_margins(params, config, tok, texts):
    """log P(" A") - log P(" B") after each whole text, from one plain (left-padded) forward pass."""
    batch = pad_batch([tok.encode(t) for t in texts], 0, "left")
    logits = forward(params, config, jnp.asarray(batch.tokens), positions_from_valid(jnp.asarray(batch.valid)),
                     jnp.asarray(batch.valid))[0][:, -1]
    logprobs = np.asarray(jax.nn.log_softmax(logits, axis=-1))
    return logprobs[:, tok.encode(" A")[0]] - logprobs[:, tok.encode(" B")[0]]


@pytest.mark.parametrize("n", [pytest.param(5, marks=pytest.mark.slow), 3])  # 5: three rounds, a bye; 3: two, a bye
def test_tournament_equals_a_brute_force_bracket_asked_in_both_orders(tiny, n):
    config, params, tok = tiny
    completions = [[" 1", " 22", " 3x", " 44", " five"][:n], [" a", " bb", " c", " dd", " e"][:n]]
    inputs = make_inputs(completions)
    result = gv.tournament_verify(params, config, tok, inputs, template=TOURNAMENT, batch_size=8, seed=3)
    ordered = [(b, x, y) for b in range(2) for x in range(n) for y in range(n) if x != y]
    margins = dict(zip(ordered, full_margins(params, config, tok, [
        TOURNAMENT.format(question=f"question {b}", first=completions[b][x], second=completions[b][y])
        for b, x, y in ordered])))
    expected = np.zeros((2, n))
    for b, order in enumerate(bracket_orders(2, n, 3)):
        alive = list(order)
        while len(alive) > 1:
            nxt = [i if margins[b, i, j] - margins[b, j, i] >= 0 else j for i, j in zip(alive[0::2], alive[1::2])]
            alive = nxt + alive[2 * (len(alive) // 2):]
            for w in nxt:
                expected[b, w] += 1
    np.testing.assert_array_equal(result.scores_BN, expected)
    assert np.all(result.scores_BN.sum(1) == n - 1)  # N - 1 matches
