"""Configs of `experiments.sft_sharpening`: SFT-Sharpening (Huang et al., 2024, Sec. 4.1), best-of-N by
self-reward, then maximum likelihood.

    python -m experiments.sft_sharpening --config=experiments/configs/sft_sharpening.py:PRESET --workdir DIR

Presets:
  smoke  the toy model ("random:0", character tokenizer) on 1-digit addition; ~30 s on 2 CPU cores.
         Checks the pipeline end to end (sampling, best-of-N selection, LoRA SFT, checkpoints,
         evaluation, plots); the accuracies of a random model are meaningless.
  cpu    SmolLM2-135M-Instruct with LoRA (r=8) on 4-shot 2-digit arithmetic: N=16 samples at
         temperature 1 per training prompt, keep the most likely one (self-reward log pi_base(y|x)),
         3 epochs of LoRA SFT, lr 3e-4 with linear decay and clipping. Measured: 30 minutes
         wall (28.5 CPU-minutes) on 2 cores shared with another run; docs/RESULTS.md has the table.
         Expected: the sample log-likelihood and the single-sample accuracy rise toward the
         base model's best-of-N numbers (the paper's Table 1 layout: lift over the base model).
  paper  the paper's amortization setting (N=50, temperature 1, most likely sample kept, LoRA,
         lr 3e-4 linear decay, several epochs) at GSM8K scale; for a GPU/TPU.

Results land in DIR/results.json ("before", "after", "lift"), DIR/metrics.jsonl, TensorBoard events
in DIR/tensorboard and the training curves in DIR/training_curves.png. Every key is documented where
`defaults()` (or `sharpening_training.shared_defaults`) sets it; any other key is an error.
"""

import ml_collections

from experiments import common
from experiments.configs import sharpening_training


def defaults() -> ml_collections.ConfigDict:
    """The reference config: every valid key, at its `cpu` value."""
    c = sharpening_training.shared_defaults(num_train_prompts=256)
    c.sampling = ml_collections.ConfigDict(dict(
        num_samples=16,  # N samples per training prompt, of which the best is kept
        temperature=1.0, max_new_tokens=8,
        batch_size=8))  # prompts per sampler call
    c.results_file = ""  # experiments.inference_sharpening's results.jsonl to train on instead of sampling
    c.results_file_reward = "log_likelihood"  # which of its stored self-rewards picks y_BoN
    c.train = ml_collections.ConfigDict(dict(
        batch_size=8, grad_accum_steps=1,
        epochs=3, num_steps=0,  # num_steps 0 = epochs passes over the dataset
        save_every=20, log_every=1, eval_every=32, max_to_keep=3))
    return c


def smoke() -> ml_collections.ConfigDict:
    """Seconds: the toy model on 8 one-digit additions (module docstring)."""
    c = defaults()
    sharpening_training.shrink_to_smoke(c)
    c.task.num_train_prompts = 8
    c.sampling.update(num_samples=4, max_new_tokens=4, batch_size=4)
    c.train.update(batch_size=4, epochs=3, save_every=2, eval_every=3)
    c.eval.update(num_samples=4, batch_size=4, num_prompts_during_training=4, num_samples_during_training=4)
    return c


def paper() -> ml_collections.ConfigDict:
    """GSM8K-scale amortization for accelerators (module docstring)."""
    c = defaults()
    c.task = sharpening_training.gsm8k_task()
    c.sampling.update(num_samples=50, max_new_tokens=256, batch_size=32)
    c.train.update(batch_size=64, epochs=3, save_every=200, eval_every=500)
    c.eval.update(num_samples=50, batch_size=32, num_prompts_during_training=128)
    return c


PRESETS = {"smoke": smoke, "cpu": defaults, "paper": paper}


def get_config(preset: str | None = None) -> ml_collections.ConfigDict:
    """The config of `preset` (smoke, cpu or paper; default cpu)."""
    return common.select_preset(preset, PRESETS, default="cpu")
