"""Training state shared by every training step, and the policy contract.

A *policy* is a pure function

    logprob_fn(params, seqs) -> (logp_B float32[B], num_tokens_B float32[B])

giving the sequence log-likelihood log pi(y|x) of each sequence of a batch side `seqs` (a dict of
arrays with leading axis B) and the number of scored tokens. The tabular policies of the theory
package and the transformer of `sharpen_jax.training.policies` both have this shape, so the
same step functions train both.

The state holds the trainable parameters, the optimizer state and the step counter. Parameters
that the policy reads but never trains (the base weights under LoRA) live in `frozen`: the step
differentiates with respect to `params` only, never donates `frozen`, and gives the loss
`policy_params(params, frozen)`. Randomness is not state: a batch source derives the key of update
t from the run's seed and t (`jax.random.fold_in`), so a resumed run draws the same batches.
"""

from __future__ import annotations

from typing import Any, Callable

import flax.struct
import jax
import jax.numpy as jnp
import optax

from sharpen_jax.sharding import replicated

LogprobFn = Callable[[Any, dict], tuple[jax.Array, jax.Array]]


class TrainState(flax.struct.PyTreeNode):
    """Everything a training step reads and updates; a pytree, so it is jitted, sharded and saved whole.

    step: int32 scalar, number of optimizer updates applied.
    params: trainable pytree.
    opt_state: optax state of `params`.
    frozen: non-trainable pytree the policy also reads (LoRA base weights), or None.
    """

    step: jax.Array
    params: Any
    opt_state: Any
    frozen: Any = None

    def saved(self) -> dict:
        """The part of the state a checkpoint holds: everything but `frozen` (reloaded from the model)."""
        return {"step": self.step, "params": self.params, "opt_state": self.opt_state}

    def with_saved(self, tree: dict) -> TrainState:
        """This state with the arrays of a checkpoint tree (as written by `saved`) put back."""
        return self.replace(step=tree["step"], params=tree["params"], opt_state=tree["opt_state"])


def create_train_state(params: Any, tx: optax.GradientTransformation, *, frozen: Any = None) -> TrainState:
    """A fresh state at step 0: a copy of `params` and `tx.init` for the optimizer.

    The step donates the state's buffers, so the state owns a copy: the caller's `params` stay valid
    (e.g. as the frozen reference of policy optimization). `frozen` is shared, never donated.
    """
    if not jax.tree.leaves(params):
        raise ValueError("create_train_state: `params` has no arrays; nothing would train")
    params = jax.tree.map(jnp.copy, params)
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params), frozen=frozen)


def policy_params(params: Any, frozen: Any) -> Any:
    """The tree a policy is called with: `params` alone, or {"frozen": frozen, "trainable": params}."""
    if frozen is None:
        return params
    return {"frozen": frozen, "trainable": params}


def global_norm_finite(tree: Any) -> tuple[jax.Array, jax.Array]:
    """(global L2 norm of `tree`, whether every entry is finite) — the per-step safety check."""
    norm = optax.global_norm(tree)
    return norm, jnp.isfinite(norm)


def apply_gradients(state: TrainState, grads: Any, tx: optax.GradientTransformation,
                    ok: jax.Array) -> TrainState:
    """One optimizer update of `state.params` with `grads`, applied only where `ok` is true.

    When `ok` is false (a non-finite loss or gradient) the returned state equals the input state,
    so the loop can stop and the last good parameters are still in hand. A `lax.cond` rather than
    an elementwise select: the update then runs in place on donated buffers (measured 4x faster
    for AdamW on CPU than selecting between old and new trees).
    """
    def update(params_opt):
        params, opt_state = params_opt
        updates, new_opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), new_opt_state

    params, opt_state = jax.lax.cond(ok, update, lambda params_opt: params_opt, (state.params, state.opt_state))
    return state.replace(step=state.step + ok.astype(jnp.int32), params=params, opt_state=opt_state)


def train_state_sharding(state: TrainState, mesh: jax.sharding.Mesh, param_sharding: Any,
                         frozen_sharding: Any = None) -> TrainState:
    """Shardings of every leaf of `state` given those of its parameters.

    Optimizer-state subtrees shaped like `params` (Adam's moments) take `param_sharding`; every
    other optimizer leaf (counters) and the step are replicated.
    """
    rep = replicated(mesh)
    params_def = jax.tree.structure(state.params)
    like_params = lambda x: jax.tree.structure(x) == params_def  # noqa: E731
    opt_sharding = jax.tree.map(lambda x: param_sharding if like_params(x) else rep,
                                state.opt_state, is_leaf=like_params)
    return TrainState(step=rep, params=param_sharding, opt_state=opt_sharding, frozen=frozen_sharding)
