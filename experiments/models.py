"""Model specs of the experiments: one way to name, check and load a model and its tokenizer.

A spec is a short name ("smollm2-135m-instruct", "gemma3-270m"), an HF checkpoint directory, a .gguf file, the
one toy model of every experiment, "random:SEED": a decoder of the config's `random_model` shape
with random weights (`sharpen_jax.testing.random_model`), over the vocabulary of the config's
`tokenizer`, or the workdir of a finished training experiment (SFT- or RLHF-Sharpening,
`experiments.training_run`: config.json, checkpoints/, results.json with "after"): the trained
policy, its base model as that run's config names it, the newest checkpoint's parameters on top,
LoRA adapters merged (`lora.merge_adapters`). A tokenizer spec is a model spec whose tokenizer is read, or "char" for the character
tokenizer of `sharpen_jax.testing`.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any

import jax

from experiments.common import ConfigError
from sharpen_jax import distributed, sharding, testing, tokenizer as tokenizers, weights
from sharpen_jax.config import TransformerConfig
from sharpen_jax.jsonl import read_json
from sharpen_jax.training import lora
from sharpen_jax.training.checkpoint import Checkpointer

CHAR_TOKENIZER = "char"
RANDOM_SHAPE = {"dim": 32, "num_layers": 2, "num_heads": 4, "num_kv_heads": 2, "head_dim": 8, "hidden_dim": 64,
                "max_seq_len": 2048}


CHECKPOINTS_ENV = "SHARPEN_JAX_CHECKPOINTS"


def checkpoint_dir(name: str) -> str:
    """The HF checkpoint directory `name` (e.g. "Phi-3.5-mini-instruct", the Hugging Face repository
    name) under $SHARPEN_JAX_CHECKPOINTS (default /checkpoints): where the paper presets look."""
    return os.path.join(os.environ.get(CHECKPOINTS_ENV, "/checkpoints"), name)


@dataclasses.dataclass
class LoadedModel:
    """A model spec with its config, parameters (placed on the mesh if any) and tokenizer."""

    spec: str
    config: TransformerConfig
    params: dict
    tokenizer: Any


def is_trained_workdir(spec: str) -> bool:
    """Whether `spec` is a training experiment's workdir (a directory with config.json and checkpoints/)."""
    return os.path.isdir(os.path.join(spec, "checkpoints")) and os.path.isfile(os.path.join(spec, "config.json"))


def trained_config(workdir: str) -> dict:
    """The config.json of a finished training workdir; ConfigError naming the workdir when the run has
    not finished (no results.json with "after") or its config names no base model."""
    results = os.path.join(workdir, "results.json")
    if not os.path.isfile(results) or "after" not in read_json(results):
        raise ConfigError(f"training workdir {workdir!r} has not finished (no results.json with 'after'); "
                          f"finish its run (the same command again) before using it as a model")
    cfg = read_json(os.path.join(workdir, "config.json"))
    if not isinstance(cfg.get("model"), str) or "lora" not in cfg:
        raise ConfigError(f"training workdir {workdir!r}: its config.json has no 'model' and 'lora'; expected "
                          f"the workdir of experiments.sft_sharpening or rlhf_sharpening")
    return cfg


def check_model_spec(spec: str, tokenizer_spec: str, *, where: str = "config.model") -> None:
    """Raise ConfigError unless `spec` names a loadable model (without loading it) and, for the toy
    model, a tokenizer is set; file specs are resolved, so a missing file is named here."""
    if not isinstance(spec, str) or not spec:
        raise ConfigError(f"{where}={spec!r}; expected a model name, a checkpoint path, a finished training "
                          f"workdir or 'random:SEED'")
    if is_trained_workdir(spec):
        try:
            cfg = trained_config(spec)
        except ConfigError as err:
            raise ConfigError(f"{where}: {err}") from None
        check_model_spec(cfg["model"], cfg.get("tokenizer", ""), where=f"{where} (its base model)")
        return
    if testing.is_random_spec(spec):
        try:
            testing.random_seed(spec)
        except ValueError as err:
            raise ConfigError(f"{where}: {err}") from None
        if not tokenizer_spec:
            raise ConfigError(f"{where}={spec!r} has no tokenizer of its own; set config.tokenizer "
                              f"({CHAR_TOKENIZER!r} or a model spec)")
    else:
        try:
            weights.resolve(spec)
        except (FileNotFoundError, ValueError) as err:
            raise ConfigError(f"{where}: {err}") from None
    if tokenizer_spec and tokenizer_spec != CHAR_TOKENIZER:
        check_model_spec(tokenizer_spec, "", where="config.tokenizer")


@functools.lru_cache(maxsize=8)
def load_tokenizer(spec: str):
    """The tokenizer of a spec, once per spec per process (reading a GGUF's vocabulary takes seconds)."""
    if spec == CHAR_TOKENIZER:
        return testing.CharTokenizer()
    return tokenizers.load(spec)


def load_model(spec: str, *, tokenizer_spec: str = "", random_shape: dict | None = None, dtype: str = "",
               mesh: jax.sharding.Mesh | None = None, decode_layout: bool = True) -> LoadedModel:
    """Weights and tokenizer of a model spec, parameters placed on `mesh` if given: in the decode
    layout, or in the train layout (`sharding.param_shardings`) when not `decode_layout`."""
    if is_trained_workdir(spec):  # the run's own base model, tokenizer and shape; `tokenizer_spec` does not apply
        cfg = trained_config(spec)
        base = load_model(cfg["model"], tokenizer_spec=cfg.get("tokenizer", ""), random_shape=cfg.get("random_model"),
                          dtype=dtype or cfg.get("dtype", ""))
        config, params, tok = base.config, trained_params(spec, cfg, base.params), base.tokenizer
    elif testing.is_random_spec(spec):
        tok = load_tokenizer(tokenizer_spec)
        config, params = testing.random_model(spec, tok.vocab_size, dict(random_shape or RANDOM_SHAPE))
    else:
        config, params = weights.load(spec, dtype=dtype or None, mesh=mesh)
        tok = load_tokenizer(tokenizer_spec or spec)
    if mesh is not None:
        params = distributed.to_global(params, sharding.param_shardings(params, mesh, decode=decode_layout))
    return LoadedModel(spec, config, params, tok)


def trained_params(workdir: str, cfg: dict, base_params: dict) -> dict:
    """Plain parameters of the trained policy of `workdir`: its newest checkpoint's parameters (full
    fine-tuning, in the base parameters' dtypes), or W + (alpha / rank) A B with its LoRA adapters
    folded into `base_params`."""
    with Checkpointer(os.path.join(workdir, "checkpoints"), async_save=False) as checkpointer:
        trained = checkpointer.read_arrays()["params"]
    if not cfg["lora"]["rank"]:
        return jax.tree.map(lambda t, b: jax.numpy.asarray(t, b.dtype), trained, base_params)
    return lora.merge_adapters(base_params, trained, cfg["lora"]["alpha"] / cfg["lora"]["rank"])
