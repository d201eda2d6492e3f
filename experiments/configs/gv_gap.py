"""Configs of `experiments.gv_gap`: the generation-verification gap (Song et al., 2024, "Mind the Gap").

    python -m experiments.gv_gap --config=experiments/configs/gv_gap.py:PRESET --workdir DIR

Presets:

* `smoke`: a tiny random model (the SmolLM2 tokenizer, 2 layers of width 32) on 4 arithmetic and 2
  ProntoQA prompts, N = 4, all four verifiers (CoT with 8 new tokens), one self-improvement round
  per arm (2 LoRA steps). Seconds; used by the tests.
  Accuracy and gaps are about 0 and every CoT verification is a parse failure: the point is that
  every stage runs and writes its files.
* `cpu`: SmolLM2-135M-Instruct on arithmetic, ProntoQA, 4x4 Sudoku and GSM8K, 64 prompts each,
  N = 16 at T = 0.7 and top-p 0.9; MC on everything, CoT-Binary, CoT-Score and Tournament on
  arithmetic only (the subset that fits); 2 rounds on arithmetic (64 train prompts, MC at
  quantile 0.7, 20 LoRA steps each), self-verified and ground-truth-verified. Measured on
  2026-12-02: the gap units (34 prompt batches) took 111 minutes wall on the 2-core machine while
  another experiment shared it (load 5-13; generation 61% of the time, MC 20%, CoT-Binary and
  CoT-Score 9% each, Tournament 2%), and the rounds (both arms) 98.7 minutes wall, 47.9 CPU-minutes,
  under load 5-10: the 45-minute target is missed on the shared machine (idle time not measured);
  results in docs/GV_GAP.md.
* `cpu_cross`: cross-verification, the issue's "SFT-sharpened checkpoint verifying the base model":
  the cpu preset's 64 arithmetic prompts x N = 16 samples of SmolLM2-135M-Instruct (the same
  sampling keys, so the same samples as the cpu run), MC-verified by the SFT-sharpened SmolLM2 of
  `experiments.sft_sharpening`'s cpu preset (LoRA r = 8 on 4-shot 2-digit arithmetic), given as
  that run's finished workdir ($SHARPEN_JAX_SFT_WORKDIR, default runs/sft_cpu; `experiments.models`
  loads a workdir as its trained policy, adapters merged). No rounds. Validated with --dry_run; not
  run. First `python -m experiments.sft_sharpening --config=experiments/configs/sft_sharpening.py:cpu
  --workdir runs/sft_cpu`.
* `paper`: the paper's protocol (Sec. 3): 128 samples per prompt, T = 0.7, top-p 0.9, 4-shot, at
  most 512 new tokens, GSM8K, MATH and 4x4 Sudoku, sharded over all devices, on one family at
  several sizes (Qwen-2 0.5B / 1.5B / 7B base models as HF checkpoint directories under
  $SHARPEN_JAX_CHECKPOINTS). The pre-training FLOPs 6 N D take N from the models' shapes in the
  Qwen2 technical report's Table 1 (arXiv 2407.10671; `TransformerConfig.num_params`: 494,032,768 /
  1,543,714,304 / 7,615,616,512, the counts the Hugging Face model pages give) and D = 12T / 7T / 7T
  tokens from the same table: 3.6e22 / 6.5e22 / 3.2e23 FLOPs. Rounds: 3 on GSM8K with CoT-Binary (the paper's Fig. 4 setting,
  on this family instead of Qwen-1.5), both arms. Not run here.

The few-shot verification templates below are ours: the paper's (its App. E) were not available.
Every key is documented where it is set in `defaults()`; a config with any other key is an error
naming the key.
"""

from __future__ import annotations

import os

import ml_collections

from experiments import common
from experiments.configs.inference_sharpening import smoke_tasks, task_entry
from experiments.models import RANDOM_SHAPE, checkpoint_dir
from sharpen_jax.config import TransformerConfig

_Q = "Question: {question}\n"
MC_TEMPLATE = (  # ours, 2-shot; scored by P(" Yes") against P(" No")
    "Decide whether the proposed answer to each question is correct.\n\n"
    "Question: What is 3 + 4?\nProposed answer: 7\nIs the proposed answer correct? Reply Yes or No.\nReply: Yes\n\n"
    "Question: What is 6 + 5?\nProposed answer: 12\nIs the proposed answer correct? Reply Yes or No.\nReply: No\n\n"
    + _Q + "Proposed answer:{completion}\nIs the proposed answer correct? Reply Yes or No.\nReply:")
COT_BINARY_TEMPLATE = (  # ours, 2-shot; parsed by gv_verifiers.parse_verdict
    "Check each proposed answer step by step, then end with 'Verdict: correct' or 'Verdict: incorrect'.\n\n"
    "Question: What is 3 + 4?\nProposed answer: 7\nCheck: 3 + 4 = 7, the same as proposed. Verdict: correct\n\n"
    "Question: What is 6 + 5?\nProposed answer: 12\nCheck: 6 + 5 = 11, not 12. Verdict: incorrect\n\n"
    + _Q + "Proposed answer:{completion}\nCheck:")
COT_SCORE_TEMPLATE = (  # ours, 2-shot; parsed by gv_verifiers.parse_score
    "Check each proposed answer step by step, then end with 'Score: K', K from 1 (surely wrong) to 10 (surely "
    "right).\n\n"
    "Question: What is 3 + 4?\nProposed answer: 7\nCheck: 3 + 4 = 7, the same as proposed. Score: 10\n\n"
    "Question: What is 6 + 5?\nProposed answer: 12\nCheck: 6 + 5 = 11, not 12. Score: 1\n\n"
    + _Q + "Proposed answer:{completion}\nCheck:")
TOURNAMENT_TEMPLATE = (  # ours, 1-shot; scored by P(" A") against P(" B"), each pair in both orders
    "Question: What is 3 + 4?\nSolution A: 8\nSolution B: 7\nWhich solution is correct? Reply A or B.\nReply: B\n\n"
    + _Q + "Solution A:{first}\nSolution B:{second}\nWhich solution is correct? Reply A or B.\nReply:")


def defaults() -> ml_collections.ConfigDict:
    """The reference config: every valid key with its default value."""
    c = ml_collections.ConfigDict()
    c.models = ("smollm2-135m-instruct",)  # generators f: short names, HF checkpoint dirs, .gguf files, "random:SEED"
    c.model_flops = (1.6e21,)  # pre-training FLOPs 6 N D of each model, for the scaling table (0 = unknown)
    c.verifier_model = ""  # the verifier g; "" = each generator verifies itself (g = f); else cross-verification
    c.tokenizer = ""  # "" = each model's own; "char" or a model spec; required for "random:SEED" models
    c.random_model = ml_collections.ConfigDict(RANDOM_SHAPE)  # shape of "random:SEED" models
    c.dtype = ""  # "" = as loaded; "bfloat16" or "float32" overrides compute and parameter dtype
    c.data_dir = ""  # "" = $SHARPEN_JAX_DATA_DIR, then <repo>/../shared/data
    c.split = "test"
    c.tasks = ml_collections.ConfigDict({"arithmetic": task_entry(64, 4, 8, digits=2)})
    c.num_samples = 16  # N completions per prompt
    c.temperature = 0.7
    c.top_k = 0
    c.top_p = 0.9
    c.verifiers = ("mc", "cot_binary", "cot_score", "tournament")  # selection.gv_verifiers.VERIFIERS
    c.verifier_tasks = ml_collections.ConfigDict(  # the tasks each verifier runs on; () = every task
        {"mc": (), "cot_binary": (), "cot_score": (), "tournament": ()})
    c.templates = ml_collections.ConfigDict({"mc": MC_TEMPLATE, "cot_binary": COT_BINARY_TEMPLATE,
                                             "cot_score": COT_SCORE_TEMPLATE, "tournament": TOURNAMENT_TEMPLATE})
    c.mc_words = (" Yes", " No")  # single tokens; û = log P(first) - log P(second)
    c.tournament_words = (" A", " B")  # single tokens naming the first and second solution shown
    c.cot_max_new_tokens = 64  # CoT verifications are greedy and stop at cot_stop or EOS
    c.cot_stop = ("\n\n",)
    c.filters = ml_collections.ConfigDict({  # per verifier: RULE:VALUE (quantile q in (0, 1], threshold tau, exp beta)
        "mc": ("quantile:0.5", "quantile:0.7", "threshold:0", "exp:1"),
        "cot_binary": ("threshold:1",),
        "cot_score": ("quantile:0.7", "threshold:8"),
        "tournament": ("threshold:1", "threshold:2")})
    c.ensembles = ("mc@quantile:0.5+cot_score@threshold:8",)  # AND ensembles: VERIFIER@RULE:VALUE joined by '+'
    c.num_bootstrap = 1000  # bootstrap resamples of the prompts for standard errors
    c.rounds = ml_collections.ConfigDict({  # iterative self-improvement (Sec. 5), on config.models[0]
        "arms": (),  # "self" (f_t verifies itself) and/or "ground_truth" (the grader keeps u = 1); () = no rounds
        "num_rounds": 2,  # K: f_1..f_K are trained, f_0..f_K evaluated
        "task": "arithmetic",  # the task of config.tasks the rounds train on (its train split) and evaluate on
        "num_train_prompts": 64,  # the first prompts of the train split, N samples each per round
        "verifier": "mc",  # f_t's own verifier in the self arm, and the one whose gap is reported per round
        "filter": "quantile:0.7",  # the self arm's rejection filter (the paper: a per-prompt quantile)
        "steps": 20,  # SFT updates per round
        "batch_size": 8,
        "learning_rate": 1e-4,
        "lora_rank": 8,  # 0 = full fine-tuning
        "lora_alpha": 16.0,
    })
    c.seed = 0
    c.prompt_batch_size = 8  # prompts per resumable unit of work (results are appended per batch)
    c.max_rows = 256  # sampler micro-batch rows per decode loop (generation and CoT verification)
    c.score_batch_size = 32  # rows per forward pass of the MC and tournament verifiers
    c.shard = False  # shard parameters and rows over all devices (mesh data x model)
    c.model_parallel = 1  # size of the mesh's model axis when shard is True
    c.progress = True  # progress bar over prompts
    c.distributed = False  # start jax.distributed (multi-process run; experiments.common.start_distributed)
    c.max_batches = 0  # stop after this many new prompt batches (0 = run to the end); resume later
    return c


def smoke() -> ml_collections.ConfigDict:
    """Seconds: one tiny random model, 6 prompts, N = 4, all verifiers (module docstring)."""
    c = defaults()
    c.models = ("random:0",)
    c.model_flops = (0.0,)
    c.tokenizer = "smollm2-135m-instruct"
    c.tasks = smoke_tasks()
    c.verifier_tasks.tournament = ("arithmetic",)
    c.num_samples = 4
    c.cot_max_new_tokens = 8
    c.rounds.update(arms=("self", "ground_truth"), num_rounds=1, num_train_prompts=4, steps=2, batch_size=4,
                    lora_rank=2)
    c.num_bootstrap = 50
    c.prompt_batch_size = 2
    c.score_batch_size = 16
    c.progress = False
    return c


def cpu() -> ml_collections.ConfigDict:
    """SmolLM2-135M-Instruct, four tasks x 64 prompts, N = 16 (module docstring; gap units measured)."""
    c = defaults()
    c.tasks = ml_collections.ConfigDict({
        "arithmetic": task_entry(64, 4, 8, digits=2),
        "prontoqa": task_entry(64, 2, 40, hops=(1, 2), distractors=1),
        "sudoku4": task_entry(64, 2, 40),
        "gsm8k": task_entry(64, 1, 96),
        "arithmetic_cot": task_entry(16, 4, 8, task="arithmetic", digits=2)})
    for name in ("cot_binary", "cot_score", "tournament"):
        c.verifier_tasks[name] = ("arithmetic_cot",)
    c.rounds.update(arms=("self", "ground_truth"), num_rounds=2)
    return c


SFT_WORKDIR_ENV = "SHARPEN_JAX_SFT_WORKDIR"


def cpu_cross() -> ml_collections.ConfigDict:
    """Cross-verification (module docstring): the cpu preset's arithmetic samples of SmolLM2-135M-Instruct,
    verified by MC under the SFT-sharpened SmolLM2 (the finished workdir of `experiments.sft_sharpening`'s
    cpu preset: $SHARPEN_JAX_SFT_WORKDIR, default runs/sft_cpu). Not run."""
    c = cpu()
    c.verifier_model = os.environ.get(SFT_WORKDIR_ENV, os.path.join("runs", "sft_cpu"))
    c.tasks = ml_collections.ConfigDict({"arithmetic": c.tasks.arithmetic})
    c.verifiers = ("mc",)
    c.verifier_tasks = ml_collections.ConfigDict({"mc": ()})
    c.filters = ml_collections.ConfigDict({"mc": c.filters.mc})
    c.ensembles = ()
    c.rounds.arms = ()
    return c


PAPER_SHAPES = {"Qwen2-0.5B": (TransformerConfig.qwen2_0_5b, 12e12), "Qwen2-1.5B": (TransformerConfig.qwen2_1_5b, 7e12),
                "Qwen2-7B": (TransformerConfig.qwen2_5_7b, 7e12)}  # each model's shapes and pre-training tokens D
PAPER_MODELS = tuple(PAPER_SHAPES)
PAPER_FLOPS = tuple(6.0 * shapes().num_params() * tokens for shapes, tokens in PAPER_SHAPES.values())  # 6 N D


def paper() -> ml_collections.ConfigDict:
    """The paper's protocol (Sec. 3) on one family at three sizes (module docstring)."""
    c = defaults()
    c.models = tuple(checkpoint_dir(name) for name in PAPER_MODELS)
    c.model_flops = PAPER_FLOPS
    c.dtype = "bfloat16"
    c.tasks = ml_collections.ConfigDict({"gsm8k": task_entry(1319, 4, 512), "math": task_entry(5000, 4, 512),
                                         "sudoku4": task_entry(288, 4, 512, num_test=288)})
    c.num_samples = 128
    c.cot_max_new_tokens = 512
    c.prompt_batch_size = 32
    c.max_rows = 1024
    c.score_batch_size = 128
    c.shard = True
    c.rounds.update(arms=("self", "ground_truth"), num_rounds=3, task="gsm8k", num_train_prompts=7473,
                    verifier="cot_binary", filter="threshold:1", batch_size=64)
    return c


PRESETS = {"smoke": smoke, "cpu": cpu, "cpu_cross": cpu_cross, "paper": paper}


def get_config(preset: str | None = None) -> ml_collections.ConfigDict:
    """The config of `preset` (smoke, cpu, cpu_cross or paper; default cpu)."""
    return common.select_preset(preset, PRESETS, default="cpu")
