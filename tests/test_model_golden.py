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


TINY = {"llama": "llama", "mistral": "mistral", "qwen2": "qwen2", "phi3": "phi3", "phi3_longrope": "phi3",
        "gemma3": "gemma3"}


@pytest.mark.parametrize("name", sorted(TINY))
def test_tiny_model_logits_match_transformers(name):
    config, params = weights.load(os.path.join(GOLDEN, name))
    golden = np.load(os.path.join(GOLDEN, name, "logits.npz"))
    logits, _ = model.forward(params, config, jnp.asarray(golden["input_ids"]))
    assert config.architecture == TINY[name]
    np.testing.assert_allclose(np.asarray(logits), golden["logits"], atol=1e-4, rtol=0)


def test_golden_configs_exercise_each_feature():
    """The three tiny models cover rope scaling, sliding windows, q/k/v biases and tied heads."""
    llama = weights.config_from_hf(os.path.join(GOLDEN, "llama", "config.json"))
    mistral = weights.config_from_hf(os.path.join(GOLDEN, "mistral", "config.json"))
    qwen2 = weights.config_from_hf(os.path.join(GOLDEN, "qwen2", "config.json"))
    assert llama.rope_scaling is not None and not llama.tie_embeddings
    assert mistral.sliding_window == 5
    assert qwen2.qkv_bias and qwen2.tie_embeddings


def test_phi3_goldens_exercise_fused_weights_sliding_window_and_longrope():
    """Phi-3's fused qkv/gate_up tensors are the only projection tensors in the checkpoints, the window
    is applied, and the longrope golden's input is long enough that the long factors (and the
    attention factor) matter: replacing them by the short ones, or dropping the factor, breaks parity."""
    from safetensors import safe_open

    with safe_open(os.path.join(GOLDEN, "phi3", "model.safetensors"), framework="numpy") as f:
        names = set(f.keys())
    assert "model.layers.0.self_attn.qkv_proj.weight" in names and "model.layers.0.mlp.gate_up_proj.weight" in names
    assert not any(n.endswith((".q_proj.weight", ".k_proj.weight", ".v_proj.weight", ".gate_proj.weight",
                               ".up_proj.weight")) for n in names)
    phi3, params = weights.load(os.path.join(GOLDEN, "phi3"))
    golden = np.load(os.path.join(GOLDEN, "phi3", "logits.npz"))
    unwindowed, _ = model.forward(params, phi3.replace(sliding_window=None), jnp.asarray(golden["input_ids"]))
    assert phi3.sliding_window == 7 and np.abs(np.asarray(unwindowed) - golden["logits"]).max() > 1e-2

    config, params = weights.load(os.path.join(GOLDEN, "phi3_longrope"))
    golden = np.load(os.path.join(GOLDEN, "phi3_longrope", "logits.npz"))
    scaling = config.rope_scaling
    assert golden["input_ids"].shape[1] > scaling.original_max_position_embeddings
    np.testing.assert_allclose(scaling.attention_factor, np.sqrt(1 + np.log(256 / 16) / np.log(16)), rtol=1e-6)
    for wrong in (scaling.__class__(scaling.short_factor, scaling.short_factor,
                                    scaling.original_max_position_embeddings, scaling.attention_factor),
                  scaling.__class__(scaling.short_factor, scaling.long_factor,
                                    scaling.original_max_position_embeddings, 1.0)):
        logits, _ = model.forward(params, config.replace(rope_scaling=wrong), jnp.asarray(golden["input_ids"]))
        assert np.abs(np.asarray(logits) - golden["logits"]).max() > 1e-2


def test_phi3_checkpoint_formats_give_the_same_longrope_config(tmp_path):
    """The transformers-4 layout of a Phi-3.5 config.json (rope_scaling of type "su"/"longrope",
    original_max_position_embeddings at the top level) reads as the transformers-5 layout does."""
    import json

    new = json.loads(open(os.path.join(GOLDEN, "phi3_longrope", "config.json")).read())
    rope = new.pop("rope_parameters")
    for kind in ("su", "longrope"):
        old = {**new, "rope_theta": rope["rope_theta"],
               "rope_scaling": {"type": kind, "short_factor": rope["short_factor"], "long_factor": rope["long_factor"]}}
        (tmp_path / "config.json").write_text(json.dumps(old))
        assert weights.config_from_hf(str(tmp_path / "config.json")) == weights.config_from_hf(
            os.path.join(GOLDEN, "phi3_longrope", "config.json"))


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
