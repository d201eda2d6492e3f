"""Gradient accumulation over micro-batches, and the batch checks of the training step.

Losses here have the form sum_i numerator_i / sum_i denominator_i with a parameter-independent
denominator (see `losses.py`). Accumulating `denominator_m * grad(loss_m)` over micro-batches m
and dividing by sum_m denominator_m gives the full-batch gradient exactly (up to float summation
order), which is what lets a small device train with the large batches of the paper.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

LossFn = Callable[[Any, Any], tuple[jax.Array, dict]]


def split_microbatches(batch: Any, num_micro: int, unit: int = 1) -> Any:
    """Reshape every leaf [B, ...] to [num_micro, B // num_micro, ...].

    Micro-batch m takes units m, m + A, m + 2A, ... (A = num_micro), a unit being `unit` consecutive
    rows (the K samples of one prompt stay together). The strided split keeps each micro-batch spread
    over all data-parallel devices when B is sharded in contiguous blocks.
    """
    def split(x):
        rows = x.shape[0]
        if rows % (num_micro * unit):
            raise ValueError(f"batch of {rows} rows does not split into grad_accum_steps={num_micro} "
                             f"micro-batches of whole groups of {unit}")
        x = x.reshape(rows // (num_micro * unit), num_micro, unit, *x.shape[1:])
        return jnp.moveaxis(x, 1, 0).reshape(num_micro, rows // num_micro, *x.shape[3:])
    return jax.tree.map(split, batch)


def accumulate_gradients(loss_fn: LossFn, params: Any, batch: Any, num_micro: int, unit: int = 1,
                         micro_sharding: Any = None) -> tuple[Any, dict]:
    """(grads, metrics) of `loss_fn(params, batch)` summed over `num_micro` micro-batches.

    `loss_fn` returns (loss, metrics) with metrics["denominator"]. Metrics are averaged with the
    denominators as weights ("denominator" itself is summed), so they equal the full-batch values.
    """
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    if num_micro == 1:
        (_, metrics), grads = grad_fn(params, batch)
        return grads, metrics

    micro_batches = split_microbatches(batch, num_micro, unit)

    def body(carry, micro):
        if micro_sharding is not None:
            micro = jax.lax.with_sharding_constraint(micro, micro_sharding)
        (_, metrics), grads = grad_fn(params, micro)
        den = metrics["denominator"]
        grad_sum, metric_sum = carry
        grad_sum = jax.tree.map(lambda s, g: s + den * g, grad_sum, grads)
        metric_sum = {k: metric_sum[k] + (v if k == "denominator" else den * v) for k, v in metrics.items()}
        return (grad_sum, metric_sum), None

    zero_grads = jax.tree.map(jnp.zeros_like, params)
    first = jax.tree.map(lambda x: x[0], micro_batches)
    metric_shapes = jax.eval_shape(lambda p, b: loss_fn(p, b)[1], params, first)
    zero_metrics = {k: jnp.zeros(v.shape, jnp.float32) for k, v in metric_shapes.items()}
    (grad_sum, metric_sum), _ = jax.lax.scan(body, (zero_grads, zero_metrics), micro_batches)
    den = metric_sum["denominator"]
    safe = jnp.where(den > 0, den, 1.0)
    grads = jax.tree.map(lambda g: g / safe, grad_sum)
    metrics = {k: (v if k == "denominator" else v / safe) for k, v in metric_sum.items()}
    return grads, metrics


def check_batch_rows(batch: Any, name: str, divisor: int) -> int:
    """Number of rows B shared by every leaf of `batch`; a clear error when they differ or B % divisor."""
    leaves = jax.tree_util.tree_leaves_with_path(batch)
    if not leaves:
        raise ValueError(f"{name} is empty: a training step needs at least one sequence")
    rows = {jax.tree_util.keystr(path): (jnp.shape(x)[0] if jnp.ndim(x) else None) for path, x in leaves}
    first_path, first = next(iter(rows.items()))
    for path, n in rows.items():
        if n is None:
            raise ValueError(f"{name}{path} is a scalar; every batch entry needs a leading batch axis")
        if n != first:
            raise ValueError(f"{name}{path} has {n} rows but {name}{first_path} has {first}")
    if first == 0:
        raise ValueError(f"{name} has 0 rows: a training step needs at least one sequence")
    if first % divisor:
        raise ValueError(f"{name} has {first} rows, not a multiple of {divisor} "
                         "(grad_accum_steps x group size)")
    return first
