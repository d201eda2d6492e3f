"""Bad-input corpus, part 2: workdirs, checkpoints, data files, results files and the command line.
Each case is a clear error naming the input and what was expected, before any model loads, and it
changes no file that existed (`bad_inputs_lib.check_case`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from bad_inputs_lib import Case, check_case, ids
from conftest import REPO
from experiments import common, inference_sharpening, sft_sharpening, workdir as workdir_lib
from experiments.configs import inference_sharpening as inference_configs
from experiments.configs import sft_sharpening as sft_configs
from sharpen_jax import tasks
from sharpen_jax.jsonl import JsonlError
from sharpen_jax.methods import sft_sharpening as sft_method
from sharpen_jax.testing import CharTokenizer
from sharpen_jax.training import CheckpointError, Checkpointer

GOOD_GSM8K = json.dumps({"question": "What is 1 + 2?", "answer": "1 + 2 = 3\n#### 3"})


def _write(tmp_path, name: str, content: str | bytes) -> str:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return str(path)


def _inference_in(tmp_path, files: dict, **overrides):
    """Run the inference smoke preset in tmp_path/w after writing `files` there."""
    for name, content in files.items():
        _write(tmp_path, f"w/{name}", content)
    config = inference_configs.get_config("smoke")
    config.update(overrides)
    inference_sharpening.run(config, str(tmp_path / "w"))


def _sft_in(tmp_path, files: dict, **overrides):
    for name, content in files.items():
        _write(tmp_path, f"w/{name}", content)
    config = sft_configs.get_config("smoke")
    config.update(overrides)
    sft_sharpening.run(config, str(tmp_path / "w"))


def _started_inference_workdir(tmp_path, **changes):
    """A workdir holding config.json/identity.json of the smoke preset (as a started run writes them) and
    one results record, with `changes` applied to the recorded config."""
    config = inference_configs.get_config("smoke")
    task_objects = inference_sharpening.validate(config)
    workdir = str(tmp_path / "w")
    workdir_lib.prepare_workdir(workdir, config, inference_sharpening.identity(config, task_objects),
                                ignore=inference_sharpening.RUN_CONTROL_KEYS)
    recorded = json.loads((tmp_path / "w" / "config.json").read_text())
    recorded.update(changes)
    (tmp_path / "w" / "config.json").write_text(json.dumps(recorded))
    (tmp_path / "w" / "results.jsonl").write_text(json.dumps({"model": "random:0", "task": "arithmetic",
                                                              "batch": 0, "index": 0}) + "\n")
    return workdir


def _resume_with_changed_identity(tmp_path):
    workdir = _started_inference_workdir(tmp_path)
    identity = json.loads((tmp_path / "w" / "identity.json").read_text())
    identity["data"]["arithmetic"]["test_sha256"] = "0" * 64  # the data the run read has changed since
    (tmp_path / "w" / "identity.json").write_text(json.dumps(identity))
    inference_sharpening.run(inference_configs.get_config("smoke"), workdir)


def _resume_with_changed_config(tmp_path):
    workdir = _started_inference_workdir(tmp_path, seed=5)
    inference_sharpening.run(inference_configs.get_config("smoke"), workdir)


def _resume_without_identity(tmp_path):
    workdir = _started_inference_workdir(tmp_path)
    os.remove(os.path.join(workdir, "identity.json"))
    inference_sharpening.run(inference_configs.get_config("smoke"), workdir)


def _resume_with_bad_results_line(tmp_path):
    workdir = _started_inference_workdir(tmp_path)
    with open(os.path.join(workdir, "results.jsonl"), "a") as f:
        f.write("{not json\n" + json.dumps({"model": "random:0"}) + "\n")
    inference_sharpening.run(inference_configs.get_config("smoke"), workdir)


def _locked(tmp_path):
    workdir = tmp_path / "w"
    workdir.mkdir()
    with workdir_lib.WorkdirLock(str(workdir)):  # this process holds it: a second run must refuse
        inference_sharpening.run(inference_configs.get_config("smoke"), str(workdir))


def _checkpoint_dir(tmp_path, damage: str):
    """A checkpoint directory with one step, damaged as named."""
    directory = str(tmp_path / "ckpt")
    tree = {"params": {"w": np.arange(6, dtype=np.float32)}, "step": np.int32(3)}
    with Checkpointer(directory, async_save=False) as ckpt:
        ckpt.save(3, tree, {"position": 3})
    step_dir = os.path.join(directory, "3")
    for folder, _, files in os.walk(step_dir):
        for name in files:
            path = os.path.join(folder, name)
            if (damage == "metadata" and name.startswith("_METADATA")) or (
                    damage == "arrays" and "state" in folder and not name.startswith("_")):
                with open(path, "wb") as f:
                    f.write(b"garbage{")
    if damage == "empty":
        import shutil

        shutil.rmtree(step_dir)
        os.makedirs(step_dir)
    return directory, tree


def _restore_damaged(damage):
    def call(tmp_path):
        directory, tree = _checkpoint_dir(tmp_path, damage)
        with Checkpointer(directory) as ckpt:
            ckpt.restore(tree)
    return call


def _gsm8k_file(line: str):
    def call(tmp_path):
        path = _write(tmp_path, "data/test.jsonl", f"{GOOD_GSM8K}\n{line}\n{GOOD_GSM8K}\n")
        tasks.get("gsm8k", files={"test": path}).examples("test")
    return call


def _results_file(content: str, **kwargs):
    def call(tmp_path):
        path = _write(tmp_path, "results.jsonl", content)
        sft_method.results_file_dataset(path, CharTokenizer(), prompt_length=8, completion_length=4, **kwargs)
    return call


def _cli(*args):
    """The inference CLI in-process; SystemExit carries what it printed on stderr."""
    def call(tmp_path):
        import contextlib
        import io

        stderr = io.StringIO()
        argv = ["inference_sharpening", *[a.replace("TMP", str(tmp_path)) for a in args]]
        old = sys.argv
        sys.argv = argv
        try:
            with contextlib.redirect_stderr(stderr):
                common.main(inference_sharpening.run, inference_configs)
        except SystemExit as exit_:
            exit_.stderr_text = stderr.getvalue()
            raise
        finally:
            sys.argv = old
            from absl import flags

            flags.FLAGS.unparse_flags()
    return call


SMOKE = os.path.join(REPO, "experiments", "configs", "inference_sharpening.py")
RESULT = json.dumps({"prompt": "Q: 1+1\nA:", "samples": [{"text": " 2", "rewards": {"log_likelihood": -1.0}}]})

CASES = [
    # workdirs
    Case("workdir:results-without-config", lambda t: _inference_in(t, {"results.jsonl": RESULT + "\n"}),
         workdir_lib.WorkdirError, r"holds \['results\.jsonl'\] but no config\.json.*nothing was changed"),
    Case("workdir:checkpoints-without-config", lambda t: _sft_in(t, {"checkpoints/3/x": "x"}),
         workdir_lib.WorkdirError, r"holds \['checkpoints'\] but no config\.json"),
    Case("workdir:metrics-without-config", lambda t: _sft_in(t, {"metrics.jsonl": "{}\n"}),
         workdir_lib.WorkdirError, r"holds \['metrics\.jsonl'\] but no config\.json"),
    Case("workdir:config-differs", _resume_with_changed_config, workdir_lib.WorkdirError,
         r"different config \(differs at \['config\.seed'\]\)"),
    Case("workdir:identity-differs", _resume_with_changed_identity, workdir_lib.WorkdirError,
         r"other data, models or package version \(differs at \['identity\.data\.arithmetic\.test_sha256'\]\)"),
    Case("workdir:identity-missing", _resume_without_identity, workdir_lib.WorkdirError,
         r"has a config\.json but no identity\.json"),
    Case("workdir:garbage-config-json", lambda t: _inference_in(t, {"config.json": "{oops", "results.jsonl": RESULT}),
         workdir_lib.WorkdirError, r"w/config\.json: not a JSON file"),
    Case("workdir:config-json-not-utf8", lambda t: _inference_in(t, {"config.json": b"\xff\xfe{}",
                                                                      "results.jsonl": RESULT}),
         workdir_lib.WorkdirError, r"w/config\.json: not a JSON file"),
    Case("workdir:is-a-file", lambda t: (open(t / "w", "w").write("x"),
                                         inference_sharpening.run(inference_configs.get_config("smoke"), str(t / "w"))),
         (workdir_lib.WorkdirError, FileExistsError, NotADirectoryError), r"w"),
    Case("workdir:in-use", _locked, workdir_lib.WorkdirError, r"is in use by process \d+"),
    Case("workdir:bad-results-line", _resume_with_bad_results_line, JsonlError,
         r"w/results\.jsonl:2: malformed JSON"),
    # checkpoints
    Case("checkpoint:garbage-metadata", _restore_damaged("metadata"), CheckpointError,
         r"no readable checkpoint in .*ckpt \(steps \[3\] are all damaged\); delete that directory"),
    Case("checkpoint:truncated-arrays", _restore_damaged("arrays"), CheckpointError, r"no readable checkpoint"),
    Case("checkpoint:empty-step-dir", _restore_damaged("empty"), (CheckpointError, FileNotFoundError),
         r"ckpt"),
    Case("checkpoint:none", lambda t: Checkpointer(str(t / "none")).restore({"w": np.zeros(2)}), FileNotFoundError,
         r"no checkpoint to restore in .*none"),
    # task data files
    Case("data:gsm8k-malformed-json", _gsm8k_file('{"question": "q"'), tasks.TaskDataError,
         r"test\.jsonl:2: malformed JSON"),
    Case("data:gsm8k-not-object", _gsm8k_file('["q", "#### 3"]'), tasks.TaskDataError,
         r"test\.jsonl:2: expected a JSON object, got list"),
    Case("data:gsm8k-missing-field", _gsm8k_file('{"question": "q"}'), tasks.TaskDataError,
         r"test\.jsonl:2: expected string field\(s\) \['answer'\]"),
    Case("data:gsm8k-no-final-answer", _gsm8k_file('{"question": "q", "answer": "three"}'), tasks.TaskDataError,
         r"test\.jsonl:2: .*#### <number>"),
    Case("data:gsm8k-not-utf8", lambda t: tasks.get("gsm8k", files={"test": _write(
        t, "data/test.jsonl", GOOD_GSM8K.encode() + b'\n{"question": "\xff"}\n')}).examples("test"),
         tasks.TaskDataError, r"test\.jsonl:2: not UTF-8 text"),
    Case("data:game24-bad-header", lambda t: tasks.get("game24", csv_path=_write(t, "24.csv", "A,B\n1,2\n"))
         .examples("test"), tasks.TaskDataError, r"24\.csv:1: expected columns Rank and Puzzles"),
    Case("data:game24-unsolvable", lambda t: tasks.get("game24", csv_path=_write(
        t, "24.csv", "Rank,Puzzles\n950,1 1 1 1\n")).examples("test"), tasks.TaskDataError, r"24\.csv:2: .*cannot make 24"),
    Case("data:game24-three-numbers", lambda t: tasks.get("game24", csv_path=_write(
        t, "24.csv", "Rank,Puzzles\n950,1 2 3\n")).examples("test"), tasks.TaskDataError,
         r"24\.csv:2: expected four numbers, got \[1, 2, 3\]"),
    Case("data:game24-rank-not-int", lambda t: tasks.get("game24", csv_path=_write(
        t, "24.csv", "Rank,Puzzles\nfirst,1 2 3 4\n")).examples("test"), tasks.TaskDataError,
         r"24\.csv:2: expected an integer Rank"),
    # results files for SFT
    Case("results-file:bad-line", _results_file(f"{RESULT}\n{{oops\n{RESULT}\n"), JsonlError,
         r"results\.jsonl:2: malformed JSON"),
    Case("results-file:missing-reward", _results_file(f"{RESULT}\n", reward="majority"), ValueError,
         r"results\.jsonl:1: a sample has no reward 'majority'"),
    Case("results-file:no-samples", _results_file(json.dumps({"prompt": "p"}) + "\n"), ValueError,
         r"results\.jsonl:1: expected 'prompt' with 'samples' or 'completion'"),
    Case("results-file:no-prompt", _results_file(json.dumps({"completion": " 2"}) + "\n"), ValueError,
         r"results\.jsonl:1: the record has no 'prompt'"),
    Case("results-file:empty", _results_file("\n"), ValueError, r"SFT dataset is empty: .*results\.jsonl"),
    Case("results-file:not-object", _results_file("[1, 2]\n"), JsonlError,
         r"results\.jsonl:1: expected a JSON object, got list"),
    # the command line (in-process: the same code path as `python -m experiments.inference_sharpening`)
    Case("cli:no-flags", _cli(), SystemExit, r"error: --config=FILE:PRESET and --workdir=DIR are required"),
    Case("cli:no-workdir", _cli(f"--config={SMOKE}:smoke"), SystemExit, r"--workdir=DIR are required"),
    Case("cli:missing-config-file", _cli("--config=/no/such/config.py:smoke", "--workdir=TMP/w"), SystemExit,
         r"error: .*config file '/no/such/config\.py' does not exist"),
    Case("cli:unknown-preset", _cli(f"--config={SMOKE}:tiny", "--workdir=TMP/w"), SystemExit,
         r"^error: flag --config=\S+:tiny: unknown preset 'tiny'; valid presets: \['cpu', 'cpu_gemma3', 'paper', "
         r"'smoke'\]\n\(for the traceback"),
    Case("cli:unknown-override", _cli(f"--config={SMOKE}:smoke", "--config.num_sample=3", "--workdir=TMP/w"),
         SystemExit, r"error: unknown config key 'config\.num_sample'.*'num_samples'"),
    Case("cli:override-wrong-type", _cli(f"--config={SMOKE}:smoke", "--config.num_samples=many", "--workdir=TMP/w"),
         SystemExit, r"error: .*num_samples.*many"),
    Case("cli:bad-value", _cli(f"--config={SMOKE}:smoke", "--config.top_p=2.0", "--workdir=TMP/w"), SystemExit,
         r"error: config\.top_p=2\.0; expected .*<= 1\.0\n\(for the traceback run again with --verbose"),
    Case("cli:positional", _cli(f"--config={SMOKE}:smoke", "--workdir=TMP/w", "extra"), SystemExit,
         r"error: unexpected positional arguments: \['extra'\]"),
]


@pytest.mark.parametrize("case", CASES, ids=ids(CASES))
def test_bad_file_or_workdir_is_a_clear_early_error(case, tmp_path, monkeypatch):
    err = check_case(case, tmp_path, monkeypatch)
    if isinstance(err, SystemExit):
        assert err.code == 2, f"{case.id}: exit status {err.code}"


def test_help_lists_flags_and_presets_and_exits_0():
    result = subprocess.run([sys.executable, "-m", "experiments.inference_sharpening", "--help"], cwd="/",
                            capture_output=True, text=True, timeout=300,
                            env={**os.environ, "PYTHONPATH": REPO})
    assert result.returncode == 0, result.stderr
    for expected in ("--config=experiments/configs/inference_sharpening.py:PRESET", "--workdir=DIR", "--verbose",
                     "smoke, cpu, cpu_gemma3, paper", "defaults()"):
        assert expected in result.stdout


def test_readme_gives_the_size_of_each_part_of_the_corpus():
    """README.md's "What is verified" counts the corpus, per file and in all; the counts are these lists' sizes."""
    import re

    import test_bad_inputs_api
    import test_bad_inputs_configs

    with open(os.path.join(REPO, "README.md")) as f:
        text = " ".join(f.read().split())
    found = re.search(r"a committed corpus of (\d+) bad inputs \(`tests/test_bad_inputs_configs\.py`: (\d+) .*?"
                      r"`tests/test_bad_inputs_files\.py`: (\d+) .*?`tests/test_bad_inputs_api\.py`: (\d+) ", text)
    assert found, "README.md no longer counts the bad-input corpus"
    sizes = [len(test_bad_inputs_configs.CASES), len(CASES), len(test_bad_inputs_api.CASES)]
    assert [int(n) for n in found.groups()] == [sum(sizes), *sizes]
