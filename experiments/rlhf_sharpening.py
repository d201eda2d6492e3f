"""RLHF-Sharpening: KL-regularized policy optimization toward the model's own log-likelihood.

    python -m experiments.rlhf_sharpening --config=experiments/configs/rlhf_sharpening.py:smoke --workdir DIR

Steps: validate the whole config; evaluate the base model on held-out prompts; for each update
draw a batch of training prompts, sample the sides the loss's registry entry names from the current
and the base policy (`sharpen_jax.methods.rlhf_sharpening.draw_batch`), score their self-rewards
under the base model and apply the one train step; evaluate at intervals (accuracy, sample
log-likelihood and J_beta = E_pi[r] - beta KL(pi || pi_base) on held-out prompts), keeping the best
iterate by J_beta in DIR/best; write the before/after/lift table. Re-running the same command
resumes from the last checkpoint.
"""

from __future__ import annotations

import os

import jax
import numpy as np

from experiments import common, training_run
from experiments.workdir import WorkdirLock
from experiments.configs import rlhf_sharpening as configs
from sharpen_jax.jsonl import read_jsonl
from sharpen_jax.methods import get_loss, loss_names, rlhf_sharpening as method
from sharpen_jax.training import Checkpointer, stream_indices


def validate(cfg):
    """The whole config checked before anything is written or loaded; returns the task."""
    task = training_run.validate(cfg, configs.defaults(), self_rewards=method.SELF_REWARDS)
    common.check_choice(cfg, "po.loss", loss_names(method.METHOD))
    common.check_float(cfg, "po.beta", minimum=0.0, strict_minimum=True)
    common.check_float(cfg, "po.alpha", minimum=0.0)
    common.check_int(cfg, "po.prompts_per_step", 1)
    common.check_int(cfg, "po.group_size", 2 if cfg.po.loss == "kl_pg" else 1)
    common.check_int(cfg, "train.num_steps", 1)
    if cfg.po.prompts_per_step % cfg.train.grad_accum_steps:
        raise common.ConfigError(f"config.po.prompts_per_step={cfg.po.prompts_per_step} is not a multiple of "
                                 f"config.train.grad_accum_steps={cfg.train.grad_accum_steps}")
    return task


def hyperparameters(cfg) -> dict:
    """The loss's hyperparameters from config.po (only those its registry entry takes)."""
    entry = get_loss(cfg.po.loss)
    return {k: cfg.po[k] for k in entry.hyperparameters}


def j_beta(metrics: dict, beta: float) -> float:
    """Held-out estimate of J_beta(pi) = E_pi[log pi_base] - beta E_pi[log pi - log pi_base] (r = log pi_base)."""
    return metrics["sample_base_logp"] - beta * (metrics["sample_logp"] - metrics["sample_base_logp"])


def dry_run(cfg, *, devices: int, tokens_per_s: float = 0.0) -> str:
    """Validate `cfg` and print what the run does and costs, loading no weights (`experiments.plan`)."""
    validate(cfg)
    per_prompt = cfg.po.group_size if cfg.po.loss == "kl_pg" else 2
    rows = cfg.train.num_steps * cfg.po.prompts_per_step * per_prompt
    return training_run.dry_run(cfg, devices=devices, tokens_per_s=tokens_per_s, num_steps=cfg.train.num_steps,
                                rows_per_step=cfg.po.prompts_per_step * per_prompt, samples_per_prompt=per_prompt,
                                sampled_rows=rows, rescored_rows=rows,
                                lines=(f"{cfg.po.loss}: {cfg.po.prompts_per_step} prompts x {per_prompt} samples "
                                       f"per update, scored again under the base model",))


def run(cfg, workdir: str, sample_fn=None) -> dict:
    """The whole experiment; returns the results dict also written to workdir/results.json."""
    common.start_distributed(cfg)
    task = validate(cfg)
    with WorkdirLock(workdir):
        return _run(cfg, workdir, task, sample_fn)


def _run(cfg, workdir, task, sample_fn) -> dict:
    setup, before, finished = training_run.begin(cfg, workdir, task, sample_fn)
    if finished is not None:
        return finished
    before["j_beta"] = j_beta(before, cfg.po.beta)
    entry = get_loss(cfg.po.loss)
    score_fn = training_run.self_reward_fn(cfg, setup)
    run_key = jax.random.key(cfg.seed)

    def batch_for_step(policy, state, step):
        idx = stream_indices(len(setup.train_prompts), cfg.po.prompts_per_step, cfg.seed, step)
        batch = method.draw_batch(entry, setup.sample_fn, policy.sampling_params(state), setup.base_params,
                                  setup.train_prompts.take(idx), jax.random.fold_in(run_key, step),
                                  temperature=cfg.sampling.temperature, score_fn=score_fn,
                                  base_token_logprobs_fn=setup.base_token_logprobs, group_size=cfg.po.group_size)
        sides = [batch["seqs"]] if "seqs" in batch else [batch["a"], batch["b"]]
        return batch, float(sum(np.sum(s["valid"]) for s in sides))  # tokens through the policy

    metrics_path = os.path.join(workdir, "metrics.jsonl")
    best = {"j_beta": max((r["j_beta"] for r in read_jsonl(metrics_path) if r["split"] == "eval"),
                          default=float("-inf"))}

    def eval_hook(state, metrics):
        """Adds J_beta; the best iterate by J_beta so far is kept in workdir/best (XPO's selection rule)."""
        metrics["j_beta"] = j_beta(metrics, cfg.po.beta)
        if metrics["j_beta"] > best["j_beta"]:
            best["j_beta"] = metrics["j_beta"]
            with Checkpointer(os.path.join(workdir, "best"), max_to_keep=1, async_save=False) as ckpt:
                ckpt.save(int(state.step), state.saved(), {"j_beta": metrics["j_beta"]})

    run_, policy = training_run.train(cfg, setup, workdir, loss=entry, hyperparameters=hyperparameters(cfg),
                                      num_steps=cfg.train.num_steps, batch_for_step=batch_for_step,
                                      eval_hook=eval_hook)
    after = training_run.evaluate(setup, policy.sampling_params(run_.state), cfg.eval, seed=cfg.seed,
                                  progress="evaluating the trained model" if cfg.progress else "")
    after["j_beta"] = j_beta(after, cfg.po.beta)
    evals = [r for r in read_jsonl(metrics_path) if r["split"] == "eval"]
    best_eval = max(evals, key=lambda r: r["j_beta"]) if evals else None
    return training_run.finish(workdir, before, after, train_keys=("loss", "reward_mean"),
                               eval_keys=("j_beta", "sample_accuracy"), num_steps=cfg.train.num_steps,
                               best_eval_step_by_j_beta=None if best_eval is None else best_eval["step"],
                               config=cfg.to_dict())


if __name__ == "__main__":
    common.main(run, configs, dry_run)
