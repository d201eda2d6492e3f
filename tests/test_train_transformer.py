"""The transformer policy used by the train steps: agreement with the scorer, and padding that
contributes nothing to the log-likelihood or its gradient."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sharpen_jax.config import TransformerConfig
from sharpen_jax.scoring import score_completions
from sharpen_jax.testing import random_params
from sharpen_jax.training.policies import completion_rows, make_transformer_logprob_fn, pack_token_lists

CONFIG = TransformerConfig.tiny()


def _params(seed=0):
    return random_params(CONFIG, seed, scale=0.1, unit_norms=False)


def pack(prompts, completions, length):
    """Rows prompt ++ completion of `length` tokens: prompts padded to the longest, completions to the rest."""
    width = max(map(len, prompts))
    return {k: jnp.asarray(v) for k, v in pack_token_lists(prompts, completions, prompt_length=width,
                                                             completion_length=length - width).items()}


PROMPTS = [[5, 6, 7], [8, 9], [10, 11, 12, 13]]
COMPLETIONS = [[20, 21, 22], [30], [40, 41]]


def test_logprob_matches_the_scorer():
    params = _params()
    logprob_fn = jax.jit(make_transformer_logprob_fn(CONFIG, chunk_size=4))
    logp, ntok = logprob_fn(params, pack(PROMPTS, COMPLETIONS, 10))
    p_len, c_len = max(map(len, PROMPTS)), max(map(len, COMPLETIONS))
    prompt = np.zeros((3, p_len), np.int32)
    prompt_valid = np.zeros((3, p_len), bool)
    completion = np.zeros((3, c_len), np.int32)
    completion_valid = np.zeros((3, c_len), bool)
    for i, (p, c) in enumerate(zip(PROMPTS, COMPLETIONS)):
        prompt[i, p_len - len(p):], prompt_valid[i, p_len - len(p):] = p, True
        completion[i, :len(c)], completion_valid[i, :len(c)] = c, True
    scores = score_completions(params, CONFIG, prompt, prompt_valid, completion, completion_valid)
    np.testing.assert_allclose(logp, scores.sum_logprob, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(ntok, [3, 1, 2])


def test_padding_contributes_nothing_to_value_or_gradient():
    params = _params(1)
    logprob_fn = make_transformer_logprob_fn(CONFIG)
    short, long = pack(PROMPTS, COMPLETIONS, 7), pack(PROMPTS, COMPLETIONS, 16)
    garbage = dict(long, tokens=jnp.where(long["valid"], long["tokens"], 77))  # other ids on padding
    np.testing.assert_allclose(jax.jit(logprob_fn)(params, short)[0], jax.jit(logprob_fn)(params, long)[0],
                               rtol=1e-6)
    value_and_grad = jax.jit(jax.value_and_grad(lambda p, s: -jnp.sum(logprob_fn(p, s)[0])))
    value_long, grad_long = value_and_grad(params, long)
    value_garbage, grad_garbage = value_and_grad(params, garbage)
    assert float(value_long) == float(value_garbage)
    for a, b in zip(jax.tree.leaves(grad_long), jax.tree.leaves(grad_garbage)):
        np.testing.assert_array_equal(a, b)
    assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grad_long))
    assert float(jnp.abs(grad_long["embed"]["embedding"]).max()) > 0


def test_row_packing_rejects_bad_rows():
    with pytest.raises(ValueError, match="empty"):
        pack_token_lists([], [], completion_length=8)
    with pytest.raises(ValueError, match="prompt 1 has 8 tokens"):
        pack_token_lists([[1], list(range(8))], [[2], [3]], prompt_length=4, completion_length=4)
    with pytest.raises(ValueError, match="prompt 0 is empty"):
        completion_rows(np.zeros((1, 2), np.int32), np.zeros((1, 2), bool), np.ones((1, 2), np.int32),
                        np.ones((1, 2), bool))
    packed = pack_token_lists([[1, 2]], [[3, 4, 5, 6]], completion_length=2)
    np.testing.assert_array_equal(packed["target"], [[False, False, True, True]])
