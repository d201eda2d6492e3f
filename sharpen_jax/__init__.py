"""sharpen_jax: self-improvement of language models (Sharpening, the generation-verification gap, PIT) in JAX.

The curated namespace, imported lazily (`import sharpen_jax as sj` loads nothing heavy until used):

    config, params = sj.load("smollm2-135m-instruct")        # weights (HF dir, GGUF, short name)
    tok = sj.load_tokenizer("smollm2-135m-instruct")
    out = sj.sample(params, config, [tok.encode("2 + 2 =")], num_samples=4, max_new_tokens=8,
                    rng=jax.random.key(0))                    # on-device sampler
    scores = sj.score(params, config, prompt_tokens, prompt_valid, tokens, valid)   # log pi(y|x)
    sj.rewards.LOG_LIKELIHOOD(inputs)                         # self-rewards: RewardInputs -> [B, N]
    step = sj.methods.get_loss("reward_dpo").make_step(logprob_fn, tx, hyperparameters={"beta": 1.0})
    state, metrics = step(state, ref_params, batch)           # the one train step

See docs/ARCHITECTURE.md for the layers and how to add a method.
"""

from __future__ import annotations

import importlib
from typing import Any

# name -> (module, attribute or None for the module itself)
_EXPORTS: dict[str, tuple[str, str | None]] = {
    "TransformerConfig": ("sharpen_jax.config", "TransformerConfig"),
    "load": ("sharpen_jax.weights", "load"),
    "load_tokenizer": ("sharpen_jax.tokenizer", "load"),
    "sample": ("sharpen_jax.sampling", "sample"),
    "generate": ("sharpen_jax.sampling", "generate"),
    "score": ("sharpen_jax.scoring", "score_completions"),
    "score_sequences": ("sharpen_jax.scoring", "score_sequences"),
    "tasks": ("sharpen_jax.tasks", None),
    "selection": ("sharpen_jax.selection", None),
    "rewards": ("sharpen_jax.selection.rewards", None),
    "RewardInputs": ("sharpen_jax.selection.rewards", "RewardInputs"),
    "make_verifier_reward": ("sharpen_jax.selection.verifiers", "make_verifier_reward"),
    "best_of_n": ("sharpen_jax.selection.best_of_n", None),
    "rollouts": ("sharpen_jax.rollouts", None),
    "training": ("sharpen_jax.training", None),
    "TrainState": ("sharpen_jax.training.train_state", "TrainState"),
    "create_train_state": ("sharpen_jax.training.train_state", "create_train_state"),
    "make_train_step": ("sharpen_jax.training.step", "make_train_step"),
    "train_loop": ("sharpen_jax.training.loop", "train_loop"),
    "methods": ("sharpen_jax.methods", None),
    "theory": ("sharpen_jax.theory", None),
    "sharding": ("sharpen_jax.sharding", None),
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'sharpen_jax' has no attribute {name!r}")
    module_name, attribute = _EXPORTS[name]
    module = importlib.import_module(module_name)
    value = module if attribute is None else getattr(module, attribute)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
