"""The inference-sharpening experiment: smoke preset end to end, exact resume, bad input fails early."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import matplotlib.image
import numpy as np
import pytest

from experiments import common, inference_sharpening as experiment
from experiments.configs import inference_sharpening as configs
from sharpen_jax import sampling
from sharpen_jax.jsonl import read_jsonl
from conftest import REPO

CONFIG_FILE = os.path.join(REPO, "experiments", "configs", "inference_sharpening.py")


def smoke_config(**overrides):
    config = configs.get_config("smoke")
    config.update(overrides)
    return config


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("smoke"))
    return workdir, experiment.run(smoke_config(), workdir)


def test_smoke_writes_results_summary_and_figures(smoke_run):
    workdir, summary = smoke_run
    config = smoke_config()
    records = read_jsonl(os.path.join(workdir, experiment.RESULTS))
    assert len(records) == len(config.models) * sum(e.num_prompts for e in config.tasks.values())
    for record in records:
        assert len(record["samples"]) == config.num_samples
        assert set(record["samples"][0]) == {"text", "extracted", "correct", "num_tokens", "finished", "rewards"}
        assert set(record["greedy"]) == {"text", "extracted", "correct", "num_tokens"}
        assert set(record["samples"][0]["rewards"]) == set(config.rewards)
        assert record["prompt"].endswith("Answer:") and record["question"] in record["prompt"]
    with open(os.path.join(workdir, experiment.SUMMARY)) as f:
        assert json.load(f) == summary
    for model in config.models:
        for task in config.tasks:
            table = summary["results"][model][task]
            assert list(table["best_of_n"]) == list(config.rewards)
            assert list(table["best_of_n"]["majority"]) == ["1", "2", "4"]
            assert table["num_samples"] == config.num_samples
    figures = sorted(os.listdir(os.path.join(workdir, "figures")))
    assert figures == sorted(f"{name}.{ext}" for ext in ("png", "pdf") for name in (
        "accuracy_vs_n_random-0", "accuracy_vs_n_random-1", "loglik_hist_random-0", "loglik_hist_random-1",
        "lift_heatmap"))
    for name in figures:
        path = os.path.join(workdir, "figures", name)
        assert os.path.getsize(path) > 5000
        if name.endswith(".png"):
            pixels = matplotlib.image.imread(path)
            assert pixels.shape[0] > 100 and pixels[..., :3].std() > 0.05  # drawn on, not a blank canvas


def test_stored_rewards_recompute_from_the_records(smoke_run):
    """Independent oracles for every stored reward: votes counted by hand, length-normalized x tokens
    = log-likelihood, and the log-likelihood rescored with the teacher-forced scorer (not the sampler)."""
    workdir, _ = smoke_run
    records = read_jsonl(os.path.join(workdir, experiment.RESULTS))
    for record in records:
        samples = record["samples"]
        answers = [s["extracted"] for s in samples]
        loglik = [s["rewards"]["log_likelihood"] for s in samples]
        for j, s in enumerate(samples):
            votes = 0 if answers[j] is None else answers.count(answers[j])
            below = sum(loglik[k] < loglik[j] or (loglik[k] == loglik[j] and k > j) for k in range(len(samples)))
            assert s["rewards"]["majority"] == pytest.approx(votes + (below + 1) / (len(samples) + 1), abs=1e-12)
            assert s["rewards"]["length_normalized"] * max(s["num_tokens"], 1) == pytest.approx(
                s["rewards"]["log_likelihood"], rel=1e-9, abs=1e-12)
            assert s["rewards"]["log_likelihood"] < 0 and s["num_tokens"] >= 1
    # (The smoke models are random, so no two answers agree here; counts above 1 are checked against a
    # brute-force majority in tests/test_best_of_n.py.)
    # Rescore the first batch: its sampling key is a function of (seed, model, task, batch), so the same
    # tokens come back; the scorer's sum over each completion must equal the stored log-likelihood.
    config = smoke_config()
    task_objects = experiment.validate(config)
    unit = experiment.plan(config)[0]
    policy = experiment.load_spec(unit.model, config, None)
    task, entry = task_objects[unit.task], config.tasks[unit.task]
    examples = [task.examples(config.split)[i] for i in unit.indices]
    prompt_tokens = [policy.tokenizer.encode(task.format_prompt(ex, num_shots=entry.num_shots)) for ex in examples]
    stop = sampling.StopSpec.from_tokenizer(policy.tokenizer, task.stop)
    out = sampling.sample(policy.params, policy.config, prompt_tokens, num_samples=config.num_samples,
                          temperature=config.temperature, top_k=config.top_k, top_p=config.top_p,
                          rng=experiment.unit_rng(config, unit), max_new_tokens=entry.max_new_tokens, stop=stop,
                          max_rows=config.max_rows, pad_id=policy.tokenizer.pad_id)
    token_logprobs = experiment.rescore(policy, prompt_tokens, out, batch_size=config.score_batch_size)
    stored = [r for r in records if (r["model"], r["task"], r["batch"]) == (unit.model, unit.task, unit.batch)]
    assert [r["index"] for r in stored] == list(unit.indices)
    for i, record in enumerate(stored):
        for j, s in enumerate(record["samples"]):
            assert s["num_tokens"] == int(out.lengths[i, j])
            assert s["rewards"]["log_likelihood"] == pytest.approx(float(token_logprobs[i, j].sum()), abs=1e-4)


def test_interrupted_run_resumes_to_the_same_results_and_summary(smoke_run, tmp_path):
    full_dir, full_summary = smoke_run
    workdir = str(tmp_path / "resumed")
    assert experiment.run(smoke_config(max_batches=4), workdir) is None  # stops after 4 of 6 batches
    path = os.path.join(workdir, experiment.RESULTS)
    partial = read_jsonl(path)
    assert 0 < len(partial) < len(read_jsonl(os.path.join(full_dir, experiment.RESULTS)))
    # Crash debris: the first record of the next batch, then a line cut off mid-write.
    full_records = read_jsonl(os.path.join(full_dir, experiment.RESULTS))
    with open(path, "a") as f:
        f.write(json.dumps(full_records[len(partial)]) + "\n" + json.dumps(full_records[0])[:50])
    assert not os.path.exists(os.path.join(workdir, experiment.SUMMARY))
    summary = experiment.run(smoke_config(max_batches=0), workdir)
    assert summary == full_summary
    assert read_jsonl(path) == full_records
    # A resume, not a restart (which would end with the same files): the second invocation started at
    # the first unfinished batch (the debris batch is redone whole) and ran only the remaining ones.
    num_units = len(experiment.plan(smoke_config()))
    assert num_units == 6
    assert read_jsonl(os.path.join(workdir, experiment.INVOCATIONS)) == [
        {"resumed": False, "done_batches": 0, "todo_batches": 6, "first_batch": 0, "ran_batches": 4},
        {"resumed": True, "done_batches": 4, "todo_batches": 2, "first_batch": 4, "ran_batches": 2}]


def test_resume_with_a_different_config_is_refused(smoke_run):
    workdir, _ = smoke_run
    with pytest.raises(common.ConfigError, match=r"config\.num_samples"):
        experiment.run(smoke_config(num_samples=8, ns=(1, 8)), workdir)


def test_rescoring_under_the_sampling_model_reproduces_the_sampler_logprobs():
    import jax
    from sharpen_jax.config import TransformerConfig
    from sharpen_jax.model import init_params

    config = TransformerConfig.tiny(vocab_size=50)
    params = init_params(config, jax.random.key(3))
    prompts = [[1, 2, 3, 4, 5], [7, 8], [9, 10, 11]]
    out = sampling.sample(params, config, prompts, num_samples=3, max_new_tokens=6, temperature=1.0,
                          stop=sampling.StopSpec.from_token_bytes([bytes([65 + i % 26]) for i in range(50)],
                                                                  eos_ids=(0, 1, 2)),
                          rng=jax.random.key(0))
    assert out.lengths.min() < 6  # some rows end early, so right-padding is exercised
    model = experiment.LoadedModel("random:3", config, params, type("Tok", (), {"pad_id": 0})())
    logprobs = experiment.rescore(model, prompts, out, batch_size=4)
    np.testing.assert_allclose(logprobs, out.model_logprobs, atol=1e-5)


@pytest.fixture
def no_sampling(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("sampling started before the bad input was reported")
    monkeypatch.setattr(sampling, "sample", fail)


def test_unknown_config_key_names_the_key_and_the_valid_ones(tmp_path, no_sampling):
    config = smoke_config()
    config.unlock()
    config.tasks.arithmetic.num_prompt = 3
    with pytest.raises(common.ConfigError, match=r"config\.tasks\.arithmetic\.num_prompt.*num_prompts"):
        experiment.run(config, str(tmp_path / "w"))
    config = smoke_config()
    config.unlock()
    config.temprature = 0.5
    with pytest.raises(common.ConfigError, match=r"'config\.temprature'.*'temperature'"):
        experiment.run(config, str(tmp_path / "w"))
    assert not os.path.exists(tmp_path / "w")


def test_missing_model_path_fails_before_sampling(tmp_path, no_sampling):
    with pytest.raises(common.ConfigError, match=r"config\.models\[0\]: .*/no/such/model"):
        experiment.run(smoke_config(models=("/no/such/model",)), str(tmp_path / "w"))
    with pytest.raises(common.ConfigError, match=r"config\.reward_model: .*/no/such/reference"):
        experiment.run(smoke_config(reward_model="/no/such/reference"), str(tmp_path / "w"))
    assert not os.path.exists(tmp_path / "w")


def test_unregistered_task_fails_before_sampling(tmp_path, no_sampling):
    config = smoke_config()
    config.unlock()
    config.tasks.nosuchtask = configs.task_entry(2, 0, 4)
    with pytest.raises(ValueError, match="unknown task 'nosuchtask'; known tasks: .*arithmetic"):
        experiment.run(config, str(tmp_path / "w"))


def test_other_bad_values_fail_before_sampling(tmp_path, no_sampling):
    cases = [(dict(rewards=("log_likelihood", "vibes")), "vibes"), (dict(ns=(1, 64)), "num_samples=4"),
             (dict(models=("random:x",)), "random:SEED")]
    for overrides, message in cases:
        with pytest.raises(common.ConfigError, match=message):
            experiment.run(smoke_config(**overrides), str(tmp_path / "w"))
    config = smoke_config()
    config.tasks.arithmetic.num_prompts = 1000
    with pytest.raises(common.ConfigError, match="num_prompts=1000"):
        experiment.run(config, str(tmp_path / "w"))


def test_unknown_preset_lists_presets():
    with pytest.raises(common.ConfigError, match=r"unknown preset 'tiny'.*'cpu', 'cpu_gemma3', 'paper', 'smoke'"):
        configs.get_config("tiny")


def _cli(workdir, *flags):
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""), JAX_PLATFORMS="cpu")
    return [sys.executable, "-m", "experiments.inference_sharpening", f"--config={CONFIG_FILE}:smoke",
            "--workdir", workdir, *flags], env


def test_cli_rejects_an_unknown_key_in_a_config_file(tmp_path):
    config_file = tmp_path / "bad_config.py"
    config_file.write_text("from experiments.configs import inference_sharpening as base\n\n"
                           "def get_config(preset=None):\n    c = base.get_config('smoke')\n"
                           "    c.num_sample = 3\n    return c\n")
    command, env = _cli(str(tmp_path / "w"))
    command[3] = f"--config={config_file}"
    result = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode != 0
    assert "unknown config key 'config.num_sample'" in result.stderr and "'num_samples'" in result.stderr


def test_command_line_override_of_an_unknown_key_names_the_valid_ones():
    argv = ["prog", f"--config={CONFIG_FILE}:smoke", "--config.tasks.prontoqa.num_shot=2"]
    with pytest.raises(common.ConfigError, match=r"'config\.tasks\.prontoqa\.num_shot'.*'num_shots'"):
        common.check_overrides(argv)
    common.check_overrides(["prog", f"--config={CONFIG_FILE}:smoke", "--config.tasks.prontoqa.num_shots=2"])


@pytest.mark.slow
def test_cli_killed_mid_run_resumes_to_the_same_summary(smoke_run, tmp_path):
    full_dir, full_summary = smoke_run
    workdir = str(tmp_path / "killed")
    command, env = _cli(workdir)
    process = subprocess.Popen(command, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    results = os.path.join(workdir, experiment.RESULTS)
    deadline = time.time() + 600
    while time.time() < deadline and not (os.path.exists(results) and read_jsonl(results)):
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    done = len(read_jsonl(results))
    assert 0 < done < 12, f"the run was not interrupted mid-way ({done} records)"
    units = experiment.plan(smoke_config())
    finished = len(experiment.finished_units(read_jsonl(results), units)[0])
    subprocess.run(_cli(workdir)[0], env=env, cwd=REPO, check=True, capture_output=True, timeout=600)
    with open(os.path.join(workdir, experiment.SUMMARY)) as f:
        assert json.load(f) == full_summary
    assert read_jsonl(results) == read_jsonl(os.path.join(full_dir, experiment.RESULTS))
    # The killed invocation wrote no record; the second one resumed at the first unfinished batch.
    assert read_jsonl(os.path.join(workdir, experiment.INVOCATIONS)) == [
        {"resumed": True, "done_batches": finished, "todo_batches": len(units) - finished,
         "first_batch": finished, "ran_batches": len(units) - finished}]
