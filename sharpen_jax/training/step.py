"""The one training step: every method (SFT, each policy-optimization loss, PIT's reward model and
improver) is a `loss_fn` handed to `make_train_step`.

    loss_fn(params, ref_params, batch) -> (loss, metrics)

`params` is what the policy reads (`train_state.policy_params`: the trainable tree, or under LoRA
{"frozen": base weights, "trainable": adapters}); `ref_params` is the frozen reference model (the
base policy of KL-regularized objectives), a separate argument never differentiated; `batch` is a
pytree of arrays with a leading row axis. `metrics` must hold "loss" and "denominator" (the
parameter-independent normalizer of the loss, see `losses.py`), which is what makes gradient
accumulation over micro-batches exact.

The step is pure and jitted once: the state is donated (except `frozen`), and with a mesh it gets
explicit in/out shardings. A non-finite loss or gradient leaves the state unchanged and sets
metrics["finite"] to False; `loop.train_loop` stops on it.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from sharpen_jax import distributed, sharding
from sharpen_jax.training import grad_accum
from sharpen_jax.training.train_state import TrainState, apply_gradients, global_norm_finite, policy_params

LossFn = Callable[[Any, Any, Any], tuple[jax.Array, dict]]
StepFn = Callable[[TrainState, Any, Any], tuple[TrainState, dict]]


def _core_sharding(state_sharding: TrainState | None, mesh: Mesh) -> tuple[Any, Any]:
    """(sharding of the state without `frozen`, sharding of `frozen`); replicated when not given."""
    if state_sharding is None:
        return sharding.replicated(mesh), sharding.replicated(mesh)
    frozen = state_sharding.frozen if state_sharding.frozen is not None else sharding.replicated(mesh)
    return state_sharding.replace(frozen=None), frozen


def make_train_step(loss_fn: LossFn, tx: optax.GradientTransformation, *, grad_accum_steps: int = 1,
                    mesh: Mesh | None = None, state_sharding: TrainState | None = None, ref_sharding: Any = None,
                    batch_axes: tuple[str, ...] = sharding.BATCH_AXES,
                    learning_rate_fn: Callable[[jax.Array], jax.Array] | None = None, group_size: int = 1,
                    batch_keys: Sequence[str] = ()) -> StepFn:
    """Build `step(state, ref_params, batch) -> (state, metrics)`: one optimizer update of `loss_fn`.

    The batch is split into `grad_accum_steps` micro-batches of whole groups of `group_size`
    consecutive rows (the samples of one prompt stay together), whose gradients are accumulated
    exactly. metrics = the loss's metrics (full-batch values) + "grad_norm", "finite" and, with a
    `learning_rate_fn`, the "learning_rate" of this update. `batch_keys` are checked before the
    jitted code runs (a missing key is an error naming it). With a `mesh`, the state takes
    `state_sharding` (replicated when None), `ref_params` takes `ref_sharding` (replicated when
    None) and the batch rows are split over `batch_axes`. The mesh may span processes
    (`distributed.global_mesh`): each process then passes the same host batch (or global arrays) and
    the state placed on the mesh, and places only its own shards of the batch.
    """
    if grad_accum_steps < 1:
        raise ValueError(f"grad_accum_steps={grad_accum_steps}; expected >= 1")
    if group_size < 1:
        raise ValueError(f"group_size={group_size}; expected >= 1")
    batch_keys = tuple(batch_keys)

    micro_sharding = ref = None
    jit_kwargs: dict[str, Any] = {"donate_argnums": (0,)}
    if mesh is not None:
        core, frozen = _core_sharding(state_sharding, mesh)
        ref = ref_sharding if ref_sharding is not None else sharding.replicated(mesh)
        micro_sharding = sharding.batch_sharding(mesh, batch_axes)
        rep = sharding.replicated(mesh)
        jit_kwargs.update(in_shardings=(core, frozen, ref, micro_sharding), out_shardings=(core, rep))

    def core_step(state: TrainState, frozen: Any, ref_params: Any, batch: Any):
        def micro_loss(params, micro):
            return loss_fn(policy_params(params, frozen), ref_params, micro)

        grads, metrics = grad_accum.accumulate_gradients(micro_loss, state.params, batch, grad_accum_steps,
                                                         group_size, micro_sharding=micro_sharding)
        grad_norm, grads_ok = global_norm_finite(grads)
        ok = grads_ok & jnp.isfinite(metrics["loss"])
        new_state = apply_gradients(state, grads, tx, ok)
        metrics = {**metrics, "grad_norm": grad_norm, "finite": ok}
        if learning_rate_fn is not None:
            metrics["learning_rate"] = jnp.asarray(learning_rate_fn(state.step), jnp.float32)
        return new_state, metrics

    jitted = jax.jit(core_step, **jit_kwargs)

    def step(state: TrainState, ref_params: Any, batch: Any) -> tuple[TrainState, dict]:
        if batch_keys:
            missing = [k for k in batch_keys if not isinstance(batch, dict) or k not in batch]
            if missing:
                got = sorted(batch) if isinstance(batch, dict) else type(batch).__name__
                raise ValueError(f"training batch is missing {missing}; got keys {got}")
        grad_accum.check_batch_rows(batch, "batch", grad_accum_steps * group_size)
        if mesh is not None:  # host rows (the same on every process) -> global arrays, each process its shards
            batch = distributed.to_global(batch, micro_sharding)
            ref_params = distributed.to_global(ref_params, ref)
        frozen = state.frozen
        new_state, metrics = jitted(state.replace(frozen=None), frozen, ref_params, batch)
        return new_state.replace(frozen=frozen), metrics

    return step
