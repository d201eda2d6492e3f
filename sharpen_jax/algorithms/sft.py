"""The maximum-likelihood step of SFT-Sharpening (Huang et al., 2024, Section 4.1).

SFT-Sharpening draws N samples per prompt from the base policy, keeps the one the self-reward
prefers (y_BoN) and fits the policy by maximum likelihood on (x, y_BoN). `make_sft_step` builds the
jitted update; the data side lives in `sharpen_jax.algorithms.data` and the loop in
`sharpen_jax.algorithms.loop`.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from sharpen_jax.algorithms import grad_accum
from sharpen_jax.algorithms.losses import sft_loss
from sharpen_jax.algorithms.train_state import (LogprobFn, TrainState, apply_gradients, global_norm_finite,
                                                policy_params)


def make_sft_step(logprob_fn: LogprobFn, tx: optax.GradientTransformation, *, grad_accum_steps: int = 1,
                  mesh: Mesh | None = None, state_sharding: TrainState | None = None,
                  batch_axes: tuple[str, ...] = ("data", "fsdp"),
                  learning_rate_fn: Callable[[jax.Array], jax.Array] | None = None,
                  ) -> Callable[[TrainState, dict], tuple[TrainState, dict]]:
    """Build `sft_step(state, batch) -> (state, metrics)`, one optimizer update on the token-mean NLL

        loss = -sum_i w_i log pi(y_i|x_i) / sum_i w_i |y_i|

    batch = {"seqs": policy inputs with leading axis B, "weight": float32[B] (optional)}. The batch
    is split into `grad_accum_steps` micro-batches whose gradients are accumulated exactly. With a
    `mesh`, the state takes `state_sharding` (replicated when None), the batch is split over
    `batch_axes` and the state (except `frozen`) is donated. A non-finite loss or gradient leaves the
    state unchanged and sets metrics["finite"] to False; the loop stops on it.
    """
    if grad_accum_steps < 1:
        raise ValueError(f"grad_accum_steps={grad_accum_steps}; expected >= 1")

    micro_sharding = None
    jit_kwargs: dict[str, Any] = {"donate_argnums": (0,)}
    if mesh is not None:
        core, frozen = grad_accum.core_sharding(state_sharding, mesh)
        data = grad_accum.batch_sharding(mesh, batch_axes)
        micro_sharding = data
        jit_kwargs.update(in_shardings=(core, frozen, data),
                          out_shardings=(core, grad_accum.replicated(mesh)))

    def loss_fn(params, frozen, micro):
        logp_B, num_tokens_B = logprob_fn(policy_params(params, frozen), micro["seqs"])
        return sft_loss(logp_B, num_tokens_B, micro.get("weight"))

    def core_step(state: TrainState, frozen: Any, batch: dict):
        grads, metrics = grad_accum.accumulate_gradients(
            lambda p, b: loss_fn(p, frozen, b), state.params, batch, grad_accum_steps,
            micro_sharding=micro_sharding)
        grad_norm, grads_ok = global_norm_finite(grads)
        ok = grads_ok & jnp.isfinite(metrics["loss"])
        new_state = apply_gradients(state, grads, tx, ok)
        metrics = {**metrics, "grad_norm": grad_norm, "finite": ok}
        if learning_rate_fn is not None:
            metrics["learning_rate"] = jnp.asarray(learning_rate_fn(state.step), jnp.float32)
        return new_state, metrics

    jitted = jax.jit(core_step, **jit_kwargs)

    def sft_step(state: TrainState, batch: dict) -> tuple[TrainState, dict]:
        if "seqs" not in batch:
            raise ValueError(f"SFT batch needs a 'seqs' entry; got keys {sorted(batch)}")
        grad_accum.check_batch_rows(batch, "batch", grad_accum_steps)
        frozen = state.frozen
        new_state, metrics = jitted(state.replace(frozen=None), frozen, batch)
        return new_state.replace(frozen=frozen), metrics

    return sft_step
