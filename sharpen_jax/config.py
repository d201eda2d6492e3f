"""Model configuration: a frozen dataclass for the Llama family (Llama, Mistral, Qwen2, Phi-3 shapes) and Gemma 3.

The config is hashable so it can be a static argument of jitted functions. Dtypes are stored as
strings ("float32", "bfloat16") so configs serialize to JSON and compare by value.
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any

import jax.numpy as jnp
import numpy as np

SUPPORTED_ARCHITECTURES = ("llama", "mistral", "qwen2", "phi3", "gemma3")
LAYER_TYPES = ("sliding_attention", "full_attention")


@dataclasses.dataclass(frozen=True)
class RopeScaling:
    """Llama-3 style frequency-dependent RoPE scaling (HF `rope_type="llama3"`)."""

    factor: float
    low_freq_factor: float
    high_freq_factor: float
    original_max_position_embeddings: int


@dataclasses.dataclass(frozen=True)
class LongRopeScaling:
    """Phi-3 "longrope" RoPE scaling (HF `rope_type="longrope"`, formerly "su").

    inv_freq_i = 1 / (factor_i * theta^(2i/H)), with `short_factor` while the sequence (the largest
    position + 1 of the call) fits in `original_max_position_embeddings` and `long_factor` beyond
    it; cos and sin are multiplied by `attention_factor`
    (sqrt(1 + log(s) / log(original_max_position_embeddings)) with s = max_position_embeddings /
    original_max_position_embeddings, unless the checkpoint sets it).
    """

    short_factor: tuple[float, ...]
    long_factor: tuple[float, ...]
    original_max_position_embeddings: int
    attention_factor: float


@dataclasses.dataclass(frozen=True)
class TransformerConfig:
    """Hyper-parameters of a Llama-family or Gemma 3 decoder.

    architecture="gemma3" selects the Gemma 3 variant of the same decoder (Gemma 3 report, Sec. 2; HF
    Gemma3TextModel): RMSNorm scaled by (1 + scale), norms before and after attention and MLP, RMSNorm
    on each query/key head (QK-norm), GeGLU with tanh-GELU, embeddings times sqrt(dim).
    `layer_types` (one of LAYER_TYPES per layer) interleaves sliding-window layers (window
    `sliding_window`, RoPE base `rope_local_theta`) with global layers (no window, base `rope_theta`);
    without it every layer uses `sliding_window` and `rope_theta`. Attention scores are scaled by
    query_pre_attn_scalar^(-1/2) (head_dim^(-1/2) when None).

    Axis legend used across the model code: B batch, T time, S cache length, N query heads,
    K kv heads, G = N // K query heads per kv head, H head dim, D model dim, F MLP hidden dim,
    V vocab, L layers.
    """

    vocab_size: int
    dim: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    hidden_dim: int
    rms_norm_eps: float = 1e-5
    rope_theta: float = 10_000.0
    rope_scaling: RopeScaling | LongRopeScaling | None = None
    max_seq_len: int = 2048
    tie_embeddings: bool = True
    qkv_bias: bool = False
    sliding_window: int | None = None
    layer_types: tuple[str, ...] | None = None
    rope_local_theta: float | None = None
    query_pre_attn_scalar: float | None = None
    dtype: str = "float32"
    param_dtype: str = "float32"
    remat: bool = False
    architecture: str = "llama"

    def __post_init__(self):
        if self.architecture not in SUPPORTED_ARCHITECTURES:
            raise ValueError(
                f"TransformerConfig.architecture={self.architecture!r} is not supported; "
                f"expected one of {SUPPORTED_ARCHITECTURES}"
            )
        if self.num_heads % self.num_kv_heads:
            raise ValueError(
                f"num_heads={self.num_heads} must be a multiple of num_kv_heads={self.num_kv_heads}"
            )
        if self.head_dim % 2:
            raise ValueError(f"head_dim={self.head_dim} must be even for rotary embeddings")
        if isinstance(self.rope_scaling, LongRopeScaling):
            for name in ("short_factor", "long_factor"):
                if len(getattr(self.rope_scaling, name)) != self.head_dim // 2:
                    raise ValueError(f"rope_scaling.{name} has {len(getattr(self.rope_scaling, name))} entries; "
                                     f"expected head_dim / 2 = {self.head_dim // 2}")
        if self.layer_types is not None:
            if len(self.layer_types) != self.num_layers or not set(self.layer_types) <= set(LAYER_TYPES):
                raise ValueError(f"layer_types={self.layer_types!r}; expected {self.num_layers} entries, each one "
                                 f"of {LAYER_TYPES}")
            if self.sliding_window is None or self.rope_local_theta is None:
                raise ValueError("layer_types needs sliding_window and rope_local_theta (the window and RoPE base "
                                 "of the sliding_attention layers)")
        for name in ("dtype", "param_dtype"):
            value = getattr(self, name)
            if value not in ("float32", "bfloat16", "float16"):
                raise ValueError(f"TransformerConfig.{name}={value!r}; expected float32|bfloat16|float16")

    @property
    def compute_dtype(self) -> Any:
        return jnp.dtype(self.dtype)

    @property
    def weight_dtype(self) -> Any:
        return jnp.dtype(self.param_dtype)

    def replace(self, **changes) -> TransformerConfig:
        return dataclasses.replace(self, **changes)

    @property
    def sliding_layers(self) -> tuple[bool, ...] | None:
        """Per layer: does it use the sliding window (None when every layer is alike)."""
        if self.layer_types is None:
            return None
        return tuple(kind == "sliding_attention" for kind in self.layer_types)

    def num_params(self) -> int:
        """Total parameter count (embeddings counted once when tied)."""
        d, f, l = self.dim, self.hidden_dim, self.num_layers
        attn = d * self.num_heads * self.head_dim * 2 + d * self.num_kv_heads * self.head_dim * 2
        if self.qkv_bias:
            attn += (self.num_heads + 2 * self.num_kv_heads) * self.head_dim
        per_layer = attn + 3 * d * f + 2 * d
        if self.architecture == "gemma3":  # post-attention/post-MLP norms and the q/k head norms
            per_layer += 2 * d + 2 * self.head_dim
        embed = self.vocab_size * d * (1 if self.tie_embeddings else 2)
        return l * per_layer + embed + d

    def flops_per_token(self, context: int) -> float:
        """Forward FLOPs per token: 2 * (non-embedding matmul params + lm head) + attention.

        `context` is the average number of keys each query attends to (T/2 for a causal pass); with
        layer_types, a sliding-window layer attends to at most `sliding_window` of them.
        """
        d, f, l = self.dim, self.hidden_dim, self.num_layers
        matmul = l * (d * self.num_heads * self.head_dim * 2 + d * self.num_kv_heads * self.head_dim * 2
                      + 3 * d * f) + d * self.vocab_size
        contexts = [min(context, self.sliding_window) if local else context
                    for local in (self.sliding_layers or (False,) * l)]
        attention = 2 * self.num_heads * self.head_dim * sum(contexts)
        return 2.0 * matmul + 2.0 * attention

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> TransformerConfig:
        data = json.loads(text)
        if data.get("layer_types") is not None:
            data["layer_types"] = tuple(data["layer_types"])
        scaling = data.get("rope_scaling")
        if scaling is not None and "short_factor" in scaling:
            data["rope_scaling"] = LongRopeScaling(**{**scaling, "short_factor": tuple(scaling["short_factor"]),
                                                      "long_factor": tuple(scaling["long_factor"])})
        elif scaling is not None:
            data["rope_scaling"] = RopeScaling(**scaling)
        return cls(**data)

    # Presets. Shapes follow the public HF config.json of each model.
    @classmethod
    def tiny(cls, **overrides) -> TransformerConfig:
        base = dict(vocab_size=97, dim=32, num_layers=2, num_heads=4, num_kv_heads=2, head_dim=8,
                    hidden_dim=64, max_seq_len=128)
        return cls(**{**base, **overrides})

    @classmethod
    def smollm2_135m(cls, **overrides) -> TransformerConfig:
        base = dict(vocab_size=49152, dim=576, num_layers=30, num_heads=9, num_kv_heads=3, head_dim=64,
                    hidden_dim=1536, rms_norm_eps=1e-5, rope_theta=100_000.0, max_seq_len=8192)
        return cls(**{**base, **overrides})

    @classmethod
    def llama3_1b(cls, **overrides) -> TransformerConfig:
        base = dict(vocab_size=128256, dim=2048, num_layers=16, num_heads=32, num_kv_heads=8, head_dim=64,
                    hidden_dim=8192, rope_theta=500_000.0, max_seq_len=131072,
                    rope_scaling=RopeScaling(32.0, 1.0, 4.0, 8192))
        return cls(**{**base, **overrides})

    @classmethod
    def llama3_1_8b(cls, **overrides) -> TransformerConfig:
        base = dict(vocab_size=128256, dim=4096, num_layers=32, num_heads=32, num_kv_heads=8, head_dim=128,
                    hidden_dim=14336, rope_theta=500_000.0, max_seq_len=131072, tie_embeddings=False,
                    rope_scaling=RopeScaling(8.0, 1.0, 4.0, 8192))
        return cls(**{**base, **overrides})

    @classmethod
    def mistral_7b(cls, **overrides) -> TransformerConfig:
        base = dict(vocab_size=32000, dim=4096, num_layers=32, num_heads=32, num_kv_heads=8, head_dim=128,
                    hidden_dim=14336, max_seq_len=32768, tie_embeddings=False, sliding_window=4096,
                    architecture="mistral")
        return cls(**{**base, **overrides})

    @classmethod
    def qwen2_0_5b(cls, **overrides) -> TransformerConfig:
        """Qwen2-0.5B (and Qwen2.5-0.5B) shapes, the Qwen2 report's (arXiv 2407.10671) Table 1."""
        return cls(**{**_qwen2_shapes(151936, 896, 24, 14, 2, 64, 4864, tied=True), **overrides})

    @classmethod
    def qwen2_1_5b(cls, **overrides) -> TransformerConfig:
        """Qwen2-1.5B (and Qwen2.5-1.5B) shapes, the Qwen2 report's Table 1."""
        return cls(**{**_qwen2_shapes(151936, 1536, 28, 12, 2, 128, 8960, tied=True), **overrides})

    @classmethod
    def qwen2_5_7b(cls, **overrides) -> TransformerConfig:
        """Qwen2.5-7B shapes, which Qwen2-7B shares (the Qwen2 report's Table 1)."""
        return cls(**{**_qwen2_shapes(152064, 3584, 28, 28, 4, 128, 18944, tied=False), **overrides})

    @classmethod
    def phi3_mini(cls, **overrides) -> TransformerConfig:
        """Phi-3-mini-4k shapes (its fused qkv/gate_up weights are split on load into our layout)."""
        base = dict(vocab_size=32064, dim=3072, num_layers=32, num_heads=32, num_kv_heads=32, head_dim=96,
                    hidden_dim=8192, max_seq_len=4096, tie_embeddings=False, sliding_window=2047,
                    architecture="phi3")
        return cls(**{**base, **overrides})

    @classmethod
    def gemma3_270m(cls, **overrides) -> TransformerConfig:
        """Gemma 3 270M (HF google/gemma-3-270m config.json): every 6th layer global, the rest windowed."""
        base = dict(vocab_size=262144, dim=640, num_layers=18, num_heads=4, num_kv_heads=1, head_dim=256,
                    hidden_dim=2048, rms_norm_eps=1e-6, rope_theta=1_000_000.0, rope_local_theta=10_000.0,
                    max_seq_len=32768, sliding_window=512, query_pre_attn_scalar=256.0,
                    layer_types=gemma3_layer_types(18, 6), architecture="gemma3")
        return cls(**{**base, **overrides})


def _qwen2_shapes(vocab: int, dim: int, layers: int, heads: int, kv_heads: int, head_dim: int, hidden: int, *,
                  tied: bool) -> dict:
    """The TransformerConfig fields of a Qwen2-family decoder (q/k/v biases, RoPE base 1e6, 32k context)."""
    return dict(vocab_size=vocab, dim=dim, num_layers=layers, num_heads=heads, num_kv_heads=kv_heads,
                head_dim=head_dim, hidden_dim=hidden, rms_norm_eps=1e-6, rope_theta=1_000_000.0, max_seq_len=32768,
                tie_embeddings=tied, qkv_bias=True, architecture="qwen2")


def gemma3_layer_types(num_layers: int, pattern: int) -> tuple[str, ...]:
    """Gemma 3's interleaving: layer i is global when (i + 1) % pattern == 0, else sliding-window
    (HF Gemma3TextConfig's default layer_types with sliding_window_pattern = `pattern`)."""
    return tuple("full_attention" if (i + 1) % pattern == 0 else "sliding_attention" for i in range(num_layers))


def rope_inverse_frequencies(config: TransformerConfig, long: bool = False, local: bool = False) -> np.ndarray:
    """Inverse frequencies theta^(-2i/H), with Llama-3 scaling applied when configured (HF semantics);
    under longrope, divided by the short factors (or the long ones when `long`). `local`: the
    unscaled frequencies of base rope_local_theta (Gemma 3's sliding-window layers)."""
    h = config.head_dim
    theta = config.rope_local_theta if local else config.rope_theta
    inv_freq = 1.0 / (np.float32(theta) ** (np.arange(0, h, 2).astype(np.float32) / np.float32(h)))
    scaling = None if local else config.rope_scaling
    if isinstance(scaling, LongRopeScaling):
        factors = np.asarray(scaling.long_factor if long else scaling.short_factor, np.float32)
        return (1.0 / (factors * np.float32(config.rope_theta) ** (np.arange(0, h, 2).astype(np.float32)
                                                                    / np.float32(h)))).astype(np.float32)
    if scaling is None:
        return inv_freq.astype(np.float32)
    low_wavelen = scaling.original_max_position_embeddings / scaling.low_freq_factor
    high_wavelen = scaling.original_max_position_embeddings / scaling.high_freq_factor
    wavelen = 2 * math.pi / inv_freq
    scaled = np.where(wavelen > low_wavelen, inv_freq / scaling.factor, inv_freq)
    smooth = (scaling.original_max_position_embeddings / wavelen - scaling.low_freq_factor) / (
        scaling.high_freq_factor - scaling.low_freq_factor)
    smoothed = (1 - smooth) * scaled / scaling.factor + smooth * scaled
    medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
    return np.where(medium, smoothed, scaled).astype(np.float32)
