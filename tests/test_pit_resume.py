"""Exact resume of the PIT experiment: a smoke run SIGKILLed in the middle of its improver-SFT stage and
run again with the same command ends with every stage's parameters bitwise equal to an uninterrupted
run's, and with the same results.json.

The second process must have resumed rather than started over (which would end bitwise equal too): each
stage's `invocations.jsonl` (`training.loop`) says where that stage's loop started and how many updates
it ran. The reward-model stage, finished before the kill, restores its last checkpoint and runs none;
the improver stage restarts at the killed run's last checkpoint and runs only the rest; the RL stages,
never reached before the kill, start at 0.

The fast test does the same for one stage in-process: improver SFT interrupted by an exception at an
update after a checkpoint, then called again.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import jax
import numpy as np
import pytest

from conftest import REPO
from experiments import pit as experiment
from experiments import training_run
from experiments.configs import pit as configs
from resume_lib import assert_bitwise_equal, kill_after_first_checkpoint
from sharpen_jax.jsonl import read_json, read_jsonl
from sharpen_jax.tasks import preferences
from sharpen_jax.training import Checkpointer
from sharpen_jax.training.datasets import SFTDataset

STAGES = ("reward_model", "improver_sft", "rl_stage0", "rl_stage1")
FAST_COMPILE = {"XLA_FLAGS": "--xla_backend_optimization_level=0"}  # the same flags in every run
IMPROVER_STEPS = 12


def _launch(workdir: str) -> subprocess.Popen:
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": REPO, **FAST_COMPILE}
    cmd = [sys.executable, "-m", "experiments.pit", "--config=experiments/configs/pit.py:smoke",
           f"--workdir={workdir}", f"--config.improver.steps={IMPROVER_STEPS}"]
    return subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _latest(stage_dir: str):
    with Checkpointer(os.path.join(stage_dir, "checkpoints")) as ckpt:
        return ckpt.latest_step(), ckpt.read_arrays()


def _results_without_paths(workdir: str) -> dict:
    results = read_json(os.path.join(workdir, training_run.RESULTS))
    assert set(results["curves"]) == set(STAGES)
    return {k: v for k, v in results.items() if k != "curves"}  # the curves' paths name the workdir


@pytest.mark.slow
def test_smoke_run_killed_in_improver_sft_resumes_bitwise_equal(tmp_path):
    full, killed = str(tmp_path / "full"), str(tmp_path / "killed")
    reference = _launch(full)
    victim = _launch(killed)
    kill_after_first_checkpoint(victim, os.path.join(killed, "improver_sft"), timeout=1200)
    assert victim.returncode == -signal.SIGKILL
    saved_at_kill, _ = _latest(os.path.join(killed, "improver_sft"))
    assert saved_at_kill is not None and 0 < saved_at_kill < IMPROVER_STEPS, saved_at_kill
    assert not os.path.exists(os.path.join(killed, "rl_stage0"))
    resumed = _launch(killed)
    outputs = {}
    for name, proc in (("reference", reference), ("resumed", resumed)):
        out, err = proc.communicate(timeout=1800)
        assert proc.returncode == 0, err[-3000:]
        outputs[name] = out
    # The resumed process reports where the improver stage started and how many updates it ran.
    assert (f"trained updates {saved_at_kill}..{IMPROVER_STEPS} ({IMPROVER_STEPS - saved_at_kill} this run, "
            "resumed from a checkpoint)") in outputs["resumed"]
    cfg = configs.get_config("smoke")
    steps = {"reward_model": cfg.reward.steps, "improver_sft": IMPROVER_STEPS, "rl_stage0": cfg.rl.steps,
             "rl_stage1": cfg.rl.steps}
    record = lambda start, n, resumed: {"start_step": start, "updates": n, "resumed": resumed,  # noqa: E731
                                        "num_steps": n + start}
    expected = {  # the killed process finished only the reward model; the resumed one ran the rest
        "reward_model": [record(0, steps["reward_model"], False), record(steps["reward_model"], 0, True)],
        "improver_sft": [record(saved_at_kill, IMPROVER_STEPS - saved_at_kill, True)],
        "rl_stage0": [record(0, steps["rl_stage0"], False)],
        "rl_stage1": [record(0, steps["rl_stage1"], False)]}
    for stage in STAGES:
        assert read_jsonl(os.path.join(killed, stage, "invocations.jsonl")) == expected[stage], stage
        assert read_jsonl(os.path.join(full, stage, "invocations.jsonl")) == [record(0, steps[stage], False)], stage
        step_full, tree_full = _latest(os.path.join(full, stage))
        step_killed, tree_killed = _latest(os.path.join(killed, stage))
        assert step_full == step_killed == steps[stage], stage
        assert_bitwise_equal(tree_full, tree_killed)
    for kind in ("solver", "corruption"):
        with open(os.path.join(full, f"preferences-{kind}.jsonl")) as a, \
                open(os.path.join(killed, f"preferences-{kind}.jsonl")) as b:
            assert a.read() == b.read(), kind
    assert _results_without_paths(full) == _results_without_paths(killed)


class _Interrupted(RuntimeError):
    pass


@pytest.mark.slow  # 50 CPU-s (674 s wall under load 7-10): over the default-suite budget
def test_improver_stage_interrupted_after_a_checkpoint_resumes_bitwise_equal(tmp_path, monkeypatch):
    cfg = configs.get_config("smoke")
    cfg.improver.steps, cfg.train.save_every = 4, 2
    task = experiment.validate(cfg)
    setup = training_run.prepare(cfg, task)
    pairs = preferences.corruption_pairs(task, list(setup.train_prompts.examples), max_level=2)
    full, stopped = str(tmp_path / "full"), str(tmp_path / "stopped")
    params_full = experiment.train_improver(cfg, setup, pairs, full)

    batch = SFTDataset.batch

    def batch_failing_at_3(self, step, *args, **kwargs):
        if step == 3:
            raise _Interrupted(f"interrupted at update {step}")
        return batch(self, step, *args, **kwargs)

    monkeypatch.setattr(SFTDataset, "batch", batch_failing_at_3)
    with pytest.raises(_Interrupted):
        experiment.train_improver(cfg, setup, pairs, stopped)
    assert _latest(stopped)[0] == 2 and not os.path.exists(os.path.join(stopped, "invocations.jsonl"))
    monkeypatch.setattr(SFTDataset, "batch", batch)
    params_resumed = experiment.train_improver(cfg, setup, pairs, stopped)
    # a resume (from update 2, two updates), not a restart
    assert read_jsonl(os.path.join(stopped, "invocations.jsonl")) == [
        {"start_step": 2, "updates": 2, "resumed": True, "num_steps": 4}]
    assert_bitwise_equal(params_full, params_resumed)
    assert_bitwise_equal(_latest(full)[1], _latest(stopped)[1])
    # and the stage trained: the improver differs from the base model
    assert any(not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(params_full),
                                                         jax.tree.leaves(setup.base_params)))
