"""Base class for tasks generated from a seed: ProntoQA, arithmetic and 4x4 Sudoku.

A generated task is a pure function of its options: `seed`, `num_train`, `num_test` and the
task's own difficulty settings. Each split draws from its own `numpy.random.Generator` seeded with
``(seed, split code)``, questions are distinct within the task, and the test split is generated
first so that no test question ever appears in train (the shot pool). The same options therefore
give the same examples, byte for byte, on every machine.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

from sharpen_jax.tasks.base import Example, TaskBase

_SPLIT_CODES = {"train": 0, "test": 1}
_ATTEMPTS_PER_EXAMPLE = 50


def check_range(name: str, value: int | Sequence[int], low: int, high: int) -> tuple[int, int]:
    """`value` (an int or an inclusive (lo, hi) pair) as a pair within [low, high]."""
    pair = (value, value) if isinstance(value, (int, np.integer)) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, (int, np.integer)) for v in pair):
        raise ValueError(f"{name} must be an int or a (low, high) pair of ints, got {value!r}")
    lo, hi = int(pair[0]), int(pair[1])
    if not low <= lo <= hi <= high:
        raise ValueError(f"{name} must lie within [{low}, {high}] with low <= high, got {value!r}")
    return lo, hi


def pick(rng: np.random.Generator, items: Sequence[Any], count: int) -> list[Any]:
    """`count` distinct items of `items`, in random order."""
    return [items[int(i)] for i in rng.choice(len(items), size=count, replace=False)]


class GeneratedTask(TaskBase):
    """Generated train/test splits; subclasses implement `generate(rng)` for one example."""

    splits = ("train", "test")

    def __init__(
        self, *, seed: int = 0, num_train: int = 1000, num_test: int = 200, shot_seed: int = 0
    ):
        super().__init__(shot_seed=shot_seed)
        for label, value in (("seed", seed), ("num_train", num_train), ("num_test", num_test)):
            if not isinstance(value, (int, np.integer)) or value < 0:
                raise ValueError(f"{label} must be a non-negative int, got {value!r}")
        self.seed = int(seed)
        self.sizes = {"train": int(num_train), "test": int(num_test)}

    @abc.abstractmethod
    def generate(self, rng: np.random.Generator) -> Example:
        """One new example (its id is assigned by the caller)."""

    def _load(self, split: str) -> list[Example]:
        taken = {e.question for e in self.examples("test")} if split == "train" else set()
        rng = np.random.default_rng([self.seed, _SPLIT_CODES[split]])
        size = self.sizes[split]
        examples: list[Example] = []
        for _ in range(_ATTEMPTS_PER_EXAMPLE * size):
            if len(examples) == size:
                break
            example = self.generate(rng)
            if example.question in taken:
                continue
            taken.add(example.question)
            examples.append(dataclasses.replace(example, id=f"{split}-{len(examples):05d}"))
        if len(examples) < size:
            raise ValueError(
                f"task {self.name!r} could generate only {len(examples)} distinct {split} "
                f"questions of the {size} asked for; allow harder settings or ask for fewer"
            )
        return examples
