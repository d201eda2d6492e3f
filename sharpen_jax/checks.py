"""Host-side argument checks: the one home of "is this value what the function expects?".

Every public entry point (sampler, scorer, rewards, tokenizer, model config readers, experiment
configs) checks its arguments with these functions before any jitted code runs, so a bad value
is a ValueError (TypeError for a wrong kind of value) that names the argument and what was
expected, instead of a NaN, a silent cast or a broadcasting error from deep inside XLA.

Array checks read only static facts (shape, dtype) from traced values and skip the value checks
(ranges, finiteness) for them: under an outer `jax.jit` those values do not exist on the host.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Sequence

import jax
import numpy as np


def is_traced(value: Any) -> bool:
    """True for a jax tracer (an abstract value inside jit/vmap/grad), whose contents are unknown."""
    return isinstance(value, jax.core.Tracer)


def integer(name: str, value: Any, minimum: int | None = None, maximum: int | None = None) -> int:
    """`value` as a Python int; it must be an integer (not a bool, not 2.0) within [minimum, maximum]."""
    ok = isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))
    if ok and minimum is not None:
        ok = value >= minimum
    if ok and maximum is not None:
        ok = value <= maximum
    if not ok:
        bounds = [f">= {minimum}"] if minimum is not None else []
        bounds += [f"<= {maximum}"] if maximum is not None else []
        raise ValueError(f"{name}={value!r}; expected an integer" + (" " + " and ".join(bounds) if bounds else ""))
    return int(value)


def number(name: str, value: Any, *, minimum: float | None = None, maximum: float | None = None,
           strict_minimum: bool = False) -> float:
    """`value` as a float; it must be a finite real number within the bounds (minimum excluded when
    `strict_minimum`). NaN and infinities are refused."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_)) and math.isfinite(value)
    if ok and minimum is not None:
        ok = value > minimum if strict_minimum else value >= minimum
    if ok and maximum is not None:
        ok = value <= maximum
    if not ok:
        bounds = [f"{'>' if strict_minimum else '>='} {minimum}"] if minimum is not None else []
        bounds += [f"<= {maximum}"] if maximum is not None else []
        raise ValueError(f"{name}={value!r}; expected a finite number" + (" " + " and ".join(bounds) if bounds
                                                                          else ""))
    return float(value)


def choice(name: str, value: Any, choices: Sequence[Any]) -> Any:
    """`value`, which must be one of `choices`."""
    if value not in tuple(choices):
        raise ValueError(f"{name}={value!r}; expected one of {list(choices)}")
    return value


def token_list(name: str, value: Any, vocab_size: int) -> list[int]:
    """A sequence of token ids as a list of ints in [0, vocab_size); text, floats and bools are refused."""
    if isinstance(value, (str, bytes)):
        raise TypeError(f"{name} is a {type(value).__name__} ({value[:40]!r}); expected a sequence of token ids "
                        f"(encode text with the tokenizer first)")
    array = np.asarray(value)
    if array.ndim != 1:
        raise ValueError(f"{name} has shape {array.shape}; expected a flat sequence of token ids")
    if array.size and not np.issubdtype(array.dtype, np.integer):
        raise TypeError(f"{name} has {array.dtype} entries; expected integer token ids")
    if array.size and (array.min() < 0 or array.max() >= vocab_size):
        bad = int(array[(array < 0) | (array >= vocab_size)][0])
        raise ValueError(f"{name} holds token id {bad}; expected ids in [0, {vocab_size})")
    return [int(i) for i in array]


def array_shape(name: str, value: Any, ndim: int, *, dims: dict[int, tuple[str, int]] | None = None) -> tuple:
    """The shape of `value`, which must have `ndim` axes; `dims` maps an axis to (label, required size)."""
    shape = tuple(np.shape(value))
    if len(shape) != ndim:
        raise ValueError(f"{name} has shape {shape}; expected {ndim} axes")
    for axis, (label, size) in (dims or {}).items():
        if shape[axis] != size:
            raise ValueError(f"{name} has shape {shape}; axis {axis} must equal {label} = {size}")
    return shape


def _dtype(value: Any) -> np.dtype:
    """The dtype of an array (also of a traced one) or of what numpy makes of a nested list."""
    return np.dtype(value.dtype) if hasattr(value, "dtype") else np.asarray(value).dtype


def token_array(name: str, value: Any, vocab_size: int, ndim: int = 2) -> None:
    """`value` must be an integer array of `ndim` axes with ids in [0, vocab_size) (range unchecked when traced)."""
    array_shape(name, value, ndim)
    dtype = _dtype(value)
    if not np.issubdtype(dtype, np.integer):
        raise TypeError(f"{name} has dtype {dtype}; expected integer token ids")
    if is_traced(value) or np.size(value) == 0:
        return
    host = np.asarray(value)
    if host.min() < 0 or host.max() >= vocab_size:
        bad = int(host[(host < 0) | (host >= vocab_size)].flat[0])
        raise ValueError(f"{name} holds token id {bad}; expected ids in [0, {vocab_size})")


def mask_array(name: str, value: Any, shape: tuple) -> None:
    """`value` must be a boolean array of exactly `shape`."""
    actual = tuple(np.shape(value))
    if actual != tuple(shape):
        raise ValueError(f"{name} has shape {actual}; expected {tuple(shape)} (the shape of its token array)")
    dtype = _dtype(value)
    if dtype != np.bool_:
        raise TypeError(f"{name} has dtype {dtype}; expected bool")


def finite_array(name: str, value: Any) -> None:
    """`value` must hold only finite numbers (skipped when traced)."""
    if is_traced(value):
        return
    host = np.asarray(value)
    if not np.issubdtype(host.dtype, np.number) or np.issubdtype(host.dtype, np.complexfloating):
        raise TypeError(f"{name} has dtype {host.dtype}; expected real numbers")
    if host.size and not np.isfinite(host).all():
        raise ValueError(f"{name} holds non-finite values (NaN or inf); expected finite numbers")
