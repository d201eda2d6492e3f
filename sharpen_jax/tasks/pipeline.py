"""Grain pipelines that turn task examples into batches of formatted prompts.

`prompt_dataset(task, source, batch_size=...)` accepts any random-access source of examples: a
task's split (``task.examples("test")``, a tuple of `Example`s) or a built array_record split
(``storage.data_source(path, "test")``, whose records are decoded on the fly). It returns a
`grain.MapDataset` whose elements are dicts of equal-length lists::

    {"id": [...], "prompt": [...], "answer": [...]}

``prompt`` holds plain strings, or chat message lists when ``chat=True``. Optional seeded shuffling
and `drop_remainder` behave as in grain; iteration order is deterministic for a given seed.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import grain

from sharpen_jax.tasks.base import Example, TaskBase


def _as_example(item: Example | dict[str, Any]) -> Example:
    if isinstance(item, Example):
        return item
    from sharpen_jax.tasks.storage import decode  # only array_record sources need TFDS

    return decode(item)


def _format(task: TaskBase, num_shots: int, chat: bool, item: Example | dict) -> dict[str, Any]:
    example = _as_example(item)
    return {
        "id": example.id,
        "prompt": task.format_prompt(example, num_shots=num_shots, chat=chat),
        "answer": example.answer,
    }


def collate(elements: Sequence[dict[str, Any]]) -> dict[str, list[Any]]:
    """A batch as a dict of lists (strings and chat messages do not stack into arrays)."""
    return {key: [element[key] for element in elements] for key in elements[0]}


def prompt_dataset(
    task: TaskBase,
    source: Sequence[Any],
    *,
    batch_size: int,
    num_shots: int = 1,
    chat: bool = False,
    shuffle_seed: int | None = None,
    drop_remainder: bool = False,
) -> grain.MapDataset:
    """A grain dataset of prompt batches for `source` (see the module docstring)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    dataset = grain.MapDataset.source(source)
    if shuffle_seed is not None:
        dataset = dataset.shuffle(seed=shuffle_seed)
    dataset = dataset.map(functools.partial(_format, task, num_shots, chat))
    return dataset.batch(batch_size, drop_remainder=drop_remainder, batch_fn=collate)
