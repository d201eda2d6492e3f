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


def _file_config(tmp, rows=None, **changes):
    """The smoke config on a preference file of 24 one-digit sums written in `tmp` (or `rows`)."""
    rows = rows if rows is not None else [json.dumps({"prompt": f"{i % 9}+1=", "chosen": f"{i % 9 + 1}",
                                                      "rejected": f"{i % 9 + 2}"}) for i in range(24)]
    (tmp / "pairs.jsonl").write_text("".join(r + "\n" for r in rows))
    cfg = _config(**{"task.name": "preference_file", "task.num_shots": 0, "task.num_train_prompts": 16,
                     "task.num_eval_prompts": 6, "pit.kinds": "file", "pit.preference_file": str(tmp / "pairs.jsonl"),
                     "pit.preference_format": "jsonl"})
    cfg.task.options = {}
    for key, value in changes.items():
        section, name = key.split(".")
        cfg[section][name] = value
    return cfg


FILE_CASES = [
    Case(f"pit file {label}", lambda tmp, rows=rows, changes=changes: experiment.run(
        _file_config(tmp, rows, **changes), str(tmp / "wd")), ConfigError, message, workdir="wd")
    for label, rows, changes, message in [
        ("kinds", None, {"pit.kinds": "solver"}, r"config\.pit\.kinds='solver'.*expected 'file'"),
        ("task name", None, {"task.name": "arithmetic"}, r"config\.task\.name='arithmetic'.*'preference_file'"),
        ("shots", None, {"task.num_shots": 2}, r"config\.task\.num_shots=2.*expected 0"),
        ("missing", None, {"pit.preference_file": "/nonexistent/p*.jsonl"}, r"preference_file=.*matches no file"),
        ("format", None, {"pit.preference_format": "csv"}, r"config\.pit\.preference_format='csv'"),
        ("held out", None, {"task.num_eval_prompts": 24}, r"24 held-out pairs of 24"),
        ("train", None, {"task.num_train_prompts": 19}, r"19 training pairs asked for"),
        ("bad row", ['{"prompt": "1+1=", "chosen": "2", "rejected": "3"}', "{not json"],
         {}, r"pairs\.jsonl:2: malformed JSON"),
        ("held-out file", None, {"pit.held_out_file": "/nonexistent/test.jsonl"},
         r"config\.pit\.held_out_file=.*matches no file"),
    ]] + [Case("pit kind file without a file", lambda tmp: experiment.run(_config(**{"pit.kinds": "solver,file"}),
                                                                          str(tmp / "wd")),
               ConfigError, r"config\.pit\.kinds=.*'file' is the pairs of config\.pit\.preference_file",
               workdir="wd")]


@pytest.mark.parametrize("case", CASES + FILE_CASES, ids=ids(CASES + FILE_CASES))
def test_bad_pit_config_fails_before_any_work(case, tmp_path, monkeypatch):
    check_case(case, tmp_path, monkeypatch)



def test_file_run_judges_the_iterates_with_r_pit_and_refuses_a_changed_file(tmp_path):
    """The smoke preset on a preference file: no base-model table (no grader), R_PIT's held-out accuracy
    on the file's held-out pairs, R_PIT's verdicts per iteration (at t = 1 the previous response is y^0,
    so the two gaps agree exactly); a finished run is reported; an edited file refuses the resume."""
    cfg = _file_config(tmp_path)
    results = experiment.run(cfg, str(tmp_path / "wd"))
    assert results["before"] == {} and results["preference_pairs"] == {"file": 16}
    assert results["reward_model"]["pairs"] == 6 and 0.0 <= results["reward_model"]["accuracy"] <= 1.0
    for model, row in results["after"]["T=0.6"].items():
        assert len(row["gap_vs_first"]) == len(row["delta_vs_first"]) == cfg.pit.num_iterations, model
        assert row["gap_vs_previous"][0] == row["gap_vs_first"][0], model
        assert all(abs(d * 6 - round(d * 6)) < 1e-9 and -1 <= d <= 1 for d in row["delta_vs_first"]), model
    assert experiment.run(cfg, str(tmp_path / "wd"))["after"] == results["after"]
    with open(tmp_path / "pairs.jsonl", "a") as f:
        f.write(json.dumps({"prompt": "1+1=", "chosen": "2", "rejected": "3"}) + "\n")
    with pytest.raises(ConfigError, match="preference_files"):
        experiment.run(cfg, str(tmp_path / "wd"))
