"""GGUF files (llama.cpp format) read with the `gguf` package: config, tensors and tokenizer metadata.

Tensors are exposed under Hugging Face names in HF layout so that `sharded_read.assemble` serves both
formats. llama.cpp's converter permutes the rows of the Q and K projections of llama-architecture
models (it uses interleaved RoPE; we use HF's rotate-half), so those rows are permuted back here. Gemma 3 is not permuted (llama.cpp runs it with
NeoX-style rotate-half RoPE), but its converter stores every RMSNorm weight as 1 + w (it folds in
Gemma3RMSNorm's offset), so 1 is subtracted from those here.
"""

from __future__ import annotations

import os
import re
from typing import Any, Callable

import numpy as np

from sharpen_jax.config import TransformerConfig, gemma3_layer_types

SUPPORTED_GGUF_ARCHITECTURES = ("llama", "mistral", "qwen2", "gemma3")
_UNSUPPORTED_GEMMA = {"gemma": "Gemma 1", "gemma2": "Gemma 2", "gemma3n": "Gemma 3n", "gemma4": "Gemma 4",
                      "gemma-embedding": "EmbeddingGemma"}
# Gemma 3 values llama.cpp does not store but hard-codes for LLM_ARCH_GEMMA3 (src/llama-model.cpp):
# every 6th layer global, RoPE base 10^4 on the sliding-window layers, scores scaled by 1/sqrt(head_dim).
GEMMA3_SLIDING_WINDOW_PATTERN, GEMMA3_LOCAL_ROPE_THETA = 6, 10_000.0
_HF_TO_GGUF = (
    (r"^model\.embed_tokens\.weight$", "token_embd.weight"),
    (r"^model\.norm\.weight$", "output_norm.weight"),
    (r"^lm_head\.weight$", "output.weight"),
    (r"^model\.layers\.(\d+)\.self_attn\.q_proj\.(weight|bias)$", r"blk.\1.attn_q.\2"),
    (r"^model\.layers\.(\d+)\.self_attn\.k_proj\.(weight|bias)$", r"blk.\1.attn_k.\2"),
    (r"^model\.layers\.(\d+)\.self_attn\.v_proj\.(weight|bias)$", r"blk.\1.attn_v.\2"),
    (r"^model\.layers\.(\d+)\.self_attn\.o_proj\.weight$", r"blk.\1.attn_output.weight"),
    (r"^model\.layers\.(\d+)\.mlp\.gate_proj\.weight$", r"blk.\1.ffn_gate.weight"),
    (r"^model\.layers\.(\d+)\.mlp\.up_proj\.weight$", r"blk.\1.ffn_up.weight"),
    (r"^model\.layers\.(\d+)\.mlp\.down_proj\.weight$", r"blk.\1.ffn_down.weight"),
    (r"^model\.layers\.(\d+)\.input_layernorm\.weight$", r"blk.\1.attn_norm.weight"),
    (r"^model\.layers\.(\d+)\.post_attention_layernorm\.weight$", r"blk.\1.ffn_norm.weight"),
)
_GEMMA3_HF_TO_GGUF = (  # checked before the table above
    (r"^model\.layers\.(\d+)\.post_attention_layernorm\.weight$", r"blk.\1.post_attention_norm.weight"),
    (r"^model\.layers\.(\d+)\.pre_feedforward_layernorm\.weight$", r"blk.\1.ffn_norm.weight"),
    (r"^model\.layers\.(\d+)\.post_feedforward_layernorm\.weight$", r"blk.\1.post_ffw_norm.weight"),
    (r"^model\.layers\.(\d+)\.self_attn\.(q|k)_norm\.weight$", r"blk.\1.attn_\2_norm.weight"),
)


class GGUFError(ValueError):
    """A GGUF file that cannot be used; the message names the file and the problem."""


def reader(path: str):
    """A gguf.GGUFReader over `path` (memory-mapped), with a clear error for unreadable files."""
    import gguf

    if not os.path.exists(path):
        raise GGUFError(f"{path}: file does not exist")
    try:
        return gguf.GGUFReader(path)
    except Exception as err:  # gguf raises ValueError/struct errors for corrupt files
        raise GGUFError(f"{path}: not a readable GGUF file ({err})") from err


def metadata(gguf_reader, key: str, default: Any = None) -> Any:
    """The value of a metadata key (scalars, strings and arrays decoded), or `default`."""
    field = gguf_reader.fields.get(key)
    if field is None:
        return default
    return field.contents()


def unpermute_rows(weight_OI: np.ndarray, num_heads: int) -> np.ndarray:
    """Undo llama.cpp's Q/K row permutation (interleaved -> rotate-half pairing within each head)."""
    head_dim_half = weight_OI.shape[0] // num_heads // 2
    w = weight_OI.reshape(num_heads, head_dim_half, 2, *weight_OI.shape[1:])
    return w.swapaxes(1, 2).reshape(weight_OI.shape)


def config_from_gguf(gguf_reader, path: str) -> TransformerConfig:
    """TransformerConfig from GGUF metadata; unsupported architectures are rejected by name."""
    arch = metadata(gguf_reader, "general.architecture")
    if arch in _UNSUPPORTED_GEMMA:
        raise GGUFError(f"{path}: architecture {arch!r} ({_UNSUPPORTED_GEMMA[arch]}) is not supported; of the Gemma "
                        f"family only Gemma 3 text models (gemma3: 270M, 1B) are")
    if arch == "gemma3" and metadata(gguf_reader, "gemma3.rope.scaling.type", "none") != "none":
        raise GGUFError(f"{path}: Gemma 3 with RoPE scaling "
                        f"({metadata(gguf_reader, 'gemma3.rope.scaling.type')!r}, the 4B-27B models) is not "
                        f"supported; Gemma 3 270M and 1B are")
    if arch not in SUPPORTED_GGUF_ARCHITECTURES:
        raise GGUFError(f"{path}: architecture {arch!r} is not supported; expected one of "
                        f"{SUPPORTED_GGUF_ARCHITECTURES}")
    if "rope_freqs.weight" in {t.name for t in gguf_reader.tensors}:
        raise GGUFError(f"{path}: per-frequency RoPE factors (rope_freqs.weight, Llama-3.1 style) are not supported "
                        f"from GGUF; load the Hugging Face checkpoint directory instead")

    def need(key: str):
        value = metadata(gguf_reader, f"{arch}.{key}")
        if value is None:
            raise GGUFError(f"{path}: metadata key {arch}.{key} is missing")
        return value

    heads = int(need("attention.head_count"))
    dim = int(need("embedding_length"))
    tokens = metadata(gguf_reader, "tokenizer.ggml.tokens")
    vocab = metadata(gguf_reader, f"{arch}.vocab_size", len(tokens) if tokens is not None else None)
    tensor_names = {t.name for t in gguf_reader.tensors}
    window = metadata(gguf_reader, f"{arch}.attention.sliding_window")
    layers = int(need("block_count"))
    head_dim = int(metadata(gguf_reader, f"{arch}.attention.key_length", dim // heads))
    gemma = {} if arch != "gemma3" else dict(
        layer_types=gemma3_layer_types(layers, int(metadata(gguf_reader, "gemma3.attention.sliding_window_pattern",
                                                            GEMMA3_SLIDING_WINDOW_PATTERN))),
        rope_local_theta=GEMMA3_LOCAL_ROPE_THETA, query_pre_attn_scalar=float(head_dim))
    return TransformerConfig(
        vocab_size=int(vocab), dim=dim, num_layers=layers, num_heads=heads,
        num_kv_heads=int(metadata(gguf_reader, f"{arch}.attention.head_count_kv", heads)), head_dim=head_dim,
        hidden_dim=int(need("feed_forward_length")),
        rms_norm_eps=float(need("attention.layer_norm_rms_epsilon")),
        rope_theta=float(metadata(gguf_reader, f"{arch}.rope.freq_base", 10_000.0)),
        max_seq_len=int(metadata(gguf_reader, f"{arch}.context_length", 2048)),
        tie_embeddings="output.weight" not in tensor_names, qkv_bias="blk.0.attn_q.bias" in tensor_names,
        sliding_window=int(window) if window else None, architecture=arch, **gemma)


def open_gguf(path: str) -> tuple[TransformerConfig, Callable[[str], np.ndarray | None]]:
    """(config, read) where read(hf_name) dequantizes one tensor to float32 in HF layout."""
    import gguf

    gguf_reader = reader(path)
    config = config_from_gguf(gguf_reader, path)
    tensors = {t.name: t for t in gguf_reader.tensors}
    permuted = config.architecture in ("llama", "mistral")
    gemma = config.architecture == "gemma3"

    def read(hf_name: str) -> np.ndarray | None:
        gguf_name = None
        for pattern, replacement in (_GEMMA3_HF_TO_GGUF if gemma else ()) + _HF_TO_GGUF:
            if re.match(pattern, hf_name):
                gguf_name = re.sub(pattern, replacement, hf_name)
                break
        if gguf_name is None or gguf_name not in tensors:
            return None
        tensor = tensors[gguf_name]
        try:
            value = gguf.quants.dequantize(tensor.data, tensor.tensor_type).astype(np.float32)
        except Exception as err:
            raise GGUFError(f"{path}: cannot dequantize tensor {gguf_name} ({err})") from err
        value = value.reshape(tuple(int(d) for d in reversed(tensor.shape)))
        if permuted and gguf_name.endswith("attn_q.weight"):
            value = unpermute_rows(value, config.num_heads)
        elif permuted and gguf_name.endswith("attn_k.weight"):
            value = unpermute_rows(value, config.num_kv_heads)
        elif gemma and gguf_name.endswith("norm.weight"):
            value = value - np.float32(1.0)
        return value

    return config, read
