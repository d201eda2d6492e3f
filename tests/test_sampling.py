"""Sampler: exact log-probs, greedy = argmax, the sampled distribution, seeds, meshes, bad input."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from conftest import run_with_devices
from sharpen_jax import model, sampling, scoring
from sharpen_jax.config import TransformerConfig
from sharpen_jax.tokenizer import pad_batch

CONFIG = TransformerConfig.tiny()
PROMPTS = [[5, 17, 3, 88, 41], [7], [60, 61, 62, 63, 64, 65, 66, 67, 68]]


@pytest.fixture(scope="module")
def params():
    return jax.tree.map(lambda p: p * 3.0 if p.ndim >= 2 else p, model.init_params(CONFIG, jax.random.key(0)))


def _full_logits(params, prompt, completion):
    logits, _ = model.forward(params, CONFIG, jnp.asarray([list(prompt) + list(completion)]))
    return np.asarray(logits[0, len(prompt) - 1: len(prompt) - 1 + len(completion)], np.float64)


def _reference_sampling_logprobs(logits_V, temperature, top_k, top_p):
    scaled = logits_V / temperature
    if top_k:
        scaled = np.where(scaled < np.sort(scaled)[-top_k], -np.inf, scaled)
    if top_p < 1:
        order = np.argsort(-scaled)
        probs = np.exp(scaled[order] - np.logaddexp.reduce(scaled[order]))
        keep = (np.cumsum(probs) - probs) < top_p
        scaled = np.where(scaled < scaled[order][keep].min(), -np.inf, scaled)
    return scaled - np.logaddexp.reduce(scaled)


# Gemma 3's variant of the decoder: interleaved windowed/global layers with their own RoPE bases.
GEMMA3 = TransformerConfig.tiny(architecture="gemma3", sliding_window=4, rope_local_theta=100.0,
                                layer_types=("sliding_attention", "full_attention"), query_pre_attn_scalar=6.0)


@pytest.mark.parametrize("arch", ["llama", "gemma3"])
def test_sampler_logprobs_equal_scoring(params, arch):
    config = CONFIG if arch == "llama" else GEMMA3
    if arch == "gemma3":
        params = jax.tree.map(lambda p: p * 3.0 if p.ndim >= 2 else p, model.init_params(GEMMA3, jax.random.key(0)))
    out = sampling.sample(params, config, PROMPTS, num_samples=3, max_new_tokens=10, rng=jax.random.key(1))
    prompts = pad_batch([p for p in PROMPTS for _ in range(3)], 0, "left")
    completions = out.tokens.reshape(9, -1)
    valid = np.arange(completions.shape[1])[None] < out.lengths.reshape(9, 1)
    scored = scoring.score_completions(params, config, prompts.tokens, prompts.valid, completions, valid)
    np.testing.assert_allclose(out.model_logprobs.reshape(9, -1), scored.token_logprobs, atol=1e-5)
    np.testing.assert_allclose(out.sampling_logprobs.reshape(9, -1), scored.token_logprobs, atol=1e-5)
    assert (out.lengths == 10).all() and not out.finished.any()


@pytest.mark.parametrize("temperature, top_k, top_p", [(0.7, 0, 1.0), (1.3, 5, 1.0), (1.0, 0, 0.8), (0.9, 20, 0.6)])
def test_sampling_logprobs_match_truncated_distribution(params, temperature, top_k, top_p):
    out = sampling.sample(params, CONFIG, PROMPTS, num_samples=2, max_new_tokens=6, temperature=temperature,
                          top_k=top_k, top_p=top_p, rng=jax.random.key(2))
    for b, prompt in enumerate(PROMPTS):
        for j in range(2):
            completion = out.tokens[b, j]
            logits = _full_logits(params, prompt, completion)
            for t, token in enumerate(completion):
                expected = _reference_sampling_logprobs(logits[t], temperature, top_k, top_p)
                assert np.isfinite(expected[token])
                np.testing.assert_allclose(out.sampling_logprobs[b, j, t], expected[token], atol=2e-5)
                model_lp = logits[t] - np.logaddexp.reduce(logits[t])
                np.testing.assert_allclose(out.model_logprobs[b, j, t], model_lp[token], atol=2e-5)


def test_greedy_equals_stepwise_argmax(params):
    out = sampling.sample(params, CONFIG, PROMPTS, max_new_tokens=8, temperature=0.0)
    for b, prompt in enumerate(PROMPTS):
        seq = list(prompt)
        for _ in range(8):  # full forward over a fixed right-padded width (one compilation)
            padded = pad_batch([seq], 0, "right", 20)
            logits, _ = model.forward(params, CONFIG, padded.tokens, None, padded.valid)
            seq.append(int(jnp.argmax(logits[0, len(seq) - 1])))
        assert out.tokens[b, 0].tolist() == seq[len(prompt):]
    assert (out.sampling_logprobs == 0).all() and (out.model_logprobs < 0).all()


def _perturbed(probs, scale):
    """probs with every other token of its support scaled by 1 + scale, the rest by 1 - scale, renormalized:
    the same support, so a test that rejects it can tell probabilities apart, not just supports."""
    support = np.flatnonzero(probs > 0)
    factor = np.ones_like(probs)
    factor[support[::2]], factor[support[1::2]] = 1 + scale, 1 - scale
    return probs * factor / np.sum(probs * factor)


@pytest.mark.parametrize("temperature, top_k, top_p", [(1.0, 0, 1.0), (0.8, 4, 1.0), (1.0, 0, 0.7)])
def test_empirical_distribution_matches_exact_next_token_distribution(temperature, top_k, top_p):
    """20 independent blocks ("seeds") x 5000 draws of the first token: each seed's chi-square p-value against the exact
    (truncated, tempered) distribution, and those 20 p-values tested for uniformity (KS). Power, in every
    case including no truncation: the same procedure rejects a distribution on the same support with 10%
    of the mass moved between alternate tokens (chi-square noncentrality ~ 5000 x 0.1^2 = 50 per seed)."""
    config = TransformerConfig.tiny(vocab_size=10)
    params = jax.tree.map(lambda p: p * 3.0 if p.ndim >= 2 else p, model.init_params(config, jax.random.key(3)))
    logits, _ = model.forward(params, config, jnp.asarray([[1, 2, 3]]))
    exact = np.exp(_reference_sampling_logprobs(np.asarray(logits[0, -1], np.float64), temperature, top_k, top_p))
    support = exact > 0
    assert support.sum() >= 3
    draws, seeds = 5000, 20
    p_values, p_values_perturbed = [], []
    wrong = _perturbed(exact, 0.1)
    # One call: the 20 "seeds" are 20 copies of the prompt, each row drawing with its own keys.
    out = sampling.sample(params, config, [[1, 2, 3]] * seeds, num_samples=draws, max_new_tokens=1,
                          temperature=temperature, top_k=top_k, top_p=top_p, rng=jax.random.key(100),
                          max_rows=4 * draws)
    for seed in range(seeds):
        counts = np.bincount(out.tokens[seed, :, 0], minlength=config.vocab_size)
        assert counts[~support].sum() == 0  # truncated tokens are never drawn
        p_values.append(stats.chisquare(counts[support], exact[support] * draws)[1])
        p_values_perturbed.append(stats.chisquare(counts[support], wrong[support] * draws)[1])
    # Under the right distribution the p-values are uniform: a false alarm at 1e-3 once in 1000 runs.
    assert stats.kstest(p_values, "uniform").pvalue > 1e-3, sorted(p_values)
    assert stats.kstest(p_values_perturbed, "uniform").pvalue < 1e-6, sorted(p_values_perturbed)
    assert np.median(p_values_perturbed) < 1e-3
    # All 100,000 draws in one chi-square: power against a temperature off by 10% (logits x 1.1 on the same
    # support; noncentrality ~80 here, ~4 per seed, which the per-seed KS test above does not see).
    pooled = np.bincount(out.tokens[:, :, 0].reshape(-1), minlength=config.vocab_size)[support]
    assert stats.chisquare(pooled, exact[support] * draws * seeds)[1] > 1e-3
    hotter = exact[support] ** 1.1 / np.sum(exact[support] ** 1.1)
    assert stats.chisquare(pooled, hotter * draws * seeds)[1] < 1e-6


def test_draw_tokens_matches_the_distribution_across_blocks():
    """Two-level inverse-CDF draws over a vocabulary of several blocks (not a multiple of the block
    size, with empty blocks) follow softmax(logits) and never pick a -inf token."""
    vocab, rows = 1000, 40_000
    rng = np.random.default_rng(7)
    logits = np.full(vocab, -np.inf)
    support = np.sort(rng.choice(vocab, 30, replace=False))
    support[-1] = vocab - 1  # a token in the last, partial block
    logits[support] = rng.normal(0, 1.5, 30)
    exact = np.exp(logits - np.logaddexp.reduce(logits))
    keys = jax.random.split(jax.random.key(11), rows)
    tokens, lse = jax.jit(sampling.draw_tokens)(keys, jnp.broadcast_to(jnp.asarray(logits, jnp.float32), (rows, vocab)))
    np.testing.assert_allclose(np.asarray(lse), np.logaddexp.reduce(logits), rtol=1e-6)
    counts = np.bincount(np.asarray(tokens), minlength=vocab)
    assert counts[exact == 0].sum() == 0
    assert stats.chisquare(counts[support], exact[support] * rows)[1] > 1e-3
    shifted = np.roll(exact[support], 1)  # the test has power: a permuted distribution is rejected
    assert stats.chisquare(counts[support], shifted * rows)[1] < 1e-6


def test_seeds_and_micro_batching(params):
    kwargs = dict(num_samples=4, max_new_tokens=5, rng=jax.random.key(7))
    a = sampling.sample(params, CONFIG, PROMPTS, **kwargs)
    b = sampling.sample(params, CONFIG, PROMPTS, max_rows=4, **kwargs)  # one prompt per micro-batch
    c = sampling.sample(params, CONFIG, PROMPTS, **{**kwargs, "rng": jax.random.key(8)})
    np.testing.assert_array_equal(a.tokens, b.tokens)
    assert (a.tokens != c.tokens).any()
    assert len({tuple(t) for t in a.tokens.reshape(-1, 5).tolist()}) > 6  # samples of one prompt differ


def test_same_samples_on_one_and_eight_devices(params):
    out = sampling.sample(params, CONFIG, PROMPTS, num_samples=4, max_new_tokens=6, rng=jax.random.key(9))
    code = f"""
import json, jax, numpy as np
from sharpen_jax import model, sampling, sharding
from sharpen_jax.config import TransformerConfig
cfg = TransformerConfig.tiny()
mesh = sharding.make_mesh(data=4, model=2)
params = jax.tree.map(lambda p: p * 3.0 if p.ndim >= 2 else p, model.init_params(cfg, jax.random.key(0)))
params = jax.device_put(params, sharding.param_shardings(params, mesh, decode=True))
out = sampling.sample(params, cfg, {PROMPTS!r}, num_samples=4, max_new_tokens=6, rng=jax.random.key(9), mesh=mesh)
print(json.dumps({{"tokens": out.tokens.tolist(), "lp": out.model_logprobs.tolist(), "n": len(jax.devices())}}))
"""
    result = json.loads(run_with_devices(code).strip().splitlines()[-1])
    assert result["n"] == 8
    np.testing.assert_array_equal(np.asarray(result["tokens"]), out.tokens)
    np.testing.assert_allclose(np.asarray(result["lp"]), out.model_logprobs, atol=1e-5)


def test_prompt_prefilled_once_per_micro_batch(params, monkeypatch):
    calls = []
    original = sampling._prefill

    def counting(params, config, tokens, *args, **kwargs):
        calls.append(tokens.shape)
        return original(params, config, tokens, *args, **kwargs)

    monkeypatch.setattr(sampling, "_prefill", counting)
    sampling.sample(params, CONFIG, PROMPTS, num_samples=8, max_new_tokens=3, rng=jax.random.key(0))
    assert calls == [(4, 16)]  # one prefill of the 3 prompts (bucketed to 4 rows), not 3 x 8 rows


def test_new_prompt_length_in_same_bucket_does_not_recompile(params):
    sampling.sample(params, CONFIG, [[1, 2, 3]], num_samples=2, max_new_tokens=4, rng=jax.random.key(0))
    sizes = (sampling._prefill._cache_size(), sampling._decode._cache_size())
    sampling.sample(params, CONFIG, [[4, 5, 6, 7, 8, 9, 10]], num_samples=2, max_new_tokens=4, rng=jax.random.key(1))
    assert (sampling._prefill._cache_size(), sampling._decode._cache_size()) == sizes


def test_stop_strings_cut_tokens_and_logprobs_consistently(params):
    token_bytes = [bytes([65 + (i % 26)]) for i in range(CONFIG.vocab_size)]
    free = sampling.sample(params, CONFIG, PROMPTS, num_samples=4, max_new_tokens=12, rng=jax.random.key(5))
    target = bytes(token_bytes[int(free.tokens[0, 0, 3])])  # a letter that sample (0, 0) draws at step 3
    stop = sampling.StopSpec.from_token_bytes(token_bytes, [target.decode()], eos_ids=[int(free.tokens[1, 0, 2])])
    out = sampling.sample(params, CONFIG, PROMPTS, num_samples=4, max_new_tokens=12, rng=jax.random.key(5), stop=stop)
    for b in range(3):
        for j in range(4):
            full = free.tokens[b, j].tolist()
            hits = [t for t, tok in enumerate(full) if token_bytes[tok] == target or tok in stop.eos_ids]
            n = hits[0] + 1 if hits else 12
            assert out.lengths[b, j] == n and out.finished[b, j] == bool(hits)
            assert out.tokens[b, j, :n].tolist() == full[:n] and (out.tokens[b, j, n:] == 0).all()
            assert (out.model_logprobs[b, j, n:] == 0).all()
            np.testing.assert_allclose(out.model_logprobs[b, j, :n], free.model_logprobs[b, j, :n], atol=1e-6)
    assert out.lengths[0, 0] <= 4 and out.lengths[1, 0] <= 3


