"""Orbax checkpointing of training runs: save, restore onto any mesh, resume, retention.

A checkpoint at step s holds two items:

    state  the trainable parameters, optimizer state, step counter and PRNG key (an Orbax PyTree;
           the frozen base weights of a LoRA run are not saved, they are reloaded from the model)
    data   a JSON dict with the data-iterator position (for the loops here, the number of batches
           consumed) and anything else the loop needs to continue exactly

Saves are asynchronous (training continues while the arrays are written) and atomic (a step
directory appears only once complete), so a process killed at any moment leaves the previous
checkpoints readable. Restores take the shapes and shardings of a target state, so a checkpoint
written on one device restores onto an 8-device mesh and vice versa. Before restoring, every array
of the checkpoint is compared with the target and a mismatch raises `CheckpointMismatchError`
naming the parameter.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import orbax.checkpoint as ocp

from sharpen_jax.algorithms.train_state import TrainState


class CheckpointMismatchError(ValueError):
    """A checkpoint whose arrays do not fit the model or optimizer being restored."""


def _saved_tree(state: TrainState) -> dict:
    return {"step": state.step, "params": state.params, "opt_state": state.opt_state, "rng": state.rng}


def _key_name(key) -> str:
    for attr in ("key", "idx", "name"):
        if hasattr(key, attr):
            return str(getattr(key, attr))
    return str(key)


def _flat_shapes(tree: Any) -> dict[str, tuple]:
    """{"params.layers.attn.q_proj.kernel": shape, ...} for every array leaf of `tree`."""
    leaves = jax.tree_util.tree_leaves_with_path(tree)
    return {".".join(_key_name(k) for k in path): tuple(leaf.shape) for path, leaf in leaves}


class Checkpointer:
    """Save and restore `TrainState`s under `directory`, keeping the newest `max_to_keep` steps."""

    def __init__(self, directory: str, *, max_to_keep: int = 3, async_save: bool = True):
        self.directory = os.path.abspath(directory)
        options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, enable_async_checkpointing=async_save,
                                               cleanup_tmp_directories=True)
        handlers = {"state": ocp.StandardCheckpointHandler(), "data": ocp.JsonCheckpointHandler()}
        self._manager = ocp.CheckpointManager(self.directory, options=options, item_handlers=handlers)

    def latest_step(self) -> int | None:
        """The newest complete checkpoint's step, or None when there is none."""
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        """Steps of the complete checkpoints kept, oldest first."""
        return list(self._manager.all_steps())

    def save(self, step: int, state: TrainState, data: dict | None = None) -> None:
        """Start writing `state` (without `frozen`) and the JSON-able `data` as checkpoint `step`."""
        args = ocp.args.Composite(state=ocp.args.StandardSave(_saved_tree(state)),
                                  data=ocp.args.JsonSave(dict(data or {})))
        self._manager.save(step, args=args, force=True)

    def check_compatible(self, target: TrainState, step: int) -> None:
        """Raise CheckpointMismatchError naming the first array whose shape differs from `target`'s."""
        saved = _flat_shapes(self._manager.item_metadata(step)["state"].tree)
        wanted = _flat_shapes(_saved_tree(target))
        where = f"checkpoint {self.directory} step {step}"
        ordered = sorted(wanted, key=lambda name: (not name.startswith("params."), name))
        for name in ordered:
            if name not in saved:
                raise CheckpointMismatchError(f"{where} has no array {name} (shape {wanted[name]}); it was "
                                              "written for a different model, LoRA setting or optimizer")
            if saved[name] != wanted[name]:
                raise CheckpointMismatchError(f"{where}: {name} has shape {saved[name]} in the checkpoint but "
                                              f"{wanted[name]} in the model being restored (another model shape?)")
        extra = sorted(set(saved) - set(wanted))
        if extra:
            raise CheckpointMismatchError(f"{where} holds arrays the target lacks, e.g. {extra[0]}; it was written "
                                          "for a different model, LoRA setting or optimizer")

    def restore(self, target: TrainState, step: int | None = None) -> tuple[TrainState, dict]:
        """(state, data) of checkpoint `step` (default: the latest), laid out like `target`.

        `target` supplies the tree structure, shapes, dtypes and shardings (its values are unused);
        its `frozen` field is carried over unchanged.
        """
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint to restore in {self.directory}")
        self.check_compatible(target, step)
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, _saved_tree(target))
        restored = self._manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract), data=ocp.args.JsonRestore()))
        tree = restored["state"]
        state = TrainState(step=tree["step"], params=tree["params"], opt_state=tree["opt_state"], rng=tree["rng"],
                           frozen=target.frozen)
        return state, dict(restored["data"] or {})

    def read_arrays(self, step: int | None = None) -> dict:
        """The saved {"step", "params", "opt_state", "rng"} tree as written (no target needed; for inspection)."""
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint to read in {self.directory}")
        restored = self._manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
        return restored["state"]

    def restore_or_init(self, init: TrainState) -> tuple[TrainState, dict, bool]:
        """Resume from the latest checkpoint if there is one: (state, data, resumed)."""
        if self.latest_step() is None:
            return init, {}, False
        state, data = self.restore(init)
        return state, data, True

    def wait(self) -> None:
        """Block until pending asynchronous saves are on disk."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        """Finish pending saves and release the manager."""
        self._manager.wait_until_finished()
        self._manager.close()

    def __enter__(self) -> Checkpointer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
