"""Multi-process (multi-controller) JAX: start-up, the global mesh, host <-> global arrays, process-0 outputs.

On a TPU pod slice or on several GPU hosts JAX runs one process per host (or per GPU); every
process runs the same program over one global mesh whose devices belong to all processes, and
each process holds only the shards its own devices store. The engine is JAX's own
(`jax.distributed`, global `jax.Array`s, gloo collectives on CPU); this module only starts it from
flags or the environment and converts between host numpy arrays and global arrays:

    initialize(...)            jax.distributed.initialize from arguments, else the environment
                               (JAX_COORDINATOR_ADDRESS, SHARPEN_JAX_NUM_PROCESSES,
                               SHARPEN_JAX_PROCESS_ID), else JAX's cluster auto-detection (TPU,
                               SLURM, Open MPI, Kubernetes) when `auto=True`; a no-op on one process
    global_mesh(...)           the (data, fsdp, model) mesh over every process's devices, each
                               process's devices contiguous (sharding.make_mesh)
    to_global(tree, sharding)  host data that is the same on every process -> global arrays
                               (make_array_from_callback: each process places only its own shards)
    from_process_local(...)    each process's slice of the rows -> global arrays
                               (make_array_from_process_local_data)
    global_rows(read, idx, s)  the global batch of data-set rows idx, each process reading only
                               its own slice of them (process_local_rows)
    all_process_rows(x)        every process's host rows, concatenated in process order, on every process
    to_host(tree)              global arrays -> full numpy arrays on every process
                               (multihost_utils.process_allgather where a process lacks shards)
    is_main_process(), on_main(fn, ...)   process 0 alone writes results, summaries, metrics
    barrier(name)              every process waits here for the others (a no-op on one process)

Failure rule (bounded time): a process that does not reach the coordinator within
`initialization_timeout_s` fails with JAX's error; a process that dies is declared dead by the
coordination service after `heartbeat_timeout_s` without heartbeats, and the others then stop with
an error naming the dead task instead of waiting forever in a collective; at exit each process waits
at most `shutdown_timeout_s` for the others at the shutdown barrier.
"""

from __future__ import annotations

import os
import re
from typing import Any, Callable

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, Sharding

from sharpen_jax import checks, sharding

COORDINATOR_ENV = "JAX_COORDINATOR_ADDRESS"  # JAX reads this one itself as well
NUM_PROCESSES_ENV = "SHARPEN_JAX_NUM_PROCESSES"
PROCESS_ID_ENV = "SHARPEN_JAX_PROCESS_ID"
_ADDRESS = re.compile(r"^(\[[0-9a-fA-F:]+\]|[\w.\-]+):(\d{1,5})$")


def _env_int(name: str) -> int | None:
    value = os.environ.get(name, "").strip()
    if not value:
        return None
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"${name}={value!r}; expected an integer") from None


def launch_settings(coordinator: str | None = None, num_processes: int | None = None,
                    process_id: int | None = None) -> tuple[str | None, int | None, int | None]:
    """(coordinator address, number of processes, process id): each argument, else its environment
    variable, else None (left to JAX's cluster detection); checked, with errors naming the input."""
    coordinator = coordinator or os.environ.get(COORDINATOR_ENV) or None
    num_processes = num_processes if num_processes is not None else _env_int(NUM_PROCESSES_ENV)
    process_id = process_id if process_id is not None else _env_int(PROCESS_ID_ENV)
    if coordinator is not None and not _ADDRESS.match(coordinator):
        raise ValueError(f"coordinator={coordinator!r} (or ${COORDINATOR_ENV}); expected HOST:PORT, "
                         "e.g. 10.0.0.1:1234")
    if num_processes is not None:
        checks.integer("num_processes", num_processes, 1)
    if process_id is not None:
        checks.integer("process_id", process_id, 0, None if num_processes is None else num_processes - 1)
    return coordinator, num_processes, process_id


def initialize(coordinator: str | None = None, num_processes: int | None = None, process_id: int | None = None,
               *, auto: bool = False, initialization_timeout_s: int = 120, heartbeat_timeout_s: int = 30,
               shutdown_timeout_s: int = 30) -> bool:
    """Start jax.distributed for this process; True when the run spans several processes.

    Call it first, before any other JAX call. Nothing happens (False) when neither the arguments
    nor the environment name a multi-process launch and `auto` is False; with `auto` (TPU pod
    slices, SLURM, Open MPI) JAX fills in what is not given. On CPU the cross-process collectives
    are gloo. Calling it again after a successful start is a no-op. The timeouts are the failure
    rule of the module docstring.
    """
    coordinator, num_processes, process_id = launch_settings(coordinator, num_processes, process_id)
    for name, value in (("initialization_timeout_s", initialization_timeout_s),
                        ("heartbeat_timeout_s", heartbeat_timeout_s), ("shutdown_timeout_s", shutdown_timeout_s)):
        checks.integer(name, value, 1)
    if jax.distributed.is_initialized():
        return jax.process_count() > 1
    if not auto and coordinator is None and num_processes in (None, 1):
        return False
    if not auto and None in (coordinator, num_processes, process_id):
        raise ValueError(f"a multi-process launch needs the coordinator address, the number of processes and the "
                         f"process id (got {coordinator!r}, {num_processes!r}, {process_id!r}); set them as "
                         f"arguments or ${COORDINATOR_ENV}, ${NUM_PROCESSES_ENV}, ${PROCESS_ID_ENV}, or pass "
                         "auto=True where JAX detects them (TPU, SLURM, Open MPI)")
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator, num_processes, process_id,
                               initialization_timeout=initialization_timeout_s,
                               heartbeat_timeout_seconds=heartbeat_timeout_s,
                               shutdown_timeout_seconds=shutdown_timeout_s)
    if num_processes is not None and jax.process_count() != num_processes:
        raise RuntimeError(f"jax.distributed started {jax.process_count()} processes; expected {num_processes}")
    return jax.process_count() > 1


def global_mesh(data: int = -1, fsdp: int = 1, model: int = 1) -> Mesh:
    """The (data, fsdp, model) mesh over the devices of every process, ordered by (process, device id)
    so that each process's devices are contiguous and the data axis spans the processes."""
    devices = sorted(jax.devices(), key=lambda d: (d.process_index, d.id))
    return sharding.make_mesh(data, fsdp, model, devices=devices)


def is_main_process() -> bool:
    """Whether this is process 0, the one that writes results, summaries, figures and metrics."""
    return jax.process_index() == 0


def on_main(fn: Callable[..., Any], *args, **kwargs) -> Any:
    """fn(*args, **kwargs) on process 0 (its result); None on every other process."""
    return fn(*args, **kwargs) if is_main_process() else None


def barrier(name: str) -> None:
    """Wait until every process has reached the barrier `name` (multihost_utils.sync_global_devices);
    a no-op on one process. What process 0 wrote before it is visible to every process after it."""
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(name)


def _on_devices(x: Any, target: Sharding) -> bool:
    return isinstance(x, jax.Array) and x.sharding.device_set == target.device_set


def to_global(tree: Any, shardings: Any) -> Any:
    """Global arrays laid out by `shardings` (one sharding for every leaf, or a matching tree) from
    host values that are the same on every process; each process places only its own shards
    (jax.make_array_from_callback). Leaves already on the sharding's devices are resharded by jit."""
    leaves, treedef = jax.tree.flatten(tree)
    if not leaves:
        return tree
    targets = [shardings] * len(leaves) if isinstance(shardings, Sharding) else treedef.flatten_up_to(shardings)

    def one(x, target):
        if _on_devices(x, target):
            return jax.device_put(x, target) if x.sharding != target else x
        host = np.asarray(x)
        return jax.make_array_from_callback(host.shape, target, lambda index: host[index])

    return treedef.unflatten([one(x, t) for x, t in zip(leaves, targets)])


def from_process_local(tree: Any, row_sharding: Sharding) -> Any:
    """Global arrays whose leading (row) axis is the concatenation, in process order, of every
    process's local rows (jax.make_array_from_process_local_data); `row_sharding` splits rows only."""
    return jax.tree.map(lambda x: jax.make_array_from_process_local_data(row_sharding, np.asarray(x)), tree)


def global_rows(read_rows: Callable[[np.ndarray], Any], indices: np.ndarray, row_sharding: Sharding) -> Any:
    """The global batch whose row r is data-set row indices[r]: each process calls read_rows(its own
    slice of `indices`, process_local_rows) and the slices are assembled with `from_process_local`,
    so no process reads another's rows and the batch is the same whatever the process count."""
    indices = np.asarray(indices)
    return from_process_local(read_rows(indices[process_local_rows(len(indices))]), row_sharding)


def all_process_rows(x_R: np.ndarray) -> np.ndarray:
    """Every process's rows `x_R` concatenated in process order, on every process (a collective:
    multihost_utils.process_allgather; `x_R` itself on one process)."""
    if jax.process_count() == 1:
        return np.asarray(x_R)
    return np.asarray(multihost_utils.process_allgather(np.asarray(x_R), tiled=True))


def to_host(tree: Any) -> Any:
    """Every leaf as a full numpy array on every process. A global array whose shards are not all
    on this process is gathered with multihost_utils.process_allgather, a collective: every process
    must call this with the same tree."""
    def one(x):
        if isinstance(x, jax.Array) and not (x.is_fully_addressable or x.is_fully_replicated):
            return np.asarray(multihost_utils.process_allgather(x, tiled=True))
        return np.asarray(x)

    return jax.tree.map(one, tree)


def process_local_rows(num_rows: int) -> slice:
    """The rows [start, stop) of a `num_rows`-row global batch that this process supplies to
    `from_process_local`: an equal, contiguous share per process, in process order."""
    count, index = jax.process_count(), jax.process_index()
    if num_rows % count:
        raise ValueError(f"a batch of {num_rows} rows does not split evenly over {count} processes")
    share = num_rows // count
    return slice(index * share, (index + 1) * share)
