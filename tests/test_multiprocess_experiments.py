"""Experiment modules launched as several local JAX processes (`tests/multiprocess_lib.py`).

Fast (default suite): a bad config is an error on every process, each saying which process it is.

Slow (`.ci/run`'s multi-process step): `--config.distributed=True` where no launch is named is a
clear error before anything loads (slow only because JAX's cluster detection first probes for a
TPU metadata server, about 14 s on a machine without one); the inference experiment's smoke preset on 2 processes x 4
devices writes, byte for byte, the outputs of the 1-process, 8-device run, and process 0 alone
writes them; the SFT-Sharpening smoke preset on the (data 2, fsdp 2, model 2) mesh, each process
reading only its own rows of every batch, trains with checkpoints to the losses and held-out
metrics of the 1-process run; the RLHF-Sharpening smoke preset on 2 processes ends with the
1-process train state, and after a SIGKILL of both processes it resumes from its checkpoint (on 2
processes, and on 1) to the uninterrupted state.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import REPO
from multiprocess_lib import free_port, process_env, run_processes
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


RLHF = ("experiments.rlhf_sharpening", "--config=experiments/configs/rlhf_sharpening.py:smoke",
        "--config.mesh.data=2", "--config.mesh.fsdp=2", "--config.mesh.model=2")


def _checkpoint(workdir, step: int | None = None) -> dict[str, np.ndarray]:
    """The saved train state (LoRA parameters, optimizer state, step) of a workdir's checkpoint."""
    import jax

    from sharpen_jax.training import Checkpointer

    with Checkpointer(os.path.join(workdir, "checkpoints")) as ckpt:
        return {jax.tree_util.keystr(k): np.asarray(v) for k, v in
                jax.tree_util.tree_leaves_with_path(ckpt.read_arrays(step))}


def _kill_both_after_a_checkpoint(workdir, timeout: float = 400) -> int:
    """Launch the RLHF smoke run on 2 processes x 4 devices, SIGKILL both (their process groups) as
    soon as its first checkpoint is complete; returns the newest complete checkpoint step."""
    port, procs = free_port(), []
    try:
        for i in range(2):
            procs.append(subprocess.Popen([sys.executable, "-c", EXPERIMENT, *RLHF, f"--workdir={workdir}"],
                                          env=process_env(i, 2, 4, port), cwd=REPO, stdout=subprocess.DEVNULL,
                                          stderr=subprocess.DEVNULL, start_new_session=True))
        directory, deadline = workdir / "checkpoints", time.monotonic() + timeout
        while not (directory.is_dir() and any(name.isdigit() for name in os.listdir(directory))):
            assert all(p.poll() is None for p in procs), "a process ended before the first checkpoint"
            assert time.monotonic() < deadline, "no checkpoint in time"
            time.sleep(0.05)
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
            p.wait()
    assert [p.returncode for p in procs] == [-signal.SIGKILL] * 2
    return max(int(name) for name in os.listdir(directory) if name.isdigit())


@pytest.mark.slow
def test_rlhf_smoke_on_two_processes_trains_like_one_and_resumes_after_both_are_killed(tmp_path):
    """RLHF-Sharpening's smoke preset (reward-DPO with LoRA, 6 updates, checkpoints every 2) on
    (data 2, fsdp 2, model 2): 2 processes x 4 devices end with the 1-process, 8-device train state to
    1e-6; a 2-process run killed after its first checkpoint and relaunched resumes from that step
    (its invocation record says so) to the uninterrupted 2-process state, bitwise; and the killed
    run's workdir, written by 2 processes, resumes on 1 process to the 1-process state."""
    one, two, killed = tmp_path / "one", tmp_path / "two", tmp_path / "killed"
    run_processes(EXPERIMENT, 1, 8, args=(*RLHF, f"--workdir={one}"), timeout=400)
    run_processes(EXPERIMENT, 2, 4, args=(*RLHF, f"--workdir={two}"), timeout=400)
    final, start = _checkpoint(one), _checkpoint(one, 2)
    assert int(final["['step']"]) == 6 and len(final) > 10
    assert max(np.abs(final[k] - start[k]).max() for k in final if "lora_b" in k) > 1e-4  # training moved them
    multi = _checkpoint(two)
    for key, value in final.items():
        np.testing.assert_allclose(multi[key], value, rtol=1e-6, atol=1e-6, err_msg=key)
    single, double = (json.loads((w / "results.json").read_text()) for w in (one, two))
    for phase in ("before", "after"):
        for key, value in single[phase].items():
            np.testing.assert_allclose(double[phase][key], value, rtol=1e-5, atol=1e-6, err_msg=f"{phase}/{key}")

    step = _kill_both_after_a_checkpoint(killed)
    assert 0 < step < 6 and not (killed / "invocations.jsonl").exists()
    crossed = tmp_path / "crossed"  # the killed run's checkpoint, written by 2 processes, resumed on 1
    shutil.copytree(killed, crossed)
    run_processes(EXPERIMENT, 2, 4, args=(*RLHF, f"--workdir={killed}"), timeout=400)
    run_processes(EXPERIMENT, 1, 8, args=(*RLHF, f"--workdir={crossed}"), timeout=400)
    for workdir in (killed, crossed):
        assert [(r["start_step"], r["updates"], r["resumed"]) for r in read_jsonl(workdir / "invocations.jsonl")] \
            == [(step, 6 - step, True)], workdir
    resumed, crossed_state = _checkpoint(killed), _checkpoint(crossed)
    for key, value in multi.items():
        np.testing.assert_array_equal(resumed[key], value, err_msg=key)
    for key, value in final.items():
        np.testing.assert_allclose(crossed_state[key], value, rtol=1e-6, atol=1e-6, err_msg=key)
