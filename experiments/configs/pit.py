"""Configs of `experiments.pit`: PIT (Wang et al., 2023) on a verifiable task, where "better" is exact.

    python -m experiments.pit --config=experiments/configs/pit.py:PRESET --workdir DIR

Presets:
  smoke  the toy model ("random:0", character tokenizer) on 1-digit addition; a minute or two on 2 busy
         CPU cores. Runs every stage end to end (preference set, R_PIT, improver SFT, both RL stages,
         iterated improvement for PIT, Self-Refine prompting and the base model); the numbers of a
         random model are meaningless.
  cpu    SmolLM2-135M-Instruct with LoRA (r=8) on 2-shot 2-digit arithmetic, preference sets (a) solver
         vs model and (b) self-sampled: 64 training prompts x 4 samples, R_PIT 24 steps of 2 pairs,
         improver SFT 24 steps of 4 pairs, RL 10 steps of 2 contexts x 4 samples per stage, T = 5
         iterations on 64 held-out prompts at temperatures 0.4 and 0.8. Shrunk (steps, prompts,
         shots, the temperature grid) so that it and cpu_gsm8k together fit the hour on 2 cores.
  cpu_gsm8k  the same on 1-shot GSM8K with max_new_tokens 128: preference sets (d) gold rationale vs
         model (GSM8K has no programmatic solver; a human-written y_w is the analogue of PIT's
         stronger-model set) and (b) self-sampled, 32 training and 32 held-out prompts, R_PIT 16 steps of
         1 pair (2 pairs = 8 rows of about 550 tokens took more than 20 GB and were OOM-killed),
         improver SFT 16 steps, RL 6 steps per stage. No corruption ladder, so no R_PIT held-out accuracy.
         Measured on 2 shared cores (docs/PIT.md): cpu 75 min wall (50 CPU-min), cpu_gsm8k 79 min wall
         (101 CPU-min), both under load and over the hour; no claim of the paper holds at this scale.
  paper  PIT on Anthropic HH-RLHF (Wang et al. 2023, Sec. 4; experiments.pit_files) for one host of 8
         accelerators: the dialogues of $SHARPEN_JAX_DATA_DIR/hh-rlhf/*/train.jsonl.gz (the official
         subsets, each a shard; read from local copies, no hub), the first 16,384 pairs for training
         and the first 1,024 pairs of hh-rlhf/*/test.jsonl.gz held out; Mistral-7B-Instruct-v0.3 in
         bfloat16 with LoRA r=16 (PaLM 2, the paper's backbone, is not open), the three models'
         parameters sharded over the fsdp axis of every device. R_PIT and the improver SFT one epoch
         (512 steps of 32 pairs), RL 256 steps of 16 contexts x 4 samples per stage, β = 0.1 (the
         paper reports neither its RL algorithm nor β), T = 5 at temperatures 0.4-1.0 (Fig. 3's
         range). Judged by R_PIT (no grader, no GPT-4 here). For TL;DR set preference_format="tldr"
         and the comparison files. Planned with --dry_run; never run here (no accelerator, no data).
Results land in DIR/results.json ("before": the base model's Table-1 metrics; "after": accuracy of
y^0..y^T with standard errors and Δ per iteration for PIT, Self-Refine and the base model at each
temperature; "reward_model": R_PIT's held-out pairwise accuracy), the training curves of each stage
in DIR/<stage>/training_curves.png. Every key is documented where `defaults()` sets it; any other
key is an error.
"""

import ml_collections

from experiments import common, pit_files
from experiments.configs import sharpening_training
from experiments.models import checkpoint_dir
from sharpen_jax.methods import pit


def defaults() -> ml_collections.ConfigDict:
    """The reference config: every valid key, at its `cpu` value."""
    c = sharpening_training.shared_defaults(num_train_prompts=64)
    c.task.num_shots = 2
    c.eval.update(num_samples=4, batch_size=16)
    c.sampling = ml_collections.ConfigDict(dict(
        num_samples=4,  # samples per training prompt from M_P for the preference sets
        temperature=1.0,  # of those samples and of the RL rollouts
        max_new_tokens=40,  # also the improver's target length (a solver solution is ~31 tokens)
        batch_size=64))  # prompts per sampler call
    c.train = ml_collections.ConfigDict(dict(grad_accum_steps=1, save_every=4, log_every=1, eval_every=0,
                                             max_to_keep=2))
    c.pit = ml_collections.ConfigDict(dict(
        kinds="solver,self",  # comma-separated preference sets of tasks.preferences.KINDS
        max_corruption_level=2,  # K of the "corruption" set (and of R_PIT's held-out check)
        gap_layout=pit.GAP_LAYOUT,  # R_PIT's row: {x}, {y_ref}, {y} in any order ({y} last shares the prefix)
        improver_layout=pit.IMPROVER_LAYOUT,  # M_PIT's prompt: {x} and {y_ref}
        stages="stage0,stage1",  # RL curriculum stages to run ("" = none)
        beta=0.1,  # KL coefficient of the RL stages
        group_size=4,  # improver samples per (x, y_ref) in RL (leave-one-out baseline)
        num_iterations=5,  # T of the iterated improvement (the paper: 5)
        temperatures="0.4,0.8",  # decoding temperatures of the iterated improvement
        preference_file="",  # "" = pairs built from config.task; else the pairs' file(s) (experiments.pit_files)
        preference_format="jsonl",  # layout of those files: tasks.preferences.FORMATS
        held_out_file=""))  # "" = a seeded split of preference_file; else the held-out pairs' file(s)
    c.reward = ml_collections.ConfigDict(dict(steps=24, batch_size=2))  # R_PIT training (pairs per step)
    c.improver = ml_collections.ConfigDict(dict(steps=24, batch_size=4))  # improver SFT
    c.rl = ml_collections.ConfigDict(dict(steps=10, prompts_per_step=2))  # per RL stage
    return c


def cpu_gsm8k() -> ml_collections.ConfigDict:
    """SmolLM2-135M-Instruct on 1-shot GSM8K, sets (d) gold and (b) self-sampled (module docstring)."""
    c = defaults()
    c.task.update(name="gsm8k", num_shots=1, num_train_prompts=32, num_eval_prompts=32)
    c.task.options = {}
    c.sampling.update(max_new_tokens=128, batch_size=32)
    c.pit.update(kinds="gold,self")
    c.reward.update(steps=16, batch_size=1)  # 2 pairs (8 rows of ~550 tokens) ran out of 24 GB: no remat
    c.improver.update(steps=16, batch_size=2)
    c.rl.update(steps=6)
    return c


def smoke() -> ml_collections.ConfigDict:
    """Seconds to minutes: the toy model on 8 one-digit additions (module docstring)."""
    c = defaults()
    sharpening_training.shrink_to_smoke(c)
    c.task.num_train_prompts = 8
    c.sampling.update(num_samples=2, max_new_tokens=4, batch_size=4)
    c.train.update(save_every=2)
    c.eval.update(num_samples=2, batch_size=4, num_prompts_during_training=2, num_samples_during_training=2)
    c.pit.update(kinds="solver,corruption", max_corruption_level=3, group_size=2, num_iterations=2,
                 temperatures="0.6")
    c.reward.update(steps=3, batch_size=4)
    c.improver.update(steps=3, batch_size=4)
    c.rl.update(steps=2, prompts_per_step=2)
    return c


def paper() -> ml_collections.ConfigDict:
    """PIT on Anthropic HH-RLHF from local files, on one accelerator host (module docstring)."""
    c = defaults()
    c.model = checkpoint_dir("Mistral-7B-Instruct-v0.3")
    c.dtype = "bfloat16"
    c.task = ml_collections.ConfigDict(dict(name=pit_files.TASK_NAME, options={}, num_shots=0,
                                            num_train_prompts=16384, num_eval_prompts=1024, data_dir=""))
    c.lora.update(rank=16, alpha=32.0)
    c.sampling.update(num_samples=1, temperature=1.0, max_new_tokens=256, batch_size=64)
    c.pit.update(kinds=pit_files.FILE_KIND, preference_file="hh-rlhf/*/train.jsonl.gz",
                 held_out_file="hh-rlhf/*/test.jsonl.gz", preference_format="hh_rlhf",
                 temperatures="0.4,0.6,0.8,1.0", group_size=4)
    c.reward.update(steps=512, batch_size=32)  # one epoch of the 16,384 training pairs
    c.improver.update(steps=512, batch_size=32)
    c.rl.update(steps=256, prompts_per_step=16)  # per stage: 64 rows per update
    c.train.update(save_every=64, max_to_keep=2)
    c.mesh.update(data=1, fsdp=-1, model=1)  # parameters of the three models sharded over every device
    return c


PRESETS = {"smoke": smoke, "cpu": defaults, "cpu_gsm8k": cpu_gsm8k, "paper": paper}


def get_config(preset: str | None = None) -> ml_collections.ConfigDict:
    """The config of `preset` (smoke, cpu, cpu_gsm8k or paper; default cpu)."""
    return common.select_preset(preset, PRESETS, default="cpu")
