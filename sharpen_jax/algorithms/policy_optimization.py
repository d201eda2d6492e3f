"""The KL-regularized policy-optimization step of RLHF-Sharpening (Huang et al., 2024, Section 4.2).

Maximize E_pi[r_self] - beta KL(pi || pi_base), optimum pi*_beta ∝ pi_base exp(r/beta), with one of
the losses of `losses.py`:

    "reward_dpo"  squared loss of Eq. 4 on pairs (a, b) ~ pi_base
    "xpo"         Algorithm 1: a ~ pi, b ~ pi_base, alpha * log pi(b) + the same squared term
    "online_dpo"  logistic loss on self-reward preferences between two samples
    "kl_pg"       REINFORCE with a leave-one-out baseline over K samples per prompt and KL shaping

Reference log-probs come from `ref_params`, a separate argument of the step that is never part
of the trainable tree; they are computed inside the step under stop_gradient.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from sharpen_jax.algorithms import grad_accum, losses
from sharpen_jax.algorithms.train_state import (LogprobFn, TrainState, apply_gradients, global_norm_finite,
                                                policy_params, raw_key)

PAIR_LOSSES = ("reward_dpo", "xpo", "online_dpo")
LOSSES = PAIR_LOSSES + ("kl_pg",)
PAIR_KEYS = ("a", "b", "reward_a", "reward_b")


def _pair_loss(name: str, beta: float, alpha: float):
    if name == "reward_dpo":
        return functools.partial(losses.reward_dpo_loss, beta=beta)
    if name == "xpo":
        return functools.partial(losses.xpo_loss, beta=beta, alpha=alpha)
    return functools.partial(losses.online_dpo_loss, beta=beta)


def make_po_step(logprob_fn: LogprobFn, tx: optax.GradientTransformation, *, loss: str, beta: float,
                 alpha: float = 0.0, ref_logprob_fn: LogprobFn | None = None, grad_accum_steps: int = 1,
                 mesh: Mesh | None = None, state_sharding: TrainState | None = None, ref_sharding: Any = None,
                 batch_axes: tuple[str, ...] = ("data", "fsdp"),
                 learning_rate_fn: Callable[[jax.Array], jax.Array] | None = None,
                 ) -> Callable[[TrainState, Any, dict, jax.Array], tuple[TrainState, dict]]:
    """Build `po_step(state, ref_params, batch, rng) -> (state, metrics)`: one optimizer update of `loss`.

    batch for the pair losses: {"a": seqs, "b": seqs, "reward_a": f32[B], "reward_b": f32[B],
    "weight": f32[B] (optional)}; for "kl_pg": {"seqs": seqs [G*K], "reward": f32[G*K],
    "group_size": K (a Python int)}, the K samples of each prompt consecutive.
    `ref_logprob_fn(ref_params, seqs)` gives log pi_base (default: `logprob_fn`, for a base model of
    the same form as the policy; under LoRA pass the plain model's function and its parameters).
    `rng` is the key the state carries after this step (the loop splits `state.rng` to draw the batch
    and hands the remainder here), so a checkpointed state resumes the same data stream.
    A non-finite loss or gradient leaves the state unchanged and sets metrics["finite"] to False.
    """
    if loss not in LOSSES:
        raise ValueError(f"loss={loss!r}; expected one of {LOSSES}")
    if not beta > 0:
        raise ValueError(f"beta={beta}; the KL coefficient must be positive")
    if grad_accum_steps < 1:
        raise ValueError(f"grad_accum_steps={grad_accum_steps}; expected >= 1")
    ref_logprob_fn = ref_logprob_fn or logprob_fn

    def ref_logp(ref_params, seqs):
        return jax.lax.stop_gradient(ref_logprob_fn(ref_params, seqs)[0])

    def pair_loss_fn(params, frozen, ref_params, micro):
        full = policy_params(params, frozen)
        logp_a_B, _ = logprob_fn(full, micro["a"])
        logp_b_B, _ = logprob_fn(full, micro["b"])
        return _pair_loss(loss, beta, alpha)(
            logp_a_B, logp_b_B, ref_logp(ref_params, micro["a"]), ref_logp(ref_params, micro["b"]),
            micro["reward_a"], micro["reward_b"], weight_B=micro.get("weight"))

    def pg_loss_fn(params, frozen, ref_params, micro, group_size):
        logp_N, _ = logprob_fn(policy_params(params, frozen), micro["seqs"])
        return losses.kl_policy_gradient_loss(logp_N, ref_logp(ref_params, micro["seqs"]), micro["reward"],
                                              group_size=group_size, beta=beta, weight_N=micro.get("weight"))

    micro_sharding = None
    jit_kwargs: dict[str, Any] = {"donate_argnums": (0,), "static_argnums": (5,)}
    if mesh is not None:
        core, frozen = grad_accum.core_sharding(state_sharding, mesh)
        ref = ref_sharding if ref_sharding is not None else grad_accum.replicated(mesh)
        data = grad_accum.batch_sharding(mesh, batch_axes)
        micro_sharding = data
        rep = grad_accum.replicated(mesh)
        jit_kwargs.update(in_shardings=(core, frozen, ref, data, rep),
                          out_shardings=(core, rep))

    def core_step(state: TrainState, frozen: Any, ref_params: Any, batch: dict, rng: jax.Array,
                  group_size: int):
        if loss == "kl_pg":
            fn = lambda p, b: pg_loss_fn(p, frozen, ref_params, b, group_size)
            unit = group_size
        else:
            fn = lambda p, b: pair_loss_fn(p, frozen, ref_params, b)
            unit = 1
        grads, metrics = grad_accum.accumulate_gradients(fn, state.params, batch, grad_accum_steps, unit,
                                                         micro_sharding=micro_sharding)
        grad_norm, grads_ok = global_norm_finite(grads)
        ok = grads_ok & jnp.isfinite(metrics["loss"])
        new_state = apply_gradients(state, grads, tx, ok).replace(rng=rng)
        metrics = {**metrics, "grad_norm": grad_norm, "finite": ok}
        if learning_rate_fn is not None:
            metrics["learning_rate"] = jnp.asarray(learning_rate_fn(state.step), jnp.float32)
        return new_state, metrics

    jitted = jax.jit(core_step, **jit_kwargs)

    def po_step(state: TrainState, ref_params: Any, batch: dict, rng: jax.Array) -> tuple[TrainState, dict]:
        batch = dict(batch)
        if loss == "kl_pg":
            if "seqs" not in batch or "reward" not in batch:
                raise ValueError(f"kl_pg batch needs 'seqs' and 'reward'; got keys {sorted(batch)}")
            group_size = batch.pop("group_size", None)
            if not isinstance(group_size, int):
                raise ValueError(f"kl_pg batch needs 'group_size' as a Python int; got {group_size!r}")
            grad_accum.check_batch_rows(batch, "batch", grad_accum_steps * group_size)
        else:
            missing = [k for k in PAIR_KEYS if k not in batch]
            if missing:
                raise ValueError(f"{loss} batch is missing {missing}; got keys {sorted(batch)}")
            group_size = 1
            grad_accum.check_batch_rows(batch, "batch", grad_accum_steps)
        frozen = state.frozen
        new_state, metrics = jitted(state.replace(frozen=None), frozen, ref_params, batch,
                                    raw_key(rng), group_size)
        return new_state.replace(frozen=frozen), metrics

    return po_step
