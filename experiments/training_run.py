"""The skeleton the training experiments share: validate the whole config, set up the model, task,
prompts and sampler, evaluate before and after training in the layout of the paper's Table 1, train
with a registered loss through the one train step and loop, and write the results.

An experiment module supplies only what its method adds: its own config checks, its batch for each
update (a dataset slice, or batches sampled on the fly) and any evaluation extras.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable

import jax
import numpy as np

from experiments import common, plan, workdir as workdir_lib
from experiments.models import CHAR_TOKENIZER, check_model_spec, load_model
from sharpen_jax import distributed, rollouts, sharding, tasks
from sharpen_jax.jsonl import read_json, write_json
from sharpen_jax.metrics import plot_training_curves
from sharpen_jax.methods.registry import LossEntry
from sharpen_jax.selection import builtin_reward, check_reward_name, make_verifier_reward
from sharpen_jax.selection.rewards import BUILTIN
from sharpen_jax.training import TrainRun, TrainState, lora, make_optimizer, train_loop
from sharpen_jax.training.optim import SCHEDULES
from sharpen_jax.training.policies import Policy, make_policy_state
from sharpen_jax.training.train_state import train_state_sharding

TABLE_COLUMNS = ("greedy_accuracy", "sample_accuracy", "sample_logp", "bon_accuracy")
RESULTS = "results.json"
RUN_CONTROL_KEYS = ("progress", common.DISTRIBUTED_KEY)  # may differ between a run and its resumption


def validate(cfg, reference, *, self_rewards, check_task: bool = True) -> tasks.Task | None:
    """Check every key the experiments share before the workdir is touched or a model loaded; returns the task
    (None with `check_task` False: an experiment whose prompts come from elsewhere checks config.task itself).

    Method-specific keys are checked by the experiment itself (after this).
    """
    common.check_keys(cfg, reference, free=("config.task.options",))
    common.check_distributed(cfg)
    check_model_spec(cfg.model, cfg.tokenizer)
    common.check_choice(cfg, "dtype", ("", "float32", "bfloat16"))
    for key in reference.random_model:
        common.check_int(cfg, f"random_model.{key}", 1)
    try:
        check_reward_name(cfg.self_reward, where="config.self_reward", allowed=self_rewards)
    except ValueError as err:
        raise common.ConfigError(str(err)) from None
    common.check_int(cfg, "lora.rank", 0)
    common.check_float(cfg, "lora.alpha", minimum=0.0, strict_minimum=True)
    targets = [t for t in cfg.lora.targets.split(",") if t]
    if not targets or any(t not in lora.ALL_PROJECTIONS for t in targets):
        raise common.ConfigError(f"config.lora.targets={cfg.lora.targets!r}; expected a comma-separated non-empty "
                                 f"subset of {list(lora.ALL_PROJECTIONS)}")
    common.check_float(cfg, "optim.learning_rate", minimum=0.0, strict_minimum=True)
    common.check_int(cfg, "optim.warmup_steps", 0)
    common.check_float(cfg, "optim.grad_clip", minimum=0.0, strict_minimum=True)
    common.check_float(cfg, "optim.weight_decay", minimum=0.0)
    common.check_choice(cfg, "optim.schedule", SCHEDULES)
    common.check_int(cfg, "eval.num_samples", 1)
    common.check_float(cfg, "eval.temperature", minimum=0.0)
    common.check_int(cfg, "eval.batch_size", 1)
    common.check_int(cfg, "eval.num_prompts_during_training", 1)
    common.check_int(cfg, "eval.num_samples_during_training", 1)
    common.check_float(cfg, "sampling.temperature", minimum=0.0, strict_minimum=True)
    common.check_int(cfg, "sampling.max_new_tokens", 1)
    common.check_int(cfg, "sampling.batch_size", 1)
    for key in ("save_every", "log_every", "max_to_keep", "grad_accum_steps"):
        common.check_int(cfg, f"train.{key}", 1)
    common.check_int(cfg, "train.eval_every", 0)
    check_mesh(cfg)
    common.check_int(cfg, "task.num_shots", 0)
    if not check_task:
        return None
    common.check_int(cfg, "task.num_train_prompts", 1)
    common.check_int(cfg, "task.num_eval_prompts", 1)
    if cfg.task.data_dir and not os.path.isdir(cfg.task.data_dir):
        raise common.ConfigError(f"config.task.data_dir={cfg.task.data_dir!r} is not a directory")
    try:
        task = tasks.get(cfg.task.name, **task_options(cfg))
        for split, key in (("train", "num_train_prompts"), ("test", "num_eval_prompts")):
            available = len(task.examples(split))
            if cfg.task[key] > available:
                raise common.ConfigError(f"config.task.{key}={cfg.task[key]}; the {split!r} split of "
                                         f"{cfg.task.name!r} has {available} examples")
    except (KeyError, TypeError, ValueError, FileNotFoundError) as err:
        if isinstance(err, common.ConfigError):
            raise
        raise common.ConfigError(f"config.task ({cfg.task.name!r}): {err}") from None
    return task


def check_mesh(cfg) -> None:
    """config.mesh: integer axis sizes (>= 1, or -1 for the remaining devices on at most one axis)
    whose product fits this process's devices; a ConfigError naming the key otherwise."""
    sizes = {axis: cfg.mesh[axis] for axis in ("data", "fsdp", "model")}
    for axis, size in sizes.items():
        if size != -1:
            common.check_int(cfg, f"mesh.{axis}", 1)
    if list(sizes.values()).count(-1) > 1:
        raise common.ConfigError(f"config.mesh={sizes}; at most one axis may be -1")
    devices = jax.device_count()
    known = int(np.prod([s for s in sizes.values() if s != -1]))
    if (-1 in sizes.values() and devices % known) or (-1 not in sizes.values() and known not in (1, devices)):
        raise common.ConfigError(f"config.mesh={sizes} does not fit the {devices} devices here; expected sizes "
                                 f"whose product is {devices} (or all 1 for one device)")


def make_mesh(cfg) -> jax.sharding.Mesh | None:
    """The run's (data, fsdp, model) mesh, or None for the single-device default (all sizes 1)."""
    sizes = {axis: cfg.mesh[axis] for axis in ("data", "fsdp", "model")}
    return None if set(sizes.values()) == {1} else distributed.global_mesh(**sizes)


def task_options(cfg) -> dict:
    """Keyword options of `tasks.get` for the config's task (its options and data_dir)."""
    options = dict(cfg.task.options)
    if cfg.task.get("data_dir"):
        options["data_dir"] = cfg.task.data_dir
    return options


@dataclasses.dataclass
class Setup:
    """Model, tokenizer, task, encoded prompt splits and the sampling function of one run."""

    config: Any
    base_params: dict
    tokenizer: Any
    task: Any
    train_prompts: rollouts.PromptSet
    eval_prompts: rollouts.PromptSet
    sample_fn: rollouts.SampleFn
    score_batch_size: int
    mesh: jax.sharding.Mesh | None = None  # base parameters are in its train layout when set

    def base_token_logprobs(self, prompt_tokens, prompt_valid, tokens_BNC, valid_BNC) -> np.ndarray:
        """Per-token log pi_base of completions another policy sampled, float32[B, N, C]."""
        return rollouts.rescore(self.base_params, self.config, prompt_tokens, prompt_valid, tokens_BNC, valid_BNC,
                                batch_size=self.score_batch_size)

    def base_logprob(self, prompt_tokens, prompt_valid, tokens_BNC, valid_BNC) -> np.ndarray:
        """log pi_base(y|x) [B, N] of completions another policy sampled."""
        return self.base_token_logprobs(prompt_tokens, prompt_valid, tokens_BNC, valid_BNC).sum(-1)


def prepare(cfg, task, sample_fn: rollouts.SampleFn | None = None) -> Setup:
    """Load the model, encode the train/eval prompts of `task`, build the sampler."""
    mesh = make_mesh(cfg)
    model = load_model(cfg.model, tokenizer_spec=cfg.tokenizer, random_shape=cfg.random_model.to_dict(),
                       dtype=cfg.dtype, mesh=mesh, decode_layout=False)
    train = list(task.examples("train"))[:cfg.task.num_train_prompts]
    held_out = list(task.examples("test"))[:cfg.task.num_eval_prompts]
    tok = model.tokenizer
    length = max(len(tok.encode(task.format_prompt(e, num_shots=cfg.task.num_shots))) for e in train + held_out)
    train_prompts = rollouts.encode_prompts(tok, task, train, cfg.task.num_shots, length)
    eval_prompts = rollouts.encode_prompts(tok, task, held_out, cfg.task.num_shots, length)
    if sample_fn is None:
        sample_fn = rollouts.make_sampler(model.config, tok, max_new_tokens=cfg.sampling.max_new_tokens,
                                          stop_strings=task.stop, mesh=mesh)
    return Setup(model.config, model.params, tok, task, train_prompts, eval_prompts, sample_fn,
                 cfg.sampling.batch_size, mesh)


def self_reward_fn(cfg, setup: Setup) -> rollouts.ScoreFn:
    """The config's self-reward as a score function over samples (`rollouts.self_reward_fn`); the
    verifier runs the base model."""
    if cfg.self_reward in BUILTIN:
        reward = builtin_reward(cfg.self_reward)
    else:
        reward = make_verifier_reward(setup.base_params, setup.config, setup.tokenizer,
                                      batch_size=cfg.sampling.batch_size)
    return rollouts.self_reward_fn(reward, setup.task, setup.tokenizer)


def make_policy(cfg, setup: Setup, num_steps: int) -> tuple[Policy, TrainState, Any, Callable]:
    """(policy, initial state, optimizer, learning-rate schedule) for `num_steps` updates."""
    tx, schedule = make_optimizer(num_steps=num_steps, **cfg.optim)
    policy, state = make_policy_state(setup.config, setup.base_params, tx, jax.random.key(cfg.seed),
                                      lora_rank=cfg.lora.rank, lora_alpha=cfg.lora.alpha,
                                      lora_targets=tuple(t for t in cfg.lora.targets.split(",") if t))
    if setup.mesh is not None:
        state = jax.device_put(state, state_shardings(state, setup.mesh))
    return policy, state, tx, schedule


def state_shardings(state: TrainState, mesh: jax.sharding.Mesh) -> TrainState:
    """The train layout of every leaf of `state` on `mesh`: parameters (LoRA adapters or full
    weights) and the frozen base weights by `sharding.param_shardings`, Adam's moments like their
    parameters, counters replicated."""
    frozen = None if state.frozen is None else sharding.param_shardings(state.frozen, mesh)
    return train_state_sharding(state, mesh, sharding.param_shardings(state.params, mesh), frozen)


def evaluate(setup: Setup, params: dict, eval_cfg, *, num_prompts: int | None = None,
             num_samples: int | None = None, seed: int = 0, progress: str = "") -> dict[str, float]:
    """Table-1 metrics of `params` on the first `num_prompts` held-out prompts (all by default),
    plus kl_to_base = mean over samples of log pi(y|x) - log pi_base(y|x), the Monte Carlo estimate
    of KL(pi || pi_base), and sample_base_logp, the mean self-reward E_pi[log pi_base(y|x)].

    For the base model itself, sample_base_logp is sample_logp (the sampler's own log-probs), so the
    costly re-scoring under the base model is skipped.
    """
    prompts = setup.eval_prompts
    if num_prompts is not None:
        prompts = prompts.take(np.arange(min(num_prompts, len(prompts))))
    is_base = params is setup.base_params
    metrics = rollouts.evaluate(setup.sample_fn, params, prompts, setup.task, setup.tokenizer,
                                jax.random.key(seed), num_samples=num_samples or eval_cfg.num_samples,
                                temperature=eval_cfg.temperature, batch_size=eval_cfg.batch_size,
                                base_logprob_fn=None if is_base else setup.base_logprob, progress=progress)
    if is_base:
        metrics["sample_base_logp"] = metrics["sample_logp"]
    metrics["kl_to_base"] = metrics["sample_logp"] - metrics["sample_base_logp"]
    return metrics


def load_results(workdir: str) -> dict:
    """workdir/results.json, or {} before the first evaluation."""
    path = os.path.join(workdir, RESULTS)
    return read_json(path, error=common.ConfigError) if os.path.exists(path) else {}


def base_evaluation(setup: Setup, workdir: str, eval_cfg, seed: int, progress: bool = False) -> dict[str, float]:
    """The base model's Table-1 metrics, computed once per workdir and reused on resume."""
    results = load_results(workdir)
    if "before" not in results:
        results["before"] = evaluate(setup, setup.base_params, eval_cfg, seed=seed,
                                     progress="evaluating the base model" if progress else "")
        common.write_on_main(write_json, os.path.join(workdir, RESULTS), results)
    return results["before"]


def identity(cfg, task, extra_data: dict | None = None) -> dict:
    """The run's identity (`workdir.run_identity`): the model's fingerprint and the task's data."""
    models = {"model": workdir_lib.model_fingerprint(cfg.model, cfg.random_model.to_dict())}
    if cfg.tokenizer and cfg.tokenizer != CHAR_TOKENIZER:
        models["tokenizer"] = workdir_lib.model_fingerprint(cfg.tokenizer)
    data = {"task": workdir_lib.task_fingerprint(task, ("train", "test")), **(extra_data or {})}
    return workdir_lib.run_identity(models, data)


def begin(cfg, workdir: str, task, sample_fn: rollouts.SampleFn | None = None, *, extra_data: dict | None = None,
          evaluate_base: bool = True) -> tuple[Setup | None, dict | None, dict | None]:
    """Start (or resume) a validated run: (setup, base-model metrics, None), or (None, None, results) for a
    run that has finished, which is reported without loading anything.

    Records config and identity in the workdir first (a resume must match both; `extra_data` adds
    fingerprints of other inputs); the base model is evaluated once per workdir (not at all, with
    metrics {}, when not `evaluate_base`: a task with no grader). Call it holding the workdir's lock
    (`workdir.WorkdirLock`).
    """
    workdir_lib.prepare_workdir(workdir, cfg, identity(cfg, task, extra_data), ignore=RUN_CONTROL_KEYS)
    finished = finished_results(workdir)
    if finished is not None:
        print(f"this run has finished; results: {os.path.join(workdir, RESULTS)}")
        print(format_table(finished["before"], finished["after"]))
        return None, None, finished
    print(f"{'resuming' if os.path.exists(os.path.join(workdir, 'checkpoints')) else 'starting'}: outputs go to "
          f"{workdir} (results.json, metrics.jsonl, tensorboard/, checkpoints/)")
    setup = prepare(cfg, task, sample_fn)
    if not evaluate_base:
        return setup, {}, None
    return setup, base_evaluation(setup, workdir, cfg.eval, cfg.seed, cfg.progress), None


def train(cfg, setup: Setup, workdir: str, *, loss: LossEntry, hyperparameters: dict, num_steps: int,
          batch_for_step: Callable[[Policy, TrainState, int], tuple[dict, float]],
          eval_hook: Callable[[TrainState, dict], None] | None = None, evaluate_policy: bool = True
          ) -> tuple[TrainRun, Policy]:
    """Train with the registered `loss` for `num_steps` updates (resuming from the workdir's checkpoints).

    `batch_for_step(policy, state, step)` gives update `step`'s batch and the number of tokens it puts
    through the policy; the policy's held-out Table-1 metrics are logged at the start, every
    config.train.eval_every updates and at the end (never without `evaluate_policy`: a task with no
    grader), and `eval_hook(state, metrics)` may add to (or act on) them.
    """
    policy, init_state, tx, schedule = make_policy(cfg, setup, num_steps)
    mesh_kwargs = {}
    if setup.mesh is not None:
        mesh_kwargs = dict(mesh=setup.mesh, state_sharding=state_shardings(init_state, setup.mesh),
                           ref_sharding=sharding.param_shardings(setup.base_params, setup.mesh))
    step_fn = loss.make_step(policy.logprob_fn, tx, ref_logprob_fn=policy.ref_logprob_fn,
                             hyperparameters=hyperparameters, grad_accum_steps=cfg.train.grad_accum_steps,
                             learning_rate_fn=schedule, **mesh_kwargs)

    def update(state, step):
        batch, num_tokens = batch_for_step(policy, state, step)
        state, metrics = step_fn(state, setup.base_params, batch)
        return state, {**metrics, "num_tokens": num_tokens}

    def eval_fn(state):
        metrics = evaluate(setup, policy.sampling_params(state), cfg.eval,
                           num_prompts=cfg.eval.num_prompts_during_training,
                           num_samples=cfg.eval.num_samples_during_training, seed=cfg.seed)
        if eval_hook is not None:
            eval_hook(state, metrics)
        return metrics

    run = train_loop(init_state, update, workdir=workdir, num_steps=num_steps, save_every=cfg.train.save_every,
                     log_every=cfg.train.log_every, eval_every=cfg.train.eval_every,
                     eval_fn=eval_fn if evaluate_policy else None,
                     max_to_keep=cfg.train.max_to_keep, progress=cfg.progress)
    print(f"trained updates {run.start_step}..{num_steps} ({run.num_updates} this run"
          f"{', resumed from a checkpoint' if run.resumed else ''})")
    return run, policy


def dry_run(cfg, *, devices: int, tokens_per_s: float, num_steps: int, rows_per_step: int, samples_per_prompt: int,
            sampled_rows: int, rescored_rows: int, lines: tuple[str, ...], evaluations: int | None = None) -> str:
    """The dry run of a validated training config (`experiments.plan`): `sampled_rows` training
    samples, `samples_per_prompt` per prompt (and `rescored_rows` of them scored again under the
    base model), `num_steps` updates of `rows_per_step` rows, plus the held-out evaluations
    (`evaluations` completions, or by default the Table-1 evaluations of config.eval); memory on the
    config's mesh."""
    config = plan.model_config(cfg.model, cfg.tokenizer, cfg.random_model.to_dict(), cfg.dtype)
    sizes = {axis: cfg.mesh[axis] for axis in ("data", "fsdp", "model")}
    used = 1 if set(sizes.values()) == {1} else devices
    mesh = plan.mesh_for(used, **sizes)
    new = cfg.sampling.max_new_tokens
    evals = 2 * cfg.task.num_eval_prompts * (1 + cfg.eval.num_samples) if evaluations is None else evaluations
    if cfg.train.eval_every:
        evals += (num_steps // cfg.train.eval_every) * cfg.eval.num_prompts_during_training * (
            1 + cfg.eval.num_samples_during_training)
    train_tokens = 3 * num_steps * rows_per_step * (plan.PROMPT_TOKENS + new)  # forward + backward ~ 3 forwards
    samples = max(cfg.eval.num_samples, samples_per_prompt)
    cache = plan.sampler_cache_bytes(config, samples, 256, new, mesh)
    memory = plan.training_memory(config, mesh, cfg.lora.rank,
                                  tuple(t for t in cfg.lora.targets.split(",") if t), cache)
    summary = plan.Plan(
        lines=(f"model {cfg.model}: {config.num_params() / 1e9:.3f}B parameters, {config.param_dtype}; mesh "
               f"{dict(mesh.shape)} on {used} device(s)", *lines,
               f"{num_steps:,} updates of {rows_per_step} rows; held-out evaluation: {evals:,} completions",
               f"train-step tokens: {train_tokens // 3:,} (counted 3x in the time estimate, forward + backward)"),
        generated_tokens=(sampled_rows + evals) * new,
        scored_tokens=rescored_rows * (plan.PROMPT_TOKENS + new) + train_tokens,
        memory={cfg.model: memory})
    return plan.report(summary, used, tokens_per_s)


def lift(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """after - before for every metric both have (accuracy lift, log-likelihood lift)."""
    return {k: after[k] - before[k] for k in before if k in after}


def finish(workdir: str, before: dict[str, float], after: dict[str, float], *, train_keys: tuple[str, ...],
           eval_keys: tuple[str, ...], **extra) -> dict:
    """Write the before/after/lift results (plus `extra`) to workdir/results.json, draw the training
    curves to workdir/training_curves.png, print the table and where the outputs are; return the results."""
    results = load_results(workdir)
    results.update(before=before, after=after, lift=lift(before, after), **extra)
    common.write_on_main(write_json, os.path.join(workdir, RESULTS), results)
    curves = common.write_on_main(plot_training_curves, os.path.join(workdir, "metrics.jsonl"),
                                  os.path.join(workdir, "training_curves.png"), train_keys=train_keys,
                                  eval_keys=eval_keys)
    print(format_table(before, after))
    print(f"results: {os.path.join(workdir, RESULTS)}\ncurves: {curves}\nmetrics: "
          f"{os.path.join(workdir, 'metrics.jsonl')} (TensorBoard: {os.path.join(workdir, 'tensorboard')})")
    return results


def finished_results(workdir: str) -> dict | None:
    """The results of a workdir whose run has finished (its results.json holds "after"), else None."""
    results = load_results(workdir) if os.path.isdir(workdir) else {}
    return results if "after" in results else None


def format_table(before: dict[str, float], after: dict[str, float]) -> str:
    """The before/after/lift table printed at the end of a run."""
    columns = [c for c in TABLE_COLUMNS + ("sample_base_logp",) if c in before and c in after]
    lines = ["model   " + "  ".join(f"{c:>17}" for c in columns)]
    for name, row in (("base", before), ("trained", after), ("lift", lift(before, after))):
        lines.append(f"{name:<8}" + "  ".join(f"{row[c]:>17.4f}" for c in columns))
    return "\n".join(lines)

