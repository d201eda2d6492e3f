"""Generate the golden files in tests/golden/ with Hugging Face transformers + PyTorch (CPU).

Run once (needs the `peers` extra: `pip install -e .[peers]`):

    python scripts/make_golden.py [NAME ...]     # all, or only the named ones (e.g. phi3 smollm2)

It writes, for tiny randomly initialised Llama (with Llama-3 rope scaling), Mistral (sliding
window), Qwen2 (q/k/v biases), Phi-3 (fused qkv/gate_up, sliding window; and one with longrope
scaling, whose input is longer than original_max_position_embeddings so the long factors apply) and
Gemma 3 (sliding-window and global layers interleaved, each with its own RoPE base, head_dim !=
hidden/heads, query_pre_attn_scalar != head_dim) models, a HF checkpoint directory and `logits.npz`
(input ids and transformers' float32 logits); for SmolLM2-135M-Instruct loaded by transformers from
the same GGUF file that sharpen_jax loads, `smollm2.npz` with next-token logits of a few prompts and
the token ids of transformers' tokenizer; and the same for Gemma 3 270M (`gemma3_270m.npz`: Gemma3ForCausalLM holding the
GGUF's weights dequantized with `gguf`, as transformers cannot read this file's Q5_0 tensors; the
1024 largest and 1024 random next-token logits of each prompt and the log-normalizer, so the file
stays small). CI only reads these files; it never needs PyTorch.
"""

from __future__ import annotations

import os
import sys

import numpy as np
import torch
import transformers

GOLDEN = os.path.join(os.path.dirname(__file__), os.pardir, "tests", "golden")
SMOLLM2_PROMPTS = ["The capital of France is", "Question: What is 37 + 48?\nAnswer:",
                   "def fibonacci(n):\n    "]
TOKENIZER_TEXTS = ["Natalia sold 48/2 = 24 clips in May.", "  leading spaces and\ttabs\n\nnew lines",
                   "<|im_start|>user\nWhat is 1234 * 5678?<|im_end|>", "naïve café – “quotes” 😀"]


def tiny_models() -> dict[str, transformers.PretrainedConfig]:
    common = dict(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)
    return {
        "llama": transformers.LlamaConfig(**common, rope_theta=500000.0, tie_word_embeddings=False,
                                          rope_scaling={"rope_type": "llama3", "factor": 8.0,
                                                        "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                                        "original_max_position_embeddings": 16}),
        "mistral": transformers.MistralConfig(**common, sliding_window=5, tie_word_embeddings=False),
        "qwen2": transformers.Qwen2Config(**common, tie_word_embeddings=True, rms_norm_eps=1e-6),
        "phi3": transformers.Phi3Config(**common, sliding_window=7, tie_word_embeddings=False,
                                        pad_token_id=0, bos_token_id=1, eos_token_id=2),
        "phi3_longrope": transformers.Phi3Config(
            **{**common, "num_key_value_heads": 4}, original_max_position_embeddings=16, pad_token_id=0,
            bos_token_id=1, eos_token_id=2, tie_word_embeddings=False,
            rope_scaling={"rope_type": "longrope", "short_factor": [1.0, 1.3, 1.9, 2.6],
                          "long_factor": [1.1, 2.5, 4.0, 7.5]}),
        "gemma3": transformers.Gemma3TextConfig(
            **{**common, "num_hidden_layers": 5}, head_dim=16, query_pre_attn_scalar=24, sliding_window=5,
            layer_types=["sliding_attention", "sliding_attention", "full_attention", "sliding_attention",
                         "full_attention"], rope_theta=10_000.0, rope_local_base_freq=100.0, rms_norm_eps=1e-6,
            tie_word_embeddings=True, pad_token_id=0, bos_token_id=2, eos_token_id=1),
    }


# Input length per tiny model: longrope's must exceed original_max_position_embeddings (16).
INPUT_LENGTH = {"phi3_longrope": 24}
SEEDS = {"llama": 0, "mistral": 1, "qwen2": 2, "phi3": 3, "phi3_longrope": 4, "gemma3": 5}
GEMMA3_PROMPTS = ["The capital of France is", "Question: What is 37 + 48?\nAnswer:", "def fibonacci(n):\n    ",
                  "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May."]
GEMMA3_TEXTS = TOKENIZER_TEXTS + ["<start_of_turn>user\nhi<end_of_turn>\n", "tabs\t\tand   three spaces\n\n\n",
                                  "\u0001\u00ff \U0001F9EA unseen bytes"]
GEMMA3_KEPT = 1024


def make_tiny(name: str, config) -> None:
    torch.manual_seed(SEEDS[name])
    model = transformers.AutoModelForCausalLM.from_config(config, attn_implementation="eager").eval()
    with torch.no_grad():
        for param in model.parameters():  # larger-than-default weights so that errors are visible
            param.normal_(0.0, 0.2 if param.ndim > 1 else 1.0)
    out_dir = os.path.join(GOLDEN, name)
    model.save_pretrained(out_dir, safe_serialization=True)
    ids = torch.tensor(np.random.default_rng(0).integers(0, config.vocab_size, (2, INPUT_LENGTH.get(name, 12))))
    with torch.no_grad():
        logits = model(input_ids=ids).logits.float().numpy()
    np.savez(os.path.join(out_dir, "logits.npz"), input_ids=ids.numpy().astype(np.int32), logits=logits)
    print(f"{name}: wrote {out_dir}")


def make_smollm2() -> None:
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), os.pardir))
    from sharpen_jax.weights import smollm2_gguf_path

    path = smollm2_gguf_path()
    directory, filename = os.path.split(path)
    tok = transformers.AutoTokenizer.from_pretrained(directory, gguf_file=filename)
    model = transformers.AutoModelForCausalLM.from_pretrained(directory, gguf_file=filename,
                                                              dtype=torch.float32).eval()
    last_logits, prompt_ids = [], []
    for prompt in SMOLLM2_PROMPTS:
        ids = tok(prompt, return_tensors="pt", add_special_tokens=False).input_ids
        with torch.no_grad():
            last_logits.append(model(input_ids=ids).logits[0, -1].float().numpy())
        prompt_ids.append(ids[0].numpy().astype(np.int32))
    text_ids = [np.asarray(tok(t, add_special_tokens=False).input_ids, np.int32) for t in TOKENIZER_TEXTS]
    np.savez_compressed(
        os.path.join(GOLDEN, "smollm2.npz"), next_token_logits=np.stack(last_logits),
        prompts=np.array(SMOLLM2_PROMPTS), tokenizer_texts=np.array(TOKENIZER_TEXTS),
        **{f"prompt_ids_{i}": ids for i, ids in enumerate(prompt_ids)},
        **{f"text_ids_{i}": ids for i, ids in enumerate(text_ids)})
    print("smollm2: wrote next-token logits for", len(SMOLLM2_PROMPTS), "prompts")


# google/gemma-3-270m's config.json (Gemma3TextConfig): the values llama.cpp does not store in the GGUF
# (layer pattern, local RoPE base, query_pre_attn_scalar) are written out here, not read by our code.
GEMMA3_270M_HF = dict(vocab_size=262144, hidden_size=640, intermediate_size=2048, num_hidden_layers=18,
                      num_attention_heads=4, num_key_value_heads=1, head_dim=256, max_position_embeddings=32768,
                      rms_norm_eps=1e-6, rope_theta=1_000_000.0, rope_local_base_freq=10_000.0, sliding_window=512,
                      layer_types=["full_attention" if (i + 1) % 6 == 0 else "sliding_attention" for i in range(18)],
                      query_pre_attn_scalar=256, final_logit_softcapping=None,
                      attn_logit_softcapping=None, tie_word_embeddings=True, pad_token_id=0, eos_token_id=1,
                      bos_token_id=2)
# GGUF tensor names of a gemma3 file -> Gemma3ForCausalLM's (llama.cpp's tensor map for LLM_ARCH_GEMMA3)
GEMMA3_GGUF_TO_HF = {"attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
                     "attn_output": "self_attn.o_proj", "attn_q_norm": "self_attn.q_norm",
                     "attn_k_norm": "self_attn.k_norm", "attn_norm": "input_layernorm",
                     "post_attention_norm": "post_attention_layernorm", "ffn_norm": "pre_feedforward_layernorm",
                     "post_ffw_norm": "post_feedforward_layernorm", "ffn_gate": "mlp.gate_proj",
                     "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj"}


def gemma3_270m_transformers():
    """Gemma3ForCausalLM holding the GGUF's weights, dequantized with `gguf` (transformers 5 cannot load
    this file itself: it has no Q5_0 kernel); llama.cpp stores Gemma norms as 1 + w, so 1 is taken off."""
    import gguf

    sys.path.insert(0, os.path.join(os.path.dirname(__file__), os.pardir))
    from sharpen_jax.model_packages import gemma3_gguf_path

    path = gemma3_gguf_path()
    state = {}
    for tensor in gguf.GGUFReader(path).tensors:
        value = gguf.quants.dequantize(tensor.data, tensor.tensor_type).astype(np.float32)
        value = value.reshape(tuple(int(d) for d in reversed(tensor.shape)))
        if tensor.name.endswith("norm.weight"):
            value = value - 1.0
        if tensor.name == "token_embd.weight":
            name = "model.embed_tokens.weight"
        elif tensor.name == "output_norm.weight":
            name = "model.norm.weight"
        else:
            _, layer, kind, _ = tensor.name.split(".")
            name = f"model.layers.{layer}.{GEMMA3_GGUF_TO_HF[kind]}.weight"
        state[name] = torch.from_numpy(value)
    model = transformers.Gemma3ForCausalLM(transformers.Gemma3TextConfig(**GEMMA3_270M_HF)).float().eval()
    result = model.load_state_dict(state, strict=False)
    assert not result.unexpected_keys and set(result.missing_keys) <= {"lm_head.weight"}, result
    model.tie_weights()
    assert torch.equal(model.lm_head.weight, model.model.embed_tokens.weight)
    return path, model


def make_gemma3_270m() -> None:
    """Gemma 3 270M in transformers (the GGUF's weights, `gemma3_270m_transformers`) and transformers'
    tokenizer read from the same GGUF: per prompt the GEMMA3_KEPT largest next-token logits, GEMMA3_KEPT
    more at random ids, and logsumexp over the whole 262k vocabulary; token ids of GEMMA3_TEXTS."""
    path, model = gemma3_270m_transformers()
    directory, filename = os.path.split(path)
    tok = transformers.AutoTokenizer.from_pretrained(directory, gguf_file=filename)
    rng = np.random.default_rng(0)
    arrays = {}
    for i, prompt in enumerate(GEMMA3_PROMPTS):
        ids = tok(prompt, return_tensors="pt").input_ids  # with <bos>, as the GGUF asks (add_bos_token)
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0, -1].double().numpy()
        top = np.argsort(-logits)[:GEMMA3_KEPT]
        rest = rng.choice(np.setdiff1d(np.arange(logits.size), top), GEMMA3_KEPT, replace=False)
        kept = np.concatenate([top, rest]).astype(np.int32)
        arrays.update({f"prompt_ids_{i}": ids[0].numpy().astype(np.int32), f"kept_ids_{i}": kept,
                       f"kept_logits_{i}": logits[kept].astype(np.float32),
                       f"logsumexp_{i}": np.float64(np.log(np.exp(logits - logits.max()).sum()) + logits.max())})
    for i, text in enumerate(GEMMA3_TEXTS):
        arrays[f"text_ids_{i}"] = np.asarray(tok(text, add_special_tokens=False).input_ids, np.int32)
    np.savez_compressed(os.path.join(GOLDEN, "gemma3_270m.npz"), prompts=np.array(GEMMA3_PROMPTS),
                        tokenizer_texts=np.array(GEMMA3_TEXTS), transformers_version=transformers.__version__,
                        **arrays)
    print("gemma3_270m: wrote next-token logits for", len(GEMMA3_PROMPTS), "prompts")


if __name__ == "__main__":
    os.makedirs(GOLDEN, exist_ok=True)
    wanted = set(sys.argv[1:])
    for arch, cfg in tiny_models().items():
        if not wanted or arch in wanted:
            make_tiny(arch, cfg)
    if not wanted or "smollm2" in wanted:
        make_smollm2()
    if not wanted or "gemma3_270m" in wanted:
        make_gemma3_270m()
