"""Scoring: log pi(y|x) from chunked teacher forcing equals a direct computation from full logits."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import run_with_devices
from sharpen_jax import model, scoring
from sharpen_jax.config import TransformerConfig
from sharpen_jax.tokenizer import pad_batch

CONFIG = TransformerConfig.tiny()
PROMPTS = [[3, 4, 5], [9], [10, 11, 12, 13, 14, 15]]
COMPLETIONS = [[20, 21, 22, 23], [30], [40, 41, 42, 43, 44, 45, 46]]


@pytest.fixture(scope="module")
def params():
    return jax.tree.map(lambda p: p * 2.0 if p.ndim >= 2 else p, model.init_params(CONFIG, jax.random.key(0)))


def _direct(params, prompt, completion, temperature=1.0):
    """Per-token log-probs from one unpadded full forward pass, in float64 numpy."""
    logits, _ = model.forward(params, CONFIG, jnp.asarray([prompt + completion]))
    logits = np.asarray(logits[0], np.float64) / temperature
    logp = logits - np.logaddexp.reduce(logits, axis=-1, keepdims=True)
    return np.array([logp[len(prompt) - 1 + c, tok] for c, tok in enumerate(completion)])


def _batch(pad_token=0):
    p = pad_batch(PROMPTS, pad_token, "left")
    c = pad_batch(COMPLETIONS, pad_token, "right")
    return p.tokens, p.valid, c.tokens, c.valid


@pytest.mark.parametrize("chunk_size", [1, 3, 128])
@pytest.mark.parametrize("temperature", [1.0, 0.6])
def test_sum_of_logprobs_equals_direct_computation(params, chunk_size, temperature):
    result = scoring.score_completions(params, CONFIG, *_batch(), temperature=temperature, chunk_size=chunk_size)
    for b, (prompt, completion) in enumerate(zip(PROMPTS, COMPLETIONS)):
        direct = _direct(params, prompt, completion, temperature)
        n = len(completion)
        np.testing.assert_allclose(result.token_logprobs[b, :n], direct, atol=1e-5)
        np.testing.assert_allclose(result.sum_logprob[b], direct.sum(), atol=1e-4)
        np.testing.assert_allclose(result.mean_logprob[b], direct.mean(), atol=1e-5)
        assert int(result.length[b]) == n


def test_padding_contributes_nothing(params):
    a = scoring.score_completions(params, CONFIG, *_batch(pad_token=0))
    b = scoring.score_completions(params, CONFIG, *_batch(pad_token=77))
    np.testing.assert_allclose(a.token_logprobs, b.token_logprobs, atol=1e-6)
    valid = np.asarray(_batch()[3])
    assert (np.asarray(a.token_logprobs)[~valid] == 0).all()
    assert (np.asarray(a.token_logprobs)[valid] < 0).all()


def test_score_sequences_matches_score_completions(params):
    rows = [p + c for p, c in zip(PROMPTS, COMPLETIONS)]
    batch = pad_batch(rows, 0, "right")
    target = np.zeros_like(batch.valid)
    for b, (p, c) in enumerate(zip(PROMPTS, COMPLETIONS)):
        target[b, len(p):len(p) + len(c)] = True
    seq = scoring.score_sequences(params, CONFIG, batch.tokens, batch.valid, target)
    comp = scoring.score_completions(params, CONFIG, *_batch())
    np.testing.assert_allclose(seq.sum_logprob, comp.sum_logprob, atol=1e-5)
    np.testing.assert_array_equal(seq.length, comp.length)


def test_scoring_under_a_mesh_equals_single_device(params):
    single = scoring.score_completions(params, CONFIG, *_batch())
    code = f"""
import json, jax, numpy as np
from sharpen_jax import model, scoring, sharding
from sharpen_jax.config import TransformerConfig
from sharpen_jax.tokenizer import pad_batch
cfg = TransformerConfig.tiny()
mesh = sharding.make_mesh(data=2, fsdp=2, model=2)
params = jax.tree.map(lambda p: p * 2.0 if p.ndim >= 2 else p, model.init_params(cfg, jax.random.key(0)))
params = jax.device_put(params, sharding.param_shardings(params, mesh))
prompts = {PROMPTS!r} + [[1]]
completions = {COMPLETIONS!r} + [[2]]
p, c = pad_batch(prompts, 0, "left"), pad_batch(completions, 0, "right")
args = [jax.device_put(x, sharding.batch_sharding(mesh)) for x in (p.tokens, p.valid, c.tokens, c.valid)]
out = scoring.score_completions(params, cfg, *args)
spec = params["layers"]["mlp"]["up_proj"]["kernel"].sharding.spec
print(json.dumps({{"sum": np.asarray(out.sum_logprob).tolist(), "spec": str(spec)}}))
"""
    result = json.loads(run_with_devices(code).strip().splitlines()[-1])
    np.testing.assert_allclose(result["sum"][:3], single.sum_logprob, atol=1e-4)
    assert "fsdp" in result["spec"] and "model" in result["spec"]
