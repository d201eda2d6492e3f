"""The generation-verification gap (Song et al., 2024, "Mind the Gap"): how much verifier filtering adds.

    python -m experiments.gv_gap --config=experiments/configs/gv_gap.py:cpu --workdir runs/gv_gap_cpu

For every generator and task: the first `num_prompts` test questions are asked with k-shot
prompts; N completions are sampled (temperature, top-p) and graded (u); each verifier of the config
scores them (û, `sharpen_jax.selection.gv_verifiers`) under the verifier model (the generator
itself unless `verifier_model` is set: cross-verification); every filter of the verifier and every
AND ensemble reweights them, and the gap and per-prompt relative gap are estimated with bootstrap
standard errors over prompts (`sharpen_jax.methods.gv_gap`, `sharpen_jax.selection.gap`).

The workdir receives
  config.json    the config the run started with (a resumed run must match it),
  results.jsonl  one JSON line per prompt: every sample with its text, answer, u, and û and parse
                 failure per verifier, so every table can be recomputed without resampling,
  timing.jsonl   seconds per prompt batch for generation and each verifier, and tokens generated,
  rounds.jsonl   the self-improvement rounds (`experiments.gv_gap_rounds`): per arm and round t,
                 J(f_t), the gap and relative gap of f_t's self-verification, pass@k for every k,
  summary.json   per model and task: J(f), the gap and relative gap per verifier / filter and
                 ensemble, pass@k for every k, parse failures and score distributions, the
                 scaling table (relative gap against pre-training FLOPs) and where the time went,
  summary.md     the same as markdown, and figures/ (experiments.gv_gap_report).
Prompt batches are resumable units as in `experiments.inference_sharpening`: sampling keys depend
only on (seed, model, task, batch), finished batches are appended at once, and an interrupted run
started again ends with the same results and summary (apart from the timing section).
"""

from __future__ import annotations

import os
import time

import numpy as np
import tqdm

from experiments import common, gv_gap_report as report, gv_gap_rounds as rounds, inference_sharpening as inference
from experiments import plan as plans
from experiments.configs import gv_gap as configs
from experiments.models import LoadedModel, check_model_spec
from experiments.workdir import WorkdirLock, experiment_identity, prepare_workdir
from sharpen_jax import distributed, sampling, tasks
from sharpen_jax.jsonl import append_jsonl, read_jsonl, write_json, write_text
from sharpen_jax.methods import gv_gap
from sharpen_jax.selection import gap, rewards
from sharpen_jax.stopping import StopSpec

RESULTS, TIMING, SUMMARY, SUMMARY_MD, INVOCATIONS = ("results.jsonl", "timing.jsonl", "summary.json", "summary.md",
                                                     "invocations.jsonl")
RUN_CONTROL_KEYS = ("progress", "max_batches", common.DISTRIBUTED_KEY)


def settings(config) -> gv_gap.VerifierSettings:
    """The verifier settings of the config."""
    return gv_gap.VerifierSettings(
        templates=config.templates.to_dict(), mc_words=tuple(config.mc_words),
        tournament_words=tuple(config.tournament_words), cot_max_new_tokens=config.cot_max_new_tokens,
        cot_stop=tuple(config.cot_stop), batch_size=config.score_batch_size, max_rows=config.max_rows, seed=config.seed)


def filters(config) -> dict[str, list[gap.Filter]]:
    """The parsed filters of each configured verifier."""
    return {name: [gap.Filter.parse(spec, where=f"config.filters.{name}[{i}]")
                   for i, spec in enumerate(config.filters[name])] for name in config.verifiers}


def ensembles(config) -> dict[str, list]:
    """The parsed AND ensembles by their spec."""
    return {spec: gv_gap.parse_ensemble(spec, where=f"config.ensembles[{i}]") for i, spec in enumerate(config.ensembles)}


def validate(config) -> dict[str, tasks.Task]:
    """Check the whole config before any model is loaded or sampled; returns the task objects."""
    template = configs.task_entry(1, 0, 1)
    common.check_keys(config, configs.defaults(), each={"config.tasks": template}, free=("config.tasks.*.options",))
    common.check_distributed(config)
    if not config.models:
        raise common.ConfigError("config.models is empty; give at least one model")
    if len(config.model_flops) not in (0, len(config.models)):
        raise common.ConfigError(f"config.model_flops has {len(config.model_flops)} entries; config.models has "
                                 f"{len(config.models)} (give one per model, or none)")
    common.check_choice(config, "dtype", ("", "float32", "bfloat16", "float16"))
    common.check_int(config, "num_samples", 1)
    common.check_float(config, "temperature", minimum=0.0)
    common.check_int(config, "top_k", 0)
    common.check_float(config, "top_p", minimum=0.0, maximum=1.0, strict_minimum=True)
    for key in ("prompt_batch_size", "max_rows", "score_batch_size", "num_bootstrap", "model_parallel",
                "cot_max_new_tokens"):
        common.check_int(config, key, 1)
    common.check_int(config, "seed", 0)
    common.check_int(config, "max_batches", 0)
    if not config.verifiers:
        raise common.ConfigError("config.verifiers is empty; give at least one of mc, cot_binary, cot_score, "
                                 "tournament")
    try:
        gv_gap.check_settings(settings(config), config.verifiers)
        for name in config.verifiers:
            if name not in config.filters or not config.filters[name]:
                raise ValueError(f"config.filters has no filter for verifier {name!r}")
        filters(config)
        for spec, members in ensembles(config).items():
            absent = [name for name, _ in members if name not in config.verifiers]
            if absent:
                raise ValueError(f"config.ensembles entry {spec!r} uses verifiers {absent} not in config.verifiers")
    except ValueError as err:
        raise common.ConfigError(str(err)) from None
    for name, names in config.verifier_tasks.items():
        unknown = [t for t in names if t not in config.tasks]
        if unknown:
            raise common.ConfigError(f"config.verifier_tasks.{name} names tasks {unknown} not in config.tasks")
    for where, spec in [*((f"config.models[{i}]", m) for i, m in enumerate(config.models)),
                        ("config.verifier_model", config.verifier_model)]:
        if spec:
            check_model_spec(spec, config.tokenizer, where=where)
    task_objects = inference.check_tasks(config)
    rounds.validate(config, task_objects)
    return task_objects


def identity(config, task_objects: dict[str, tasks.Task]) -> dict:
    """The run's identity (`workdir.experiment_identity`): every model's fingerprint and every task's data."""
    return experiment_identity(config, [*config.models, config.verifier_model], task_objects)


def verifiers_for(config, task: str) -> list[str]:
    """The configured verifiers that run on `task` (`config.verifier_tasks`)."""
    return [n for n in config.verifiers if not config.verifier_tasks.get(n, ()) or task in config.verifier_tasks[n]]


def run_unit(config, unit: inference.Unit, task, stop: StopSpec, policy: LoadedModel, verify_fns, mesh,
             names: list[str] | None = None) -> tuple[list[dict], dict]:
    """Sample, grade and verify one batch of prompts (by `names`, default the task's configured verifiers);
    its results.jsonl records and its timing record."""
    entry = config.tasks[unit.task]
    examples = [task.examples(config.split)[i] for i in unit.indices]
    prompts = [task.format_prompt(ex, num_shots=entry.num_shots) for ex in examples]
    start = time.perf_counter()
    out = sampling.sample(policy.params, policy.config, [policy.tokenizer.encode(p) for p in prompts],
                          num_samples=config.num_samples, max_new_tokens=entry.max_new_tokens,
                          temperature=config.temperature, top_k=config.top_k, top_p=config.top_p, stop=stop,
                          rng=inference.unit_rng(config, unit), mesh=mesh, max_rows=config.max_rows,
                          pad_id=policy.tokenizer.pad_id)
    seconds = {"generation": time.perf_counter() - start}
    texts = [[stop.cut_text(policy.tokenizer.decode(out.tokens[i, j, :out.lengths[i, j]]))[0]
              for j in range(config.num_samples)] for i in range(len(examples))]
    grades = [[task.grade(ex, text) for text in row] for ex, row in zip(examples, texts)]
    inputs = rewards.RewardInputs.build(prompts, [ex.question for ex in examples], texts, out.model_logprobs,
                                        out.lengths, [[g.extracted for g in row] for row in grades])
    names = names or verifiers_for(config, unit.task)
    results, verify_seconds = gv_gap.run_verifiers({n: verify_fns[n] for n in names}, inputs)
    seconds.update(verify_seconds)
    records = []
    for i, ex in enumerate(examples):
        samples = [{"text": texts[i][j], "extracted": grades[i][j].extracted, "correct": grades[i][j].correct,
                    "num_tokens": int(out.lengths[i, j]),
                    "scores": {n: float(results[n].scores_BN[i, j]) for n in names},
                    "parse_failed": {n: bool(results[n].failed_BN[i, j]) for n in names}}
                   for j in range(config.num_samples)]
        records.append({"model": unit.model, "task": unit.task, "batch": unit.batch, "index": unit.indices[i],
                        "id": ex.id, "question": ex.question, "reference": ex.answer, "prompt": prompts[i],
                        "samples": samples})
    timing = {"model": unit.model, "task": unit.task, "batch": unit.batch, "seconds": seconds,
              "tokens": {"generation": int(out.lengths.sum()), **{n: r.processed_tokens for n, r in results.items()}},
              "generated_tokens": {"generation": int(out.lengths.sum()),
                                   **{n: r.generated_tokens for n, r in results.items()}}}
    return records, timing


def summarize(records: list[dict], config, timing: list[dict], round_rows: dict | None = None) -> dict:
    """summary.json: per model and task the gap tables (`methods.gv_gap.task_summary`), the scaling
    table and the timing section."""
    table: dict = {}
    parsed_filters, parsed_ensembles = filters(config), ensembles(config)
    for (model, task), rows in report.group(records).items():
        correct_BN = np.array([[s["correct"] for s in r["samples"]] for r in rows], bool)
        names = list(rows[0]["samples"][0]["scores"])
        scores = {n: np.array([[s["scores"][n] for s in r["samples"]] for r in rows], np.float64) for n in names}
        failed = {n: np.array([[s["parse_failed"][n] for s in r["samples"]] for r in rows], bool) for n in names}
        table.setdefault(model, {})[task] = gv_gap.task_summary(
            correct_BN, scores, failed, parsed_filters, parsed_ensembles, num_resamples=config.num_bootstrap,
            seed=config.seed)
    flops = dict(zip(config.models, config.model_flops))
    return {"experiment": "gv_gap", "verifiers": list(config.verifiers), "num_samples": config.num_samples,
            "temperature": config.temperature, "top_p": config.top_p, "results": table,
            "scaling": report.scaling_rows(table, flops), "rounds": round_rows or {},
            "timing": report.timing_table(timing)}


def run(config, workdir: str) -> dict | None:
    """Run (or resume) the experiment; returns the summary, or None when stopped by max_batches."""
    common.start_distributed(config)
    task_objects = validate(config)
    with WorkdirLock(workdir):
        return _run(config, workdir, task_objects)


def _run(config, workdir: str, task_objects) -> dict | None:
    """`run` once the config is valid and the workdir locked."""
    resumed = prepare_workdir(workdir, config, identity(config, task_objects), ignore=RUN_CONTROL_KEYS)
    path, timing_path = os.path.join(workdir, RESULTS), os.path.join(workdir, TIMING)
    units = inference.plan(config)
    done, todo = inference.pending_units(path, units)
    common.write_on_main(append_jsonl, os.path.join(workdir, INVOCATIONS), [{"resumed": resumed, "done_batches": len(done),
                                                       "todo_batches": len(todo)}])
    print(f"{'resuming' if resumed else 'starting'}: {len(todo)} of {len(units)} prompt batches to do; outputs go "
          f"to {workdir}")
    budget = config.max_batches or len(todo)
    mesh = distributed.global_mesh(data=-1, model=config.model_parallel) if config.shard else None
    bar = tqdm.tqdm(total=sum(len(u.indices) for u in todo), desc="prompts", unit="prompt", disable=not config.progress)
    load = lambda spec: inference.load_spec(spec, config, mesh)  # noqa: E731
    verifier = load(config.verifier_model) if config.verifier_model and todo else None
    for model in config.models:
        mine = [u for u in todo[:budget] if u.model == model]
        if not mine:
            continue
        policy = load(model)
        judge = verifier or policy
        verify_fns = gv_gap.make_verifiers(judge.params, judge.config, judge.tokenizer, settings(config),
                                           config.verifiers, mesh)
        stops = {name: StopSpec.from_tokenizer(policy.tokenizer, task.stop) for name, task in task_objects.items()}
        for unit in mine:
            records, timing = run_unit(config, unit, task_objects[unit.task], stops[unit.task], policy, verify_fns,
                                       mesh)
            common.write_on_main(append_jsonl, path, records)
            common.write_on_main(append_jsonl, timing_path, [timing])
            bar.update(len(unit.indices))
    bar.close()
    if budget < len(todo):
        print(f"stopped after max_batches={config.max_batches} batches; run the same command again to resume")
        return None
    distributed.barrier("results written")  # process 0 has appended every batch
    round_rows = run_rounds(config, workdir, task_objects, mesh, load)
    summary = summarize(read_jsonl(path), config, read_jsonl(timing_path), round_rows)
    common.write_on_main(write_json, os.path.join(workdir, SUMMARY), summary)
    common.write_on_main(write_text, os.path.join(workdir, SUMMARY_MD), report.markdown(summary))
    figures = common.write_on_main(report.make_figures, workdir, summary) or []
    print(report.markdown(summary))
    print(f"results: {path}\nsummary: {os.path.join(workdir, SUMMARY)}\nfigures: {', '.join(figures)}")
    return summary


def run_rounds(config, workdir: str, task_objects, mesh, load) -> dict:
    """The self-improvement rounds of config.models[0] (`experiments.gv_gap_rounds`), evaluated on the
    rounds task's test prompts with the same sampling keys as the gap units."""
    r = config.rounds
    if not r.arms:
        return {}
    task = task_objects[r.task]
    units = [u for u in inference.plan(config) if u.model == config.models[0] and u.task == r.task]

    def evaluate(model: LoadedModel) -> list[dict]:
        fns = gv_gap.make_verifiers(model.params, model.config, model.tokenizer, settings(config), [r.verifier], mesh)
        stop = StopSpec.from_tokenizer(model.tokenizer, task.stop)
        return [rec for u in units for rec in run_unit(config, u, task, stop, model, fns, mesh, [r.verifier])[0]]

    existing = {row["arm"] for row in read_jsonl(os.path.join(workdir, rounds.ROUNDS))}
    policy = None if all(arm in existing for arm in r.arms) else load(config.models[0])
    return rounds.run_rounds(config, workdir, task, policy, evaluate, settings(config), mesh)


def dry_run(config, *, devices: int, tokens_per_s: float = 0.0) -> str:
    """Validate `config` and print what the run does and costs, reading only each model's config
    (`experiments.plan`): per generator, N samples of every prompt; per sample, the CoT verifiers'
    generated tokens and the MC and tournament verifiers' forward passes (a tournament asks about
    2(N - 1) pairs per prompt: about 2 rows per sample); the verifier model's parameters; memory per
    device. The rounds are listed, not costed."""
    validate(config)
    used = devices if config.shard else 1
    mesh = plans.mesh_for(used, data=-1, model=config.model_parallel if config.shard else 1)
    n, generated, scored = config.num_samples, 0, 0
    for name, entry in config.tasks.items():
        names = verifiers_for(config, name)
        samples = entry.num_prompts * n
        generated += samples * (entry.max_new_tokens + config.cot_max_new_tokens * sum(v.startswith("cot_") for v in names))
        scored += samples * (plans.PROMPT_TOKENS + entry.max_new_tokens) * (
            ("mc" in names) + 2 * ("tournament" in names) + sum(v.startswith("cot_") for v in names))
    shape = lambda spec: plans.model_config(spec, config.tokenizer, config.random_model.to_dict(), config.dtype)  # noqa: E731
    judge = shape(config.verifier_model) if config.verifier_model else None
    memory, lines = {}, []
    for spec in config.models:
        model_config = shape(spec)
        memory[spec] = plans.inference_memory(model_config, mesh, plans.sampler_cache_bytes(
            model_config, n, config.max_rows, max(e.max_new_tokens for e in config.tasks.values()), mesh))
        if judge is not None:
            memory[spec]["verifier model parameters"] = plans.inference_memory(judge, mesh, 0)["parameters"]
        lines.append(f"model {spec}: {model_config.num_params() / 1e9:.3f}B parameters, {model_config.param_dtype}")
    lines += [f"verifier model: {config.verifier_model or 'each generator itself (g = f)'}",
              f"mesh {dict(mesh.shape)} on {used} device(s)",
              *(f"task {k}: {e.num_prompts} prompts, {e.num_shots}-shot, <= {e.max_new_tokens} tokens, N = {n}; "
                f"verifiers {', '.join(verifiers_for(config, k))}" for k, e in config.tasks.items()),
              f"rounds: {config.rounds.num_rounds} per arm {list(config.rounds.arms)} on {config.rounds.task}"
              if config.rounds.arms else "rounds: none"]
    summary = plans.Plan(lines=tuple(lines), generated_tokens=len(config.models) * generated,
                         scored_tokens=len(config.models) * scored, memory=memory)
    return plans.report(summary, used, tokens_per_s)


if __name__ == "__main__":
    common.main(run, configs, dry_run)
