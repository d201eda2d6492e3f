"""Golden parity: our logits equal Hugging Face transformers' logits for the same weights.

The golden files come from scripts/make_golden.py (transformers + PyTorch, float32, eager
attention); CI reads them without PyTorch.
"""

from __future__ import annotations

import os

import jax.numpy as jnp
import numpy as np
import pytest

from conftest import GOLDEN
from sharpen_jax import model, weights


@pytest.mark.parametrize("arch", ["llama", "mistral", "qwen2"])
def test_tiny_model_logits_match_transformers(arch):
    config, params = weights.load(os.path.join(GOLDEN, arch))
    golden = np.load(os.path.join(GOLDEN, arch, "logits.npz"))
    logits, _ = model.forward(params, config, jnp.asarray(golden["input_ids"]))
    assert config.architecture == arch
    np.testing.assert_allclose(np.asarray(logits), golden["logits"], atol=1e-4, rtol=0)


def test_golden_configs_exercise_each_feature():
    """The three tiny models cover rope scaling, sliding windows, q/k/v biases and tied heads."""
    llama = weights.config_from_hf(os.path.join(GOLDEN, "llama", "config.json"))
    mistral = weights.config_from_hf(os.path.join(GOLDEN, "mistral", "config.json"))
    qwen2 = weights.config_from_hf(os.path.join(GOLDEN, "qwen2", "config.json"))
    assert llama.rope_scaling is not None and not llama.tie_embeddings
    assert mistral.sliding_window == 5
    assert qwen2.qkv_bias and qwen2.tie_embeddings


def test_sliding_window_changes_logits():
    """With the window disabled the Mistral logits no longer match: the window is really applied."""
    config, params = weights.load(os.path.join(GOLDEN, "mistral"))
    golden = np.load(os.path.join(GOLDEN, "mistral", "logits.npz"))
    logits, _ = model.forward(params, config.replace(sliding_window=None), jnp.asarray(golden["input_ids"]))
    assert np.abs(np.asarray(logits) - golden["logits"]).max() > 1e-2


def test_smollm2_next_token_logits_match_transformers(smollm2):
    config, params, tok = smollm2
    golden = np.load(os.path.join(GOLDEN, "smollm2.npz"))
    for i, prompt in enumerate(golden["prompts"]):
        ids = tok.encode(str(prompt))
        np.testing.assert_array_equal(ids, golden[f"prompt_ids_{i}"])
        logits, _ = model.forward(params, config, jnp.asarray([ids]))
        np.testing.assert_allclose(np.asarray(logits[0, -1]), golden["next_token_logits"][i], atol=1e-3, rtol=0)


def test_smollm2_tokenizer_matches_transformers(smollm2):
    _, _, tok = smollm2
    golden = np.load(os.path.join(GOLDEN, "smollm2.npz"))
    for i, text in enumerate(golden["tokenizer_texts"]):
        ids = tok.encode(str(text))
        np.testing.assert_array_equal(ids, golden[f"text_ids_{i}"], err_msg=str(text))
        assert tok.decode(ids, skip_special_tokens=False) == str(text)


def test_smollm2_greedy_knows_paris(smollm2):
    config, params, tok = smollm2
    ids = tok.encode("The capital of France is")
    for _ in range(4):
        logits, _ = model.forward(params, config, jnp.asarray([ids]))
        ids.append(int(jnp.argmax(logits[0, -1])))
    assert "Paris" in tok.decode(ids[-4:])
