"""The training driver shared by every method: resume, step, check, log, evaluate, save.

`train_loop` is given an `update(state, step) -> (state, metrics)` that draws batch number `step`
(from a dataset position, or sampled with a key derived from the seed and `step`) and applies one
jitted train step. Everything that decides the next update is in the checkpoint (parameters,
optimizer state, step counter, data position), so a run killed at any point and restarted with the
same command continues where its last checkpoint left off and ends bitwise equal to an
uninterrupted run on CPU.

No host sync per update: the finiteness flag (and the logged metrics) of update t-1 are read after
update t has been dispatched, so the device never waits for the host between updates. Before a
checkpoint is written or an evaluation runs, the current update is checked first, so a checkpoint
never holds a state that a non-finite update produced (a non-finite update is never applied; the
update dispatched after it is discarded with the error).

Each invocation that completes appends one record to `workdir/invocations.jsonl`: the update it
started from, how many updates it ran, and whether it resumed from a checkpoint.

Multi-process runs (a state on a `distributed.global_mesh`): every process runs the loop with the
same `update`; Orbax writes each process's shards of a checkpoint, and only process 0 writes the
metrics and the invocation record.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Callable

import jax
import numpy as np

from sharpen_jax import distributed
from sharpen_jax.jsonl import append_jsonl
from sharpen_jax.metrics import MetricsWriter
from sharpen_jax.training.checkpoint import Checkpointer
from sharpen_jax.training.train_state import TrainState

UpdateFn = Callable[[TrainState, int], tuple[TrainState, dict]]
EvalFn = Callable[[TrainState], dict]
INVOCATIONS = "invocations.jsonl"


class NonFiniteError(FloatingPointError):
    """Training produced a non-finite loss or gradient; the checkpoints are the last good ones."""


@dataclasses.dataclass(frozen=True)
class TrainRun:
    """What one invocation of `train_loop` did: the final state, where it started, how many updates it ran."""

    state: TrainState
    start_step: int
    num_updates: int
    resumed: bool


def _scalars(metrics: dict) -> dict[str, float]:
    host = jax.device_get(metrics)
    return {k: float(np.asarray(v)) for k, v in host.items() if np.ndim(v) == 0}


class _Window:
    """Tokens, updates and wall time since the last log line (eval and save time excluded)."""

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self.start, self.tokens, self.steps = time.perf_counter(), 0.0, 0

    def exclude(self, seconds: float) -> None:
        self.start += seconds


def train_loop(init_state: TrainState, update: UpdateFn, *, workdir: str, num_steps: int, save_every: int,
               log_every: int = 1, eval_every: int = 0, eval_fn: EvalFn | None = None, max_to_keep: int = 3,
               async_save: bool = True, progress: bool = True) -> TrainRun:
    """Run updates `start..num_steps-1`, resuming from the newest checkpoint in `workdir/checkpoints`.

    Saves every `save_every` updates and at the end; logs train metrics every `log_every` updates
    (with tokens/s when `update` reports "num_tokens", the tokens it processed); runs `eval_fn` at
    step 0, every `eval_every` updates and at the end, logged under split "eval". An update whose
    metrics say `finite == False` raises NonFiniteError after the pending checkpoint writes complete.
    """
    for name, value, low in (("num_steps", num_steps, 1), ("save_every", save_every, 1), ("log_every", log_every, 1),
                             ("eval_every", eval_every, 0)):
        if not isinstance(value, int) or value < low:
            raise ValueError(f"{name}={value!r}; expected an integer >= {low}")
    checkpointer = Checkpointer(os.path.join(workdir, "checkpoints"), max_to_keep=max_to_keep,
                                async_save=async_save)
    tree, data, resumed = checkpointer.restore_or_init(init_state.saved())
    state = init_state.with_saved(tree) if resumed else init_state
    start = int(data.get("position", 0))
    writer = MetricsWriter(workdir, resume_step=start, total_steps=num_steps, progress=progress)
    updates = 0  # counted, not inferred from `start`: the record must be able to show a wrong start
    window = _Window()

    def settle(step: int, metrics: dict) -> None:
        """Check update `step` (this waits for it) and log it when a log line is due."""
        if not bool(metrics["finite"]):
            raise NonFiniteError(
                f"non-finite loss or gradient at update {step} (loss={float(metrics['loss'])}, "
                f"grad_norm={float(metrics['grad_norm'])}); the update was not applied and training "
                f"stopped. Last good checkpoint: step {checkpointer.latest_step()} in {checkpointer.directory}")
        window.tokens += float(metrics.get("num_tokens", 0.0))
        window.steps += 1
        done = step + 1
        if done % log_every == 0 or done == num_steps:
            scalars = _scalars(metrics)
            seconds = time.perf_counter() - window.start
            if window.tokens:
                scalars["tokens_per_s"] = window.tokens / seconds
            scalars["seconds_per_step"] = seconds / window.steps
            writer.write(done, scalars)
            writer.advance(0, {k: scalars[k] for k in ("loss", "tokens_per_s") if k in scalars})
            window.reset()
        writer.advance(1)

    def timed(fn) -> None:
        t0 = time.perf_counter()
        fn()
        window.exclude(time.perf_counter() - t0)

    try:
        if eval_fn is not None and not resumed:
            timed(lambda: writer.write(start, eval_fn(state), split="eval"))
        pending = None
        for step in range(start, num_steps):
            state, metrics = update(state, step)
            updates += 1
            if pending is not None:
                settle(*pending)
            pending = (step, metrics)
            done = step + 1
            evaluate = eval_fn is not None and ((eval_every and done % eval_every == 0) or done == num_steps)
            if done % save_every == 0 or done == num_steps or evaluate:
                settle(*pending)
                pending = None
                if done % save_every == 0 or done == num_steps:
                    timed(lambda: checkpointer.save(done, state.saved(), {"position": done}))
                if evaluate:
                    timed(lambda: writer.write(done, eval_fn(state), split="eval"))
    finally:
        checkpointer.close()
        writer.close()
    distributed.on_main(append_jsonl, os.path.join(workdir, INVOCATIONS),
                        [{"start_step": start, "updates": updates, "resumed": resumed, "num_steps": num_steps}])
    return TrainRun(state, start, updates, resumed)
