"""The multi-process test harness: start N local JAX processes that form one global CPU mesh.

`run_processes(code, num_processes, devices_per_process)` starts `python -c code ARGS` N times, each
with `--xla_force_host_platform_device_count=devices_per_process` and the launch environment that
`sharpen_jax.distributed.initialize()` reads (coordinator 127.0.0.1 at a free port, the process
count and this process's id; none of it for one process). Bounded time: when one process fails
the others are killed at once, and every process still running at the deadline is killed; no child
outlives the call (each runs in its own session, killed as a group, and is reaped). A failure
raises AssertionError with every process's exit status and the tail of its output.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

from conftest import REPO
from sharpen_jax import distributed

LAUNCH_ENV = (distributed.COORDINATOR_ENV, distributed.NUM_PROCESSES_ENV, distributed.PROCESS_ID_ENV)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def process_env(process_id: int, num_processes: int, devices_per_process: int, port: int) -> dict[str, str]:
    """The environment of process `process_id`: fake CPU devices, and the launch variables when N > 1."""
    env = {k: v for k, v in os.environ.items() if k not in LAUNCH_ENV}
    env.update(XLA_FLAGS=f"--xla_force_host_platform_device_count={devices_per_process}", JAX_PLATFORMS="cpu",
               PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    if num_processes > 1:
        env.update({distributed.COORDINATOR_ENV: f"127.0.0.1:{port}",
                    distributed.NUM_PROCESSES_ENV: str(num_processes),
                    distributed.PROCESS_ID_ENV: str(process_id)})
    return env


def _kill(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()


def run_processes(code: str, num_processes: int = 2, devices_per_process: int = 4, *, args: tuple[str, ...] = (),
                  timeout: float = 300.0, kill_on_failure: bool = True) -> list[str]:
    """The output (stdout and stderr) of each of `num_processes` processes running `code` with `args`.

    Raises AssertionError when any process exits non-zero (the others are killed at once, unless
    `kill_on_failure` is False: then they run on until they exit or the deadline) or when the
    deadline `timeout` seconds after the start passes (all are killed).
    """
    port = free_port()
    argv = [sys.executable, "-c", code]
    with tempfile.TemporaryDirectory() as logs:
        procs, files = [], []
        try:
            for i in range(num_processes):
                out = open(os.path.join(logs, f"p{i}.log"), "w+")
                files.append(out)
                procs.append(subprocess.Popen([*argv, *args], env=process_env(i, num_processes, devices_per_process,
                                                                               port),
                                              stdout=out, stderr=subprocess.STDOUT, cwd=REPO,
                                              start_new_session=True))
            deadline = time.monotonic() + timeout
            failed = timed_out = False
            while any(p.poll() is None for p in procs):
                failed = kill_on_failure and any(p.poll() not in (None, 0) for p in procs)
                timed_out = time.monotonic() > deadline
                if failed or timed_out:
                    break
                time.sleep(0.05)
        finally:
            for p in procs:
                _kill(p)
        outputs = []
        for f in files:
            f.seek(0)
            outputs.append(f.read())
            f.close()
    codes = [p.returncode for p in procs]
    if timed_out or any(codes):
        reason = f"timed out after {timeout:.0f} s" if timed_out else "a process failed"
        tails = "\n".join(f"--- process {i} (exit {c}):\n{o[-3000:]}" for i, (c, o) in enumerate(zip(codes, outputs)))
        raise AssertionError(f"{reason}; exit statuses {codes}\n{tails}")
    return outputs


def alive(pid: int) -> bool:
    """Whether a process with this id exists (reaped children do not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
