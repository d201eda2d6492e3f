"""Experiment modules launched as several local JAX processes (`tests/multiprocess_lib.py`).

Fast (default suite): a bad config is an error on every process, each saying which process it is.

Slow (`.ci/run`'s multi-process step): `--config.distributed=True` where no launch is named is a
clear error before anything loads (slow only because JAX's cluster detection first probes for a
TPU metadata server, about 14 s on a machine without one); the inference experiment's smoke preset on 2 processes x 4
devices writes, byte for byte, the outputs of the 1-process, 8-device run, and process 0 alone
writes them; the SFT-Sharpening smoke preset on the (data 2, fsdp 2, model 2) mesh, each process
reading only its own rows of every batch, trains with checkpoints to the losses and held-out
metrics of the 1-process run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
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


SFT = ("experiments.sft_sharpening", "--config=experiments/configs/sft_sharpening.py:smoke", "--config.mesh.data=2",
       "--config.mesh.fsdp=2", "--config.mesh.model=2")


def _train_losses(workdir) -> list[float]:
    return [r["loss"] for r in read_jsonl(workdir / "metrics.jsonl") if r["split"] == "train"]


@pytest.mark.slow
def test_sft_smoke_on_two_processes_trains_like_one_process(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    run_processes(EXPERIMENT, 1, 8, args=(*SFT, f"--workdir={one}"), timeout=400)
    run_processes(EXPERIMENT, 2, 4, args=(*SFT, f"--workdir={two}"), timeout=400)
    losses = _train_losses(one)
    assert len(losses) >= 3 and len(_train_losses(two)) == len(losses)  # process 0 alone wrote the metrics
    np.testing.assert_allclose(_train_losses(two), losses, rtol=1e-5, atol=1e-6)
    single, multi = (json.loads((w / "results.json").read_text()) for w in (one, two))
    for phase in ("before", "after"):
        for key, value in single[phase].items():
            np.testing.assert_allclose(multi[phase][key], value, rtol=1e-4, atol=1e-5, err_msg=f"{phase}/{key}")
    assert sorted(os.listdir(two / "checkpoints")) == sorted(os.listdir(one / "checkpoints")) != []
    assert (two / "config.json").read_bytes() == (one / "config.json").read_bytes()
