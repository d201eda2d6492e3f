"""Experiment modules launched as several local JAX processes (`tests/multiprocess_lib.py`).

Fast (default suite): a bad config is an error on every process, each saying which process it is.

Slow (`.ci/run`'s multi-process step): `--config.distributed=True` where no launch is named is a
clear error before anything loads (slow only because JAX's cluster detection first probes for a
TPU metadata server, about 14 s on a machine without one); the inference experiment's smoke preset on 2 processes x 4
devices writes, byte for byte, the outputs of the 1-process, 8-device run, and process 0 alone
writes them.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conftest import REPO
from multiprocess_lib import process_env, run_processes
from sharpen_jax.jsonl import read_jsonl

# `python -c EXPERIMENT MODULE ARGS...` runs `python -m MODULE ARGS...` (its command line, common.main)
EXPERIMENT = ("import runpy, sys; module = sys.argv.pop(1); "
              "runpy.run_module(module, run_name='__main__', alter_sys=True)")
INFERENCE = ("experiments.inference_sharpening", "--config=experiments/configs/inference_sharpening.py:smoke")
WRITTEN_BY_PROCESS_0 = ("config.json", "identity.json", "results.jsonl", "summary.json", "summary.md",
                        "invocations.jsonl")


def test_a_bad_config_fails_on_every_process_with_its_number(tmp_path):
    with pytest.raises(AssertionError) as failure:
        run_processes(EXPERIMENT, 2, 1, args=(*INFERENCE, "--config.num_samples=0", f"--workdir={tmp_path / 'w'}",
                                              "--config.distributed=True"), timeout=120, kill_on_failure=False)
    message = str(failure.value)
    assert "exit statuses [2, 2]" in message, message
    for i in range(2):
        assert f"error (process {i} of 2): config.num_samples=0; expected an integer >= 1" in message, message
    assert not (tmp_path / "w").exists()  # checked before the workdir is touched


@pytest.mark.slow
def test_distributed_without_a_launch_is_a_clear_error(tmp_path):
    env = process_env(0, 1, 1, 0)
    proc = subprocess.run([sys.executable, "-m", INFERENCE[0], INFERENCE[1], "--config.distributed=True",
                           f"--workdir={tmp_path / 'w'}"], env=env, cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "cannot start the multi-process run (config.distributed=True): coordinator_address should be " \
           "defined" in proc.stderr and "$JAX_COORDINATOR_ADDRESS" in proc.stderr, proc.stderr
    assert not (tmp_path / "w").exists()


@pytest.mark.slow
def test_inference_smoke_on_two_processes_writes_what_one_process_writes(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    run_processes(EXPERIMENT, 1, 8, args=(*INFERENCE, "--config.shard=True", f"--workdir={one}"), timeout=400)
    # the launch variables alone start jax.distributed; --config.distributed=True says it explicitly
    run_processes(EXPERIMENT, 2, 4, args=(*INFERENCE, "--config.shard=True", "--config.distributed=True",
                                          f"--workdir={two}"), timeout=400)
    for name in WRITTEN_BY_PROCESS_0:
        assert (two / name).read_bytes() == (one / name).read_bytes(), name
    figures = sorted(os.listdir(one / "figures"))
    assert figures and sorted(os.listdir(two / "figures")) == figures
    assert sorted(os.listdir(two)) == sorted(os.listdir(one))  # no lock or temporary file left behind
    records = read_jsonl(one / "results.jsonl")
    assert len(records) == 12 and len({(r["model"], r["task"], r["index"]) for r in records}) == 12  # each once
    rewards = [s["rewards"]["log_likelihood"] for r in records for s in r["samples"]]
    assert len(set(rewards)) > len(rewards) // 2  # real, varied samples: equality is not trivial
    assert len(read_jsonl(two / "invocations.jsonl")) == 1  # one writer
