"""Self-rewards: values on hand-made inputs, deterministic majority vote, the verifier's forward pass."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sharpen_jax.selection import rewards, verifiers
from sharpen_jax.testing import CharTokenizer
from sharpen_jax.config import TransformerConfig
from sharpen_jax.model import forward, init_params
from sharpen_jax.scoring import positions_from_valid
from sharpen_jax.tokenizer import pad_batch


def make_inputs(answers, logprobs_BNC, lengths=None, completions=None):
    logprobs_BNC = np.asarray(logprobs_BNC, float)
    b, n, c = logprobs_BNC.shape
    lengths = np.full((b, n), c) if lengths is None else lengths
    completions = completions or [[f" sample {j}" for j in range(n)] for _ in range(b)]
    return rewards.RewardInputs.build([f"prompt {i}" for i in range(b)], [f"question {i}" for i in range(b)],
                                      completions, logprobs_BNC, lengths, answers)


def test_log_likelihood_and_length_normalized():
    logprobs = np.array([[[-1.0, -2.0, 0.0], [-0.5, 0.0, 0.0]]])  # second completion has 1 token
    inputs = make_inputs([["1", "2"]], logprobs, lengths=np.array([[2, 1]]))
    np.testing.assert_allclose(rewards.LOG_LIKELIHOOD(inputs), [[-3.0, -0.5]])
    np.testing.assert_allclose(rewards.LENGTH_NORMALIZED(inputs), [[-1.5, -0.5]])


def test_length_normalized_prefers_a_different_sample_than_log_likelihood():
    logprobs = np.array([[[-0.1, -0.1, -0.1, -0.1], [-0.3, 0.0, 0.0, 0.0]]])
    inputs = make_inputs([["a", "b"]], logprobs, lengths=np.array([[4, 1]]))
    assert np.argmax(rewards.LOG_LIKELIHOOD(inputs)) == 1   # -0.3 > -0.4
    assert np.argmax(rewards.LENGTH_NORMALIZED(inputs)) == 0  # -0.1 > -0.3


def test_majority_vote_counts_and_tie_breaks_by_log_likelihood():
    # answers: "5" x2, "7" x2, None x1. The "7" group holds the best log-likelihood (-0.5), so it wins
    # the 2-2 tie, and within it the -0.5 sample is chosen. The no-answer sample never wins.
    answers = [["5", "7", "5", None, "7"]]
    loglik = np.array([[-1.0, -3.0, -2.0, 0.0, -0.5]])
    scores = rewards.MAJORITY(make_inputs(answers, loglik[..., None]))
    assert np.argmax(scores) == 4
    np.testing.assert_array_equal(np.floor(scores), [[2, 2, 2, 0, 2]])
    # More votes beat a better log-likelihood.
    scores = rewards.MAJORITY(make_inputs([["5", "7", "5", None, "5"]], loglik[..., None]))
    assert np.argmax(scores) == 4 and np.floor(scores[0, 4]) == 3


def test_majority_vote_is_deterministic_under_exact_ties():
    answers = [["1", "2", "2", "1"]]
    inputs = make_inputs(answers, np.zeros((1, 4, 2)))
    first = rewards.MAJORITY(inputs)
    np.testing.assert_array_equal(first, rewards.MAJORITY(inputs))
    assert np.argmax(first) == 0  # all tied: the earliest completion
    assert len(set(first[0].tolist())) == 4  # a strict order, no exact ties left


def test_majority_on_a_subset_counts_only_the_subset():
    inputs = make_inputs([["4", "4", "4", "9", "9"]], np.array([[[-5.0], [-5.0], [-5.0], [-1.0], [-2.0]]]))
    assert np.argmax(rewards.MAJORITY(inputs)) in (0, 1, 2)
    sub = inputs.take(np.array([[0, 3, 4]]))
    scores = rewards.MAJORITY(sub)
    assert sub.answers.tolist() == [["4", "9", "9"]]
    assert np.argmax(scores) == 1  # "9" has two votes inside the subset


def test_answer_ids_per_row():
    ids = rewards.answer_ids(rewards.object_array([["x", None, "y", "x"], ["y", "y", None, None]], 2))
    np.testing.assert_array_equal(ids, [[0, -1, 1, 0], [0, 0, -1, -1]])


def test_build_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="answers"):
        make_inputs([["1"]], np.zeros((1, 2, 3)))
    with pytest.raises(ValueError, match="token_logprobs_BNC"):
        rewards.RewardInputs.build(["p"], ["q"], [["a"]], np.zeros((1, 3)), [[1]], [["1"]])


def test_verifier_reward_equals_unbatched_forward_pass():
    tok = CharTokenizer(words=(" Yes", " No"))
    config = TransformerConfig.tiny(vocab_size=tok.vocab_size, max_seq_len=512)
    params = init_params(config, jax.random.key(0))
    yes, no = tok.encode(" Yes")[0], tok.encode(" No")[0]
    completions = [[" 12", " 13 because", " x"], [" true", " The answer is false.", " ?"], [" 1", " 22", " 333"]]
    inputs = make_inputs([["12", "13", None], ["True", "False", None], ["1", "22", "333"]], np.zeros((3, 3, 1)),
                         completions=completions)
    scores = verifiers.make_verifier_reward(params, config, tok, batch_size=6)(inputs)  # 2 prompts per call
    # Reference: one plain forward pass over each whole verification text (left-padded into one batch).
    texts = [verifiers.VERIFIER_TEMPLATE.format(question=f"question {i}", completion=completions[i][j])
             for i in range(3) for j in range(3)]
    batch = pad_batch([tok.encode(t) for t in texts], 0, "left")
    logits = forward(params, config, jnp.asarray(batch.tokens), positions_from_valid(jnp.asarray(batch.valid)),
                     jnp.asarray(batch.valid))[0][:, -1]
    logprobs = jax.nn.log_softmax(logits, axis=-1)
    np.testing.assert_allclose(scores.reshape(-1), logprobs[:, yes] - logprobs[:, no], atol=1e-4)
    assert np.std(scores) > 0


def test_verifier_rejects_bad_words_and_templates():
    tok = CharTokenizer(words=(" Yes", " No"))
    config = TransformerConfig.tiny(vocab_size=tok.vocab_size)
    params = init_params(config, jax.random.key(0))
    with pytest.raises(ValueError, match="single tokens"):
        verifiers.make_verifier_reward(params, config, tok, yes="Yes!")
    with pytest.raises(ValueError, match="before"):
        verifiers.make_verifier_reward(params, config, tok, template="{completion} {question}")
