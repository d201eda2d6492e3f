"""Optimizers of the training runs: AdamW with global-norm clipping and a warm-up then decay schedule."""

from __future__ import annotations

from typing import Callable

import optax

SCHEDULES = ("linear", "constant")


def make_optimizer(*, learning_rate: float, num_steps: int, warmup_steps: int = 0, grad_clip: float = 1.0,
                   weight_decay: float = 0.0, schedule: str = "linear"
                   ) -> tuple[optax.GradientTransformation, Callable]:
    """(tx, learning-rate schedule): clip_by_global_norm(grad_clip) then AdamW, with a linear warm-up over
    `warmup_steps` followed by a linear decay to 0 at `num_steps` (or a constant rate)."""
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule={schedule!r}; expected one of {SCHEDULES}")
    if schedule == "linear":
        decay = optax.linear_schedule(learning_rate, 0.0, max(1, num_steps - warmup_steps))
    else:
        decay = optax.constant_schedule(learning_rate)
    lr = optax.join_schedules([optax.linear_schedule(0.0, learning_rate, warmup_steps), decay], [warmup_steps]) \
        if warmup_steps else decay
    tx = optax.chain(optax.clip_by_global_norm(grad_clip), optax.adamw(lr, weight_decay=weight_decay))
    return tx, lr
