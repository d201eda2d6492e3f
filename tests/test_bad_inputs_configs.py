"""Bad-input corpus, part 1: experiment configs. Every bad value of every experiment is a clear error
naming the key and what was expected, before any model loads or the workdir is created
(`bad_inputs_lib.check_case`)."""

from __future__ import annotations

import dataclasses
import math

import pytest

import bad_inputs_lib
from bad_inputs_lib import Case, check_case, ids
from experiments import common, inference_sharpening, rlhf_sharpening, sft_sharpening
from experiments.configs import inference_sharpening as inference_configs
from experiments.configs import rlhf_sharpening as rlhf_configs
from experiments.configs import sft_sharpening as sft_configs

ConfigError = common.ConfigError


def _inference(overrides: dict, message: str, *, name: str):
    def call(tmp_path):
        config = inference_configs.get_config("smoke")
        config.unlock()
        for key, value in overrides.items():
            node = config
            *parents, last = key.split(".")
            for part in parents:
                node = node[part]
            node[last] = value
        inference_sharpening.run(config, str(tmp_path / "w"))
    return Case(f"inference:{name}", call, ConfigError, message, workdir="w")


def _training(module, configs, prefix: str, overrides: dict, message: str, *, name: str, error=ConfigError):
    def call(tmp_path):
        config = configs.get_config("smoke")
        config.unlock()
        for key, value in overrides.items():
            node = config
            *parents, last = key.split(".")
            for part in parents:
                node = node[part]
            node[last] = value
        module.run(config, str(tmp_path / "w"))
    return Case(f"{prefix}:{name}", call, error, message, workdir="w")


def _sft(overrides, message, *, name, error=ConfigError):
    return _training(sft_sharpening, sft_configs, "sft", overrides, message, name=name, error=error)


def _rlhf(overrides, message, *, name, error=ConfigError):
    return _training(rlhf_sharpening, rlhf_configs, "rlhf", overrides, message, name=name, error=error)


def _unknown_key(tmp_path):
    config = inference_configs.get_config("smoke")
    config.unlock()
    config.temprature = 0.5
    inference_sharpening.run(config, str(tmp_path / "w"))


INFERENCE = [
    Case("inference:unknown-key", _unknown_key, ConfigError, r"'config\.temprature'.*'temperature'", workdir="w"),
    _inference({"models": ()}, r"config\.models is empty", name="no-models"),
    _inference({"models": ("/no/such/model",)}, r"config\.models\[0\].*/no/such/model.*does not exist",
               name="missing-model"),
    _inference({"models": ("random:x",)}, r"random:SEED", name="random-seed-not-int"),
    _inference({"models": ("random:-1",)}, r"random:SEED", name="random-seed-negative"),
    _inference({"tokenizer": ""}, r"'random:0' has no tokenizer of its own; set config\.tokenizer",
               name="random-without-tokenizer"),
    _inference({"tokenizer": "/no/such/tokenizer"}, r"config\.tokenizer.*/no/such/tokenizer", name="missing-tokenizer"),
    _inference({"reward_model": "/no/such/reference"}, r"config\.reward_model.*/no/such/reference",
               name="missing-reward-model"),
    _inference({"dtype": "float64"}, r"config\.dtype='float64'; expected one of", name="dtype"),
    _inference({"distributed": None}, r"config\.distributed=None; expected True or False", name="distributed"),
    _inference({"tasks": {}}, r"config\.tasks is empty", name="no-tasks"),
    _inference({"num_samples": 0}, r"config\.num_samples=0; expected an integer >= 1", name="num-samples-0"),
    _inference({"temperature": -1.0}, r"config\.temperature=-1\.0; expected a finite number >= 0",
               name="temperature-negative"),
    _inference({"temperature": math.nan}, r"config\.temperature=nan; expected a finite number", name="temperature-nan"),
    _inference({"temperature": math.inf}, r"config\.temperature=inf; expected a finite number", name="temperature-inf"),
    _inference({"top_k": -1}, r"config\.top_k=-1; expected an integer >= 0", name="top-k-negative"),
    _inference({"top_p": 0.0}, r"config\.top_p=0\.0; expected a finite number > 0", name="top-p-zero"),
    _inference({"top_p": 1.5}, r"config\.top_p=1\.5; expected .*<= 1", name="top-p-above-one"),
    _inference({"top_p": math.nan}, r"config\.top_p=nan", name="top-p-nan"),
    _inference({"ns": ()}, r"config\.ns=\(\) must be in \[1, num_samples=4\]", name="ns-empty"),
    _inference({"ns": (0, 2)}, r"config\.ns=\(0, 2\) must be in \[1", name="ns-zero"),
    _inference({"ns": (1, 64)}, r"num_samples=4", name="ns-above-num-samples"),
    _inference({"rewards": ()}, r"config\.rewards is empty", name="rewards-empty"),
    _inference({"rewards": ("log_likelihood", "vibes")}, r"config\.rewards\[1\]='vibes' is not a reward; valid",
               name="rewards-unknown"),
    _inference({"rewards": ("logp",)}, r"'logp' is not a reward \(renamed to 'log_likelihood'\)",
               name="rewards-old-name"),
    _inference({"rewards": ("verifier",), "verifier_template": "Is {completion} right?"},
               r"config\.verifier_template: verifier template must hold \{question\} and \{completion\}",
               name="verifier-template-placeholder"),
    _inference({"rewards": ("verifier",), "verifier_template": "{completion} answers {question}?"},
               r"config\.verifier_template.*\{question\} before \{completion\}", name="verifier-template-order"),
    _inference({"prompt_batch_size": 0}, r"config\.prompt_batch_size=0; expected an integer >= 1",
               name="prompt-batch-size-0"),
    _inference({"max_rows": 0}, r"config\.max_rows=0", name="max-rows-0"),
    _inference({"score_batch_size": 0}, r"config\.score_batch_size=0", name="score-batch-size-0"),
    _inference({"num_draws": 0}, r"config\.num_draws=0", name="num-draws-0"),
    _inference({"max_exact_subsets": 0}, r"config\.max_exact_subsets=0", name="max-exact-subsets-0"),
    _inference({"model_parallel": 0}, r"config\.model_parallel=0", name="model-parallel-0"),
    _inference({"seed": -1}, r"config\.seed=-1; expected an integer >= 0", name="seed-negative"),
    _inference({"max_batches": -1}, r"config\.max_batches=-1", name="max-batches-negative"),
    _inference({"random_model.dim": 0}, r"config\.random_model\.dim=0", name="random-model-dim-0"),
    _inference({"tasks.arithmetic.num_prompts": 1000}, r"config\.tasks\.arithmetic\.num_prompts=1000; the 'test' split",
               name="num-prompts-too-many"),
    _inference({"tasks.arithmetic.num_prompts": 0}, r"config\.tasks\.arithmetic\.num_prompts=0", name="num-prompts-0"),
    _inference({"tasks.arithmetic.num_shots": -1}, r"config\.tasks\.arithmetic\.num_shots=-1", name="num-shots-neg"),
    _inference({"tasks.arithmetic.max_new_tokens": 0}, r"config\.tasks\.arithmetic\.max_new_tokens=0",
               name="max-new-tokens-0"),
    _inference({"tasks.arithmetic.options": {"digits": 0}}, r"config\.tasks\.arithmetic: .*digits",
               name="task-option-out-of-range"),
    _inference({"tasks.arithmetic.options": {"colour": "red"}}, r"config\.tasks\.arithmetic: .*colour",
               name="task-option-unknown"),
    _inference({"split": "validation"}, r"config\.tasks\.arithmetic: .*validation", name="split-unknown"),
    _inference({"data_dir": "/no/such/data"}, r"config\.data_dir='/no/such/data' is not a directory",
               name="data-dir-missing"),
]

SFT = [
    _sft({"model": "tiny"}, r"config\.model: model path 'tiny' does not exist", name="old-toy-name"),
    _sft({"model": ""}, r"config\.model=''; expected a model name", name="model-empty"),
    _sft({"tokenizer": ""}, r"has no tokenizer of its own", name="random-without-tokenizer"),
    _sft({"dtype": "int8"}, r"config\.dtype='int8'", name="dtype"),
    _sft({"distributed": None}, r"config\.distributed=None; expected True or False", name="distributed"),
    _sft({"self_reward": "logp"}, r"config\.self_reward='logp' is not a reward \(renamed to 'log_likelihood'\)",
         name="self-reward-old-name"),
    _sft({"self_reward": "bleu"}, r"config\.self_reward='bleu' is not a reward; valid", name="self-reward-unknown"),
    _sft({"lora.rank": -1}, r"config\.lora\.rank=-1; expected an integer >= 0", name="lora-rank-negative"),
    _sft({"lora.alpha": 0.0}, r"config\.lora\.alpha=0\.0; expected a finite number > 0", name="lora-alpha-0"),
    _sft({"lora.targets": "q_proj,qkv"}, r"config\.lora\.targets='q_proj,qkv'; expected a comma-separated",
         name="lora-target-unknown"),
    _sft({"lora.targets": ""}, r"config\.lora\.targets=''", name="lora-targets-empty"),
    _sft({"optim.learning_rate": 0.0}, r"config\.optim\.learning_rate=0\.0", name="lr-0"),
    _sft({"optim.learning_rate": math.nan}, r"config\.optim\.learning_rate=nan", name="lr-nan"),
    _sft({"optim.warmup_steps": -1}, r"config\.optim\.warmup_steps=-1", name="warmup-negative"),
    _sft({"optim.grad_clip": 0.0}, r"config\.optim\.grad_clip=0\.0", name="grad-clip-0"),
    _sft({"optim.weight_decay": -0.1}, r"config\.optim\.weight_decay=-0\.1", name="weight-decay-negative"),
    _sft({"optim.schedule": "cosine"}, r"config\.optim\.schedule='cosine'; expected one of \['linear', 'constant'\]",
         name="schedule"),
    _sft({"eval.num_samples": 0}, r"config\.eval\.num_samples=0", name="eval-num-samples-0"),
    _sft({"eval.temperature": -0.5}, r"config\.eval\.temperature=-0\.5", name="eval-temperature-negative"),
    _sft({"eval.batch_size": 0}, r"config\.eval\.batch_size=0", name="eval-batch-size-0"),
    _sft({"eval.num_prompts_during_training": 0}, r"config\.eval\.num_prompts_during_training=0",
         name="eval-prompts-during-0"),
    _sft({"eval.num_samples_during_training": 0}, r"config\.eval\.num_samples_during_training=0",
         name="eval-samples-during-0"),
    _sft({"sampling.temperature": 0.0}, r"config\.sampling\.temperature=0\.0; expected a finite number > 0",
         name="sampling-temperature-0"),
    _sft({"sampling.max_new_tokens": 0}, r"config\.sampling\.max_new_tokens=0", name="max-new-tokens-0"),
    _sft({"sampling.batch_size": 0}, r"config\.sampling\.batch_size=0", name="sampling-batch-size-0"),
    _sft({"sampling.num_samples": 0}, r"config\.sampling\.num_samples=0", name="num-samples-0"),
    _sft({"train.batch_size": 0}, r"config\.train\.batch_size=0", name="batch-size-0"),
    _sft({"train.grad_accum_steps": 0}, r"config\.train\.grad_accum_steps=0", name="grad-accum-0"),
    _sft({"train.grad_accum_steps": 3}, r"config\.train\.batch_size=4 is not a multiple of config\.train\.grad_accum",
         name="batch-not-multiple-of-accum"),
    _sft({"train.epochs": 0}, r"config\.train\.epochs=0", name="epochs-0"),
    _sft({"train.num_steps": -1}, r"config\.train\.num_steps=-1", name="num-steps-negative"),
    _sft({"train.save_every": 0}, r"config\.train\.save_every=0", name="save-every-0"),
    _sft({"train.log_every": 0}, r"config\.train\.log_every=0", name="log-every-0"),
    _sft({"train.eval_every": -1}, r"config\.train\.eval_every=-1", name="eval-every-negative"),
    _sft({"train.max_to_keep": 0}, r"config\.train\.max_to_keep=0", name="max-to-keep-0"),
    _sft({"task.num_shots": -2}, r"config\.task\.num_shots=-2", name="num-shots-negative"),
    _sft({"task.num_train_prompts": 0}, r"config\.task\.num_train_prompts=0", name="train-prompts-0"),
    _sft({"task.num_eval_prompts": 10**6}, r"config\.task\.num_eval_prompts=1000000; the 'test' split",
         name="eval-prompts-too-many"),
    _sft({"task.name": "chess"}, r"config\.task \('chess'\): .*unknown task 'chess'", name="task-unknown"),
    _sft({"results_file": "/no/such/results.jsonl"}, r"config\.results_file='/no/such/results\.jsonl' does not exist",
         name="results-file-missing"),
    _sft({"task.data_dir": "/no/such/data"}, r"config\.task\.data_dir='/no/such/data' is not a directory",
         name="data-dir-missing"),
    _sft({"random_model.num_layers": 0}, r"config\.random_model\.num_layers=0", name="random-layers-0"),
    _sft({"train.batch_size": True}, r"config\.train\.batch_size=True; expected an integer", name="batch-size-bool"),
]

RLHF = [
    _rlhf({"po.loss": "ppo"}, r"config\.po\.loss='ppo'; expected one of \['reward_dpo', 'xpo', 'online_dpo', 'kl_pg'\]",
          name="loss-unknown"),
    _rlhf({"po.loss": "sft"}, r"config\.po\.loss='sft'; expected one of", name="loss-of-another-method"),
    _rlhf({"po.beta": 0.0}, r"config\.po\.beta=0\.0; expected a finite number > 0", name="beta-0"),
    _rlhf({"po.beta": -1.0}, r"config\.po\.beta=-1\.0", name="beta-negative"),
    _rlhf({"po.alpha": -0.5}, r"config\.po\.alpha=-0\.5", name="alpha-negative"),
    _rlhf({"po.prompts_per_step": 0}, r"config\.po\.prompts_per_step=0", name="prompts-per-step-0"),
    _rlhf({"po.loss": "kl_pg", "po.group_size": 1}, r"config\.po\.group_size=1; expected an integer >= 2",
          name="group-size-1-for-kl-pg"),
    _rlhf({"train.num_steps": 0}, r"config\.train\.num_steps=0", name="num-steps-0"),
    _rlhf({"self_reward": "majority"}, r"config\.self_reward='majority' is not a reward; valid: \['log_likelihood'",
          name="subset-dependent-reward"),
    _rlhf({"train.grad_accum_steps": 3}, r"config\.po\.prompts_per_step=4 is not a multiple", name="accum"),
    _rlhf({"sampling.temperature": math.inf}, r"config\.sampling\.temperature=inf", name="temperature-inf"),
]

CASES = INFERENCE + SFT + RLHF


@pytest.mark.parametrize("case", CASES, ids=ids(CASES))
def test_bad_config_is_a_clear_early_error(case, tmp_path, monkeypatch):
    check_case(case, tmp_path, monkeypatch)


def test_an_existing_workdir_is_untouched_by_a_bad_config(tmp_path, monkeypatch):
    """A bad config given for a workdir that holds a finished run changes nothing there."""
    workdir = tmp_path / "w"
    workdir.mkdir()
    (workdir / "config.json").write_text('{"seed": 0}\n')
    (workdir / "results.jsonl").write_text('{"model": "m"}\n')
    case = _sft({"train.batch_size": 0}, r"config\.train\.batch_size=0", name="existing-workdir")
    check_case(dataclasses.replace(case, workdir=None), tmp_path, monkeypatch)


GOOD_RUNS = [("inference", inference_sharpening, inference_configs), ("sft", sft_sharpening, sft_configs),
             ("rlhf", rlhf_sharpening, rlhf_configs)]


@pytest.mark.parametrize("name, module, configs", GOOD_RUNS, ids=[g[0] for g in GOOD_RUNS])
def test_the_hooks_see_a_good_config_load_its_model(name, module, configs, tmp_path, monkeypatch):
    """Negative control of `check_case`'s "no model loaded first": with the same hooks, the unchanged smoke
    config of each experiment reaches the hooked model load (its random model) as its first expensive
    call. If an experiment loaded its model by a path the hooks do not see, every case above would pass
    that check without testing it; here it fails."""
    calls = bad_inputs_lib.install_hooks(monkeypatch)
    with pytest.raises(bad_inputs_lib.ExpensiveWork):
        module.run(configs.get_config("smoke"), str(tmp_path / "w"))
    assert calls == ["sharpen_jax.testing.random_model"], calls
