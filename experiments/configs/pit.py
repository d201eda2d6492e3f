"""Configs of `experiments.pit`: PIT (Wang et al., 2023) on a verifiable task, where "better" is exact.

    python -m experiments.pit --config=experiments/configs/pit.py:PRESET --workdir DIR

Presets:
  smoke  the toy model ("random:0", character tokenizer) on 1-digit addition; a minute or two on 2 busy
         CPU cores. Runs every stage end to end (preference set, R_PIT, improver SFT, both RL stages,
         iterated improvement for PIT, Self-Refine prompting and the base model); the numbers of a
         random model are meaningless.
  cpu    SmolLM2-135M-Instruct with LoRA (r=8) on 2-digit arithmetic, preference sets (a) solver vs
         model and (b) self-sampled. NOT measured yet: its run time and result are unknown.

Results land in DIR/results.json ("before": the base model's Table-1 metrics; "after": accuracy of
y^0..y^T with standard errors and Δ per iteration for PIT, Self-Refine and the base model at each
temperature; "reward_model": R_PIT's held-out pairwise accuracy), the training curves of each stage
in DIR/<stage>/training_curves.png. Every key is documented where `defaults()` sets it; any other
key is an error.
"""

import ml_collections

from experiments import common
from experiments.configs import sharpening_training
from sharpen_jax.methods import pit


def defaults() -> ml_collections.ConfigDict:
    """The reference config: every valid key, at its `cpu` value."""
    c = sharpening_training.shared_defaults(num_train_prompts=128)
    c.sampling = ml_collections.ConfigDict(dict(
        num_samples=4,  # samples per training prompt from M_P for the preference sets
        temperature=1.0,  # of those samples and of the RL rollouts
        max_new_tokens=16, batch_size=8))
    c.train = ml_collections.ConfigDict(dict(grad_accum_steps=1, save_every=20, log_every=1, eval_every=0,
                                             max_to_keep=2))
    c.pit = ml_collections.ConfigDict(dict(
        kinds="solver,self",  # comma-separated preference sets of tasks.preferences.KINDS
        max_corruption_level=3,  # K of the "corruption" set
        gap_layout=pit.GAP_LAYOUT,  # R_PIT's row: {x}, {y_ref}, {y} in any order ({y} last shares the prefix)
        improver_layout=pit.IMPROVER_LAYOUT,  # M_PIT's prompt: {x} and {y_ref}
        stages="stage0,stage1",  # RL curriculum stages to run ("" = none)
        beta=0.1,  # KL coefficient of the RL stages
        group_size=4,  # improver samples per (x, y_ref) in RL (leave-one-out baseline)
        num_iterations=5,  # T of the iterated improvement (the paper: 5)
        temperatures="0.4,0.6,0.8"))  # decoding temperatures of the iterated improvement
    c.reward = ml_collections.ConfigDict(dict(steps=200, batch_size=8))  # R_PIT training
    c.improver = ml_collections.ConfigDict(dict(steps=200, batch_size=8))  # improver SFT
    c.rl = ml_collections.ConfigDict(dict(steps=40, prompts_per_step=4))  # per RL stage
    return c


def smoke() -> ml_collections.ConfigDict:
    """Seconds to minutes: the toy model on 8 one-digit additions (module docstring)."""
    c = defaults()
    sharpening_training.shrink_to_smoke(c)
    c.task.num_train_prompts = 8
    c.sampling.update(num_samples=2, max_new_tokens=4, batch_size=4)
    c.train.update(save_every=2)
    c.eval.update(num_samples=2, batch_size=4, num_prompts_during_training=2, num_samples_during_training=2)
    c.pit.update(kinds="solver,corruption", group_size=2, num_iterations=2, temperatures="0.6")
    c.reward.update(steps=3, batch_size=4)
    c.improver.update(steps=3, batch_size=4)
    c.rl.update(steps=2, prompts_per_step=2)
    return c


PRESETS = {"smoke": smoke, "cpu": defaults}


def get_config(preset: str | None = None) -> ml_collections.ConfigDict:
    """The config of `preset` (smoke or cpu; default cpu)."""
    return common.select_preset(preset, PRESETS, default="cpu")
