"""Meshes and the one table of parameter partition specs (train layout and decode layout).

Mesh axes are named `data`, `fsdp` and `model`. Train layout shards weights over `fsdp` (ZeRO-3
style) and `model` (Megatron style: column-parallel q/k/v/gate/up, row-parallel o/down); the decode
layout drops `fsdp` so that each decode step reads whole weights without all-gathers. Batches are
sharded over (`data`, `fsdp`). A dimension that the mesh axis does not divide is replicated on that
axis instead, so the same code runs on 1 CPU, 8 fake CPU devices, one GPU or a TPU slice. Meshes that
span several processes (multi-host) are built by `sharpen_jax.distributed.global_mesh`.
"""

from __future__ import annotations

import re

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

AXES = ("data", "fsdp", "model")
BATCH_AXES = ("data", "fsdp")

# (regex over the "/"-joined parameter path, spec for the trailing dims). Stacked layer params get a
# leading None for the L axis.
_PARAM_SPEC_TABLE: tuple[tuple[str, tuple], ...] = (
    (r"embed/embedding$", ("model", "fsdp")),
    (r"lm_head$", ("fsdp", "model")),
    (r"attn/(q_proj|k_proj|v_proj)/kernel$", ("fsdp", "model")),
    (r"attn/(q_proj|k_proj|v_proj)/bias$", ("model",)),
    (r"attn/o_proj/kernel$", ("model", "fsdp")),
    (r"mlp/(gate_proj|up_proj)/kernel$", ("fsdp", "model")),
    (r"mlp/down_proj/kernel$", ("model", "fsdp")),
    (r"(lora_a)$", ("fsdp", None)),
    (r"(lora_b)$", (None, "model")),
    (r"scale$", (None,)),
)


def make_mesh(data: int = -1, fsdp: int = 1, model: int = 1, devices=None) -> Mesh:
    """A (data, fsdp, model) mesh over `devices` (all by default); -1 takes the remaining devices."""
    devices = list(devices if devices is not None else jax.devices())
    sizes = [data, fsdp, model]
    if sizes.count(-1) > 1:
        raise ValueError(f"make_mesh: at most one axis may be -1, got data={data} fsdp={fsdp} model={model}")
    known = int(np.prod([s for s in sizes if s != -1]))
    if -1 in sizes:
        if len(devices) % known:
            raise ValueError(f"make_mesh: {len(devices)} devices not divisible by fsdp*model={known}")
        sizes[sizes.index(-1)] = len(devices) // known
    if int(np.prod(sizes)) != len(devices):
        raise ValueError(f"make_mesh: data*fsdp*model={sizes} must equal the {len(devices)} devices")
    return Mesh(np.asarray(devices).reshape(sizes), AXES)


def _path_str(path) -> str:
    return "/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)


def _fit(spec: tuple, shape: tuple, mesh: Mesh) -> P:
    """Drop mesh axes that do not divide their dimension (replicate there instead)."""
    fitted = []
    for axis, dim in zip(spec, shape):
        if axis is not None and dim % mesh.shape[axis]:
            axis = None
        fitted.append(axis)
    return P(*fitted)


def param_partition_spec(path: str, shape: tuple, mesh: Mesh, decode: bool = False) -> P:
    """The PartitionSpec of one parameter, looked up in the table by its path."""
    for pattern, spec in _PARAM_SPEC_TABLE:
        if re.search(pattern, path):
            spec = tuple(None if (decode and a == "fsdp") else a for a in spec)
            spec = (None,) * (len(shape) - len(spec)) + spec
            return _fit(spec, shape, mesh)
    return P()


def param_shardings(params_or_shapes, mesh: Mesh, decode: bool = False):
    """NamedSharding per leaf of a parameter (or ShapeDtypeStruct) tree."""
    return jax.tree_util.tree_map_with_path(
        lambda path, leaf: NamedSharding(mesh, param_partition_spec(_path_str(path), leaf.shape, mesh, decode)),
        params_or_shapes)


def batch_sharding(mesh: Mesh, axes: tuple[str, ...] = BATCH_AXES) -> NamedSharding:
    """The leading (batch) axis split over those of `axes` that the mesh has; every other axis replicated."""
    present = tuple(a for a in axes if a in mesh.axis_names)
    return NamedSharding(mesh, P(present if present else None))


def replicated(mesh: Mesh) -> NamedSharding:
    """Every device of `mesh` holds the whole array."""
    return NamedSharding(mesh, P())


def batch_divisor(mesh: Mesh | None) -> int:
    """How many ways the batch axis is split; batch sizes must be multiples of this."""
    if mesh is None:
        return 1
    return int(mesh.shape["data"] * mesh.shape["fsdp"])

