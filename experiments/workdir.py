"""Workdirs: the run's identity (config, data, models, package version), safe resumption, and a lock.

A workdir remembers the config it was started with (`config.json`) and the identity of what the run
read (`identity.json`): the resolved data sources and a content hash of the examples of every split
the run reads, a cheap fingerprint of each model file (size plus a hash of its first MiB and of a few
blocks spread through it), and the package version. A resumption whose config differs in a key that
changes results, or whose identity differs, is refused with an error naming what changed; where the
files were found (a model's path, a task's source folder) is recorded but not compared, so the same
files read from another checkout or virtual environment resume. Outputs
without a `config.json` (results, checkpoints) are never adopted, rewritten or truncated. A lock file
(`.lock`: pid, process start time, host) keeps a second run out of a workdir in use; a lock whose
process is gone is stale and taken over with a warning.

In a multi-process run (`sharpen_jax.distributed`) the workdir is shared by every process (as Orbax's
multi-process checkpoints need): every process makes the same checks, process 0 alone writes and
holds the lock, and `prepare_workdir` returns on every process once process 0 has recorded the run.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import socket
import warnings
from typing import Any, Iterable, Mapping, Sequence

from experiments.common import ConfigError, to_plain
from experiments.models import CHAR_TOKENIZER, is_trained_workdir
from sharpen_jax import distributed, testing, weights
from sharpen_jax.jsonl import read_json, write_json

CONFIG_FILE, IDENTITY_FILE, LOCK_FILE = "config.json", "identity.json", ".lock"
OUTPUTS = ("results.jsonl", "results.json", "summary.json", "metrics.jsonl", "checkpoints", "sft_dataset.npz")
_BLOCK = 1 << 16


class WorkdirError(ConfigError):
    """A workdir that cannot be used as asked; the message names it and what to do."""


def file_fingerprint(path: str) -> dict:
    """{"size", "sha256"} of a file: sha256 over its size, first MiB, last 64 KiB and 8 evenly spaced 64 KiB
    blocks; cheap for multi-GB checkpoints, and any truncation, append or rewrite of those parts shows."""
    size = os.path.getsize(path)
    digest = hashlib.sha256(str(size).encode())
    with open(path, "rb") as f:
        digest.update(f.read(1 << 20))
        for i in range(1, 9):
            f.seek(max(0, size * i // 9 - _BLOCK // 2))
            digest.update(f.read(_BLOCK))
        f.seek(max(0, size - _BLOCK))
        digest.update(f.read(_BLOCK))
    return {"size": size, "sha256": digest.hexdigest()}


def model_fingerprint(spec: str, random_shape: Mapping[str, Any] | None = None) -> dict:
    """The identity of a model spec: its resolved path (recorded, not compared: LOCATION_KEYS) and the
    fingerprints of its files (a GGUF file, or a checkpoint directory's config.json and weight files, a
    training workdir's config, results and checkpoint files); the toy model is its spec and shape."""
    if testing.is_random_spec(spec):
        return {"spec": spec, "random_shape": dict(random_shape or {})}
    if is_trained_workdir(spec):  # its config, results and every checkpoint file (the base model is in config.json)
        path = os.path.realpath(spec)
        names = ["config.json", "results.json"] + sorted(
            os.path.relpath(os.path.join(d, n), path) for d, _, files in os.walk(os.path.join(path, "checkpoints"))
            for n in files)
        return {"spec": spec, "path": path, "files": {n: file_fingerprint(os.path.join(path, n)) for n in names}}
    path = os.path.realpath(weights.resolve(spec))
    if os.path.isdir(path):
        names = sorted(n for n in os.listdir(path) if n == "config.json" or n.endswith((".safetensors", ".json")))
        files = {n: file_fingerprint(os.path.join(path, n)) for n in names}
    else:
        files = {os.path.basename(path): file_fingerprint(path)}
    return {"spec": spec, "path": path, "files": files}


def task_fingerprint(task: Any, splits: Iterable[str]) -> dict:
    """The identity of a task's data: where it was read from and a sha256 of every example of each split."""
    out: dict[str, Any] = {"task": repr(task)}
    source = getattr(task, "source_dir", None)
    if source is not None:
        out["source_dir"] = os.path.realpath(str(source))
    for split in sorted(set(splits)):
        digest = hashlib.sha256()
        for example in task.examples(split):
            digest.update(json.dumps([example.id, example.question, example.answer, example.solution],
                                     sort_keys=True).encode())
        out[f"{split}_sha256"] = digest.hexdigest()
    return out


def run_identity(models: Mapping[str, dict], data: Mapping[str, dict]) -> dict:
    """The identity record of a run: package version, model fingerprints, data fingerprints."""
    try:
        version = importlib.metadata.version("sharpen_jax")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    return {"package_version": version, "models": dict(models), "data": dict(data)}


def experiment_identity(config: Any, model_specs: Sequence[str], task_objects: Mapping[str, Any]) -> dict:
    """`run_identity` of a sampling experiment: the fingerprint of every non-empty model spec in
    `model_specs` and of `config.tokenizer` (unless it is "" or `CHAR_TOKENIZER`), and every task's data on the
    config's split and the train split."""
    specs = list(model_specs)
    if config.tokenizer and config.tokenizer != CHAR_TOKENIZER:
        specs.append(config.tokenizer)
    models = {spec: model_fingerprint(spec, config.random_model.to_dict()) for spec in specs if spec}
    data = {name: task_fingerprint(task, [s for s in task.splits if s in (config.split, "train")])
            for name, task in task_objects.items()}
    return run_identity(models, data)


# Where a model or a task's files were found: recorded for the reader, never compared, so that a run
# resumes from another checkout or virtual environment when the files themselves (their fingerprints,
# the sha256 of every example) are the same.
LOCATION_KEYS = ("path", "source_dir")


def _differences(old: Any, new: Any, path: str, *, skip: Iterable[str] = ()) -> list[str]:
    """The dotted paths at which the nested dicts `old` and `new` differ, leaving out keys named in `skip`."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in sorted((set(old) | set(new)) - set(skip)):
            out += _differences(old.get(key), new.get(key), f"{path}.{key}", skip=skip)
        return out
    return [] if old == new else [path]


def prepare_workdir(workdir: str, config: Any, identity: dict, *, ignore: Iterable[str] = (),
                    outputs: Sequence[str] = OUTPUTS) -> bool:
    """Create `workdir` and record config and identity; True when it already held this run (a resume).

    `ignore` names top-level config keys that do not change results (progress bars, how much work one
    invocation does). Refuses (WorkdirError) a workdir holding outputs but no config.json, and a
    resume whose config or identity differs, naming the differing entries. A workdir with a config
    but no outputs yet is started afresh with the new config. Process 0 alone writes; every process
    returns after the others have made the checks and process 0 has written (module docstring).
    """
    resumed = _check_workdir(workdir, config, identity, ignore=ignore, outputs=outputs)
    distributed.barrier(f"prepared workdir {workdir}")
    return resumed


def _check_workdir(workdir: str, config: Any, identity: dict, *, ignore: Iterable[str],
                   outputs: Sequence[str]) -> bool:
    """`prepare_workdir` before the barrier: the checks (every process) and the writes (process 0)."""
    if not workdir:
        raise WorkdirError("workdir is empty; pass --workdir DIR")
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        raise WorkdirError(f"workdir {workdir!r} exists and is not a directory")
    ignore = set(ignore)
    current = json.loads(json.dumps({k: v for k, v in to_plain(config).items() if k not in ignore}))
    identity = json.loads(json.dumps(identity))
    config_path, identity_path = os.path.join(workdir, CONFIG_FILE), os.path.join(workdir, IDENTITY_FILE)
    present = [name for name in outputs if os.path.exists(os.path.join(workdir, name))]
    if not os.path.exists(config_path) or not present:
        if present:
            raise WorkdirError(f"workdir {workdir!r} holds {present} but no {CONFIG_FILE}, so it cannot be shown to "
                               f"belong to this run; nothing was changed. Use a new workdir, or move those files away")
        # No outputs yet: a run that failed before its first result does not block the corrected command.
        if distributed.is_main_process():
            os.makedirs(workdir, exist_ok=True)
            write_json(identity_path, identity)
            write_json(config_path, current)
        return False
    differing = _differences(read_json(config_path, error=WorkdirError), current, "config")
    if differing:
        raise WorkdirError(f"workdir {workdir!r} holds a run started with a different config (differs at "
                           f"{differing}); resume with the same config or use a new workdir")
    previous = read_json(identity_path, error=WorkdirError) if os.path.exists(identity_path) else None
    if previous is None:
        raise WorkdirError(f"workdir {workdir!r} has a {CONFIG_FILE} but no {IDENTITY_FILE} (written by an older "
                           "version?), so its data and models cannot be checked; use a new workdir")
    changed = _differences(previous, identity, "identity", skip=LOCATION_KEYS)
    if changed:
        raise WorkdirError(f"workdir {workdir!r} holds a run made with other data, models or package version "
                           f"(differs at {changed}); resuming would mix them. Use a new workdir")
    return True


def _process_start_time(pid: int) -> str | None:
    """The start time of process `pid` (clock ticks since boot, from /proc), or None when there is none."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


class WorkdirLock:
    """An exclusive lock on a workdir for one run (a context manager), held by process 0 of a
    multi-process run (the others share its run); see the module docstring."""

    def __init__(self, workdir: str):
        self.path = os.path.join(workdir, LOCK_FILE)
        self.held = False
        self.owner = {"pid": os.getpid(), "start": _process_start_time(os.getpid()), "host": socket.gethostname()}

    def _holder_alive(self, holder: dict) -> bool:
        if holder.get("host") != self.owner["host"]:
            return True  # another machine's process cannot be checked: treat as alive
        start = _process_start_time(int(holder.get("pid", -1)))
        return start is not None and start == holder.get("start")

    def __enter__(self) -> WorkdirLock:
        if not distributed.is_main_process():
            return self
        os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                try:
                    holder = read_json(self.path, error=WorkdirError)
                except (WorkdirError, OSError):
                    holder = {}
                if isinstance(holder, dict) and holder and self._holder_alive(holder):
                    raise WorkdirError(f"workdir {os.path.dirname(self.path)!r} is in use by process {holder['pid']} "
                                       f"on {holder['host']}; wait for it to finish or use another workdir") from None
                warnings.warn(f"removing a stale lock {self.path} (its process {holder.get('pid')} is gone)",
                              stacklevel=2)
                os.remove(self.path)
                continue
            with os.fdopen(fd, "w") as f:
                json.dump(self.owner, f)
            self.held = True
            return self
        raise WorkdirError(f"could not take the lock {self.path}; another run started at the same moment")

    def __exit__(self, *exc) -> None:
        if not self.held:
            return
        self.held = False
        try:
            os.remove(self.path)
        except FileNotFoundError:
            pass
