"""Orbax checkpointing of plain pytrees: save, restore onto any mesh, resume, retention, fallback.

A checkpoint at step s holds two items:

    tree   any pytree of arrays (the training loop saves `TrainState.saved()`: parameters,
           optimizer state and step counter; frozen base weights are reloaded from the model)
    data   a JSON dict with the data-iterator position (for the loops here, the number of batches
           consumed) and anything else the loop needs to continue exactly

Saves are asynchronous (training continues while the arrays are written) and atomic (a step
directory appears only once complete), so a process killed at any moment leaves the previous
checkpoints readable. Restores take the shapes, dtypes and shardings of a target tree, so a
checkpoint written on one device restores onto an 8-device mesh and vice versa. Before restoring,
every array of the checkpoint is compared with the target and a mismatch raises
`CheckpointMismatchError` naming the array. A step that cannot be read (a truncated array file,
garbage metadata, an empty step directory) is skipped with a warning naming it, and the newest
readable step is used; with none, `CheckpointError` names the directory and how to start fresh.
"""

from __future__ import annotations

import os
import warnings
from typing import Any

import jax
import orbax.checkpoint as ocp


class CheckpointError(RuntimeError):
    """No usable checkpoint where one was expected; the message names the directory."""


class CheckpointMismatchError(ValueError):
    """A checkpoint whose arrays do not fit the model or optimizer being restored."""


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
    """Save and restore pytrees under `directory`, keeping the newest `max_to_keep` steps."""

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
        return sorted(self._manager.all_steps())

    def save(self, step: int, tree: Any, data: dict | None = None) -> None:
        """Start writing the pytree `tree` and the JSON-able `data` as checkpoint `step`."""
        args = ocp.args.Composite(state=ocp.args.StandardSave(tree), data=ocp.args.JsonSave(dict(data or {})))
        self._manager.save(step, args=args, force=True)

    def check_compatible(self, target: Any, step: int) -> None:
        """Raise CheckpointMismatchError naming the first array whose shape differs from `target`'s."""
        saved = _flat_shapes(self._manager.item_metadata(step)["state"].tree)
        wanted = _flat_shapes(target)
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

    def restore(self, target: Any, step: int | None = None) -> tuple[Any, dict]:
        """(tree, data) of checkpoint `step` (default: the newest readable one), laid out like `target`.

        `target` supplies the tree structure, shapes, dtypes and shardings (its values are unused).
        """
        if step is not None:
            return self._restore_step(target, step)
        steps = self.all_steps()
        if not steps:
            raise FileNotFoundError(f"no checkpoint to restore in {self.directory}")
        for candidate in reversed(steps):
            try:
                return self._restore_step(target, candidate)
            except CheckpointMismatchError:
                raise
            except Exception as err:  # noqa: BLE001 - orbax/tensorstore raise many kinds for a damaged step
                warnings.warn(f"checkpoint step directory {os.path.join(self.directory, str(candidate))} is "
                              f"unreadable ({type(err).__name__}: {str(err)[:200]}); trying the previous step",
                              stacklevel=2)
        raise CheckpointError(f"no readable checkpoint in {self.directory} (steps {steps} are all damaged); "
                              f"delete that directory (or use a new workdir) to start the run from scratch")

    def _restore_step(self, target: Any, step: int) -> tuple[Any, dict]:
        self.check_compatible(target, step)
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
        restored = self._manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract), data=ocp.args.JsonRestore()))
        return restored["state"], dict(restored["data"] or {})

    def read_arrays(self, step: int | None = None) -> Any:
        """The saved tree of `step` (default: the latest) as written, on this process's first device; no
        target needed (for inspection), whatever the mesh or process count that wrote it."""
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint to read in {self.directory}")
        device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        saved = self._manager.item_metadata(step)["state"]
        target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device), saved)
        restored = self._manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target)))
        return restored["state"]

    def restore_or_init(self, init: Any) -> tuple[Any, dict, bool]:
        """Resume from the newest readable checkpoint if there is one: (tree, data, resumed)."""
        if not self.all_steps():
            return init, {}, False
        tree, data = self.restore(init)
        return tree, data, True

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
