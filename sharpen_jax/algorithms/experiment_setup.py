"""Shared set-up of the training experiments: model, tokenizer, optimizer, policy and train state.

`load_model("tiny")` gives a small random model with a character tokenizer (for smoke runs that
must finish in seconds); any other name or path goes through `sharpen_jax.weights.load` and
`sharpen_jax.tokenizer.load` (e.g. "smollm2-135m-instruct").
"""

from __future__ import annotations

import dataclasses
import string
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from sharpen_jax.algorithms import lora
from sharpen_jax.algorithms.policies import make_policy
from sharpen_jax.algorithms.train_state import LogprobFn, TrainState, create_train_state
from sharpen_jax.config import TransformerConfig
from sharpen_jax.model import param_shapes


class CharTokenizer:
    """One token per printable ASCII character or newline; id 0 is padding and end of sequence."""

    def __init__(self):
        self.chars = ["<pad>"] + [c for c in string.printable if c not in "\t\r\x0b\x0c"]
        self.index = {c: i for i, c in enumerate(self.chars)}
        self.pad_id, self.eos_ids, self.bos_id = 0, (0,), None

    @property
    def vocab_size(self) -> int:
        """Number of ids: padding plus one per character."""
        return len(self.chars)

    def encode(self, text: str) -> list[int]:
        """One id per character of `text`; a character outside the alphabet is an error naming it."""
        unknown = sorted({c for c in text if c not in self.index})
        if unknown:
            raise ValueError(f"CharTokenizer cannot encode characters {unknown}")
        return [self.index[c] for c in text]

    def decode(self, ids, skip_special_tokens: bool = True) -> str:
        """The characters of `ids`, without padding ids unless `skip_special_tokens` is false."""
        return "".join(self.chars[i] for i in ids if not (skip_special_tokens and i == 0))

    def token_bytes(self) -> list[bytes]:
        """The bytes each id contributes to decoded text (the sampler's stop-string automata read these)."""
        return [b""] + [c.encode() for c in self.chars[1:]]


def random_params(config: TransformerConfig, seed: int) -> dict:
    """Random parameters shaped like `init_params` (normal(0.02); norms 1), drawn on the host.

    Used for smoke runs: drawing with numpy from the parameter shapes avoids tracing the flax
    initializer op by op, which takes seconds on CPU.
    """
    rng = np.random.default_rng(seed)

    def draw(path, shape):
        if path[-1].key == "scale":
            return jnp.ones(shape.shape, shape.dtype)
        return jnp.asarray(rng.normal(0.0, 0.02, shape.shape), shape.dtype)

    return jax.tree_util.tree_map_with_path(draw, param_shapes(config))


def load_model(name: str, *, seed: int = 0, dtype: str | None = None) -> tuple[TransformerConfig, dict, Any]:
    """(config, params, tokenizer) for "tiny" (random, character tokenizer) or a real model name/path."""
    if name == "tiny":
        tokenizer = CharTokenizer()
        config = TransformerConfig.tiny(vocab_size=tokenizer.vocab_size, max_seq_len=512)
        return config, random_params(config, seed), tokenizer
    from sharpen_jax import tokenizer as tokenizer_lib, weights

    config, params = weights.load(name, dtype=dtype)
    return config, params, tokenizer_lib.load(name)


def make_optimizer(*, learning_rate: float, num_steps: int, warmup_steps: int = 0, grad_clip: float = 1.0,
                   weight_decay: float = 0.0, schedule: str = "linear"
                   ) -> tuple[optax.GradientTransformation, Callable]:
    """AdamW with global-norm clipping and a warm-up then linear (or constant) decay to 0: (tx, schedule)."""
    if schedule == "linear":
        decay = optax.linear_schedule(learning_rate, 0.0, max(1, num_steps - warmup_steps))
    elif schedule == "constant":
        decay = optax.constant_schedule(learning_rate)
    else:
        raise ValueError(f"schedule={schedule!r}; expected 'linear' or 'constant'")
    lr = optax.join_schedules([optax.linear_schedule(0.0, learning_rate, warmup_steps), decay], [warmup_steps]) \
        if warmup_steps else decay
    tx = optax.chain(optax.clip_by_global_norm(grad_clip), optax.adamw(lr, weight_decay=weight_decay))
    return tx, lr


_merge_adapters = jax.jit(lora.merge_adapters, static_argnums=2)


@dataclasses.dataclass(frozen=True)
class Policy:
    """The trained policy's functions: log-likelihoods for training, and plain params for sampling."""

    logprob_fn: LogprobFn
    ref_logprob_fn: LogprobFn
    lora_rank: int
    lora_alpha: float

    def sampling_params(self, state: TrainState) -> dict:
        """Plain model parameters of the current policy (LoRA adapters merged into the kernels)."""
        if not self.lora_rank:
            return state.params
        return _merge_adapters(state.frozen, state.params, self.lora_alpha / self.lora_rank)


def make_policy_state(config: TransformerConfig, base_params: dict, tx: optax.GradientTransformation,
                      rng: jax.Array, *, lora_rank: int = 0, lora_alpha: float = 16.0,
                      lora_targets: tuple[str, ...] = lora.ALL_PROJECTIONS) -> tuple[Policy, TrainState]:
    """(policy, initial state): full fine-tuning of a copy of `base_params`, or LoRA adapters on them."""
    logprob_fn, ref_logprob_fn = make_policy(config, lora_rank=lora_rank, lora_alpha=lora_alpha)
    init_key, state_key = jax.random.split(rng)
    if lora_rank:
        adapters = lora.init_lora(base_params, lora_rank, init_key, targets=tuple(lora_targets))
        state = create_train_state(adapters, tx, state_key, frozen=base_params)
    else:
        state = create_train_state(base_params, tx, state_key)
    return Policy(logprob_fn, ref_logprob_fn, lora_rank, lora_alpha), state
