"""SFT-Sharpening: train the model by maximum likelihood on its own best-of-N samples.

    python -m experiments.sft_sharpening --config=experiments/configs/sft_sharpening.py:smoke --workdir DIR

Steps: validate the whole config; evaluate the base model on held-out prompts; build the dataset
{(x, y_BoN)} (N samples per training prompt from the base model, y_BoN = argmax of the self-reward,
`sharpen_jax.methods.sft_sharpening`) or read it from a best-of-N results file; fit it with the
"sft" loss through the one train step (LoRA or full), checkpointing as it goes; evaluate again and
write the before/after/lift table. Re-running the same command resumes from the last checkpoint.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp

from experiments import common, training_run
from experiments.workdir import WorkdirLock, file_fingerprint
from experiments.configs import sft_sharpening as configs
from sharpen_jax import distributed, sharding
from sharpen_jax.methods import get_loss, sft_sharpening as method
from sharpen_jax.selection import check_reward_name
from sharpen_jax.training import SFTDataset, stream_indices


def validate(cfg):
    """The whole config checked before anything is written or loaded; returns the task."""
    task = training_run.validate(cfg, configs.defaults(), self_rewards=method.SELF_REWARDS)
    common.check_int(cfg, "sampling.num_samples", 1)
    common.check_int(cfg, "train.batch_size", 1)
    common.check_int(cfg, "train.epochs", 1)
    common.check_int(cfg, "train.num_steps", 0)
    if cfg.train.batch_size % cfg.train.grad_accum_steps:
        raise common.ConfigError(f"config.train.batch_size={cfg.train.batch_size} is not a multiple of "
                                 f"config.train.grad_accum_steps={cfg.train.grad_accum_steps}")
    if cfg.results_file:
        if not os.path.isfile(cfg.results_file):
            raise common.ConfigError(f"config.results_file={cfg.results_file!r} does not exist")
        try:
            check_reward_name(cfg.results_file_reward, where="config.results_file_reward")
        except ValueError as err:
            raise common.ConfigError(str(err)) from None
    return task


def sft_dataset(cfg, setup: training_run.Setup, workdir: str) -> SFTDataset:
    """The (x, y_BoN) dataset: read from `cfg.results_file`, or sampled once and cached in the workdir."""
    if cfg.results_file:
        return method.results_file_dataset(cfg.results_file, setup.tokenizer,
                                           prompt_length=setup.train_prompts.tokens.shape[1],
                                           completion_length=cfg.sampling.max_new_tokens,
                                           reward=cfg.results_file_reward,
                                           completion_suffix=setup.task.stop[0] if setup.task.stop else "")
    cache = os.path.join(workdir, "sft_dataset.npz")
    if os.path.exists(cache):
        return SFTDataset.load(cache)
    dataset = method.best_of_n_dataset(setup.sample_fn, setup.base_params, setup.train_prompts,
                                       jax.random.key(cfg.seed + 1), num_samples=cfg.sampling.num_samples,
                                       temperature=cfg.sampling.temperature, batch_size=cfg.sampling.batch_size,
                                       score_fn=training_run.self_reward_fn(cfg, setup),
                                       progress="sampling the best-of-N dataset" if cfg.progress else "")
    common.write_on_main(dataset.save, cache)
    return dataset


def dry_run(cfg, *, devices: int, tokens_per_s: float = 0.0) -> str:
    """Validate `cfg` and print what the run does and costs, loading no weights (`experiments.plan`)."""
    validate(cfg)
    prompts, n = cfg.task.num_train_prompts, cfg.sampling.num_samples
    num_steps = cfg.train.num_steps or cfg.train.epochs * -(-prompts // cfg.train.batch_size)
    sampled = 0 if cfg.results_file else prompts * n
    return training_run.dry_run(cfg, devices=devices, tokens_per_s=tokens_per_s, num_steps=num_steps,
                                rows_per_step=cfg.train.batch_size, samples_per_prompt=n,
                                sampled_rows=sampled, rescored_rows=0,
                                lines=(f"best-of-N dataset: {prompts:,} prompts x N = {n} samples "
                                       f"({'read from ' + cfg.results_file if cfg.results_file else 'sampled'})",))


def run(cfg, workdir: str, sample_fn=None) -> dict:
    """The whole experiment; returns the results dict also written to workdir/results.json."""
    common.start_distributed(cfg)
    task = validate(cfg)
    extra = {"results_file": file_fingerprint(cfg.results_file)} if cfg.results_file else None
    with WorkdirLock(workdir):
        return _run(cfg, workdir, task, sample_fn, extra)


def _run(cfg, workdir, task, sample_fn, extra_data) -> dict:
    setup, before, finished = training_run.begin(cfg, workdir, task, sample_fn, extra_data=extra_data)
    if finished is not None:
        return finished
    dataset = sft_dataset(cfg, setup, workdir)
    batch_size = cfg.train.batch_size
    num_steps = cfg.train.num_steps or cfg.train.epochs * dataset.steps_per_epoch(batch_size)

    def batch_for_step(policy, state, step):
        if setup.mesh is None:
            batch = dataset.batch(step, batch_size, cfg.seed)
        else:  # each process reads only the rows its devices hold
            batch = distributed.global_rows(dataset.rows, stream_indices(dataset.size, batch_size, cfg.seed, step),
                                            sharding.batch_sharding(setup.mesh))
        return batch, float(jnp.sum(batch["seqs"]["valid"]))  # tokens through the policy

    run_, policy = training_run.train(cfg, setup, workdir, loss=get_loss("sft"), hyperparameters={},
                                      num_steps=num_steps, batch_for_step=batch_for_step)
    after = training_run.evaluate(setup, policy.sampling_params(run_.state), cfg.eval, seed=cfg.seed,
                                  progress="evaluating the trained model" if cfg.progress else "")
    return training_run.finish(workdir, before, after, train_keys=("loss", "grad_norm"),
                               eval_keys=("greedy_accuracy", "sample_logp"), num_steps=num_steps,
                               dataset_size=dataset.size, config=cfg.to_dict())


if __name__ == "__main__":
    common.main(run, configs, dry_run)
