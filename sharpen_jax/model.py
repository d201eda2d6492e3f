"""Llama-family decoder in flax.linen, pure-functional, with an explicit KV cache; Gemma 3 is a
config-selected variant of the same decoder (see TransformerConfig).

Axis legend: B batch, T time (new tokens), S cache length, N query heads, K kv heads,
G = N // K, H head dim, D model dim, F MLP hidden dim, V vocab, L layers.

Parameters live outside the module (`init_params`) with per-layer weights stacked on a leading L
axis (the layers run under `nn.scan`, so compile time does not grow with depth). The cache is a
plain dict pytree passed in and returned:

    cache = {"k": [L, B, K, S, H], "v": [L, B, K, H, S]  (values transposed: both attention
             products then contract the array's last axis, which XLA:CPU runs much faster),
             "pos": int32[B, S]  (position of the token in each slot, -1 for empty or padding),
             "index": int32[]    (next slot to write; the same for every row)}

A cache may also carry a read-only shared prefix (`fork_cache`): the prompt cache of P prompts,
{"prefix_k": [L, P, K, Sp, H], "prefix_v": [L, P, K, H, Sp], "prefix_pos": int32[P, Sp]}, read by the B = P * N
rows of the per-row cache (row b belongs to prompt b // N). Attention then runs over
prefix ++ own slots, and the prefix is stored and read once per prompt instead of once per row.

Attention rule, identical with and without a cache: a query at slot i with position p may read a
key slot s when the slot holds a real token (pos >= 0), s <= i (causal in slot order), and, with a
sliding window W, p - pos_s < W. With Gemma 3's `layer_types` the window applies to the sliding-window
layers only, and each kind of layer has its own RoPE base. Positions come in as an argument, so a left-padded row gives its
real tokens the same positions (and logits) as the unpadded sequence.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from sharpen_jax.config import LongRopeScaling, TransformerConfig, rope_inverse_frequencies

Cache = dict[str, jax.Array]
_MASKED = -0.7 * float(jnp.finfo(jnp.float32).max)


class RMSNorm(nn.Module):
    """x / sqrt(mean(x^2) + eps) * (offset + scale), computed in float32 (offset 1 and scale initialized
    to 0 for Gemma's (1 + scale) convention, HF Gemma3RMSNorm; offset 0 and scale 1 otherwise)."""

    eps: float
    dtype: Any
    param_dtype: Any
    offset: float = 0.0

    @nn.compact
    def __call__(self, x_BTD):
        init = nn.initializers.zeros if self.offset else nn.initializers.ones
        scale_D = self.param("scale", init, (x_BTD.shape[-1],), self.param_dtype)
        x32 = x_BTD.astype(jnp.float32)
        normed = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
        scale = scale_D.astype(jnp.float32).reshape((1,) * (normed.ndim - 1) + (-1,)) + self.offset
        return (scale * normed).astype(self.dtype)


def _norm(config: TransformerConfig, name: str) -> RMSNorm:
    return RMSNorm(config.rms_norm_eps, config.compute_dtype, config.weight_dtype,
                   offset=1.0 if config.architecture == "gemma3" else 0.0, name=name)


def rotary_tables(config: TransformerConfig, positions_BT: jax.Array, local: bool = False
                  ) -> tuple[jax.Array, jax.Array]:
    """cos/sin tables [B, T, H] for rotate-half RoPE (HF convention: frequencies repeated twice).

    Under longrope (Phi-3) the long factors apply when the call's largest position + 1 exceeds
    original_max_position_embeddings (HF's dynamic switch), and cos/sin carry the attention factor.
    `local`: the tables of base rope_local_theta (Gemma 3's sliding-window layers).
    """
    positions_BT1 = positions_BT.astype(jnp.float32)[..., None]
    angles_BTh = positions_BT1 * jnp.asarray(rope_inverse_frequencies(config, local=local))[None, None, :]
    if local:
        angles_BTH = jnp.concatenate([angles_BTh, angles_BTh], axis=-1)
        return jnp.cos(angles_BTH), jnp.sin(angles_BTH)
    scaling = config.rope_scaling
    if isinstance(scaling, LongRopeScaling):
        long_BTh = positions_BT1 * jnp.asarray(rope_inverse_frequencies(config, long=True))[None, None, :]
        angles_BTh = jnp.where(jnp.max(positions_BT) + 1 > scaling.original_max_position_embeddings, long_BTh,
                               angles_BTh)
    angles_BTH = jnp.concatenate([angles_BTh, angles_BTh], axis=-1)
    if isinstance(scaling, LongRopeScaling):
        return jnp.cos(angles_BTH) * scaling.attention_factor, jnp.sin(angles_BTH) * scaling.attention_factor
    return jnp.cos(angles_BTH), jnp.sin(angles_BTH)


def apply_rotary(x_BTnH: jax.Array, cos_BTH: jax.Array, sin_BTH: jax.Array) -> jax.Array:
    """x * cos + rotate_half(x) * sin, in float32, cast back to x's dtype."""
    x = x_BTnH.astype(jnp.float32)
    half = x.shape[-1] // 2
    rotated = jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    out = x * cos_BTH[:, :, None, :] + rotated * sin_BTH[:, :, None, :]
    return out.astype(x_BTnH.dtype)


def attention_mask(window: int | None, positions_BT: jax.Array, kv_pos_BS: jax.Array,
                   first_slot: jax.Array | int) -> jax.Array:
    """Boolean [B, T, S]: may query t (written at slot first_slot + t) read key slot s, under a
    sliding window of `window` positions (None: no window)."""
    t, s = positions_BT.shape[1], kv_pos_BS.shape[1]
    query_slot_T = first_slot + jnp.arange(t)
    causal_TS = jnp.arange(s)[None, :] <= query_slot_T[:, None]
    mask_BTS = (kv_pos_BS[:, None, :] >= 0) & causal_TS[None]
    if window is not None:
        distance_BTS = positions_BT[:, :, None] - kv_pos_BS[:, None, :]
        mask_BTS &= distance_BTS < window
    return mask_BTS


def grouped_attention(q_BTKGH, keys_BKSH, values_BKHS, mask_BTS, prefix=None, scale=None):
    """softmax(q k^T * scale) v per kv head k and its G query heads, over the allowed key slots
    (scale defaults to 1 / sqrt(H)).

    With a shared prefix (keys [P, K, Sp, H], values [P, K, H, Sp], mask [B, T, Sp]) the softmax
    runs over prefix ++ own slots; row b reads prompt b // (B // P), and the prefix products are
    batched per prompt, so its keys and values are read once for the prompt's B // P rows.
    """
    b, t, k, g, h = q_BTKGH.shape
    scale = h ** -0.5 if scale is None else scale
    scores_BKGTS = jnp.einsum("btkgh,bksh->bkgts", q_BTKGH, keys_BKSH.astype(q_BTKGH.dtype),
                              preferred_element_type=jnp.float32) * scale
    scores_BKGTS = jnp.where(mask_BTS[:, None, None], scores_BKGTS, _MASKED)
    if prefix is None:
        probs_BKGTS = jax.nn.softmax(scores_BKGTS, axis=-1).astype(q_BTKGH.dtype)
        return jnp.einsum("bkgts,bkhs->btkgh", probs_BKGTS, values_BKHS.astype(q_BTKGH.dtype))

    prefix_k_PKSH, prefix_v_PKHS, prefix_mask_BTS = prefix
    num_prompts, prefix_len = prefix_k_PKSH.shape[0], prefix_k_PKSH.shape[2]
    q_PNTKGH = q_BTKGH.reshape(num_prompts, b // num_prompts, t, k, g, h)
    prefix_scores_BKGTS = jnp.einsum("pntkgh,pksh->pnkgts", q_PNTKGH, prefix_k_PKSH.astype(q_BTKGH.dtype),
                                     preferred_element_type=jnp.float32).reshape(b, k, g, t, prefix_len) * scale
    prefix_scores_BKGTS = jnp.where(prefix_mask_BTS[:, None, None], prefix_scores_BKGTS, _MASKED)
    probs_BKGTS = jax.nn.softmax(jnp.concatenate([prefix_scores_BKGTS, scores_BKGTS], axis=-1),
                                 axis=-1).astype(q_BTKGH.dtype)
    prefix_probs_PNKGTS = probs_BKGTS[..., :prefix_len].reshape(q_PNTKGH.shape[:2] + (k, g, t, prefix_len))
    out_BTKGH = jnp.einsum("bkgts,bkhs->btkgh", probs_BKGTS[..., prefix_len:], values_BKHS.astype(q_BTKGH.dtype))
    return out_BTKGH + jnp.einsum("pnkgts,pkhs->pntkgh", prefix_probs_PNKGTS,
                                  prefix_v_PKHS.astype(q_BTKGH.dtype)).reshape(out_BTKGH.shape)


class Attention(nn.Module):
    """Grouped-query attention with rotary embeddings and an optional explicit KV cache."""

    config: TransformerConfig

    @nn.compact
    def __call__(self, x_BTD, cos_BTH, sin_BTH, mask_BTS, layer_cache, write_index, prefix=None):
        cfg = self.config
        dense = lambda features, name, bias: nn.Dense(  # noqa: E731
            features, use_bias=bias, dtype=cfg.compute_dtype, param_dtype=cfg.weight_dtype, name=name)
        b, t, _ = x_BTD.shape
        n, k, h = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
        q_BTNH = dense(n * h, "q_proj", cfg.qkv_bias)(x_BTD).reshape(b, t, n, h)
        k_BTKH = dense(k * h, "k_proj", cfg.qkv_bias)(x_BTD).reshape(b, t, k, h)
        v_BTKH = dense(k * h, "v_proj", cfg.qkv_bias)(x_BTD).reshape(b, t, k, h)
        if cfg.architecture == "gemma3":  # QK-norm: RMSNorm over each query and key head, before RoPE
            q_BTNH, k_BTKH = _norm(cfg, "q_norm")(q_BTNH), _norm(cfg, "k_norm")(k_BTKH)
        q_BTNH = apply_rotary(q_BTNH, cos_BTH, sin_BTH)
        k_BTKH = apply_rotary(k_BTKH, cos_BTH, sin_BTH)

        k_BKTH, v_BKHT = k_BTKH.transpose(0, 2, 1, 3), v_BTKH.transpose(0, 2, 3, 1)
        if layer_cache is None:
            keys_BKSH, values_BKHS, new_cache = k_BKTH, v_BKHT, None
        else:  # write this layer's new keys into the all-layer cache in place, then read the layer back
            cache_k, cache_v, layer = layer_cache
            cache_k = jax.lax.dynamic_update_slice(cache_k, k_BKTH.astype(cache_k.dtype)[None],
                                                   (layer, 0, 0, write_index, 0))
            cache_v = jax.lax.dynamic_update_slice(cache_v, v_BKHT.astype(cache_v.dtype)[None],
                                                   (layer, 0, 0, 0, write_index))
            keys_BKSH = jax.lax.dynamic_index_in_dim(cache_k, layer, keepdims=False)
            values_BKHS = jax.lax.dynamic_index_in_dim(cache_v, layer, keepdims=False)
            new_cache = (cache_k, cache_v)

        scale = None if cfg.query_pre_attn_scalar is None else cfg.query_pre_attn_scalar ** -0.5
        out_BTKGH = grouped_attention(q_BTNH.reshape(b, t, k, n // k, h), keys_BKSH, values_BKHS, mask_BTS, prefix,
                                      scale)
        out_BTD = dense(cfg.dim, "o_proj", False)(out_BTKGH.reshape(b, t, n * h))
        return out_BTD, new_cache


class MLP(nn.Module):
    """SwiGLU feed-forward down(silu(gate(x)) * up(x)); for Gemma 3 GeGLU, down(gelu_tanh(gate(x)) * up(x))."""

    config: TransformerConfig

    @nn.compact
    def __call__(self, x_BTD):
        cfg = self.config
        dense = lambda features, name: nn.Dense(  # noqa: E731
            features, use_bias=False, dtype=cfg.compute_dtype, param_dtype=cfg.weight_dtype, name=name)
        act = functools.partial(nn.gelu, approximate=True) if cfg.architecture == "gemma3" else nn.silu
        hidden_BTF = act(dense(cfg.hidden_dim, "gate_proj")(x_BTD)) * dense(cfg.hidden_dim, "up_proj")(x_BTD)
        return dense(cfg.dim, "down_proj")(hidden_BTF)


class Block(nn.Module):
    """Pre-norm decoder block as a scan body: ((x, cache_k, cache_v), layer) -> ((x, k, v), None).

    Gemma 3 adds norms after attention and after the MLP, before each residual sum. With layer_types,
    `rope` and `mask_BTS` (and the prefix mask) are (global, local) pairs and the layer picks its own.

    The all-layer cache travels in the scan carry and is updated in place at this layer's index;
    scanning it as xs/ys instead would copy the whole cache at every decode step.
    """

    config: TransformerConfig

    @nn.compact
    def __call__(self, carry, layer, rope, mask_BTS, write_index, prefix):
        cfg = self.config
        x_BTD, cache_k, cache_v = carry
        layer_cache = None if cache_k is None else (cache_k, cache_v, layer)
        prefix_mask_BTS = None if prefix is None else prefix[2]
        if cfg.sliding_layers is not None:  # this layer's (global or local) tables and masks
            local = jnp.asarray(cfg.sliding_layers)[layer]
            pick = lambda pair: jax.tree.map(lambda g, l: jnp.where(local, l, g), *pair)  # noqa: E731,E741
            rope, mask_BTS = pick(rope), pick(mask_BTS)
            prefix_mask_BTS = None if prefix is None else pick(prefix_mask_BTS)
        if prefix is not None:  # this layer's slice of the shared prefix cache
            prefix = (jax.lax.dynamic_index_in_dim(prefix[0], layer, keepdims=False),
                      jax.lax.dynamic_index_in_dim(prefix[1], layer, keepdims=False), prefix_mask_BTS)
        gemma = cfg.architecture == "gemma3"
        attn_out, new_cache = Attention(cfg, name="attn")(
            _norm(cfg, "attn_norm")(x_BTD), *rope, mask_BTS, layer_cache, write_index, prefix)
        x_BTD = x_BTD + (_norm(cfg, "post_attn_norm")(attn_out) if gemma else attn_out)
        mlp_out = MLP(cfg, name="mlp")(_norm(cfg, "mlp_norm")(x_BTD))
        x_BTD = x_BTD + (_norm(cfg, "post_mlp_norm")(mlp_out) if gemma else mlp_out)
        cache_k, cache_v = new_cache if new_cache is not None else (None, None)
        return (x_BTD, cache_k, cache_v), None


class Transformer(nn.Module):
    """Token ids -> final normalized hidden states [B, T, D] (and the updated cache)."""

    config: TransformerConfig

    @nn.compact
    def __call__(self, tokens_BT, positions_BT, valid_BT, cache: Cache | None = None):
        cfg = self.config
        embed = nn.Embed(cfg.vocab_size, cfg.dim, dtype=cfg.compute_dtype, param_dtype=cfg.weight_dtype,
                         embedding_init=nn.initializers.normal(0.02), name="embed")
        x_BTD = embed(tokens_BT)
        if cfg.architecture == "gemma3":  # Gemma3TextScaledWordEmbedding: sqrt(D), rounded to the compute dtype
            x_BTD = x_BTD * jnp.asarray(cfg.dim ** 0.5, x_BTD.dtype)
        rope = rotary_tables(cfg, positions_BT)
        new_pos_BT = jnp.where(valid_BT, positions_BT, -1).astype(jnp.int32)
        if cache is None:
            write_index, kv_pos_BS, cache_k, cache_v = 0, new_pos_BT, None, None
        else:
            write_index = cache["index"]
            kv_pos_BS = jax.lax.dynamic_update_slice(cache["pos"], new_pos_BT, (0, write_index))
            cache_k, cache_v = cache["k"], cache["v"]
        layered = cfg.sliding_layers is not None

        def masks(kv_pos_BS, first_slot):  # one mask, or the (global, local) pair of Gemma 3
            windowed_BTS = attention_mask(cfg.sliding_window, positions_BT, kv_pos_BS, first_slot)
            return (attention_mask(None, positions_BT, kv_pos_BS, first_slot), windowed_BTS) if layered \
                else windowed_BTS

        mask_BTS = masks(kv_pos_BS, write_index)
        if layered:
            rope = (rope, rotary_tables(cfg, positions_BT, local=True))
        prefix = None
        if cache is not None and "prefix_k" in cache:
            rows_per_prompt = tokens_BT.shape[0] // cache["prefix_pos"].shape[0]
            prefix_pos_BS = jnp.repeat(cache["prefix_pos"], rows_per_prompt, axis=0)
            prefix = (cache["prefix_k"], cache["prefix_v"], masks(prefix_pos_BS, prefix_pos_BS.shape[1]))

        block = nn.remat(Block, prevent_cse=False) if cfg.remat else Block
        layers = nn.scan(block, variable_axes={"params": 0}, split_rngs={"params": True},
                         in_axes=(0, nn.broadcast, nn.broadcast, nn.broadcast, nn.broadcast),
                         length=cfg.num_layers)
        (x_BTD, cache_k, cache_v), _ = layers(cfg, name="layers")(
            (x_BTD, cache_k, cache_v), jnp.arange(cfg.num_layers), rope, mask_BTS, write_index, prefix)
        x_BTD = _norm(cfg, "final_norm")(x_BTD)
        if not cfg.tie_embeddings:  # the head is read by `unembed`, outside the module
            self.param("lm_head", nn.initializers.normal(0.02), (cfg.dim, cfg.vocab_size), cfg.weight_dtype)
        if cache is None:
            return x_BTD, None
        new_cache = dict(cache, k=cache_k, v=cache_v, pos=kv_pos_BS, index=write_index + tokens_BT.shape[1])
        return x_BTD, new_cache


@functools.partial(jax.jit, static_argnames=("config",))
def init_params(config: TransformerConfig, rng: jax.Array) -> dict:
    """Random parameters (normal(0.02) embeddings/head, LeCun-normal projections, unit norms)."""
    tokens = jnp.zeros((1, 1), jnp.int32)
    return Transformer(config).init(rng, tokens, tokens, tokens == 0)["params"]


def param_shapes(config: TransformerConfig) -> dict:
    """ShapeDtypeStruct tree of the parameters, computed with jax.eval_shape (allocates nothing)."""
    return jax.eval_shape(lambda: init_params(config, jax.random.key(0)))


def init_cache(config: TransformerConfig, batch: int, length: int, dtype: Any | None = None) -> Cache:
    """An empty cache with `length` slots per row."""
    rows = (config.num_layers, batch, config.num_kv_heads)
    dtype = dtype or config.compute_dtype
    return {"k": jnp.zeros(rows + (length, config.head_dim), dtype),
            "v": jnp.zeros(rows + (config.head_dim, length), dtype),
            "pos": jnp.full((batch, length), -1, jnp.int32), "index": jnp.zeros((), jnp.int32)}


def fork_cache(config: TransformerConfig, prompt_cache: Cache, num_samples: int, length: int) -> Cache:
    """A cache for R = P * num_samples rows that share the P prompts of `prompt_cache` as a prefix.

    Row r continues prompt r // num_samples and has `length` empty slots of its own. The prompt
    keys and values are not copied per row: attention reads them once per prompt (see the module
    docstring), which is what makes N samples per prompt cost one prefill plus N decodes.
    """
    rows = prompt_cache["pos"].shape[0] * num_samples
    return dict(init_cache(config, rows, length, prompt_cache["k"].dtype), prefix_k=prompt_cache["k"],
                prefix_v=prompt_cache["v"], prefix_pos=prompt_cache["pos"])


@functools.partial(jax.jit, static_argnames=("config",))
def forward_hidden(params: dict, config: TransformerConfig, tokens_BT, positions_BT=None, valid_BT=None,
                   cache: Cache | None = None) -> tuple[jax.Array, Cache | None]:
    """Final hidden states [B, T, D] and the updated cache (None when no cache was given).

    positions default to 0..T-1 and valid to all-True. With a cache, the T tokens are written at
    slots [cache["index"], cache["index"] + T).
    """
    if positions_BT is None:
        positions_BT = jnp.broadcast_to(jnp.arange(tokens_BT.shape[1]), tokens_BT.shape)
    if valid_BT is None:
        valid_BT = jnp.ones(tokens_BT.shape, bool)
    return Transformer(config).apply({"params": params}, tokens_BT, positions_BT, valid_BT, cache)


def unembed(params: dict, config: TransformerConfig, hidden_BTD: jax.Array) -> jax.Array:
    """Logits [B, T, V] in float32 from hidden states (tied embedding table or separate head)."""
    if config.tie_embeddings:
        return jnp.einsum("btd,vd->btv", hidden_BTD, params["embed"]["embedding"].astype(hidden_BTD.dtype),
                          preferred_element_type=jnp.float32)
    return jnp.einsum("btd,dv->btv", hidden_BTD, params["lm_head"].astype(hidden_BTD.dtype),
                      preferred_element_type=jnp.float32)


@functools.partial(jax.jit, static_argnames=("config",))
def forward(params: dict, config: TransformerConfig, tokens_BT, positions_BT=None, valid_BT=None,
            cache: Cache | None = None) -> tuple[jax.Array, Cache | None]:
    """Logits [B, T, V] (float32) and the updated cache; see `forward_hidden` for the arguments."""
    hidden_BTD, new_cache = forward_hidden(params, config, tokens_BT, positions_BT, valid_BT, cache)
    return unembed(params, config, hidden_BTD), new_cache
