"""Inference-time sharpening: best-of-N with self-rewards against greedy, one sample and pass@N.

    python -m experiments.inference_sharpening \\
        --config=experiments/configs/inference_sharpening.py:cpu --workdir runs/inference_cpu

For every model and task (Huang et al., 2024, Section 5): the first `num_prompts` test questions
are asked with k-shot prompts; greedy decoding gives the baseline; N_max completions are sampled
at temperature 1 and scored with each self-reward (`sharpen_jax.rewards`) under the reward model;
best-of-N accuracy at each N <= N_max is estimated by subsampling (`selection.best_of_n`).

The workdir receives
  config.json    the config the run started with (a resumed run must match it),
  results.jsonl  one JSON line per prompt: the greedy completion and, for each sample, its text,
                 extracted answer, correctness, length and every reward, so any table or figure can
                 be recomputed without resampling,
  summary.json   the accuracy table per model, task, reward and N, with standard errors,
  summary.md     the same table as markdown, and figures/ (experiments.plots),
  invocations.jsonl  one line per invocation that got through its sampling loop: whether it resumed,
                 how many batches were already done, the plan position of the first batch it ran
                 and how many it ran (what tells a resume from a restart).
Prompts are processed in fixed batches of `prompt_batch_size` whose sampling keys depend only on
(seed, model, task, batch), and each finished batch is appended to results.jsonl at once; an
interrupted run started again with the same command skips the finished batches and ends with
the same results and summary as an uninterrupted run.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import os
import zlib

import jax
import numpy as np
import tqdm

from experiments import common, plan as plans, plots
from experiments.configs import inference_sharpening as configs
from experiments.models import LoadedModel, check_model_spec, load_model
from experiments.workdir import WorkdirLock, experiment_identity, prepare_workdir
from sharpen_jax import distributed, rollouts, sampling, tasks
from sharpen_jax.jsonl import append_jsonl, read_jsonl, rewrite_jsonl, write_json, write_text
from sharpen_jax.selection import best_of_n, rewards, verifiers
from sharpen_jax.stopping import StopSpec
from sharpen_jax.tokenizer import pad_batch

RESULTS, SUMMARY, SUMMARY_MD, INVOCATIONS = "results.jsonl", "summary.json", "summary.md", "invocations.jsonl"
RUN_CONTROL_KEYS = ("progress", "max_batches", common.DISTRIBUTED_KEY)  # may change between a run and its resumption


@dataclasses.dataclass(frozen=True)
class Unit:
    """One resumable unit of work: a batch of consecutive prompts of one task for one model."""

    model: str
    task: str
    batch: int
    indices: tuple[int, ...]


def validate(config) -> dict[str, tasks.Task]:
    """Check the whole config before any model is loaded or sampled; returns the task objects."""
    template = configs.task_entry(1, 0, 1)
    common.check_keys(config, configs.defaults(), each={"config.tasks": template}, free=("config.tasks.*.options",))
    common.check_distributed(config)
    if not config.models:
        raise common.ConfigError("config.models is empty; give at least one model")
    common.check_choice(config, "dtype", ("", "float32", "bfloat16", "float16"))
    common.check_int(config, "num_samples", 1)
    common.check_float(config, "temperature", minimum=0.0)
    common.check_int(config, "top_k", 0)
    common.check_float(config, "top_p", minimum=0.0, maximum=1.0, strict_minimum=True)
    for key in ("prompt_batch_size", "max_rows", "score_batch_size", "num_draws", "max_exact_subsets",
                "model_parallel"):
        common.check_int(config, key, 1)
    common.check_int(config, "seed", 0)
    common.check_int(config, "max_batches", 0)
    for key in config.random_model:
        common.check_int(config, f"random_model.{key}", 1)
    if not config.rewards:
        raise common.ConfigError(f"config.rewards is empty; give at least one of {list(rewards.NAMES)}")
    for i, name in enumerate(config.rewards):
        try:
            rewards.check_reward_name(name, where=f"config.rewards[{i}]")
        except ValueError as err:
            raise common.ConfigError(str(err)) from None
    bad_ns = [n for n in config.ns if not 1 <= n <= config.num_samples]
    if bad_ns or not config.ns:
        raise common.ConfigError(f"config.ns={tuple(config.ns)} must be in [1, num_samples={config.num_samples}]")
    if not config.tasks:
        raise common.ConfigError("config.tasks is empty; give at least one task")
    if "verifier" in config.rewards:
        try:
            verifiers.split_template(config.verifier_template)
        except ValueError as err:
            raise common.ConfigError(f"config.verifier_template: {err}") from None
    for where, spec in [*((f"config.models[{i}]", m) for i, m in enumerate(config.models)),
                        ("config.reward_model", config.reward_model)]:
        if spec:
            check_model_spec(spec, config.tokenizer, where=where)
    return check_tasks(config)


def check_tasks(config) -> dict:
    """The config's data_dir and task entries (num_shots, max_new_tokens, the registered task, num_prompts
    against the split's size), checked before any work; the task objects by entry name."""
    if config.data_dir and not os.path.isdir(config.data_dir):
        raise common.ConfigError(f"config.data_dir={config.data_dir!r} is not a directory")
    task_objects = {}
    for name, entry in config.tasks.items():
        common.check_int(config, f"tasks.{name}.num_shots", 0)
        common.check_int(config, f"tasks.{name}.max_new_tokens", 1)
        try:
            task = tasks.get(entry.task or name, data_dir=config.data_dir or None, **entry.options.to_dict())
            available = len(task.examples(config.split))
        except (KeyError, TypeError, ValueError, FileNotFoundError) as err:
            raise common.ConfigError(f"config.tasks.{name}: {err}") from None
        if not 1 <= entry.num_prompts <= available:
            raise common.ConfigError(f"config.tasks.{name}.num_prompts={entry.num_prompts}; the {config.split!r} "
                                     f"split of {name!r} has {available} examples")
        task_objects[name] = task
    return task_objects


def identity(config, task_objects: dict[str, tasks.Task]) -> dict:
    """The run's identity (`workdir.experiment_identity`): every model's fingerprint and every task's data."""
    return experiment_identity(config, [*config.models, config.reward_model], task_objects)


def plan(config) -> list[Unit]:
    """All units of the run in processing order: models, then tasks, then prompt batches."""
    units = []
    for model in config.models:
        for name, entry in config.tasks.items():
            for batch, start in enumerate(range(0, entry.num_prompts, config.prompt_batch_size)):
                stop = min(start + config.prompt_batch_size, entry.num_prompts)
                units.append(Unit(model, name, batch, tuple(range(start, stop))))
    return units


def load_spec(spec: str, config, mesh) -> LoadedModel:
    """`experiments.models.load_model` with this config's tokenizer, toy-model shape and dtype."""
    return load_model(spec, tokenizer_spec=config.tokenizer, random_shape=config.random_model.to_dict(),
                      dtype=config.dtype, mesh=mesh)


def unit_rng(config, unit: Unit) -> jax.Array:
    """The sampling key of a unit: depends on the seed, model, task and batch only."""
    key = jax.random.key(config.seed)
    for part in (zlib.crc32(unit.model.encode()), zlib.crc32(unit.task.encode()), unit.batch):
        key = jax.random.fold_in(key, part)
    return key


def rescore(ref: LoadedModel, prompt_tokens, out: sampling.SampleOutput, batch_size: int) -> np.ndarray:
    """Per-token log-probs of the sampled completions under the reward model, float32[B, N, M]
    (`rollouts.rescore`, prompts left-padded to a multiple of 64 tokens so few shapes compile)."""
    width = -(-max(len(p) for p in prompt_tokens) // 64) * 64
    prompts = pad_batch(prompt_tokens, ref.tokenizer.pad_id, "left", width)
    valid_BNM = np.arange(out.tokens.shape[-1]) < out.lengths[..., None]
    return rollouts.rescore(ref.params, ref.config, prompts.tokens, prompts.valid, out.tokens, valid_BNM,
                            batch_size=batch_size)


def run_unit(config, unit: Unit, task, stop: StopSpec, policy: LoadedModel, ref: LoadedModel, reward_fns, mesh,
             bar) -> list[dict]:
    """Sample, grade and score one batch of prompts; returns its results.jsonl records."""
    entry = config.tasks[unit.task]
    examples = [task.examples(config.split)[i] for i in unit.indices]
    prompts = [task.format_prompt(ex, num_shots=entry.num_shots) for ex in examples]
    encode = functools.lru_cache(maxsize=None)(lambda i: policy.tokenizer.encode(prompts[i]))
    # on a mesh each process encodes only the prompt rows it supplies to the sampler
    source = sampling.LocalPrompts(len(prompts), lambda idx: [encode(int(i)) for i in idx]) if mesh is not None \
        else [encode(i) for i in range(len(prompts))]
    common_args = dict(max_new_tokens=entry.max_new_tokens, stop=stop, mesh=mesh, max_rows=config.max_rows,
                       pad_id=policy.tokenizer.pad_id)
    bar.set_postfix_str(f"{unit.task}: greedy")
    greedy = sampling.sample(policy.params, policy.config, source, num_samples=1, temperature=0.0,
                             **common_args)
    bar.set_postfix_str(f"{unit.task}: sampling")
    out = sampling.sample(policy.params, policy.config, source, num_samples=config.num_samples,
                          temperature=config.temperature, top_k=config.top_k, top_p=config.top_p,
                          rng=unit_rng(config, unit), **common_args)
    decode = lambda o, i, j: stop.cut_text(policy.tokenizer.decode(o.tokens[i, j, :o.lengths[i, j]]))[0]  # noqa: E731
    texts = [[decode(out, i, j) for j in range(config.num_samples)] for i in range(len(examples))]
    grades = [[task.grade(ex, text) for text in row] for ex, row in zip(examples, texts)]
    bar.set_postfix_str(f"{unit.task}: scoring")
    token_logprobs = out.model_logprobs if ref is policy else rescore(
        ref, [encode(i) for i in range(len(prompts))], out, config.score_batch_size)
    inputs = rewards.RewardInputs.build(prompts, [ex.question for ex in examples], texts, token_logprobs,
                                        out.lengths, [[g.extracted for g in row] for row in grades])
    scores = {name: fn(inputs) for name, fn in reward_fns.items()}
    records = []
    for i, ex in enumerate(examples):
        greedy_text = decode(greedy, i, 0)
        greedy_grade = task.grade(ex, greedy_text)
        samples = [{"text": texts[i][j], "extracted": grades[i][j].extracted, "correct": grades[i][j].correct,
                    "num_tokens": int(out.lengths[i, j]), "finished": bool(out.finished[i, j]),
                    "rewards": {name: float(s[i, j]) for name, s in scores.items()}}
                   for j in range(config.num_samples)]
        records.append({"model": unit.model, "task": unit.task, "batch": unit.batch, "index": unit.indices[i],
                        "id": ex.id, "question": ex.question, "reference": ex.answer, "prompt": prompts[i],
                        "greedy": {"text": greedy_text, "extracted": greedy_grade.extracted,
                                   "correct": greedy_grade.correct, "num_tokens": int(greedy.lengths[i, 0])},
                        "samples": samples})
    return records


def finished_units(records: list[dict], units: list[Unit]) -> tuple[set[Unit], list[dict]]:
    """Units whose every prompt has a record, and the records of those units only (partial ones dropped)."""
    present = collections.defaultdict(set)
    for r in records:
        present[(r["model"], r["task"], r["batch"])].add(r["index"])
    done = {u for u in units if present.get((u.model, u.task, u.batch)) == set(u.indices)}
    keys = {(u.model, u.task, u.batch) for u in done}
    return done, [r for r in records if (r["model"], r["task"], r["batch"]) in keys]


def pending_units(path: str, units: list[Unit]) -> tuple[set[Unit], list[Unit]]:
    """The finished units of results file `path` and the units still to do, in order; a batch cut short
    by a kill is dropped from the file (it is redone whole)."""
    records = read_jsonl(path)
    done, kept = finished_units(records, units)
    if len(kept) != len(records):
        common.write_on_main(rewrite_jsonl, path, kept)
    distributed.barrier("results read")  # no process reads results.jsonl after process 0 appends to it
    return done, [u for u in units if u not in done]


def summarize(records: list[dict], config) -> dict:
    """summary.json: per model and task, greedy / single-sample / pass@N / best-of-N per reward at each N."""
    table: dict = {}
    for (model, task), arrays in plots.task_arrays(records).items():
        fixed = {name: arrays.rewards[name] for name in config.rewards if name != "majority"}
        subset = {}
        if "majority" in config.rewards:
            ids_BN, loglik_BN = rewards.answer_ids(arrays.answers), arrays.rewards["log_likelihood"]
            subset["majority"] = lambda idx: rewards.majority_scores(  # noqa: E731
                np.take_along_axis(ids_BN[:, None], idx, -1), np.take_along_axis(loglik_BN[:, None], idx, -1))
        result = best_of_n.summarize(arrays.correct, arrays.greedy, config.ns, fixed, subset,
                                     max_exact_subsets=config.max_exact_subsets, num_draws=config.num_draws,
                                     seed=config.seed)
        result["best_of_n"] = {name: result["best_of_n"][name] for name in config.rewards}
        table.setdefault(model, {})[task] = result
    return {"experiment": "inference_sharpening", "ns": list(config.ns), "rewards": list(config.rewards),
            "temperature": config.temperature, "results": table}


def run(config, workdir: str) -> dict | None:
    """Run (or resume) the experiment; returns the summary, or None when stopped by max_batches."""
    common.start_distributed(config)
    task_objects = validate(config)
    with WorkdirLock(workdir):
        return _run(config, workdir, task_objects)


def _run(config, workdir: str, task_objects) -> dict | None:
    """`run` once the config is valid and the workdir locked."""
    resumed = prepare_workdir(workdir, config, identity(config, task_objects), ignore=RUN_CONTROL_KEYS)
    path = os.path.join(workdir, RESULTS)
    units = plan(config)
    done, todo = pending_units(path, units)
    if not todo:
        print(f"all {len(units)} prompt batches of this run are done; rewriting the summary and figures")
    else:
        print(f"{'resuming' if resumed else 'starting'}: {len(todo)} of {len(units)} prompt batches to do; outputs "
              f"go to {workdir}")
    budget = config.max_batches or len(todo)
    mesh = distributed.global_mesh(data=-1, model=config.model_parallel) if config.shard else None
    bar = tqdm.tqdm(total=sum(len(u.indices) for u in todo), desc="prompts", unit="prompt", disable=not config.progress)
    reference = load_spec(config.reward_model, config, mesh) if config.reward_model and todo else None
    ran: list[Unit] = []
    for model in config.models:
        mine = [u for u in todo[:budget] if u.model == model]
        if not mine:
            continue
        policy = load_spec(model, config, mesh)
        ref = reference or policy
        if ref.tokenizer.token_bytes() != policy.tokenizer.token_bytes():
            raise common.ConfigError(f"reward model {config.reward_model!r} has a different vocabulary from {model!r}; "
                                     f"rescoring needs both to share a tokenizer")
        reward_fns = {name: rewards.BUILTIN[name] for name in ("log_likelihood", *config.rewards) if name != "verifier"}
        if "verifier" in config.rewards:
            reward_fns["verifier"] = verifiers.make_verifier_reward(
                ref.params, ref.config, ref.tokenizer, template=config.verifier_template,
                batch_size=config.score_batch_size, progress=config.progress)
        stops = {name: StopSpec.from_tokenizer(policy.tokenizer, task.stop) for name, task in task_objects.items()}
        for unit in mine:
            bar.set_description(f"{os.path.basename(model)}")
            common.write_on_main(append_jsonl, path, run_unit(config, unit, task_objects[unit.task], stops[unit.task],
                                                              policy, ref, reward_fns, mesh, bar))
            bar.update(len(unit.indices))
            ran.append(unit)
    bar.close()
    common.write_on_main(append_jsonl, os.path.join(workdir, INVOCATIONS), [{
        "resumed": resumed, "done_batches": len(done), "todo_batches": len(todo),
        "first_batch": units.index(ran[0]) if ran else None, "ran_batches": len(ran)}])
    if budget < len(todo):
        print(f"stopped after max_batches={config.max_batches} batches; run the same command again to resume")
        return None
    distributed.barrier("results written")  # process 0 has appended every batch
    summary = summarize(read_jsonl(path), config)
    common.write_on_main(write_json, os.path.join(workdir, SUMMARY), summary)
    common.write_on_main(write_text, os.path.join(workdir, SUMMARY_MD), plots.markdown_tables(summary))
    figures = common.write_on_main(plots.make_figures, workdir) or []
    print(plots.markdown_tables(summary))
    print(f"results: {path}\nsummary: {os.path.join(workdir, SUMMARY)}\nfigures: {', '.join(figures)}")
    return summary


def dry_run(config, *, devices: int, tokens_per_s: float = 0.0) -> str:
    """Validate `config` and print what the run does and costs, reading only each model's config
    (`experiments.plan`): per model, greedy + N samples of every prompt, the reward model's (or
    verifier's) forward passes, and memory per device on the run's mesh."""
    validate(config)
    used = devices if config.shard else 1
    mesh = plans.mesh_for(used, data=-1, model=config.model_parallel if config.shard else 1)
    n, entries = config.num_samples, list(config.tasks.values())
    prompts = sum(e.num_prompts for e in entries)
    generated = sum(e.num_prompts * (1 + n) * e.max_new_tokens for e in entries)
    forward = sum(e.num_prompts * n * (plans.PROMPT_TOKENS + e.max_new_tokens) for e in entries)
    passes = bool(config.reward_model) + ("verifier" in config.rewards)
    cache_tokens = max(e.max_new_tokens for e in entries)
    reward_config = (plans.model_config(config.reward_model, config.tokenizer, config.random_model.to_dict(),
                                        config.dtype) if config.reward_model else None)
    memory, lines = {}, []
    for spec in config.models:
        model_config = plans.model_config(spec, config.tokenizer, config.random_model.to_dict(), config.dtype)
        memory[spec] = plans.inference_memory(model_config, mesh, plans.sampler_cache_bytes(
            model_config, n, config.max_rows, cache_tokens, mesh))
        if reward_config is not None:
            memory[spec]["reward model parameters"] = plans.inference_memory(reward_config, mesh, 0)["parameters"]
        lines.append(f"model {spec}: {model_config.num_params() / 1e9:.3f}B parameters, {model_config.param_dtype}")
    lines += [f"mesh {dict(mesh.shape)} on {used} device(s)",
              f"tasks: {', '.join(f'{k} ({e.num_prompts} prompts, {e.num_shots}-shot, <= {e.max_new_tokens} tokens)' for k, e in config.tasks.items())}",
              f"per model: {prompts:,} prompts x (greedy + N = {n} samples); rewards {', '.join(config.rewards)}"
              + (f"; {passes} scoring pass(es) per sample" if passes else "; log-likelihoods from the sampler")]
    summary = plans.Plan(lines=tuple(lines), generated_tokens=len(config.models) * generated,
                         scored_tokens=len(config.models) * passes * forward, memory=memory)
    return plans.report(summary, used, tokens_per_s)


if __name__ == "__main__":
    common.main(run, configs, dry_run)
