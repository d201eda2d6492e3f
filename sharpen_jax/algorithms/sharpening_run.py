"""What the SFT- and RLHF-Sharpening experiments share: set-up from a config, evaluation before and
after training in the layout of the paper's Table 1, and the results file.

The sampling source is an argument (`sample_fn`, see `rollouts.SampleFn`); by default the project's
sampler (`sharpen_jax.sampling`) is wrapped by `rollouts.make_sampler`.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import jax
import numpy as np

from sharpen_jax import tasks
from sharpen_jax.algorithms import rollouts
from sharpen_jax.algorithms.experiment_setup import load_model
from sharpen_jax.config import TransformerConfig
from sharpen_jax.metrics import plot_training_curves

TABLE_COLUMNS = ("greedy_accuracy", "sample_accuracy", "sample_logp", "bon_accuracy")


@dataclasses.dataclass
class Setup:
    """Model, tokenizer, task, encoded prompt splits and the sampling function of one run."""

    config: TransformerConfig
    base_params: dict
    tokenizer: Any
    task: Any
    train_prompts: rollouts.PromptSet
    eval_prompts: rollouts.PromptSet
    sample_fn: rollouts.SampleFn

    def base_logprob(self, prompt_tokens, prompt_valid, tokens_BNC, valid_BNC):
        """log pi_base(y|x) [B, N] of completions (the self-reward of samples from another policy)."""
        return rollouts.base_logprob(self.base_params, self.config, prompt_tokens, prompt_valid, tokens_BNC,
                                     valid_BNC)


def prepare(cfg, sample_fn: rollouts.SampleFn | None = None) -> Setup:
    """Load the model and task of `cfg`, encode the train/eval prompts, build the sampler."""
    dtype = cfg.get("dtype") or None
    config, params, tokenizer = load_model(cfg.model, seed=cfg.seed, dtype=dtype)
    options = dict(cfg.task.options)
    if cfg.task.get("data_dir"):
        options["data_dir"] = cfg.task.data_dir
    task = tasks.get(cfg.task.name, **options)
    train = list(task.examples("train"))[:cfg.task.num_train_prompts]
    held_out = list(task.examples("test"))[:cfg.task.num_eval_prompts]
    if not train:
        raise ValueError(f"task {cfg.task.name!r} gave no training prompts (num_train_prompts="
                         f"{cfg.task.num_train_prompts})")
    length = max(len(tokenizer.encode(task.format_prompt(e, num_shots=cfg.task.num_shots))) for e in train + held_out)
    train_prompts = rollouts.encode_prompts(tokenizer, task, train, cfg.task.num_shots, length)
    eval_prompts = rollouts.encode_prompts(tokenizer, task, held_out, cfg.task.num_shots, length)
    if sample_fn is None:
        sample_fn = rollouts.make_sampler(config, tokenizer, max_new_tokens=cfg.sampling.max_new_tokens,
                                          stop_strings=task.stop)
    return Setup(config, params, tokenizer, task, train_prompts, eval_prompts, sample_fn)


def evaluate(setup: Setup, params: dict, eval_cfg, *, num_prompts: int | None = None,
             num_samples: int | None = None, seed: int = 0) -> dict[str, float]:
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
                                base_logprob_fn=None if is_base else setup.base_logprob)
    if is_base:
        metrics["sample_base_logp"] = metrics["sample_logp"]
    metrics["kl_to_base"] = metrics["sample_logp"] - metrics["sample_base_logp"]
    return metrics


def load_results(workdir: str) -> dict:
    """workdir/results.json, or {} before the first evaluation."""
    path = os.path.join(workdir, "results.json")
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        return json.load(f)


def save_results(workdir: str, results: dict) -> str:
    """Write results.json atomically (a kill mid-write leaves the previous file)."""
    path = os.path.join(workdir, "results.json")
    with open(path + ".tmp", "w") as f:
        json.dump(results, f, indent=2, sort_keys=True)
    os.replace(path + ".tmp", path)
    return path


def base_evaluation(setup: Setup, workdir: str, eval_cfg, seed: int) -> dict[str, float]:
    """The base model's Table-1 metrics, computed once per workdir and reused on resume."""
    os.makedirs(workdir, exist_ok=True)
    results = load_results(workdir)
    if "before" not in results:
        results["before"] = evaluate(setup, setup.base_params, eval_cfg, seed=seed)
        save_results(workdir, results)
    return results["before"]


def lift(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """after - before for every metric both have (accuracy lift, log-likelihood lift)."""
    return {k: after[k] - before[k] for k in before if k in after}


def finish(workdir: str, before: dict[str, float], after: dict[str, float], *, train_keys: tuple[str, ...],
           eval_keys: tuple[str, ...], **extra) -> dict:
    """Write the before/after/lift results (plus `extra`) to workdir/results.json, draw the training
    curves to workdir/training_curves.png, print the table; return the results."""
    results = load_results(workdir)
    results.update(before=before, after=after, lift=lift(before, after), **extra)
    save_results(workdir, results)
    plot_training_curves(os.path.join(workdir, "metrics.jsonl"), os.path.join(workdir, "training_curves.png"),
                         train_keys=train_keys, eval_keys=eval_keys)
    print(format_table(before, after))
    return results


def format_table(before: dict[str, float], after: dict[str, float]) -> str:
    """The before/after/lift table printed at the end of a run."""
    columns = [c for c in TABLE_COLUMNS + ("sample_base_logp",) if c in before and c in after]
    lines = ["model   " + "  ".join(f"{c:>17}" for c in columns)]
    for name, row in (("base", before), ("trained", after), ("lift", lift(before, after))):
        lines.append(f"{name:<8}" + "  ".join(f"{row[c]:>17.4f}" for c in columns))
    return "\n".join(lines)
