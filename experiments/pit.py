"""PIT on a verifiable task: preference set, gap reward model, improver SFT, curriculum RL, iterated improvement.

    python -m experiments.pit --config=experiments/configs/pit.py:smoke --workdir DIR

Steps (`sharpen_jax.methods.pit`, `pit_inference`; Wang et al. 2023):
1. validate the whole config before the workdir is touched or a model loaded;
2. the base model M_P's Table-1 metrics on held-out prompts (once per workdir);
3. the preference set: N samples per training prompt from M_P made into the pairs of config.pit.kinds
   (`tasks.preferences`), each kind written once to DIR/preferences-<kind>.jsonl;
4. R_PIT trained on Eq. 2 (DIR/reward_model); 5. M_PIT^SFT on -log M_PIT(y_w | x, y_l) (DIR/improver_sft);
6. RL on r_gap for each stage of config.pit.stages (DIR/rl_stage0: y_ref = y_l; DIR/rl_stage1: y_ref ~ M_P);
7. iterated improvement y^{t+1} ~ M(.|x, y^t), T times, at each temperature, for PIT (the trained
   improver), Self-Refine prompting (the base model given the same improver prompt, no training) and
   the base model (an independent sample per iteration): accuracy of y^t with its standard error and
   Δ = P(wrong -> right) - P(right -> wrong) per iteration; R_PIT's held-out pairwise accuracy.
Every training stage checkpoints in its own folder, so re-running the same command resumes. No stage
runs the training experiments' held-out Table-1 evaluation of its policy: an improver answers
(x, y_ref), not x alone, so that table would not measure it; step 7 does.

Deviation (recorded in docs/PIT.md): stage 1 starts from the stage-0 policy and its KL term is taken
against that policy (the training harness regularises toward the parameters a stage starts from).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable

import jax
import numpy as np

from experiments import common, pit_files, training_run
from experiments.configs import pit as configs
from experiments.workdir import WorkdirLock
from sharpen_jax import checks
from sharpen_jax.jsonl import append_jsonl, read_jsonl, write_json
from sharpen_jax.methods import get_loss, pit, pit_inference, rlhf_sharpening
from sharpen_jax.metrics import plot_training_curves
from sharpen_jax.tasks import preferences, solvers
from sharpen_jax.training import make_optimizer, reward_model, stream_indices, train_loop


def _split(text: str) -> list[str]:
    return [t for t in text.split(",") if t]


def _check_kinds(task, kinds: list[str]) -> None:
    if not kinds:
        raise ValueError(f"expected at least one preference set of {list(preferences.KINDS)}")
    if pit_files.FILE_KIND in kinds:
        raise ValueError(f"kind {pit_files.FILE_KIND!r} is the pairs of config.pit.preference_file, which is empty")
    for kind in kinds:
        preferences.build_pairs(kind, task, [], None if kind == "corruption" else [])  # names an unknown kind
        if kind in ("solver", "corruption"):
            solvers.solver_for(task.name)


def temperatures(cfg) -> list[float]:
    """config.pit.temperatures as floats, each > 0; at least one."""
    values = [checks.number("temperature", float(t), minimum=0.0, strict_minimum=True)
              for t in _split(cfg.pit.temperatures)]
    if not values:
        raise ValueError("expected at least one temperature")
    return values


def _check_mesh(cfg) -> None:
    """A mesh runs in one process here, and every batch of rows splits evenly over its batch axes."""
    sizes = {axis: cfg.mesh[axis] for axis in ("data", "fsdp", "model")}
    if set(sizes.values()) == {1}:
        return
    if jax.process_count() > 1:
        raise common.ConfigError(f"config.mesh={sizes} over {jax.process_count()} processes: the PIT experiment "
                                 "runs in one process (a mesh over that process's devices)")
    for axis, size in sizes.items():  # training_run.check_mesh has checked that the sizes fit the devices
        if size == -1:
            sizes[axis] = jax.device_count() // int(np.prod([s for s in sizes.values() if s != -1]))
    divisor = sizes["data"] * sizes["fsdp"]
    rows = {"reward.batch_size": cfg.reward.batch_size, "improver.batch_size": cfg.improver.batch_size,
            "rl.prompts_per_step": cfg.rl.prompts_per_step * cfg.pit.group_size}
    for key, count in rows.items():
        if count % divisor:
            raise common.ConfigError(f"config.{key}={common.value_at(cfg, key)} gives {count} rows per step; on "
                                     f"config.mesh={dict(cfg.mesh)} the rows split over {divisor} devices: expected a "
                                     f"multiple of {divisor}")


def validate(cfg):
    """The whole config checked before anything is written or loaded; returns the task (a
    `tasks.preference_file` task on a preference-file run, whose file is read here)."""
    file_run = pit_files.is_file_run(cfg)
    task = training_run.validate(cfg, configs.defaults(), self_rewards=("log_likelihood",), check_task=not file_run)
    for key in ("reward.steps", "reward.batch_size", "improver.steps", "improver.batch_size", "rl.steps",
                "rl.prompts_per_step", "sampling.num_samples", "pit.max_corruption_level"):
        common.check_int(cfg, key, 1)
    common.check_int(cfg, "pit.group_size", 2)
    validations = [] if file_run else [("pit.kinds", lambda: _check_kinds(task, _split(cfg.pit.kinds)))]
    validations += [
        ("pit.stages", lambda: pit.check_stages(_split(cfg.pit.stages))),
        ("pit.beta", lambda: rlhf_sharpening.check_beta(cfg.pit.beta)),
        ("pit.num_iterations", lambda: pit_inference.check_iterations(cfg.pit.num_iterations)),
        ("pit.gap_layout", lambda: pit.gap_layout(cfg.pit.gap_layout)),
        ("pit.improver_layout", lambda: pit.improver_prompt("", "", cfg.pit.improver_layout)),
        ("pit.temperatures", lambda: temperatures(cfg)),
    ]
    for key, check in validations:
        try:
            check()
        except (TypeError, ValueError) as err:
            raise common.ConfigError(f"config.{key}={common.value_at(cfg, key)!r}: {err}") from None
    _check_mesh(cfg)
    return pit_files.load_task(cfg) if file_run else task


def run(cfg, workdir: str, sample_fn=None) -> dict:
    """The whole experiment; returns the results dict also written to workdir/results.json."""
    common.start_distributed(cfg)
    task = validate(cfg)
    with WorkdirLock(workdir):
        return _run(cfg, workdir, task, sample_fn)


def _samples(cfg, setup) -> list[list[str]]:
    """N samples of M_P per training prompt (deterministic in the seed, so a resume draws the same)."""
    return pit.sampled_texts(setup.sample_fn, setup.base_params, setup.tokenizer, setup.train_prompts,
                             jax.random.key(cfg.seed + 1), num_samples=cfg.sampling.num_samples,
                             temperature=cfg.sampling.temperature, batch_size=cfg.sampling.batch_size,
                             stop_strings=setup.task.stop)


def preference_set(cfg, setup, workdir: str) -> tuple[list, dict[str, int], Callable[[], list[list[str]]]]:
    """(pairs of every kind, pairs per kind, a function giving the M_P samples of the training prompts,
    drawn on first use); each kind cached in the workdir. A preference-file run's pairs are the file's."""
    drawn: list = []

    def samples():
        if not drawn:
            drawn.append(_samples(cfg, setup))
        return drawn[0]

    if pit_files.is_file_run(cfg):
        pairs = list(setup.task.pairs("train"))
        return pairs, {pit_files.FILE_KIND: len(pairs)}, samples
    examples = list(setup.train_prompts.examples)
    pairs, counts = [], {}
    for kind in _split(cfg.pit.kinds):
        path = os.path.join(workdir, f"preferences-{kind}.jsonl")
        build = lambda kind=kind: preferences.build_pairs(  # noqa: E731
            kind, setup.task, examples, None if kind == "corruption" else samples(), seed=cfg.seed,
            max_level=cfg.pit.max_corruption_level, num_shots=cfg.task.num_shots)
        try:
            found = preferences.cached_pairs(path, build)
        except ValueError as err:
            if "is empty" not in str(err):
                raise
            found = []
        pairs += found
        counts[kind] = len(found)
    if not pairs:
        raise common.ConfigError(f"every preference set of config.pit.kinds={cfg.pit.kinds!r} is empty")
    return pairs, counts, samples


def train_reward_model(cfg, setup, pairs, workdir: str):
    """R_PIT trained on Eq. 2 through the registered step; returns (plain decoder params, head)."""
    tx, _ = make_optimizer(num_steps=cfg.reward.steps, **cfg.optim)
    reward_fn, state = reward_model.make_reward_state(setup.config, setup.base_params, tx, jax.random.key(cfg.seed),
                                                      lora_rank=cfg.lora.rank, lora_alpha=cfg.lora.alpha)
    mesh_kwargs = {}
    if setup.mesh is not None:  # the state in its train layout, the pairs split over the batch axes
        shardings = training_run.state_shardings(state, setup.mesh)
        state, mesh_kwargs = jax.device_put(state, shardings), dict(mesh=setup.mesh, state_sharding=shardings)
    step_fn = get_loss("pit_gap_reward").make_step(reward_fn, tx, grad_accum_steps=cfg.train.grad_accum_steps,
                                                   **mesh_kwargs)
    layout = pit.gap_layout(cfg.pit.gap_layout)
    length = max(v.shape[1] for v in (s["tokens"] for s in pit.gap_reward_batch(setup.tokenizer, pairs, layout).values()))

    def update(state, step):
        idx = stream_indices(len(pairs), cfg.reward.batch_size, cfg.seed, step)
        return step_fn(state, None, pit.gap_reward_batch(setup.tokenizer, [pairs[i] for i in idx], layout, length))

    run_ = train_loop(state, update, workdir=workdir, num_steps=cfg.reward.steps, save_every=cfg.train.save_every,
                      log_every=cfg.train.log_every, max_to_keep=cfg.train.max_to_keep, progress=cfg.progress)
    return reward_model.scoring_params(run_.state, lora_rank=cfg.lora.rank, lora_alpha=cfg.lora.alpha)


def train_improver(cfg, setup, pairs, workdir: str) -> dict:
    """M_PIT^SFT: -log M_PIT(y_w | x, y_l) through the registered step; returns its plain params."""
    data = pit.improver_dataset(setup.tokenizer, pairs, completion_length=cfg.sampling.max_new_tokens,
                                template=cfg.pit.improver_layout)

    def batch_for_step(policy, state, step):
        batch = data.batch(step, cfg.improver.batch_size, cfg.seed)
        return batch, float(batch["seqs"]["valid"].sum())

    run_, policy = training_run.train(cfg, setup, workdir, loss=get_loss("pit_improver_sft"), hyperparameters={},
                                      num_steps=cfg.improver.steps, batch_for_step=batch_for_step,
                                      evaluate_policy=False)
    return policy.sampling_params(run_.state)


def train_rl(cfg, setup, start_params, contexts, gap_score, workdir: str) -> dict:
    """One curriculum stage of RL on r_gap(x, y, y_ref) (KL toward `start_params`); returns the new params."""
    stage_setup = dataclasses.replace(setup, base_params=start_params)
    length = max(len(setup.tokenizer.encode(pit.improver_prompt(c["x"], c["y_ref"], cfg.pit.improver_layout)))
                 for c in contexts)
    zeros = lambda p, v, tokens, valid: np.zeros(np.shape(tokens), np.float32)  # noqa: E731 (the reward reads text)

    def batch_for_step(policy, state, step):
        idx = stream_indices(len(contexts), cfg.rl.prompts_per_step, cfg.seed, step)
        prompts = pit.improver_prompts(setup.tokenizer, [contexts[i] for i in idx], cfg.pit.improver_layout, length)
        batch = rlhf_sharpening.draw_batch(pit.RL, setup.sample_fn, policy.sampling_params(state), start_params,
                                           prompts, jax.random.fold_in(jax.random.key(cfg.seed + 2), step),
                                           temperature=cfg.sampling.temperature, score_fn=gap_score,
                                           base_token_logprobs_fn=zeros, group_size=cfg.pit.group_size)
        return batch, float(np.sum(batch["seqs"]["valid"]))

    run_, policy = training_run.train(cfg, stage_setup, workdir, loss=pit.RL,
                                      hyperparameters={"beta": cfg.pit.beta, "group_size": cfg.pit.group_size},
                                      num_steps=cfg.rl.steps, batch_for_step=batch_for_step,
                                      evaluate_policy=False)
    return policy.sampling_params(run_.state)


def _first_samples(cfg, setup, params, prompts, key, temperature: float) -> list[str]:
    """One sample of `params` per prompt of `prompts` at `temperature`."""
    return [s[0] for s in pit.sampled_texts(setup.sample_fn, params, setup.tokenizer, prompts, key, num_samples=1,
                                            temperature=temperature, batch_size=cfg.sampling.batch_size,
                                            stop_strings=setup.task.stop)]


def iterates(cfg, setup, improver_params, temperature: float, start: list[str], *, resample: bool) -> list[list[str]]:
    """[y^0, ..., y^T], each a response per held-out prompt: y^0 = `start` (samples of M_P), then
    y^{t+1} ~ M(.|x, y^t) with M = `improver_params` under the improver prompt, or, with `resample`,
    an independent sample of M_P (the base-model row of the table)."""
    prompts, tok = setup.eval_prompts, setup.tokenizer
    key = jax.random.key(cfg.seed + 3)

    def improve(current, t):
        k = jax.random.fold_in(key, t + 1)
        if resample:
            return _first_samples(cfg, setup, setup.base_params, prompts, k, temperature)
        contexts = [{"x": x, "y_ref": y} for x, y in zip(prompts.texts, current)]
        return _first_samples(cfg, setup, improver_params, pit.improver_prompts(tok, contexts, cfg.pit.improver_layout),
                              k, temperature)

    return pit_inference.iterate_improvement(improve, start, cfg.pit.num_iterations)[0]


def graded_iterates(setup, history: list[list[str]]) -> dict:
    """Accuracy of y^0..y^T (`history`) on the held-out prompts with standard errors, and Δ per iteration."""
    prompts, task = setup.eval_prompts, setup.task
    correct = [np.asarray([task.grade(e, y).correct for e, y in zip(prompts.examples, ys)]) for ys in history]
    accuracy = [float(c.mean()) for c in correct]
    return {"accuracy": accuracy, "stderr": [float(np.sqrt(a * (1 - a) / len(prompts.examples))) for a in accuracy],
            "delta": [pit_inference.improvement_rate(a, b) for a, b in zip(correct, correct[1:])]}


def evaluate_iterates(cfg, setup, improver_params, workdir: str, summarize: Callable[[list[list[str]]], dict]) -> dict:
    """{"T=<temperature>": {"pit" | "self_refine" | "base": summarize(`iterates`)}} at each temperature:
    `graded_iterates` on a task, `pit_files.judged_iterates` on a preference file.

    The three rows of a temperature share y^0 (the same M_P samples). Each finished row is appended to
    DIR/iterates.jsonl, so a resume after a kill redoes only the rows not written yet."""
    path = os.path.join(workdir, "iterates.jsonl")
    done = {(r["temperature"], r["model"]): r["row"] for r in read_jsonl(path)}
    models = {"pit": (improver_params, False), "self_refine": (setup.base_params, False),
              "base": (setup.base_params, True)}
    after = {}
    for temperature in temperatures(cfg):
        start = []
        for model, (params, resample) in models.items():
            if (temperature, model) not in done:
                if not start:
                    start = _first_samples(cfg, setup, setup.base_params, setup.eval_prompts,
                                           jax.random.key(cfg.seed + 3), temperature)
                row = summarize(iterates(cfg, setup, params, temperature, start, resample=resample))
                common.write_on_main(append_jsonl, path, [{"temperature": temperature, "model": model, "row": row}])
                done[temperature, model] = row
        after[f"T={temperature}"] = {model: done[temperature, model] for model in models}
    return after


def reward_accuracy(cfg, setup, backbone, head) -> dict:
    """R_PIT's pairwise accuracy r_gap(x, y_w, y_l) > r_gap(x, y_l, y_w) on corruption pairs of held-out prompts."""
    if setup.task.name not in solvers.SOLVERS:
        return {"pairs": 0, "accuracy": None}
    pairs = preferences.corruption_pairs(setup.task, list(setup.eval_prompts.examples),
                                         max_level=cfg.pit.max_corruption_level, seed=cfg.seed + 7,
                                         num_shots=cfg.task.num_shots)
    layout = pit.gap_layout(cfg.pit.gap_layout)
    score = lambda refs, ys: pit.score_against_references(  # noqa: E731
        backbone, head, setup.config, setup.tokenizer, [(p.prompt, r) for p, r in zip(pairs, refs)],
        [[y] for y in ys], layout)[:, 0]
    better = score([p.rejected for p in pairs], [p.chosen for p in pairs])
    worse = score([p.chosen for p in pairs], [p.rejected for p in pairs])
    return {"pairs": len(pairs), "accuracy": float(np.mean(better > worse))}


def _run(cfg, workdir, task, sample_fn) -> dict:
    file_run = pit_files.is_file_run(cfg)
    setup, before, finished = training_run.begin(cfg, workdir, task, sample_fn, evaluate_base=not file_run,
                                                 extra_data=pit_files.file_identity(cfg) if file_run else None)
    if finished is not None:
        return finished
    pairs, counts, samples = preference_set(cfg, setup, workdir)
    backbone, head = train_reward_model(cfg, setup, pairs, os.path.join(workdir, "reward_model"))
    params = train_improver(cfg, setup, pairs, os.path.join(workdir, "improver_sft"))
    gap_score = pit.gap_score_fn(backbone, head, setup.config, setup.tokenizer, stop_strings=task.stop,
                                 layout=pit.gap_layout(cfg.pit.gap_layout))
    for stage in _split(cfg.pit.stages):
        own = dict(zip(setup.train_prompts.texts, (s[0] for s in samples()))) if stage == "stage1" else {}
        refs = [own[p.prompt] for p in pairs] if stage == "stage1" else None
        params = train_rl(cfg, setup, params, pit.rl_reward_inputs(pairs, stage, refs), gap_score,
                          os.path.join(workdir, f"rl_{stage}"))
    if file_run:
        summarize = lambda history: pit_files.judged_iterates(cfg, setup, backbone, head, history)  # noqa: E731
        reward = pit_files.held_out_accuracy(cfg, setup, backbone, head)
    else:
        summarize, reward = lambda history: graded_iterates(setup, history), reward_accuracy(cfg, setup, backbone, head)  # noqa: E731
    after = evaluate_iterates(cfg, setup, params, workdir, summarize)
    stages = ["reward_model", "improver_sft"] + [f"rl_{s}" for s in _split(cfg.pit.stages)]
    curves = {s: common.write_on_main(plot_training_curves, os.path.join(workdir, s, "metrics.jsonl"),
                                      os.path.join(workdir, s, "training_curves.png")) for s in stages}
    results = {**training_run.load_results(workdir), "before": before, "after": after, "reward_model": reward,
               "preference_pairs": counts, "curves": curves, "config": cfg.to_dict()}
    common.write_on_main(write_json, os.path.join(workdir, training_run.RESULTS), results)
    shown, spread = ("gap_vs_first", "gap_vs_first_stderr") if file_run else ("accuracy", "stderr")
    for name, rows in after.items():
        for model, row in rows.items():
            print(f"{name} {model:<12} {shown}: " + " ".join(f"{a:.3f}±{e:.3f}" for a, e in zip(row[shown], row[spread])))
    print(f"results: {os.path.join(workdir, training_run.RESULTS)}")
    return results


def dry_run(cfg, *, devices: int, tokens_per_s: float = 0.0) -> str:
    """Validate `cfg` (reading a preference file's pairs) and print what the run does and costs, loading
    no weights (`experiments.plan`): M_P samples for the preference set or stage 1, every training
    stage's updates, and the iterated improvement's completions."""
    task = validate(cfg)
    stages = _split(cfg.pit.stages)
    file_run = pit_files.is_file_run(cfg)
    train_prompts = len(task.examples("train")) if file_run else cfg.task.num_train_prompts
    preference_samples = train_prompts * cfg.sampling.num_samples if (not file_run or "stage1" in stages) else 0
    rl_rows = len(stages) * cfg.rl.steps * cfg.rl.prompts_per_step * cfg.pit.group_size
    steps = {"R_PIT (Eq. 2)": (cfg.reward.steps, 4 * cfg.reward.batch_size),
             "improver SFT": (cfg.improver.steps, cfg.improver.batch_size),
             **{f"RL {s}": (cfg.rl.steps, cfg.rl.prompts_per_step * cfg.pit.group_size) for s in stages}}
    num_steps = sum(n for n, _ in steps.values())
    rows = sum(n * r for n, r in steps.values())
    iterated = len(temperatures(cfg)) * cfg.task.num_eval_prompts * (1 + 3 * cfg.pit.num_iterations)
    base = 0 if file_run else 2 * cfg.task.num_eval_prompts * (1 + cfg.eval.num_samples)
    lines = (f"pairs: {'the file, ' + str(train_prompts) + ' for training' if file_run else cfg.pit.kinds}; "
             f"{preference_samples:,} M_P samples", *(f"{name}: {n} updates of {r} rows" for name, (n, r) in steps.items()),
             f"iterated improvement: T = {cfg.pit.num_iterations} at temperatures {cfg.pit.temperatures} for PIT, "
             f"Self-Refine and the base model ({iterated:,} completions)",
             "memory: below is the improver's training state; PIT also holds R_PIT's backbone and M_P's "
             "parameters: add twice the parameters row")
    return training_run.dry_run(cfg, devices=devices, tokens_per_s=tokens_per_s, num_steps=num_steps,
                                rows_per_step=-(-rows // max(num_steps, 1)), samples_per_prompt=cfg.pit.group_size,
                                sampled_rows=preference_samples + rl_rows, rescored_rows=rl_rows, lines=lines,
                                evaluations=iterated + base)


if __name__ == "__main__":
    common.main(run, configs, dry_run)
