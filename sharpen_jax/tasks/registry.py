"""Task registry: `get(name, data_dir=..., **options)` and `names()`.

Task modules are imported on first use, so `from sharpen_jax import tasks` stays cheap (MATH's
grader pulls in sympy through math-verify; the storage path pulls in tensorflow-datasets).
Generated tasks take no files and accept `data_dir` only so that callers can pass it uniformly.
"""

from __future__ import annotations

import importlib
import inspect
import os
from typing import Any

from sharpen_jax.tasks.base import TaskBase

# name -> (module, class, fixed keyword arguments, whether the task reads files)
_TASKS: dict[str, tuple[str, str, dict[str, Any], bool]] = {
    "gsm8k": ("sharpen_jax.tasks.gsm8k", "GSM8K", {}, True),
    "math": ("sharpen_jax.tasks.math_problems", "MathProblems", {"variant": "math"}, True),
    "math500": ("sharpen_jax.tasks.math_problems", "MathProblems", {"variant": "math500"}, True),
    "game24": ("sharpen_jax.tasks.game24", "Game24", {}, True),
    "prontoqa": ("sharpen_jax.tasks.prontoqa", "ProntoQA", {}, False),
    "arithmetic": ("sharpen_jax.tasks.arithmetic", "Arithmetic", {}, False),
    "sudoku4": ("sharpen_jax.tasks.sudoku", "Sudoku4", {}, False),
    "mmlu": ("sharpen_jax.tasks.multiple_choice", "MultipleChoice", {}, True),
}


def names() -> list[str]:
    """Names of all registered tasks, sorted."""
    return sorted(_TASKS)


def reads_files(name: str) -> bool:
    """Whether task `name` is built from user files (True) or generated from a seed (False)."""
    return _entry(name)[3]


def task_class(name: str) -> type[TaskBase]:
    """The class implementing task `name`."""
    module, cls, _, _ = _entry(name)
    return getattr(importlib.import_module(module), cls)


def accepted_options(name: str) -> list[str]:
    """Keyword options that `get(name, ...)` accepts besides `data_dir`."""
    fixed = _entry(name)[2]
    parameters = inspect.signature(task_class(name).__init__).parameters
    return [p for p in parameters if p not in ("self", "data_dir") and p not in fixed]


def get(name: str, data_dir: str | os.PathLike | None = None, **options: Any) -> TaskBase:
    """A new task instance by name; unknown names and unknown options raise ValueError."""
    _, _, fixed, file_backed = _entry(name)
    unknown = sorted(set(options) - set(accepted_options(name)))
    if unknown:
        raise ValueError(
            f"task {name!r} got unknown option(s) {unknown}; accepted: {accepted_options(name)}"
        )
    task_cls = task_class(name)
    if file_backed:
        return task_cls(data_dir, **fixed, **options)
    return task_cls(**fixed, **options)


def _entry(name: str) -> tuple[str, str, dict[str, Any], bool]:
    if name not in _TASKS:
        raise ValueError(f"unknown task {name!r}; known tasks: {names()}")
    return _TASKS[name]
