"""The PIT experiment: the smoke preset runs every stage end to end and a second run reports the finished
results; bad PIT settings are config errors before the workdir exists or a model loads."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from bad_inputs_lib import Case, check_case, ids
from conftest import REPO
from experiments import pit as experiment
from experiments.common import ConfigError
from experiments.configs import pit as configs

FAST_COMPILE = {"XLA_FLAGS": "--xla_backend_optimization_level=0"}


@pytest.mark.slow
def test_smoke_preset_runs_end_to_end_and_a_rerun_reports_it(tmp_path):
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": REPO, **FAST_COMPILE}
    cmd = [sys.executable, "-m", "experiments.pit", "--config=experiments/configs/pit.py:smoke",
           f"--workdir={tmp_path}"]
    done = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stderr[-4000:]
    with open(tmp_path / "results.json") as f:
        results = json.load(f)
    rows = results["after"]["T=0.6"]
    for model in ("pit", "self_refine", "base"):
        assert len(rows[model]["accuracy"]) == 3 and len(rows[model]["delta"]) == 2
        # Δ per iteration is the accuracy change, exactly (win/lose counts on the same prompts)
        assert rows[model]["delta"] == pytest.approx(
            [b - a for a, b in zip(rows[model]["accuracy"], rows[model]["accuracy"][1:])], abs=1e-12)
    assert results["preference_pairs"]["corruption"] > 0 and results["reward_model"]["pairs"] > 0
    for stage in ("reward_model", "improver_sft", "rl_stage0", "rl_stage1"):
        assert os.path.isfile(tmp_path / stage / "training_curves.png"), stage
    again = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and "this run has finished" in again.stdout, again.stderr[-2000:]
    # a run killed during the evaluation: only the rows missing from iterates.jsonl are redone
    lines = (tmp_path / "iterates.jsonl").read_text().splitlines(keepends=True)
    assert [json.loads(line)["model"] for line in lines] == ["pit", "self_refine", "base"]
    (tmp_path / "iterates.jsonl").write_text("".join(lines[:1]))
    os.remove(tmp_path / "results.json")
    resumed = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=1200)
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    assert (tmp_path / "iterates.jsonl").read_text().splitlines(keepends=True)[:1] == lines[:1]
    with open(tmp_path / "results.json") as f:
        assert json.load(f)["after"] == results["after"]


def _config(**changes):
    cfg = configs.get_config("smoke")
    for key, value in changes.items():
        section, name = key.split(".")
        cfg[section][name] = value
    return cfg


CASES = [
    Case(f"pit {key}={value!r}", lambda tmp, key=key, value=value: experiment.run(_config(**{key: value}),
                                                                                  str(tmp / "wd")),
         ConfigError, message, workdir="wd")
    for key, value, message in [
        ("pit.stages", "stage0,stage3", r"config\.pit\.stages='stage0,stage3'.*unknown: \['stage3'\]"),
        ("pit.beta", 0.0, r"config\.pit\.beta=0\.0.*positive"),
        ("pit.beta", -0.5, r"config\.pit\.beta=-0\.5.*positive"),
        ("pit.kinds", "", r"config\.pit\.kinds=''.*at least one preference set"),
        ("pit.kinds", "solver,teacher", r"config\.pit\.kinds=.*kind='teacher'"),
        ("pit.gap_layout", "{x}{y}", r"config\.pit\.gap_layout=.*y_ref"),
        ("pit.improver_layout", "{x} improve", r"config\.pit\.improver_layout=.*y_ref"),
        ("pit.num_iterations", 0, r"config\.pit\.num_iterations=0.*integer >= 1"),
        ("pit.temperatures", "0.6,-1", r"config\.pit\.temperatures=.*temperature=-1\.0"),
        ("pit.group_size", 1, r"config\.pit\.group_size=1"),
    ]]


@pytest.mark.parametrize("case", CASES, ids=ids(CASES))
def test_bad_pit_config_fails_before_any_work(case, tmp_path, monkeypatch):
    check_case(case, tmp_path, monkeypatch)

