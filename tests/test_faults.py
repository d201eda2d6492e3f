"""Faults: a write error while appending results, a stale workdir lock, a damaged latest checkpoint, and
runs killed with SIGKILL at random points that resume to the uninterrupted result."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time

import jax
import numpy as np
import pytest

from conftest import REPO
from experiments import inference_sharpening as inference, workdir as workdir_lib
from experiments.configs import inference_sharpening as inference_configs
from sharpen_jax.jsonl import append_jsonl, read_jsonl
from sharpen_jax.training import Checkpointer

ENV = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": REPO, "XLA_FLAGS": "--xla_backend_optimization_level=0"}


def test_a_failed_append_leaves_no_partial_record(tmp_path):
    """The file system refuses the write part-way (file size limit, as a full disk would): the error names
    the file and the file is exactly what it was before."""
    path = tmp_path / "results.jsonl"
    path.write_text(json.dumps({"i": 0}) + "\n")
    before = path.read_bytes()
    script = textwrap.dedent(f"""
        import resource, signal
        from sharpen_jax.jsonl import append_jsonl
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        limit = {len(before) + 20}
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
        try:
            append_jsonl({str(path)!r}, [{{"i": 1, "text": "x" * 100}}])
        except OSError as err:
            print("ERROR", err)
    """)
    out = subprocess.run([sys.executable, "-c", script], env=ENV, capture_output=True, text=True, timeout=120)
    assert f"ERROR [Errno 27] could not append 1 record(s) to {path}" in out.stdout, out.stdout + out.stderr
    assert path.read_bytes() == before
    append_jsonl(str(path), [{"i": 1}])  # the next append works and the file reads back whole
    assert read_jsonl(str(path)) == [{"i": 0}, {"i": 1}]


def test_a_stale_lock_is_taken_over_and_a_live_one_refuses(tmp_path):
    workdir = str(tmp_path)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = {"pid": int(dead.stdout), "start": "1", "host": workdir_lib.socket.gethostname()}
    (tmp_path / workdir_lib.LOCK_FILE).write_text(json.dumps(stale))
    with pytest.warns(UserWarning, match=f"removing a stale lock .*its process {stale['pid']} is gone"):
        with workdir_lib.WorkdirLock(workdir):
            held = json.loads((tmp_path / workdir_lib.LOCK_FILE).read_text())
            assert held["pid"] == os.getpid()
            with pytest.raises(workdir_lib.WorkdirError, match=f"in use by process {os.getpid()}"):
                with workdir_lib.WorkdirLock(workdir):
                    pass
    assert not (tmp_path / workdir_lib.LOCK_FILE).exists()  # released on exit


def test_a_damaged_latest_checkpoint_falls_back_to_the_previous_step(tmp_path):
    directory = str(tmp_path / "ckpt")
    trees = {step: {"w": np.full(4, float(step), np.float32)} for step in (2, 4)}
    with Checkpointer(directory, async_save=False) as ckpt:
        for step, tree in trees.items():
            ckpt.save(step, tree, {"position": step})
    for folder, _, files in os.walk(os.path.join(directory, "4")):
        for name in files:
            if not name.startswith("_") and "state" in folder:
                with open(os.path.join(folder, name), "wb") as f:
                    f.write(b"\0\0")
    with Checkpointer(directory) as ckpt:
        with pytest.warns(UserWarning, match=r"checkpoint step directory .*ckpt/4 is unreadable"):
            tree, data = ckpt.restore(trees[2])
    assert data == {"position": 2}
    np.testing.assert_array_equal(tree["w"], trees[2]["w"])


def _kill_at(command, workdir, seconds):
    proc = subprocess.Popen(command(workdir), env=ENV, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(seconds)
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    proc.wait()


def _finish(command, workdir):
    out = subprocess.run(command(workdir), env=ENV, cwd=REPO, capture_output=True, text=True, timeout=1200)
    assert out.returncode == 0, out.stderr[-3000:]


@pytest.mark.slow
def test_inference_killed_at_random_points_resumes_to_identical_results(tmp_path):
    command = lambda w: [sys.executable, "-m", "experiments.inference_sharpening",  # noqa: E731
                         "--config=experiments/configs/inference_sharpening.py:smoke", f"--workdir={w}"]
    reference = str(tmp_path / "reference")
    _finish(command, reference)
    expected = read_jsonl(os.path.join(reference, "results.jsonl"))
    rng = random.Random(0)
    units = inference.plan(inference_configs.get_config("smoke"))
    finished_at_kill = []
    for trial in range(5):
        workdir = str(tmp_path / f"trial{trial}")
        _kill_at(command, workdir, rng.uniform(5.0, 40.0))
        # A workdir with a config but no results yet starts afresh (workdir.prepare_workdir): not a resume.
        left_results = all(os.path.exists(os.path.join(workdir, name)) for name in ("config.json", "results.jsonl"))
        done = len(inference.finished_units(read_jsonl(os.path.join(workdir, "results.jsonl")), units)[0])
        finished_at_kill.append(done)
        _finish(command, workdir)
        assert read_jsonl(os.path.join(workdir, "results.jsonl")) == expected, trial
        # It resumed at the first unfinished batch and ran only the rest (a restart ends equal too).
        assert read_jsonl(os.path.join(workdir, "invocations.jsonl"))[-1] == {
            "resumed": left_results, "done_batches": done, "todo_batches": len(units) - done,
            "first_batch": done if done < len(units) else None, "ran_batches": len(units) - done}, trial
        with open(os.path.join(workdir, "summary.json")) as f, open(os.path.join(reference, "summary.json")) as g:
            assert json.load(f) == json.load(g)
    # At least one kill landed mid-run, so the resume checks above were not all of a fresh or finished run.
    assert any(0 < done < len(units) for done in finished_at_kill), finished_at_kill


@pytest.mark.slow
def test_training_killed_at_random_points_resumes_to_bitwise_equal_parameters(tmp_path):
    overrides = ["--config.train.num_steps=24", "--config.train.save_every=3", "--config.train.eval_every=0"]
    command = lambda w: [sys.executable, "-m", "experiments.sft_sharpening",  # noqa: E731
                         "--config=experiments/configs/sft_sharpening.py:smoke", f"--workdir={w}", *overrides]
    reference = str(tmp_path / "reference")
    _finish(command, reference)
    with Checkpointer(os.path.join(reference, "checkpoints")) as ckpt:
        expected = ckpt.read_arrays()
    rng = random.Random(1)
    saved_at_kill = []
    for trial in range(5):
        workdir = str(tmp_path / f"trial{trial}")
        _kill_at(command, workdir, rng.uniform(10.0, 60.0))
        with Checkpointer(os.path.join(workdir, "checkpoints")) as ckpt:
            saved = ckpt.latest_step() or 0
        saved_at_kill.append(saved)
        _finish(command, workdir)
        with Checkpointer(os.path.join(workdir, "checkpoints")) as ckpt:
            assert ckpt.latest_step() == 24
            got = ckpt.read_arrays()
        # It resumed at the checkpoint the kill left and ran only the remaining updates; a kill that came
        # after the run had ended leaves the first run's own record, and the second command trains nothing.
        records = read_jsonl(os.path.join(workdir, "invocations.jsonl"))
        whole_run = {"start_step": 0, "updates": 24, "resumed": False, "num_steps": 24}
        assert records[-1] == (whole_run if saved == 24 and records == [whole_run] else {
            "start_step": saved, "updates": 24 - saved, "resumed": saved > 0, "num_steps": 24}), (trial, records)
        for a, b in zip(jax.tree.leaves(expected), jax.tree.leaves(got), strict=True):
            assert np.asarray(a).tobytes() == np.asarray(b).tobytes(), trial
    # At least one kill landed between two checkpoints of the run: that trial resumed mid-way.
    assert any(0 < saved < 24 for saved in saved_at_kill), saved_at_kill
