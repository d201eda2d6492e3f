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


class GGUFTensor:
    """One memory-mapped GGUF tensor in HF layout ([out, in]: ggml's dimensions reversed), read lazily.

    `.shape`, and `[rows, cols]` (slices with step 1) dequantizes only what that index covers. ggml
    stores a tensor row by row, and a quantized row as blocks of `block` values along the last
    axis, each `block_bytes` bytes (Q8_0: 32 values in 34 bytes, Q4_K: 256 in 144, Q6_K: 256 in
    210; float types: one value per element): a range of rows is a contiguous byte range, and a
    range of columns within them is a range of whole blocks. Only those blocks are dequantized
    (`gguf.quants.dequantize` on the sliced bytes; it works block by block, so the values are
    bitwise those of the whole tensor's dequantization), then trimmed to the columns asked for.
    `rows_unit` rows are read together: a head's rows for Q/K, whose row permutation (see
    `unpermute_rows`) mixes rows within a head; `fix(block_RC, units)` is that per-tensor correction.
    """

    def __init__(self, tensor, path: str, rows_unit: int = 1,
                 fix: Callable[[np.ndarray, int], np.ndarray] | None = None):
        import gguf

        self.tensor, self.where, self.rows_unit, self.fix = tensor, f"{path}: tensor {tensor.name}", rows_unit, fix
        self.shape = tuple(int(d) for d in reversed(tensor.shape))
        if len(self.shape) > 2:
            raise GGUFError(f"{self.where} has shape {self.shape}; expected a vector or a matrix")
        # the reader exposes F32/F16 as typed arrays, every other type as the raw bytes of its blocks
        typed = tensor.data.dtype != np.uint8
        self.block, self.block_bytes = (1, 1) if typed else gguf.GGML_QUANT_SIZES[tensor.tensor_type]

    def __getitem__(self, index) -> np.ndarray:
        import gguf

        index = (index if isinstance(index, tuple) else (index,)) + (slice(None),) * len(self.shape)
        asked = [range(n)[i] for n, i in zip(self.shape, index)]
        if any(r.step != 1 for r in asked):
            raise ValueError(f"{self.where}: index {index[:len(self.shape)]} has a step; expected contiguous ranges")
        # a vector (norm, bias) is one row, read whole
        rows, cols = (range(1), range(self.shape[0])) if len(self.shape) == 1 else asked
        unit = self.rows_unit
        row0, row1 = rows.start // unit * unit, -(-rows.stop // unit) * unit
        col0, col1 = cols.start // self.block, -(-cols.stop // self.block)
        data = self.tensor.data.reshape(-1, self.tensor.data.shape[-1])
        raw = np.ascontiguousarray(data[row0:row1, col0 * self.block_bytes:col1 * self.block_bytes])
        try:
            value_RC = gguf.quants.dequantize(raw, self.tensor.tensor_type).astype(np.float32)
        except Exception as err:
            raise GGUFError(f"{self.where}: cannot dequantize ({err})") from err
        if self.fix is not None:
            value_RC = self.fix(value_RC, (row1 - row0) // unit)
        if len(self.shape) == 1:
            return value_RC.reshape(-1)[asked[0].start:asked[0].stop]
        first = col0 * self.block
        return value_RC[rows.start - row0:rows.stop - row0, cols.start - first:cols.stop - first]


def open_gguf(path: str) -> tuple[TransformerConfig, Callable[[str], GGUFTensor | None]]:
    """(config, read) where read(hf_name) is that tensor in HF layout as a lazily read `GGUFTensor`
    (float32 values; Q/K rows unpermuted, Gemma 3 norms without their stored + 1)."""
    gguf_reader = reader(path)
    config = config_from_gguf(gguf_reader, path)
    tensors = {t.name: t for t in gguf_reader.tensors}
    permuted = config.architecture in ("llama", "mistral")
    gemma = config.architecture == "gemma3"

    def read(hf_name: str) -> GGUFTensor | None:
        gguf_name = None
        for pattern, replacement in (_GEMMA3_HF_TO_GGUF if gemma else ()) + _HF_TO_GGUF:
            if re.match(pattern, hf_name):
                gguf_name = re.sub(pattern, replacement, hf_name)
                break
        if gguf_name is None or gguf_name not in tensors:
            return None
        tensor = tensors[gguf_name]
        if permuted and gguf_name.endswith(("attn_q.weight", "attn_k.weight")):
            return GGUFTensor(tensor, path, config.head_dim, unpermute_rows)
        if gemma and gguf_name.endswith("norm.weight"):
            return GGUFTensor(tensor, path, fix=lambda value, _: value - np.float32(1.0))
        return GGUFTensor(tensor, path)

    return config, read
