"""SFT-Sharpening: train the model by maximum likelihood on its own best-of-N samples.

    python -m experiments.sft_sharpening --config=experiments/configs/sft_sharpening.py:smoke --workdir DIR

Steps: evaluate the base model on held-out prompts; build the dataset {(x, y_BoN)} (N samples per
training prompt from the base model, y_BoN = argmax of the self-reward) or read it from a best-of-N
results file; fit it with `sft_step` (LoRA or full), checkpointing as it goes; evaluate again and
write the before/after/lift table. Re-running the same command resumes from the last checkpoint.
"""

from __future__ import annotations

import os

import jax
import numpy as np
from absl import logging

from experiments import common
from sharpen_jax.algorithms import data, sharpening_run
from sharpen_jax.algorithms.experiment_setup import make_optimizer, make_policy_state
from sharpen_jax.algorithms.loop import train_loop
from sharpen_jax.algorithms.sft import make_sft_step


def sft_dataset(cfg, setup: sharpening_run.Setup, workdir: str) -> data.SFTDataset:
    """The (x, y_BoN) dataset: read from `cfg.results_file`, or sampled once and cached in the workdir."""
    if cfg.results_file:
        return data.results_file_dataset(cfg.results_file, setup.tokenizer,
                                         prompt_length=setup.train_prompts.tokens.shape[1],
                                         completion_length=cfg.sampling.max_new_tokens,
                                         reward=cfg.results_file_reward,
                                         completion_suffix=setup.task.stop[0] if setup.task.stop else "")
    cache = os.path.join(workdir, "sft_dataset.npz")
    if os.path.exists(cache):
        with np.load(cache) as arrays:
            return data.SFTDataset({k: arrays[k] for k in arrays.files})
    dataset = data.best_of_n_dataset(setup.sample_fn, setup.base_params, setup.train_prompts,
                                     jax.random.key(cfg.seed + 1), num_samples=cfg.sampling.num_samples,
                                     temperature=cfg.sampling.temperature, batch_size=cfg.sampling.batch_size,
                                     reward=cfg.self_reward)
    with open(cache + ".tmp", "wb") as f:
        np.savez(f, **dataset.seqs)
    os.replace(cache + ".tmp", cache)
    return dataset


def run(cfg, workdir: str, sample_fn=None, progress: bool = True) -> dict:
    """The whole experiment; returns the results dict also written to workdir/results.json."""
    logging.set_verbosity(logging.WARNING)
    common.prepare_workdir(workdir, cfg)
    setup = sharpening_run.prepare(cfg, sample_fn)
    before = sharpening_run.base_evaluation(setup, workdir, cfg.eval, cfg.seed)
    dataset = sft_dataset(cfg, setup, workdir)

    batch_size = cfg.train.batch_size
    num_steps = cfg.train.num_steps or cfg.train.epochs * dataset.steps_per_epoch(batch_size)
    tx, schedule = make_optimizer(num_steps=num_steps, **cfg.optim)
    policy, init_state = make_policy_state(setup.config, setup.base_params, tx, jax.random.key(cfg.seed),
                                           lora_rank=cfg.lora.rank, lora_alpha=cfg.lora.alpha,
                                           lora_targets=tuple(cfg.lora.targets.split(",")))
    sft_step = make_sft_step(policy.logprob_fn, tx, grad_accum_steps=cfg.train.grad_accum_steps,
                             learning_rate_fn=schedule)

    def update(state, step):
        batch = dataset.batch(step, batch_size, cfg.seed)
        state, metrics = sft_step(state, batch)
        return state, {**metrics, "num_tokens": float(batch["seqs"]["valid"].sum())}  # tokens processed

    def eval_fn(state):
        return sharpening_run.evaluate(setup, policy.sampling_params(state), cfg.eval,
                                       num_prompts=cfg.eval.num_prompts_during_training,
                                       num_samples=cfg.eval.num_samples_during_training, seed=cfg.seed)

    state = train_loop(init_state, update, workdir=workdir, num_steps=num_steps, save_every=cfg.train.save_every,
                       log_every=cfg.train.log_every, eval_every=cfg.train.eval_every, eval_fn=eval_fn,
                       max_to_keep=cfg.train.max_to_keep, progress=progress)
    after = sharpening_run.evaluate(setup, policy.sampling_params(state), cfg.eval, seed=cfg.seed)
    return sharpening_run.finish(workdir, before, after, train_keys=("loss", "grad_norm"),
                                 eval_keys=("greedy_accuracy", "sample_logp"), num_steps=num_steps,
                                 dataset_size=dataset.size, config=cfg.to_dict())


if __name__ == "__main__":
    common.main(run)
