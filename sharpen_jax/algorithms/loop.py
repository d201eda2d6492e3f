"""The training driver shared by SFT-Sharpening and RLHF-Sharpening: resume, step, log, evaluate, save.

`train_loop` is given an `update(state, step) -> (state, metrics)` that draws batch number `step`
(from a dataset position or from `state.rng`) and applies one jitted train step. Everything that
decides the next update is in the checkpoint (parameters, optimizer state, key, data position), so
a run killed at any point and restarted with the same command continues where its last checkpoint
left off and ends bitwise equal to an uninterrupted run on CPU.
"""

from __future__ import annotations

import os
import time
from typing import Callable

import jax
import numpy as np

from sharpen_jax.algorithms.train_state import TrainState
from sharpen_jax.checkpoint import Checkpointer
from sharpen_jax.metrics import MetricsWriter

UpdateFn = Callable[[TrainState, int], tuple[TrainState, dict]]
EvalFn = Callable[[TrainState], dict]


class NonFiniteError(FloatingPointError):
    """Training produced a non-finite loss or gradient; the state and checkpoints are the last good ones."""


def _scalars(metrics: dict) -> dict[str, float]:
    host = jax.device_get(metrics)
    return {k: float(np.asarray(v)) for k, v in host.items() if np.ndim(v) == 0}


def train_loop(init_state: TrainState, update: UpdateFn, *, workdir: str, num_steps: int, save_every: int,
               log_every: int = 1, eval_every: int = 0, eval_fn: EvalFn | None = None, max_to_keep: int = 3,
               async_save: bool = True, progress: bool = True) -> TrainState:
    """Run updates `start..num_steps-1`, resuming from the newest checkpoint in `workdir/checkpoints`.

    Saves every `save_every` updates and at the end; logs train metrics every `log_every` updates
    (with tokens/s when `update` reports "num_tokens", the tokens it processed); runs `eval_fn` at
    step 0, every `eval_every` updates and at the end, logged under split "eval". A step whose
    metrics say `finite == False` raises NonFiniteError after the pending checkpoint writes complete.
    """
    if num_steps < 1:
        raise ValueError(f"num_steps={num_steps}; expected a positive number of training steps")
    if save_every < 1:
        raise ValueError(f"save_every={save_every}; expected >= 1")
    checkpointer = Checkpointer(os.path.join(workdir, "checkpoints"), max_to_keep=max_to_keep,
                                async_save=async_save)
    state, data, resumed = checkpointer.restore_or_init(init_state)
    start = int(data.get("position", 0))
    writer = MetricsWriter(workdir, resume_step=start, total_steps=num_steps, progress=progress)
    try:
        if eval_fn is not None and not resumed:
            writer.write(start, eval_fn(state), split="eval")
        window_tokens, window_time, window_steps = 0.0, 0.0, 0
        for step in range(start, num_steps):
            t0 = time.perf_counter()
            state, metrics = update(state, step)
            finite = bool(metrics["finite"])
            window_time += time.perf_counter() - t0
            if not finite:
                raise NonFiniteError(
                    f"non-finite loss or gradient at update {step} (loss={float(metrics['loss'])}, "
                    f"grad_norm={float(metrics['grad_norm'])}); the update was not applied and training "
                    f"stopped. Last good checkpoint: step {checkpointer.latest_step()} in {checkpointer.directory}")
            window_tokens += float(metrics.get("num_tokens", 0.0))
            window_steps += 1
            done = step + 1
            if done % log_every == 0 or done == num_steps:
                scalars = _scalars(metrics)
                if window_tokens:
                    scalars["tokens_per_s"] = window_tokens / window_time
                scalars["seconds_per_step"] = window_time / window_steps
                writer.write(done, scalars)
                writer.advance(0, {k: scalars[k] for k in ("loss", "tokens_per_s") if k in scalars})
                window_tokens, window_time, window_steps = 0.0, 0.0, 0
            writer.advance(1)
            if done % save_every == 0 or done == num_steps:
                checkpointer.save(done, state, {"position": done})
            if eval_fn is not None and ((eval_every and done % eval_every == 0) or done == num_steps):
                writer.write(done, eval_fn(state), split="eval")
    finally:
        checkpointer.close()
        writer.close()
    return state

