"""RLHF-Sharpening: KL-regularized policy optimization toward the model's own log-likelihood.

    python -m experiments.rlhf_sharpening --config=experiments/configs/rlhf_sharpening.py:smoke --workdir DIR

Steps: evaluate the base model on held-out prompts; for each update draw a batch of training
prompts, sample the preference pairs (or K samples for the policy gradient) from the current and the
base policy, score their self-rewards under the base model and apply `po_step`; evaluate at intervals
(accuracy, sample log-likelihood and J_beta = E_pi[r] - beta KL(pi || pi_base) on held-out prompts),
keeping the best iterate by J_beta in DIR/best; write the before/after/lift table. Re-running the
same command resumes from the last checkpoint.
"""

from __future__ import annotations

import os

import jax
from absl import logging

from experiments import common
from sharpen_jax.algorithms import data, on_policy, sharpening_run
from sharpen_jax.algorithms.experiment_setup import make_optimizer, make_policy_state
from sharpen_jax.algorithms.loop import train_loop
from sharpen_jax.algorithms.policy_optimization import make_po_step
from sharpen_jax.checkpoint import Checkpointer
from sharpen_jax.metrics import read_jsonl


def j_beta(metrics: dict, beta: float) -> float:
    """Held-out estimate of J_beta(pi) = E_pi[log pi_base] - beta E_pi[log pi - log pi_base] (r = log pi_base)."""
    return metrics["sample_base_logp"] - beta * (metrics["sample_logp"] - metrics["sample_base_logp"])


def run(cfg, workdir: str, sample_fn=None, progress: bool = True) -> dict:
    """The whole experiment; returns the results dict also written to workdir/results.json."""
    logging.set_verbosity(logging.WARNING)
    common.prepare_workdir(workdir, cfg)
    setup = sharpening_run.prepare(cfg, sample_fn)
    before = sharpening_run.base_evaluation(setup, workdir, cfg.eval, cfg.seed)
    before["j_beta"] = j_beta(before, cfg.po.beta)

    tx, schedule = make_optimizer(num_steps=cfg.train.num_steps, **cfg.optim)
    policy, init_state = make_policy_state(setup.config, setup.base_params, tx, jax.random.key(cfg.seed),
                                           lora_rank=cfg.lora.rank, lora_alpha=cfg.lora.alpha,
                                           lora_targets=tuple(cfg.lora.targets.split(",")))
    po_step = make_po_step(policy.logprob_fn, tx, loss=cfg.po.loss, beta=cfg.po.beta, alpha=cfg.po.alpha,
                           ref_logprob_fn=policy.ref_logprob_fn, grad_accum_steps=cfg.train.grad_accum_steps,
                           learning_rate_fn=schedule)
    prompts_per_step = cfg.po.prompts_per_step

    def update(state, step):
        key, rng = jax.random.split(jax.random.wrap_key_data(state.rng))
        idx = data.stream_indices(len(setup.train_prompts), prompts_per_step, cfg.seed, step)
        batch = on_policy.draw_batch(cfg.po.loss, setup.sample_fn, policy.sampling_params(state), setup.base_params,
                                     setup.train_prompts.take(idx), key, temperature=cfg.sampling.temperature,
                                     base_logprob_fn=setup.base_logprob, reward=cfg.self_reward,
                                     group_size=cfg.po.group_size)
        state, metrics = po_step(state, setup.base_params, batch, rng)
        sides = [batch["seqs"]] if "seqs" in batch else [batch["a"], batch["b"]]
        metrics["num_tokens"] = float(sum(s["valid"].sum() for s in sides))  # tokens through the policy
        return state, metrics

    metrics_path = os.path.join(workdir, "metrics.jsonl")
    best = {"j_beta": max((r["j_beta"] for r in read_jsonl(metrics_path) if r["split"] == "eval"),
                          default=float("-inf"))}

    def eval_fn(state):
        """Held-out metrics; the best iterate by J_beta so far is kept in workdir/best (XPO's selection rule)."""
        metrics = sharpening_run.evaluate(setup, policy.sampling_params(state), cfg.eval,
                                          num_prompts=cfg.eval.num_prompts_during_training,
                                          num_samples=cfg.eval.num_samples_during_training, seed=cfg.seed)
        metrics["j_beta"] = j_beta(metrics, cfg.po.beta)
        if metrics["j_beta"] > best["j_beta"]:
            best["j_beta"] = metrics["j_beta"]
            with Checkpointer(os.path.join(workdir, "best"), max_to_keep=1, async_save=False) as ckpt:
                ckpt.save(int(state.step), state, {"j_beta": metrics["j_beta"]})
        return metrics

    state = train_loop(init_state, update, workdir=workdir, num_steps=cfg.train.num_steps,
                       save_every=cfg.train.save_every, log_every=cfg.train.log_every,
                       eval_every=cfg.train.eval_every, eval_fn=eval_fn, max_to_keep=cfg.train.max_to_keep,
                       progress=progress)
    after = sharpening_run.evaluate(setup, policy.sampling_params(state), cfg.eval, seed=cfg.seed)
    after["j_beta"] = j_beta(after, cfg.po.beta)
    evals = [r for r in read_jsonl(metrics_path) if r["split"] == "eval"]
    best_eval = max(evals, key=lambda r: r["j_beta"]) if evals else None
    return sharpening_run.finish(workdir, before, after, train_keys=("loss", "reward_mean"),
                                 eval_keys=("j_beta", "sample_accuracy"), num_steps=cfg.train.num_steps,
                                 best_eval_step_by_j_beta=None if best_eval is None else best_eval["step"],
                                 config=cfg.to_dict())


if __name__ == "__main__":
    common.main(run)
