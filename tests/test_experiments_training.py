"""The `smoke` presets of the training experiments run end to end (in subprocesses, concurrently) and
write the before/after table, metrics, TensorBoard events, curves and checkpoints."""

import glob
import json
import os
import subprocess
import sys

import pytest

from experiments.configs import rlhf_sharpening as rlhf_configs
from sharpen_jax.jsonl import read_jsonl

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The smoke runs are compile-bound on CPU; LLVM's optimizations are not worth their compile time here.
FAST_COMPILE = {"XLA_FLAGS": "--xla_backend_optimization_level=0"}
TABLE = ("greedy_accuracy", "sample_accuracy", "sample_logp", "bon_accuracy", "sample_base_logp", "kl_to_base")


@pytest.fixture(scope="module")
def smoke_runs(tmp_path_factory):
    """Launch both smoke runs at once; {name: (workdir, completed process)}."""
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": REPO, **FAST_COMPILE}
    procs = {}
    for name in ("sft_sharpening", "rlhf_sharpening"):
        workdir = str(tmp_path_factory.mktemp(name))
        cmd = [sys.executable, "-m", f"experiments.{name}", f"--config=experiments/configs/{name}.py:smoke",
               f"--workdir={workdir}"]
        procs[name] = (workdir, subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.PIPE,
                                                 stderr=subprocess.PIPE, text=True))
    results = {}
    for name, (workdir, proc) in procs.items():
        out, err = proc.communicate(timeout=900)
        results[name] = (workdir, proc.returncode, out, err)
    return results


def _check_common(workdir, returncode, out, err, num_steps):
    assert returncode == 0, err[-4000:]
    assert "lift" in out  # the before/after/lift table is printed
    with open(os.path.join(workdir, "results.json")) as f:
        results = json.load(f)
    for split in ("before", "after", "lift"):
        assert set(TABLE) <= set(results[split]), (split, results[split])
    for split in ("before", "after"):
        assert 0.0 <= results[split]["greedy_accuracy"] <= 1.0
        assert results[split]["sample_logp"] < 0.0
    assert results["after"]["sample_base_logp"] < 0.0  # scored under the base model
    assert results["before"]["kl_to_base"] == 0.0
    # The table's arithmetic, recomputed: lift = after - before for every metric of both, and the KL
    # estimate is E_pi[log pi] - E_pi[log pi_base] of the same samples.
    before, after = results["before"], results["after"]
    assert results["lift"] == pytest.approx({k: after[k] - before[k] for k in before if k in after}, abs=1e-12)
    assert after["kl_to_base"] == pytest.approx(after["sample_logp"] - after["sample_base_logp"], abs=1e-12)
    records = read_jsonl(os.path.join(workdir, "metrics.jsonl"))
    train = [r for r in records if r["split"] == "train"]
    assert [r["step"] for r in train] == list(range(1, num_steps + 1))
    assert all(r["tokens_per_s"] > 0 and r["loss"] == r["loss"] for r in train)
    assert {r["step"] for r in records if r["split"] == "eval"} == {0, 3, 6}
    assert glob.glob(os.path.join(workdir, "tensorboard", "events.out.tfevents.*"))
    assert os.path.getsize(os.path.join(workdir, "training_curves.png")) > 1000
    assert os.path.isdir(os.path.join(workdir, "checkpoints", str(num_steps)))
    return results, train


def test_sft_sharpening_smoke(smoke_runs):
    results, train = _check_common(*smoke_runs["sft_sharpening"], num_steps=6)
    assert results["dataset_size"] == 8 and results["num_steps"] == 6
    assert all(r["learning_rate"] > 0 for r in train[:-1])


def test_rlhf_sharpening_smoke(smoke_runs):
    results, train = _check_common(*smoke_runs["rlhf_sharpening"], num_steps=6)
    assert "j_beta" in results["after"] and results["best_eval_step_by_j_beta"] in (0, 3, 6)
    beta = rlhf_configs.get_config("smoke").po.beta
    for split in ("before", "after"):  # J_beta = E_pi[log pi_base] - beta KL(pi || pi_base)
        row = results[split]
        assert row["j_beta"] == pytest.approx(row["sample_base_logp"] - beta * row["kl_to_base"], abs=1e-12), split
    best_steps = [int(name) for name in os.listdir(os.path.join(smoke_runs["rlhf_sharpening"][0], "best"))
                  if name.isdigit()]
    assert best_steps == [results["best_eval_step_by_j_beta"]]
    assert all("logratio_a" in r and "reward_mean" in r for r in train)
