"""Model specs of the experiments: one way to name, check and load a model and its tokenizer.

A spec is a short name ("smollm2-135m-instruct", "gemma3-270m"), an HF checkpoint directory, a .gguf file, or the
one toy model of every experiment, "random:SEED": a decoder of the config's `random_model` shape
with random weights (`sharpen_jax.testing.random_model`), over the vocabulary of the config's
`tokenizer`. A tokenizer spec is a model spec whose tokenizer is read, or "char" for the character
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


def check_model_spec(spec: str, tokenizer_spec: str, *, where: str = "config.model") -> None:
    """Raise ConfigError unless `spec` names a loadable model (without loading it) and, for the toy
    model, a tokenizer is set; file specs are resolved, so a missing file is named here."""
    if not isinstance(spec, str) or not spec:
        raise ConfigError(f"{where}={spec!r}; expected a model name, a checkpoint path or 'random:SEED'")
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
    if testing.is_random_spec(spec):
        tok = load_tokenizer(tokenizer_spec)
        config, params = testing.random_model(spec, tok.vocab_size, dict(random_shape or RANDOM_SHAPE))
    else:
        config, params = weights.load(spec, dtype=dtype or None, mesh=mesh)
        tok = load_tokenizer(tokenizer_spec or spec)
    if mesh is not None:
        params = distributed.to_global(params, sharding.param_shardings(params, mesh, decode=decode_layout))
    return LoadedModel(spec, config, params, tok)
