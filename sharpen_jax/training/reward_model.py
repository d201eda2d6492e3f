"""Reward models on the Llama-family decoder: a scalar head on the hidden state of the last real token.

One architecture serves both of PIT's reward models (Wang et al., 2023): the gap reward model
R_PIT(x, y_ref, y), which reads the three texts in one row (the layout, a config field of
`sharpen_jax.methods.pit`, default x then y_ref then y), and the plain Bradley-Terry reward model
r(x, y). A reward function has the shape of the policy contract of `train_state`, with a scalar out:

    reward_fn(params, seqs) -> r_B float32[B],   seqs = {"tokens": int32[B, T], "valid": bool[B, T]}

r_b = <h_b, w> + c, h_b the final normalised hidden state at row b's last valid token (padding may
sit on either side; positions count real tokens only, as in the scorer). Parameters:

    full fine-tuning  {"backbone": model params, "head": {"w": [D], "b": []}}
    LoRA              {"frozen": model params, "trainable": {"lora": adapters, "head": {...}}}

(the LoRA tree is `train_state.policy_params(state.params, state.frozen)`, so `make_train_step`
trains adapters and head and never donates the base weights.)

`score_candidates` scores N candidates y_1..y_N against one shared prefix (x, y_ref) per row of
prefixes: the prefix runs once into a KV cache that the N candidate rows read through
`model.fork_cache` (the mechanism of the sampler and the verifier), so the cost is one prefill of
the prefix plus N suffix passes, not N full rows.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import optax

from sharpen_jax.config import TransformerConfig
from sharpen_jax.model import fork_cache, forward_hidden, init_cache
from sharpen_jax.scoring import positions_from_valid
from sharpen_jax.training import lora
from sharpen_jax.training.train_state import TrainState, create_train_state


def init_head(config: TransformerConfig, rng: jax.Array, scale: float = 0.02) -> dict:
    """A scalar head {"w": float32[D] ~ normal(0, scale), "b": 0.0}."""
    return {"w": scale * jax.random.normal(rng, (config.dim,), jnp.float32), "b": jnp.zeros((), jnp.float32)}


def head_reward(head: dict, hidden_BD: jax.Array) -> jax.Array:
    """<h_b, w> + b in float32, r_B."""
    return jnp.einsum("bd,d->b", hidden_BD.astype(jnp.float32), head["w"]) + head["b"]


def last_hidden(backbone: dict, config: TransformerConfig, tokens_BT, valid_BT) -> jax.Array:
    """The final hidden state at each row's last valid token, [B, D]."""
    hidden_BTD, _ = forward_hidden(backbone, config, tokens_BT, positions_from_valid(valid_BT), valid_BT)
    t = valid_BT.shape[1]
    last_B = t - 1 - jnp.argmax(valid_BT[:, ::-1], axis=1)
    return jnp.take_along_axis(hidden_BTD, last_B[:, None, None], axis=1)[:, 0]


def make_reward_fn(config: TransformerConfig, *, lora_rank: int = 0, lora_alpha: float = 16.0):
    """reward_fn(params, seqs) -> r_B over the parameter layouts of the module docstring."""
    def plain(backbone, head, seqs):
        return head_reward(head, last_hidden(backbone, config, seqs["tokens"], seqs["valid"]))

    if not lora_rank:
        return lambda params, seqs: plain(params["backbone"], params["head"], seqs)
    scale = lora_alpha / lora_rank

    def with_lora(params, seqs):
        trainable = params["trainable"]
        with lora.lora_scope():
            backbone = lora.with_adapters(params["frozen"], lora.scale_adapters(trainable["lora"], scale))
            return plain(backbone, trainable["head"], seqs)

    return with_lora


def make_reward_state(config: TransformerConfig, base_params: dict, tx: optax.GradientTransformation,
                      rng: jax.Array, *, lora_rank: int = 0, lora_alpha: float = 16.0):
    """(reward_fn, initial state): the decoder `base_params` plus a fresh scalar head, fully trained
    or with LoRA adapters (base weights in `state.frozen`)."""
    head_key, lora_key = jax.random.split(rng)
    head = init_head(config, head_key)
    if lora_rank:
        adapters = lora.init_lora(base_params, lora_rank, lora_key)
        state = create_train_state({"lora": adapters, "head": head}, tx, frozen=base_params)
    else:
        state = create_train_state({"backbone": base_params, "head": head}, tx)
    return make_reward_fn(config, lora_rank=lora_rank, lora_alpha=lora_alpha), state


def scoring_params(state: TrainState, *, lora_rank: int = 0, lora_alpha: float = 16.0) -> tuple[dict, dict]:
    """(plain decoder params with any adapters merged, head) of a reward state, for `score_candidates`."""
    if not lora_rank:
        return state.params["backbone"], state.params["head"]
    merged = lora.merge_adapters(state.frozen, state.params["lora"], lora_alpha / lora_rank)
    return merged, state.params["head"]


@functools.partial(jax.jit, static_argnames=("config", "num_candidates"))
def score_candidates(backbone: dict, head: dict, config: TransformerConfig, prefix_BP, prefix_valid_BP,
                     suffix_RS, suffix_len_R, num_candidates: int) -> jax.Array:
    """r_R for the R = B * N rows prefix_b ++ suffix_r (row r = b * N + j), one prefill per prefix.

    Prefixes are left-padded [B, P]; suffixes right-padded [R, S] with lengths suffix_len_R >= 1. Equals
    the reward of the concatenated rows (tested against N separate forwards).
    """
    b, p = prefix_BP.shape
    s = suffix_RS.shape[1]
    cache = init_cache(config, b, p)
    _, cache = forward_hidden(backbone, config, prefix_BP, positions_from_valid(prefix_valid_BP), prefix_valid_BP,
                              cache)
    cache = fork_cache(config, cache, num_candidates, s)
    start_R = jnp.repeat(prefix_valid_BP.sum(axis=1), num_candidates)
    positions_RS = start_R[:, None] + jnp.arange(s)[None, :]
    valid_RS = jnp.arange(s)[None, :] < suffix_len_R[:, None]
    hidden_RSD, _ = forward_hidden(backbone, config, suffix_RS, positions_RS, valid_RS, cache)
    last_RD = jnp.take_along_axis(hidden_RSD, (suffix_len_R - 1)[:, None, None], axis=1)[:, 0]
    return head_reward(head, last_RD)
