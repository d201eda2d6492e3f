"""Iterative self-improvement rounds of the gap experiment (Song et al., 2024, Sec. 5, Alg. 1).

For each arm and round t = 0..K-1, starting from f_0 = the first model of the config:
  1. sample N completions per training prompt from f_t (`methods.gv_gap.filtered_dataset`);
  2. verify them with f_t itself (`config.rounds.verifier`);
  3. keep those that `config.rounds.filter` passes (a per-prompt quantile in the paper) — the
     "self" arm — or those the task's grader marks correct — the "ground_truth" control arm
     (threshold 1 on u: ground-truth labels, not a quantile, so a prompt without a correct sample
     contributes nothing);
  4. f_{t+1} = SFT (LoRA) on the kept rows (`methods.gv_gap.train_on_kept`); f_{t+1} = f_t when
     nothing was kept.
Every f_t (t = 0..K) is evaluated on the task's test prompts of the run: J(f_t), the gap and
relative gap of its self-verification under the same filter, and pass@k for every k.

Resumption: an arm's rows are appended to rounds.jsonl once all its rounds are done; an arm cut
short is redone from f_0 with the same keys, so it ends with the same rows.
"""

from __future__ import annotations

import os
import zlib

import jax
import numpy as np

from experiments import common
from experiments.models import LoadedModel
from sharpen_jax import rollouts
from sharpen_jax.jsonl import append_jsonl, read_jsonl
from sharpen_jax.methods import gv_gap
from sharpen_jax.selection import gap, gv_verifiers
from sharpen_jax.selection.rewards import RewardInputs

ROUNDS = "rounds.jsonl"
ARMS = ("self", "ground_truth")


def validate(config, task_objects) -> None:
    """Check config.rounds (nothing to check when it has no arms); errors name the key."""
    r = config.rounds
    if not r.arms:
        return
    for i, arm in enumerate(r.arms):
        if arm not in ARMS:
            raise common.ConfigError(f"config.rounds.arms[{i}]={arm!r}; expected one of {list(ARMS)}")
    common.check_int(config, "rounds.num_rounds", 1)
    for key in ("num_train_prompts", "steps", "batch_size"):
        common.check_int(config, f"rounds.{key}", 1)
    common.check_int(config, "rounds.lora_rank", 0)
    common.check_float(config, "rounds.learning_rate", minimum=0.0, strict_minimum=True)
    common.check_float(config, "rounds.lora_alpha", minimum=0.0, strict_minimum=True)
    if r.task not in config.tasks:
        raise common.ConfigError(f"config.rounds.task={r.task!r} is not one of config.tasks {list(config.tasks)}")
    try:
        gv_verifiers.check_verifier_name(r.verifier, where="config.rounds.verifier")
        if gap.Filter.parse(r.filter, where="config.rounds.filter").rule == "exp":
            raise ValueError(f"config.rounds.filter={r.filter!r}; the rounds keep samples by a rejection filter")
    except ValueError as err:
        raise common.ConfigError(str(err)) from None
    available = len(task_objects[r.task].examples("train"))
    if r.num_train_prompts > available:
        raise common.ConfigError(f"config.rounds.num_train_prompts={r.num_train_prompts}; the train split of "
                                 f"{r.task!r} has {available} examples")


def round_row(records: list[dict], verifier: str, f: gap.Filter, *, num_resamples: int, seed: int) -> dict:
    """J(f_t), the gap and relative gap (bootstrap SEs) of f_t's self-verification under `f`, pass@k for
    every k."""
    rows = sorted(records, key=lambda r: r["index"])
    correct_BN = np.array([[s["correct"] for s in r["samples"]] for r in rows], bool)
    scores_BN = np.array([[s["scores"][verifier] for s in r["samples"]] for r in rows], np.float64)
    entry = gap.gap_entry(correct_BN, f.weights(scores_BN), gap.bootstrap_indices(len(rows), num_resamples, seed))
    return {"accuracy": float(correct_BN.mean()), "gap": entry["gap"], "relative_gap": entry["relative_gap"],
            "pass_at_k": gv_gap.pass_at_every_k(correct_BN)}


def run_rounds(config, workdir: str, task, policy: LoadedModel, evaluate, settings: gv_gap.VerifierSettings,
               mesh=None) -> dict[str, list[dict]]:
    """Run (or resume) every arm; returns {arm: [row of f_0, ..., row of f_K]}. `evaluate(model)` returns
    the results records of `model` on the task's test prompts, verified by `model` itself."""
    r = config.rounds
    path = os.path.join(workdir, ROUNDS)
    done = {row["arm"]: [] for row in read_jsonl(path)}
    for row in read_jsonl(path):
        done[row["arm"]].append(row)
    if not r.arms or all(arm in done for arm in r.arms):
        return {arm: done[arm] for arm in r.arms}
    entry, f = config.tasks[r.task], gap.Filter.parse(r.filter)
    tok = policy.tokenizer
    train = list(task.examples("train"))[:r.num_train_prompts]
    prompts = rollouts.encode_prompts(tok, task, train, entry.num_shots)
    sample_fn = rollouts.make_sampler(policy.config, tok, max_new_tokens=entry.max_new_tokens, stop_strings=task.stop,
                                      max_rows=config.max_rows, mesh=mesh)
    for arm in r.arms:
        if arm in done:
            continue
        params, rows = policy.params, []
        for t in range(r.num_rounds + 1):
            model = LoadedModel(policy.spec, policy.config, params, tok)
            row = {"arm": arm, "round": t, **round_row(evaluate(model), r.verifier, f,
                                                       num_resamples=config.num_bootstrap, seed=config.seed)}
            if t < r.num_rounds:
                keep = _keep_fn(arm, model, task, settings, r.verifier, f, mesh)
                key = jax.random.fold_in(jax.random.key(config.seed), zlib.crc32(f"{arm}:{t}".encode()))
                dataset = gv_gap.filtered_dataset(sample_fn, params, prompts, key, num_samples=config.num_samples,
                                                  temperature=config.temperature, batch_size=config.prompt_batch_size,
                                                  keep_fn=keep)
                loss = None  # nothing kept: f_{t+1} = f_t
                if dataset is not None:
                    params, loss = gv_gap.train_on_kept(policy.config, params, dataset, num_steps=r.steps,
                                                        batch_size=r.batch_size, learning_rate=r.learning_rate,
                                                        lora_rank=r.lora_rank, lora_alpha=r.lora_alpha,
                                                        seed=config.seed)
                row.update(kept_rows=0 if dataset is None else dataset.size, train_loss=loss)
            rows.append(row)
        common.write_on_main(append_jsonl, path, rows)
        done[arm] = rows
    return {arm: done[arm] for arm in r.arms}


def _keep_fn(arm: str, model: LoadedModel, task, settings, verifier: str, f: gap.Filter, mesh):
    """The training filter of an arm: f_t's verifier under `f` ("self"), or the grader ("ground_truth")."""
    verify = gv_gap.make_verifiers(model.params, model.config, model.tokenizer, settings, [verifier], mesh)[verifier]

    def keep(real, tokens_BNC, valid_BNC, logp_BNC):
        texts = [rollouts.completion_texts(model.tokenizer, tokens_BNC[i], valid_BNC[i], task.stop)
                 for i in range(len(real))]
        if arm == "ground_truth":
            return np.array([[task.grade(ex, t).correct for t in row] for ex, row in zip(real.examples, texts)], bool)
        inputs = RewardInputs.build(list(real.texts), [ex.question for ex in real.examples], texts, logp_BNC,
                                    np.asarray(valid_BNC).sum(-1).astype(np.int64),
                                    [[None] * len(row) for row in texts])
        return f.weights(verify(inputs).scores_BN) > 0

    return keep
