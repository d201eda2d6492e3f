"""Per-shard reads: lazily indexed tensors in Hugging Face layout -> our parameter tree on its shardings.

A reader is `read(hf_name) -> tensor | None`, where a tensor is anything with `.shape` and
`[index] -> numpy array` that reads only the index ranges asked for: a safetensors slice
(`safetensors_reader`), a row range of one (`RowRange`), a GGUF tensor (`gguf_reader.open_gguf`) or
a numpy array. `assemble` builds each parameter with `jax.make_array_from_callback`, whose callback
reads, for each of this process's devices, only the index ranges that device holds: a process of a
multi-process run reads only its own shards, and on one device the callback reads everything once.
"""

from __future__ import annotations

import glob
import os
from typing import Callable

import jax
import numpy as np

from sharpen_jax.config import TransformerConfig
from sharpen_jax.model import param_shapes
from sharpen_jax.sharding import param_shardings

_LAYER_TENSORS = {  # our stacked path -> (HF tensor suffix, transpose)
    ("layers", "attn", "q_proj", "kernel"): ("self_attn.q_proj.weight", True),
    ("layers", "attn", "k_proj", "kernel"): ("self_attn.k_proj.weight", True),
    ("layers", "attn", "v_proj", "kernel"): ("self_attn.v_proj.weight", True),
    ("layers", "attn", "o_proj", "kernel"): ("self_attn.o_proj.weight", True),
    ("layers", "attn", "q_proj", "bias"): ("self_attn.q_proj.bias", False),
    ("layers", "attn", "k_proj", "bias"): ("self_attn.k_proj.bias", False),
    ("layers", "attn", "v_proj", "bias"): ("self_attn.v_proj.bias", False),
    ("layers", "mlp", "gate_proj", "kernel"): ("mlp.gate_proj.weight", True),
    ("layers", "mlp", "up_proj", "kernel"): ("mlp.up_proj.weight", True),
    ("layers", "mlp", "down_proj", "kernel"): ("mlp.down_proj.weight", True),
    ("layers", "attn_norm", "scale"): ("input_layernorm.weight", False),
    ("layers", "mlp_norm", "scale"): ("post_attention_layernorm.weight", False),
}
_GEMMA3_LAYER_TENSORS = {  # Gemma3DecoderLayer: post_attention_layernorm is the norm *after* attention
    **_LAYER_TENSORS,
    ("layers", "attn", "q_norm", "scale"): ("self_attn.q_norm.weight", False),
    ("layers", "attn", "k_norm", "scale"): ("self_attn.k_norm.weight", False),
    ("layers", "post_attn_norm", "scale"): ("post_attention_layernorm.weight", False),
    ("layers", "mlp_norm", "scale"): ("pre_feedforward_layernorm.weight", False),
    ("layers", "post_mlp_norm", "scale"): ("post_feedforward_layernorm.weight", False),
}


class WeightsError(ValueError):
    """A checkpoint that cannot be loaded; the message names the file and the problem."""


def safetensors_reader(directory: str) -> Callable[[str], np.ndarray | None]:
    """name -> numpy array (None when absent) over all *.safetensors files of a directory."""
    from safetensors import safe_open

    files = sorted(glob.glob(os.path.join(directory, "*.safetensors")))
    if not files:
        raise WeightsError(f"{directory}: no *.safetensors files")
    index: dict[str, str] = {}
    handles = {}
    for file in files:
        try:
            handle = safe_open(file, framework="flax")
        except Exception as err:  # safetensors raises its own error type for truncated/corrupt files
            raise WeightsError(f"{file}: not a readable safetensors file ({err})") from err
        handles[file] = handle
        for name in handle.keys():
            index[name] = file

    def read(name: str) -> SafetensorsSlice | None:
        if name not in index:
            return None
        try:
            return SafetensorsSlice(handles[index[name]].get_slice(name), f"{index[name]}: tensor {name!r}")
        except Exception as err:
            raise WeightsError(f"{index[name]}: cannot read tensor {name!r} ({err})") from err

    return read


class SafetensorsSlice:
    """One safetensors tensor read lazily: `.shape`, and `[index]` reads only those index ranges."""

    def __init__(self, handle, where: str):
        self.handle, self.where = handle, where
        self.shape = tuple(handle.get_shape())

    def __getitem__(self, index) -> np.ndarray:
        try:
            return np.asarray(self.handle[index])
        except Exception as err:
            raise WeightsError(f"{self.where}: cannot read {index} ({err})") from err


class RowRange:
    """Rows [start, stop) of a lazily indexed tensor, itself indexed lazily."""

    def __init__(self, tensor, start: int, stop: int):
        self.tensor, self.start = tensor, start
        self.shape = (stop - start, *tensor.shape[1:])

    def __getitem__(self, index) -> np.ndarray:
        index = index if isinstance(index, tuple) else (index,)
        rows = range(self.shape[0])[index[0]] if index else range(self.shape[0])
        if rows.step != 1:
            raise ValueError(f"row index {index[0]} has a step; expected a contiguous range")
        return self.tensor[(slice(self.start + rows.start, self.start + rows.stop), *index[1:])]



def assemble(config: TransformerConfig, read: Callable[[str], np.ndarray | None], source: str,
             mesh=None, prefix: str = "model.") -> dict:
    """Build our parameter tree from HF-named tensors, one stacked parameter at a time.

    `read(name)` returns a lazily indexed tensor in HF layout ([out, in] for projections; see the
    module docstring) or None if absent. Each parameter is cast to config.param_dtype and built on
    its sharding from `sharpen_jax.sharding` (or the default device when mesh is None) by
    `jax.make_array_from_callback`: each of this process's devices gets only the index ranges it
    holds, read from the tensors for that device (once per distinct range).
    """
    shapes = param_shapes(config)
    shardings = param_shardings(shapes, mesh) if mesh is not None else None
    default = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])

    def require(name: str):
        tensor = read(name)
        if tensor is None:
            raise WeightsError(f"{source}: tensor {name!r} is missing")
        return tensor

    def place(path: tuple, tensors: list, transpose: bool, stacked: bool):
        expected = _get(shapes, path)
        inner = tuple(tensors[0].shape[::-1] if transpose else tensors[0].shape)
        got = (len(tensors), *inner) if stacked else inner
        uneven = any(tuple(t.shape) != tuple(tensors[0].shape) for t in tensors)
        if uneven or got != tuple(expected.shape):
            shape = [tuple(t.shape) for t in tensors] if uneven else got
            raise WeightsError(f"{source}: parameter {'/'.join(path)} has shape {shape}, the config implies "
                               f"{expected.shape}")
        done: dict = {}

        def one(tensor, index: tuple) -> np.ndarray:
            if transpose:
                return tensor[(index[1], index[0])].T
            return tensor[index]

        def shard(index: tuple) -> np.ndarray:
            key = tuple((i.start, i.stop, i.step) for i in index)
            if key not in done:
                if stacked:
                    layers = range(len(tensors))[index[0]]
                    block = np.stack([one(tensors[i], index[1:]) for i in layers])
                else:
                    block = one(tensors[0], index)
                done[key] = block.astype(expected.dtype)
            return done[key]

        sharding = _get(shardings, path) if shardings is not None else default
        return jax.make_array_from_callback(expected.shape, sharding, shard)

    params: dict = {}
    _set(params, ("embed", "embedding"), place(("embed", "embedding"), [require(prefix + "embed_tokens.weight")],
                                               False, False))
    _set(params, ("final_norm", "scale"), place(("final_norm", "scale"), [require(prefix + "norm.weight")],
                                                False, False))
    if not config.tie_embeddings:
        _set(params, ("lm_head",), place(("lm_head",), [require("lm_head.weight")], True, False))
    for path, (suffix, transpose) in (_GEMMA3_LAYER_TENSORS if config.architecture == "gemma3"
                                      else _LAYER_TENSORS).items():
        if path[-1] == "bias" and not config.qkv_bias:
            continue
        tensors = [require(f"{prefix}layers.{layer}.{suffix}") for layer in range(config.num_layers)]
        _set(params, path, place(path, tensors, transpose, True))
    return params


def _get(tree, path):
    for key in path:
        tree = tree[key]
    return tree


def _set(tree, path, value):
    for key in path[:-1]:
        tree = tree.setdefault(key, {})
    tree[path[-1]] = value
