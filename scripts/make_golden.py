"""Generate the golden files in tests/golden/ with Hugging Face transformers + PyTorch (CPU).

Run once (needs the `peers` extra: `pip install -e .[peers]`):

    python scripts/make_golden.py [NAME ...]     # all, or only the named ones (e.g. phi3 smollm2)

It writes, for tiny randomly initialised Llama (with Llama-3 rope scaling), Mistral (sliding
window), Qwen2 (q/k/v biases) and Phi-3 (fused qkv/gate_up, sliding window; and one with longrope
scaling, whose input is longer than original_max_position_embeddings so the long factors apply)
models, a HF checkpoint directory and `logits.npz` (input ids and transformers' float32 logits); and for SmolLM2-135M-Instruct loaded by transformers from the same
GGUF file that sharpen_jax loads, `smollm2.npz` with next-token logits of a few prompts and the
token ids of transformers' tokenizer. CI only reads these files; it never needs PyTorch.
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
    }


# Input length per tiny model: longrope's must exceed original_max_position_embeddings (16).
INPUT_LENGTH = {"phi3_longrope": 24}
SEEDS = {"llama": 0, "mistral": 1, "qwen2": 2, "phi3": 3, "phi3_longrope": 4}


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


if __name__ == "__main__":
    os.makedirs(GOLDEN, exist_ok=True)
    wanted = set(sys.argv[1:])
    for arch, cfg in tiny_models().items():
        if not wanted or arch in wanted:
            make_tiny(arch, cfg)
    if not wanted or "smollm2" in wanted:
        make_smollm2()
