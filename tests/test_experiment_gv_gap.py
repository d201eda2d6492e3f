"""The generation-verification gap experiment: smoke preset end to end, summary recomputed by hand from
the results file, resume, bad input fails before any model loads."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from experiments import common, gv_gap as experiment, inference_sharpening as inference
from experiments.configs import gv_gap as configs
from sharpen_jax import methods
from sharpen_jax.jsonl import read_jsonl
from bad_inputs_lib import Case, check_case, ids
from conftest import REPO

CONFIG_FILE = os.path.join(REPO, "experiments", "configs", "gv_gap.py")


def smoke_config(**overrides):
    config = configs.get_config("smoke")
    config.update(overrides)
    return config


def without_timing(summary):
    return {k: v for k, v in summary.items() if k != "timing"}


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("gv_smoke"))
    return workdir, experiment.run(smoke_config(), workdir)


@pytest.mark.slow  # the full smoke preset: minutes on the shared 2-core machine
def test_smoke_writes_results_summary_and_figures(smoke_run):
    workdir, summary = smoke_run
    config = smoke_config()
    records = read_jsonl(os.path.join(workdir, experiment.RESULTS))
    assert len(records) == sum(e.num_prompts for e in config.tasks.values())
    for record in records:
        assert len(record["samples"]) == config.num_samples
        expected = {"mc", "cot_binary", "cot_score"} | ({"tournament"} if record["task"] == "arithmetic" else set())
        assert set(record["samples"][0]["scores"]) == expected == set(record["samples"][0]["parse_failed"])
    with open(os.path.join(workdir, experiment.SUMMARY)) as f:
        assert json.load(f) == summary
    arithmetic = summary["results"]["random:0"]["arithmetic"]
    assert list(arithmetic["gaps"]) == ["mc", "cot_binary", "cot_score", "tournament",
                                        "mc@quantile:0.5+cot_score@threshold:8"]
    assert list(arithmetic["gaps"]["mc"]) == ["quantile:0.5", "quantile:0.7", "threshold:0", "exp:1"]
    assert list(arithmetic["pass_at_k"]) == ["1", "2", "3", "4"]
    report = arithmetic["verifiers"]["cot_score"]
    assert report["num_scores"] == 16 and report["parse_failures"] == sum(
        s["parse_failed"]["cot_score"] for r in records if r["task"] == "arithmetic" for s in r["samples"])
    assert set(summary["timing"]) == {"generation", "mc", "cot_binary", "cot_score", "tournament"}
    assert summary["timing"]["cot_score"]["generated_tokens"] > 0
    assert "prontoqa" in summary["results"]["random:0"] and "tournament" not in \
        summary["results"]["random:0"]["prontoqa"]["gaps"]
    figures = sorted(os.listdir(os.path.join(workdir, "figures")))
    assert figures == sorted([f"{n}_random-0.{e}" for e in ("png", "pdf") for n in ("relative_gap", "scores_hist",
                                                                                     "passk")]
                             + ["rounds.png", "rounds.pdf"])
    with open(os.path.join(workdir, experiment.SUMMARY_MD)) as f:
        text = f.read()
    assert "| mc | quantile:0.5 |" in text and "**Scaling**" in text and "**Time**" in text
    assert "**Self-improvement rounds**" in text


@pytest.mark.slow  # the full smoke preset: minutes on the shared 2-core machine
def test_rounds_evaluate_every_model_of_both_arms(smoke_run):
    workdir, summary = smoke_run
    rows = read_jsonl(os.path.join(workdir, "rounds.jsonl"))
    assert [(r["arm"], r["round"]) for r in rows] == [("self", 0), ("self", 1), ("ground_truth", 0),
                                                      ("ground_truth", 1)]
    assert summary["rounds"] == {"self": rows[:2], "ground_truth": rows[2:]}
    assert rows[0]["accuracy"] == rows[2]["accuracy"]  # f_0 is the same model with the same sampling keys
    assert rows[0]["accuracy"] == pytest.approx(summary["results"]["random:0"]["arithmetic"]["accuracy"])
    assert rows[0]["kept_rows"] >= 1 and np.isfinite(rows[0]["train_loss"]) and "train_loss" not in rows[1]
    assert list(rows[1]["pass_at_k"]) == ["1", "2", "3", "4"]


@pytest.mark.slow  # the full smoke preset: minutes on the shared 2-core machine
def test_summary_gaps_recompute_by_hand_from_the_results_file(smoke_run):
    workdir, summary = smoke_run
    rows = sorted((r for r in read_jsonl(os.path.join(workdir, experiment.RESULTS)) if r["task"] == "arithmetic"),
                  key=lambda r: r["index"])
    gains, rel = [], []
    for r in rows:  # MC at the per-prompt 0.5 quantile, written out directly
        u = [float(s["correct"]) for s in r["samples"]]
        s_ = [s["scores"]["mc"] for s in r["samples"]]
        tau = sorted(s_)[1]  # ceil(0.5 * 4) = 2nd smallest
        kept = [x for x, y in zip(u, s_) if y >= tau]
        base = sum(u) / 4
        gains.append(sum(kept) / len(kept) - base)
        if base < 1:
            rel.append(gains[-1] / (1 - base))
    entry = summary["results"]["random:0"]["arithmetic"]["gaps"]["mc"]["quantile:0.5"]
    assert entry["gap"]["mean"] == pytest.approx(np.mean(gains), abs=1e-12)
    assert entry["relative_gap"]["mean"] == pytest.approx(np.mean(rel), abs=1e-12)
    assert summary["results"]["random:0"]["arithmetic"]["accuracy"] == pytest.approx(
        np.mean([s["correct"] for r in rows for s in r["samples"]]))


@pytest.mark.slow  # the full smoke preset: minutes on the shared 2-core machine
def test_interrupted_run_resumes_to_the_same_results_and_summary(smoke_run, tmp_path):
    full_dir, full_summary = smoke_run
    workdir = str(tmp_path / "resumed")
    assert experiment.run(smoke_config(max_batches=2), workdir) is None  # 2 of 3 batches
    path = os.path.join(workdir, experiment.RESULTS)
    partial = read_jsonl(path)
    full_records = read_jsonl(os.path.join(full_dir, experiment.RESULTS))
    assert 0 < len(partial) < len(full_records)
    with open(path, "a") as f:  # crash debris: half a batch, then a line cut mid-write
        f.write(json.dumps(full_records[len(partial)]) + "\n" + json.dumps(full_records[0])[:50])
    summary = experiment.run(smoke_config(max_batches=0), workdir)
    assert without_timing(summary) == without_timing(full_summary)
    assert read_jsonl(path) == full_records
    # A resume, not a restart (which ends with the same files): the second invocation found the 2 finished
    # batches (the debris batch is redone whole) and had only the third to do.
    assert read_jsonl(os.path.join(workdir, experiment.INVOCATIONS)) == [
        {"resumed": False, "done_batches": 0, "todo_batches": 3},
        {"resumed": True, "done_batches": 2, "todo_batches": 1}]


def mini_config(**overrides):
    """The fast default-suite variant of the smoke preset: MC only, 2 arithmetic prompts in 2 batches, no rounds."""
    config = smoke_config(verifiers=("mc",), ensembles=(), **overrides)
    config.tasks = type(config.tasks)({"arithmetic": configs.task_entry(2, 1, 4, digits=1, num_train=20, num_test=8)})
    config.rounds.arms = ()
    config.prompt_batch_size = 1
    return config


def test_mini_run_end_to_end_and_resume(tmp_path):
    full = experiment.run(mini_config(), str(tmp_path / "full"))
    entry = full["results"]["random:0"]["arithmetic"]
    assert list(entry["gaps"]) == ["mc"] and entry["num_prompts"] == 2 and full["rounds"] == {}
    workdir = str(tmp_path / "resumed")
    assert experiment.run(mini_config(max_batches=1), workdir) is None
    assert len(read_jsonl(os.path.join(workdir, experiment.RESULTS))) == 1
    resumed = experiment.run(mini_config(), workdir)
    assert without_timing(resumed) == without_timing(full)
    assert read_jsonl(os.path.join(workdir, experiment.RESULTS)) == read_jsonl(
        os.path.join(str(tmp_path / "full"), experiment.RESULTS))
    # A resume, not a restart: a restart ends with the same files too (deterministic keys), but it would
    # report no finished batch. The records equal to the full run's (no duplicate) show batch 0 was not redone.
    assert read_jsonl(os.path.join(workdir, experiment.INVOCATIONS)) == [
        {"resumed": False, "done_batches": 0, "todo_batches": 2},
        {"resumed": True, "done_batches": 1, "todo_batches": 1}]


def _case(overrides: dict, message: str, *, name: str) -> Case:
    def call(tmp_path):
        config = smoke_config()
        for key, value in overrides.items():
            node = config
            *parents, last = key.split(".")
            for part in parents:
                node = node[part]
            node[last] = value
        experiment.run(config, str(tmp_path / "w"))
    return Case(f"gv_gap:{name}", call, common.ConfigError, message, workdir="w")


BAD_INPUTS = [
    _case({"verifiers": ("mc", "cot_vibes")}, r"config.verifiers\[1\]='cot_vibes' is not a verifier; valid",
          name="unknown-verifier"),
    _case({"filters.mc": ("top:0.5",)}, r"config.filters.mc\[0\]='top:0.5'; expected RULE:VALUE", name="unknown-filter"),
    _case({"filters.mc": ("quantile:0",)}, r"config.filters.mc\[0\].*quantile must lie in \(0, 1\]",
          name="quantile-zero"),
    _case({"filters.mc": ("quantile:1.2",)}, r"quantile must lie in \(0, 1\]", name="quantile-above-one"),
    _case({"filters.mc": ("exp:0",)}, "beta must be > 0", name="beta-zero"),
    _case({"filters.mc": ("exp:-2",)}, "beta must be > 0", name="beta-negative"),
    _case({"templates.cot_score": "Question: {question}\nCheck:"},
          r"config.templates.cot_score must hold \{completion\}", name="template-no-completion"),
    _case({"templates.tournament": "{question} {first}"}, r"config.templates.tournament must hold \{second\}",
          name="template-no-second"),
    _case({"templates.mc": "{completion} then {question}"}, r"config.templates.mc must put \{question\} before",
          name="template-order"),
    _case({"ensembles": ("mc@exp:1+cot_score@threshold:8",)}, "rejection filters", name="ensemble-exp"),
    _case({"ensembles": ("mc@quantile:0.5",)}, "at least two members", name="ensemble-single"),
    _case({"verifier_tasks.mc": ("gsm8k",)}, r"config.verifier_tasks.mc names tasks \['gsm8k'\]",
          name="verifier-task-unknown"),
    _case({"model_flops": (1.0, 2.0)}, "config.model_flops has 2 entries", name="flops-length"),
    _case({"num_samples": 0}, "config.num_samples", name="no-samples"),
    _case({"rounds.num_rounds": 0}, r"config.rounds.num_rounds", name="rounds-zero"),
    _case({"rounds.arms": ("self", "oracle")}, r"config.rounds.arms\[1\]='oracle'", name="rounds-unknown-arm"),
    _case({"rounds.filter": "exp:1"}, r"config.rounds.filter='exp:1'", name="rounds-exp-filter"),
    _case({"rounds.filter": "quantile:2"}, r"config.rounds.filter.*\(0, 1\]", name="rounds-quantile"),
    _case({"rounds.task": "gsm8k"}, r"config.rounds.task='gsm8k' is not one of config.tasks", name="rounds-task"),
    _case({"verifier_model": "/no/such/verifier"}, r"config.verifier_model.*/no/such/verifier", name="missing-verifier"),
]


@pytest.mark.parametrize("case", BAD_INPUTS, ids=ids(BAD_INPUTS))
def test_bad_input_is_named_before_any_model_loads(case, tmp_path, monkeypatch):
    check_case(case, tmp_path, monkeypatch)


def test_unknown_key_and_preset_are_named():
    config = smoke_config()
    config.unlock()
    config.num_round = 3
    with pytest.raises(common.ConfigError, match=r"'config.num_round'"):
        experiment.validate(config)
    with pytest.raises(common.ConfigError, match=r"unknown preset 'tiny'.*'cpu', 'cpu_cross', 'paper', 'smoke'"):
        configs.get_config("tiny")
    configs.get_config("cpu")  # the cpu preset is well formed (not run: see its docstring)


def test_the_method_is_registered():
    assert methods.loss_names("gv_gap") == ("gv_filtered_sft",)
    assert methods.get_loss("gv_filtered_sft").batch_keys == ("seqs",)


@pytest.mark.slow
def test_cli_killed_mid_run_resumes_to_the_same_results_and_summary(smoke_run, tmp_path):
    full_dir, full_summary = smoke_run
    workdir = str(tmp_path / "killed")
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""), JAX_PLATFORMS="cpu")
    command = [sys.executable, "-m", "experiments.gv_gap", f"--config={CONFIG_FILE}:smoke", "--workdir", workdir]
    process = subprocess.Popen(command, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    results = os.path.join(workdir, experiment.RESULTS)
    deadline = time.time() + 600
    while time.time() < deadline and not (os.path.exists(results) and read_jsonl(results)):
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    done = len(read_jsonl(results))
    assert 0 < done < 6, f"the run was not interrupted mid-way ({done} records)"
    units = inference.plan(smoke_config())
    finished = len(inference.finished_units(read_jsonl(results), units)[0])
    subprocess.run(command, env=env, cwd=REPO, check=True, capture_output=True, timeout=600)
    with open(os.path.join(workdir, experiment.SUMMARY)) as f:
        assert without_timing(json.load(f)) == without_timing(full_summary)
    assert read_jsonl(results) == read_jsonl(os.path.join(full_dir, experiment.RESULTS))
    # The killed invocation logged its start (before its first record); the second resumed at the finished batches.
    assert read_jsonl(os.path.join(workdir, experiment.INVOCATIONS)) == [
        {"resumed": False, "done_batches": 0, "todo_batches": len(units)},
        {"resumed": True, "done_batches": finished, "todo_batches": len(units) - finished}]


def test_filtered_dataset_holds_exactly_the_kept_samples():
    import jax

    from sharpen_jax.methods import gv_gap
    from sharpen_jax.rollouts import PromptSet

    prompts = PromptSet(np.array([[0, 5, 6], [7, 8, 9], [0, 0, 4]], np.int32),
                        np.array([[0, 1, 1], [1, 1, 1], [0, 0, 1]], bool), ("a", "b", "c"))

    def sample_fn(params, tokens_BP, valid_BP, key, n, temperature):  # sample j of prompt b = tokens (b, j)
        b = tokens_BP.shape[0]
        tokens = np.broadcast_to(tokens_BP[:, -1:, None] * 10 + np.arange(n)[None, :, None], (b, n, 2)).astype(np.int32)
        return tokens, np.ones((b, n, 2), bool), np.zeros((b, n, 2), np.float32)

    keep = lambda real, tokens, valid, logp: tokens[..., 0] % 2 == 0  # noqa: E731 (even sample ids)
    data = gv_gap.filtered_dataset(sample_fn, None, prompts, jax.random.key(0), num_samples=4, temperature=1.0,
                                   batch_size=2, keep_fn=keep)
    assert data.size == 6  # 2 of 4 samples for each of 3 prompts
    assert sorted(int(row[3]) for row in data.seqs["tokens"]) == [40, 42, 60, 62, 90, 92]  # completion starts
    assert data.seqs["target"][:, 3:].all() and not data.seqs["target"][:, :3].any()
    assert gv_gap.filtered_dataset(sample_fn, None, prompts, jax.random.key(0), num_samples=4, temperature=1.0,
                                   batch_size=2, keep_fn=lambda *a: np.zeros((a[1].shape[0], 4), bool)) is None


# The Qwen2 shapes of the report's Table 1 (arXiv 2407.10671), written out here independently of
# TransformerConfig, and the parameter counts the Hugging Face model pages give for them.
QWEN2_SHAPES = {  # d, layers, heads, kv heads, head dim, MLP width, vocab, tied, pre-training tokens
    "Qwen2-0.5B": (896, 24, 14, 2, 64, 4864, 151936, True, 12e12),
    "Qwen2-1.5B": (1536, 28, 12, 2, 128, 8960, 151936, True, 7e12),
    "Qwen2-7B": (3584, 28, 28, 4, 128, 18944, 152064, False, 7e12)}
QWEN2_PUBLISHED = {"Qwen2-0.5B": 494_032_768, "Qwen2-1.5B": 1_543_714_304, "Qwen2-7B": 7_615_616_512}


def test_paper_preset_flops_are_6_n_d_of_the_hand_counted_models():
    config = configs.get_config("paper")
    assert [os.path.basename(m) for m in config.models] == list(QWEN2_SHAPES)
    for (name, (d, layers, heads, kv, hd, f, vocab, tied, tokens)), flops in zip(QWEN2_SHAPES.items(),
                                                                                  config.model_flops):
        attention = 2 * d * heads * hd + 2 * d * kv * hd + (heads + 2 * kv) * hd  # q, o, k, v and the qkv biases
        count = vocab * d * (1 if tied else 2) + layers * (attention + 3 * d * f + 2 * d) + d
        assert count == QWEN2_PUBLISHED[name]
        assert flops == pytest.approx(6 * count * tokens, rel=1e-12)
