"""The transformer policy used by the train steps: agreement with the scorer, and padding that
contributes nothing to the log-likelihood or its gradient."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sharpen_jax.algorithms.policies import make_transformer_logprob_fn, pack_sequences
from sharpen_jax.config import TransformerConfig
from sharpen_jax.model import param_shapes
from sharpen_jax.scoring import score_completions

CONFIG = TransformerConfig.tiny()


def _params(seed=0):
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda s: jnp.asarray(rng.normal(0, 0.1, s.shape), s.dtype), param_shapes(CONFIG))


PROMPTS = [[5, 6, 7], [8, 9], [10, 11, 12, 13]]
COMPLETIONS = [[20, 21, 22], [30], [40, 41]]


def test_logprob_matches_the_scorer():
    params = _params()
    logprob_fn = jax.jit(make_transformer_logprob_fn(CONFIG, chunk_size=4))
    logp, ntok = logprob_fn(params, {k: jnp.asarray(v) for k, v in pack_sequences(PROMPTS, COMPLETIONS, 10).items()})
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
    short = {k: jnp.asarray(v) for k, v in pack_sequences(PROMPTS, COMPLETIONS, 8).items()}
    long = {k: jnp.asarray(v) for k, v in pack_sequences(PROMPTS, COMPLETIONS, 16).items()}
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


def test_pack_sequences_rejects_bad_rows():
    with pytest.raises(ValueError, match="empty"):
        pack_sequences([], [], 8)
    with pytest.raises(ValueError, match="prompt 1 has 8 tokens"):
        pack_sequences([[1], list(range(8))], [[2], [3]], 8)
    packed = pack_sequences([[1, 2]], [[3, 4, 5, 6]], 4)
    np.testing.assert_array_equal(packed["target"], [[False, False, True, True]])
