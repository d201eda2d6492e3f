"""Exact resume: a training run killed with SIGKILL mid-way and restarted with the same command ends
with parameters bitwise equal to an uninterrupted run (CPU).

The fast test drives `train_loop` with a tabular policy, one SFT step on a dataset batch (data
position) and one KL policy-gradient step on samples drawn with a key derived from the step, per
update. The slow test does the same with the `sft_sharpening` experiment's smoke preset. Both check
that the second process resumed (it reports the update it started from and how many it ran, which
must be the killed run's last checkpoint and the rest) rather than starting over, which would end
bitwise equal too.
"""

import json
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from resume_lib import assert_bitwise_equal, kill_after_first_checkpoint
from sharpen_jax.jsonl import read_jsonl
from sharpen_jax.training import Checkpointer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

DRIVER = textwrap.dedent("""
    import sys, time
    import jax, jax.numpy as jnp, numpy as np, optax
    from sharpen_jax.methods import get_loss
    from sharpen_jax.training import SFTDataset, create_train_state, train_loop

    workdir, num_steps, delay = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    X, Y = 4, 5

    def logprob_fn(params, seqs):
        logp = jax.nn.log_softmax(params["logits"][seqs["x"]], -1)
        logp = jnp.take_along_axis(logp, seqs["y"][:, None], -1)[:, 0]
        return logp, jnp.ones_like(logp)

    base = {"logits": jax.random.normal(jax.random.key(0), (X, Y))}
    tx = optax.adam(optax.linear_schedule(0.05, 0.0, num_steps))
    sft_step = get_loss("sft").make_step(logprob_fn, tx)
    po_step = get_loss("kl_pg").make_step(logprob_fn, tx, hyperparameters={"beta": 0.5, "group_size": 4})
    rng = np.random.default_rng(1)
    dataset = SFTDataset({"x": rng.integers(0, X, 37).astype(np.int32), "y": rng.integers(0, Y, 37).astype(np.int32)})

    def update(state, step):
        state, _ = sft_step(state, None, dataset.batch(step, 8, seed=3))
        x = jnp.repeat(jnp.arange(X), 4)
        y = jax.random.categorical(jax.random.fold_in(jax.random.key(2), step), state.params["logits"][x])
        batch = {"seqs": {"x": x, "y": y}, "reward": jax.nn.log_softmax(base["logits"], -1)[x, y]}
        time.sleep(delay)
        return po_step(state, base, batch)

    run = train_loop(create_train_state(base, tx), update, workdir=workdir, num_steps=num_steps,
                     save_every=7, progress=False)
    print("FINISHED", run.start_step, run.num_updates, run.resumed)
""")


def _launch(args, cwd_env=None):
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": REPO, **(cwd_env or {})}
    return subprocess.Popen([sys.executable, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=REPO)


def _last_train_step(workdir):
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        return 0
    with open(path) as f:
        steps = [json.loads(line)["step"] for line in f if line.strip().startswith("{") and '"train"' in line]
    return max(steps, default=0)


def _final_params(workdir, target):
    with Checkpointer(os.path.join(workdir, "checkpoints")) as ckpt:
        return ckpt.latest_step(), target.with_saved(ckpt.restore(target.saved())[0])


def test_sigkill_and_restart_gives_bitwise_equal_parameters(tmp_path):
    num_steps, full, killed = 30, str(tmp_path / "full"), str(tmp_path / "killed")
    reference = _launch(["-c", DRIVER, full, str(num_steps), "0"])
    victim = _launch(["-c", DRIVER, killed, str(num_steps), "0.1"])
    kill_after_first_checkpoint(victim, killed, timeout=600)
    reached = _last_train_step(killed)
    assert 7 <= reached < num_steps and victim.returncode == -signal.SIGKILL
    with Checkpointer(os.path.join(killed, "checkpoints")) as ckpt:
        saved_at_kill = ckpt.latest_step()
    assert saved_at_kill is not None and 7 <= saved_at_kill < num_steps
    resumed = _launch(["-c", DRIVER, killed, str(num_steps), "0"])
    outputs = {}
    for name, proc in (("reference", reference), ("resumed", resumed)):
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0 and "FINISHED" in out, err[-3000:]
        outputs[name] = out.split("FINISHED")[1].split()
    # The second process resumed at the killed run's last checkpoint and ran only the remaining updates.
    assert outputs["reference"] == ["0", str(num_steps), "False"]
    assert outputs["resumed"] == [str(saved_at_kill), str(num_steps - saved_at_kill), "True"]
    assert read_jsonl(os.path.join(killed, "invocations.jsonl")) == [
        {"start_step": saved_at_kill, "updates": num_steps - saved_at_kill, "resumed": True, "num_steps": num_steps}]

    import optax
    from sharpen_jax.training import create_train_state
    tx = optax.adam(optax.linear_schedule(0.05, 0.0, num_steps))
    target = create_train_state({"logits": np.zeros((4, 5), np.float32)}, tx)
    step_full, state_full = _final_params(full, target)
    step_resumed, state_resumed = _final_params(killed, target)
    assert step_full == step_resumed == num_steps
    assert_bitwise_equal(state_full, state_resumed)
    assert int(state_resumed.step) == 2 * num_steps  # one SFT and one PG update per loop step
    with open(os.path.join(killed, "metrics.jsonl")) as f:
        steps = [json.loads(line)["step"] for line in f]
    assert steps == list(range(1, num_steps + 1))  # the log too reads as one uninterrupted run


@pytest.mark.slow
def test_sft_experiment_killed_and_resumed_matches_uninterrupted(tmp_path):
    config = "--config=experiments/configs/sft_sharpening.py:smoke"
    overrides = ["--config.train.num_steps=40", "--config.train.save_every=4", "--config.train.eval_every=0"]
    full, killed = str(tmp_path / "full"), str(tmp_path / "killed")
    command = lambda workdir: ["-m", "experiments.sft_sharpening", config, f"--workdir={workdir}", *overrides]  # noqa
    fast_compile = {"XLA_FLAGS": "--xla_backend_optimization_level=0"}  # the same flags in all three runs
    reference = _launch(command(full), fast_compile)
    victim = _launch(command(killed), fast_compile)
    kill_after_first_checkpoint(victim, killed, timeout=600)
    with Checkpointer(os.path.join(killed, "checkpoints")) as ckpt:
        saved_at_kill = ckpt.latest_step()
    resumed = _launch(command(killed), fast_compile)
    for proc in (reference, resumed):
        _, err = proc.communicate(timeout=900)
        assert proc.returncode == 0, err[-3000:]
    assert read_jsonl(os.path.join(killed, "invocations.jsonl")) == [
        {"start_step": saved_at_kill, "updates": 40 - saved_at_kill, "resumed": True, "num_steps": 40}]

    def latest_arrays(workdir):
        with Checkpointer(os.path.join(workdir, "checkpoints")) as ckpt:
            return ckpt.latest_step(), ckpt.read_arrays()

    step_full, tree_full = latest_arrays(full)
    step_resumed, tree_resumed = latest_arrays(killed)
    assert step_full == step_resumed == 40
    assert_bitwise_equal(tree_full, tree_resumed)
