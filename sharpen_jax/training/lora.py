"""LoRA adapters on the attention and MLP projections (Hu et al., 2021): W x + (alpha / r) B A x.

Only the adapters train; the base weights stay in `TrainState.frozen` and are the reference model of
policy optimization unchanged. Adapters are a pytree shaped like the base parameters' projection
entries, stacked over layers like them:

    {"layers": {"attn": {"q_proj": {"lora_a": [L, D_in, r], "lora_b": [L, r, D_out]}, ...},
                "mlp":  {"gate_proj": {...}, ...}}}

(`lora_a`/`lora_b` are the names the sharding table in `sharpen_jax.sharding` knows.)

Why our own and not qwix: qwix adds LoRA by wrapping a model object, but our model is built inside
`sharpen_jax.model.forward_hidden` and its parameters live outside it. Here the adapter arrays are
placed next to each kernel in the parameter tree (the layer scan slices them per layer like the
kernels) and a flax method interceptor adds the low-rank path to each `nn.Dense` that has them. The
adapters are never merged into the kernels during training, so no [D_in, D_out] weight gradient is
formed: the backward pass costs only the activation gradients plus the rank-r adapter gradients.
The interceptor holds no state (the scale alpha / r is folded into A before the call), so a jitted
model function traced once with adapters of a given tree structure is correct for any scale.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from sharpen_jax.training.train_state import LogprobFn

ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP = ("gate_proj", "up_proj", "down_proj")
ALL_PROJECTIONS = ATTENTION + MLP


def _group(name: str) -> str:
    return "attn" if name in ATTENTION else "mlp"


def init_lora(base_params: dict, rank: int, rng: jax.Array, targets: tuple[str, ...] = ALL_PROJECTIONS,
              dtype: Any = jnp.float32) -> dict:
    """Adapters for `targets`: A ~ U(-1/sqrt(D_in), 1/sqrt(D_in)), B = 0, so training starts at the base model."""
    unknown = [t for t in targets if t not in ALL_PROJECTIONS]
    if unknown or not targets:
        raise ValueError(f"LoRA targets {list(targets)}; expected a non-empty subset of {ALL_PROJECTIONS}")
    if rank < 1:
        raise ValueError(f"LoRA rank={rank}; expected >= 1")
    adapters: dict = {"layers": {}}
    for name, key in zip(targets, jax.random.split(rng, len(targets))):
        kernel = base_params["layers"][_group(name)][name]["kernel"]
        layers, d_in, d_out = kernel.shape
        bound = d_in ** -0.5
        adapters["layers"].setdefault(_group(name), {})[name] = {
            "lora_a": jax.random.uniform(key, (layers, d_in, rank), dtype, -bound, bound),
            "lora_b": jnp.zeros((layers, rank, d_out), dtype),
        }
    return adapters


def with_adapters(base_params: dict, adapters: dict) -> dict:
    """The base tree with each adapted projection's dict extended by its `lora_a`/`lora_b` entries."""
    layers = dict(base_params["layers"])
    for group, projections in adapters["layers"].items():
        layers[group] = dict(layers[group])
        for name, ab in projections.items():
            layers[group][name] = {**layers[group][name], **ab}
    return {**base_params, "layers": layers}


def merge_adapters(base_params: dict, adapters: dict, scale: float) -> dict:
    """Plain parameters with W' = W + scale * A B folded in (for sampling and export; same outputs)."""
    layers = dict(base_params["layers"])
    for group, projections in adapters["layers"].items():
        layers[group] = dict(layers[group])
        for name, ab in projections.items():
            kernel = layers[group][name]["kernel"]
            delta = jnp.einsum("lir,lro->lio", ab["lora_a"], ab["lora_b"]) * scale
            layers[group][name] = {**layers[group][name], "kernel": (kernel + delta).astype(kernel.dtype)}
    return {**base_params, "layers": layers}


def _add_low_rank_path(next_fun, args, kwargs, context):
    out = next_fun(*args, **kwargs)
    module = context.module
    if context.method_name == "__call__" and isinstance(module, nn.Dense) and module.has_variable("params", "lora_a"):
        x = args[0]
        a = module.get_variable("params", "lora_a").astype(x.dtype)
        b = module.get_variable("params", "lora_b").astype(x.dtype)
        out = out + ((x @ a) @ b).astype(out.dtype)
    return out


def lora_scope():
    """Context in which every `nn.Dense` whose parameters hold `lora_a`, `lora_b` computes W x + (x A) B."""
    return nn.intercept_methods(_add_low_rank_path)


def scale_adapters(adapters: dict, scale: float) -> dict:
    """Adapters with `lora_a` multiplied by `scale`, so that (x A') B = scale * (x A) B."""
    return jax.tree_util.tree_map_with_path(
        lambda path, x: x * scale if path[-1].key == "lora_a" else x, adapters)


def make_lora_logprob_fn(base_logprob_fn: LogprobFn, *, rank: int, alpha: float) -> LogprobFn:
    """A policy over {"frozen": base params, "trainable": adapters} (see `train_state.policy_params`).

    `base_logprob_fn` must call the flax model; scale = alpha / rank as in the LoRA paper.
    """
    scale = alpha / rank

    def logprob_fn(params, seqs):
        with lora_scope():
            return base_logprob_fn(with_adapters(params["frozen"], scale_adapters(params["trainable"], scale)), seqs)

    return logprob_fn
