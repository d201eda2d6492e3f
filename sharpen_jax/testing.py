"""Test doubles shared by the tests, the benchmarks and the experiments' `smoke` presets.

* `CharTokenizer`: one token per printable ASCII character (plus optional whole words as single
  tokens), with the interface of `sharpen_jax.tokenizer.Tokenizer` that the sampler, rollouts and
  rewards use (encode, decode, token_bytes, pad_id, eos_ids, vocab_size).
* `random_params`: random parameters shaped like the model's, drawn on the host with numpy (tracing
  the flax initializer op by op takes seconds on CPU).
* `random_model`: the toy model behind the one toy-model name of every experiment, "random:SEED".
"""

from __future__ import annotations

import string
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from sharpen_jax.config import TransformerConfig
from sharpen_jax.model import param_shapes

RANDOM_PREFIX = "random:"


class CharTokenizer:
    """One token per printable ASCII character or newline; id 0 is padding and end of sequence.

    `words` are extra single-token entries (ids after the characters), matched when `encode` is
    given exactly that word, e.g. the " Yes" / " No" of a verifier.
    """

    def __init__(self, words: Sequence[str] = ()):
        self.chars = ["<pad>"] + [c for c in string.printable if c not in "\t\r\x0b\x0c"]
        self.words = {w: len(self.chars) + i for i, w in enumerate(words)}
        self.index = {c: i for i, c in enumerate(self.chars)}
        self.pad_id, self.eos_ids, self.bos_id = 0, (0,), None

    @property
    def vocab_size(self) -> int:
        """Number of ids: padding, one per character, one per extra word."""
        return len(self.chars) + len(self.words)

    def encode(self, text: str, add_bos: bool | None = None) -> list[int]:
        """One id per character of `text` (or the word's id); an unknown character is an error naming it."""
        if not isinstance(text, str):
            raise TypeError(f"CharTokenizer.encode expects a str, got {type(text).__name__}")
        if text in self.words:
            return [self.words[text]]
        unknown = sorted({c for c in text if c not in self.index})
        if unknown:
            raise ValueError(f"CharTokenizer cannot encode characters {unknown}")
        return [self.index[c] for c in text]

    def decode(self, ids, skip_special_tokens: bool = True) -> str:
        """The characters of `ids`, without padding ids unless `skip_special_tokens` is false."""
        by_id = {i: w for w, i in self.words.items()}
        return "".join(by_id.get(i) or self.chars[i] for i in ids if not (skip_special_tokens and i == 0))

    def token_bytes(self) -> list[bytes]:
        """The bytes each id contributes to decoded text (the sampler's stop-string automata read these)."""
        return [b""] + [c.encode() for c in self.chars[1:]] + [w.encode() for w in self.words]


def random_params(config: TransformerConfig, seed: int, *, scale: float = 0.02, unit_norms: bool = True) -> dict:
    """Random parameters shaped like `model.init_params(config, ...)`: normal(0, scale) entries, norm
    scales 1 (or random too when `unit_norms` is false), drawn on the host with numpy."""
    rng = np.random.default_rng(seed)

    def draw(path, shape):
        if unit_norms and path[-1].key == "scale":
            return jnp.ones(shape.shape, shape.dtype)
        return jnp.asarray(rng.normal(0.0, scale, shape.shape), shape.dtype)

    return jax.tree_util.tree_map_with_path(draw, param_shapes(config))


def is_random_spec(spec: str) -> bool:
    """Whether a model spec names the toy model ("random:SEED")."""
    return spec.startswith(RANDOM_PREFIX)


def random_seed(spec: str) -> int:
    """The seed of a "random:SEED" spec; anything else is a ValueError naming the expected form."""
    seed = spec[len(RANDOM_PREFIX):] if is_random_spec(spec) else ""
    if not seed.isdigit():
        raise ValueError(f"model {spec!r}: expected 'random:SEED' with a non-negative integer seed")
    return int(seed)


def random_model(spec: str, vocab_size: int, shape: dict[str, Any]) -> tuple[TransformerConfig, dict]:
    """(config, params) of the toy model "random:SEED": a decoder of the given `shape` (keyword
    fields of TransformerConfig) over `vocab_size` ids with `random_params(config, SEED)`."""
    config = TransformerConfig(vocab_size=vocab_size, **dict(shape))
    return config, random_params(config, random_seed(spec))
