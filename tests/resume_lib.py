"""Shared by the interrupted-run tests (tests/test_checkpoint_resume.py, tests/test_pit_resume.py): kill a
run as soon as its first checkpoint is complete, and compare two parameter trees bit for bit."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import jax
import numpy as np


def kill_after_first_checkpoint(proc: subprocess.Popen, workdir: str, timeout: float) -> None:
    """SIGKILL `proc` once `workdir/checkpoints` holds a finished (step-numbered) checkpoint."""
    directory = os.path.join(workdir, "checkpoints")
    deadline = time.time() + timeout
    while not (os.path.isdir(directory) and any(name.isdigit() for name in os.listdir(directory))):
        assert proc.poll() is None, f"run ended before its first checkpoint: {proc.communicate()[1][-3000:]}"
        assert time.time() < deadline, f"no checkpoint in {directory} after {timeout} s"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def assert_bitwise_equal(a, b) -> None:
    """The two pytrees have the same non-empty leaf list, with equal dtypes and bytes."""
    leaves_a, leaves_b = jax.tree.leaves(a), jax.tree.leaves(b)
    assert len(leaves_a) == len(leaves_b) > 0
    for x, y in zip(leaves_a, leaves_b):
        assert np.asarray(x).dtype == np.asarray(y).dtype and np.asarray(x).tobytes() == np.asarray(y).tobytes()
