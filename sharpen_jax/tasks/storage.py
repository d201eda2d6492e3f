"""Task datasets as TensorFlow-Datasets builders that write array_record files.

`build(name, out_dir, data_dir=..., **options)` runs the task's TFDS builder and returns the
dataset directory ``out_dir/sharpen_<name>/<config>/1.0.0`` holding one array_record file per split
plus TFDS's JSON metadata. `read_examples(path, split)` reads it back as `Example`s through
`tfds.builder_from_directory(...).as_data_source(...)`, a random-access source that grain consumes
directly (see `pipeline`). Neither path imports TensorFlow: TFDS's `GeneratorBasedBuilder` writes
array_record and its data sources read it with TensorFlow absent (checked in the tests, which run
without TensorFlow installed).

Builders follow TFDS conventions. File-backed tasks (gsm8k, math, math500, game24, mmlu) read the
raw files from the manual directory (``DownloadConfig(manual_dir=...)``, filled from `data_dir`);
generated tasks (prontoqa, arithmetic, sudoku4) build from their options, `seed` and sizes
included. Options become a `TaskConfig`, whose name encodes them, so different settings live side
by side. Shuffling is disabled: records keep the task's example order, and building the same
options twice gives byte-identical array_record files.

Records store id, question, answer, solution (with `has_solution`, since it may be None) and the
metadata as sorted-key JSON. `task.examples(split)` on the raw files remains the everyday path: it
needs no build step and is as fast; this module is the storage path for pipelines and sharing.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from sharpen_jax.tasks import registry
from sharpen_jax.tasks.base import Example

VERSION = "1.0.0"
FEATURES = {
    "id": tfds.features.Text(),
    "question": tfds.features.Text(),
    "answer": tfds.features.Text(),
    "solution": tfds.features.Text(),
    "has_solution": np.bool_,
    "metadata": tfds.features.Text(),
}


@dataclasses.dataclass
class TaskConfig(tfds.core.BuilderConfig):
    """A builder config carrying the task options as sorted (name, JSON value) pairs."""

    options: tuple[tuple[str, str], ...] = ()


def config_for(options: dict[str, Any]) -> TaskConfig:
    """The `TaskConfig` for a non-empty set of task options.

    Its name is a readable digest of the options plus a hash of their exact JSON, so that options
    that read alike (ops=("+",) and ops=("*",)) never share a dataset directory.
    """
    pairs = tuple(sorted((k, json.dumps(v, sort_keys=True)) for k, v in options.items()))
    readable = re.sub(r"[^A-Za-z0-9_.-]+", "", "_".join(f"{key}-{value}" for key, value in pairs))
    digest = hashlib.sha256(json.dumps(pairs).encode()).hexdigest()[:10]
    description = json.dumps({key: json.loads(value) for key, value in pairs}, sort_keys=True)
    return TaskConfig(name=f"{readable[:48]}-{digest}", options=pairs, description=description)


def encode(example: Example) -> dict[str, Any]:
    """A TFDS record for `example`."""
    return {
        "id": example.id,
        "question": example.question,
        "answer": example.answer,
        "solution": example.solution or "",
        "has_solution": example.solution is not None,
        "metadata": json.dumps(dict(example.metadata), sort_keys=True),
    }


def decode(record: dict[str, Any]) -> Example:
    """The `Example` of a record read back from array_record (bytes or str fields)."""

    def text(value: Any) -> str:
        return value.decode("utf-8") if isinstance(value, bytes) else str(value)

    return Example(
        id=text(record["id"]),
        question=text(record["question"]),
        answer=text(record["answer"]),
        solution=text(record["solution"]) if bool(record["has_solution"]) else None,
        metadata=json.loads(text(record["metadata"])),
    )


class _TaskBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Writes every split of one task; subclasses set `name` and `TASK`."""

    TASK = ""
    VERSION = tfds.core.Version(VERSION)
    BUILDER_CONFIGS = [TaskConfig(name="default")]

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=f"sharpen_jax task {self.TASK!r}",
            features=tfds.features.FeaturesDict(FEATURES),
            disable_shuffling=True,
        )

    def _split_generators(self, dl_manager):
        options = {key: json.loads(value) for key, value in self.builder_config.options}
        if registry.reads_files(self.TASK):
            task = registry.get(self.TASK, data_dir=dl_manager.manual_dir, **options)
        else:
            task = registry.get(self.TASK, **options)
        return {split: self._generate_examples(task.examples(split)) for split in task.splits}

    def _generate_examples(self, examples):
        for index, example in enumerate(examples):
            yield index, encode(example)


_MANUAL = "Pass the folder holding the raw files as data_dir (TFDS manual_dir)."


class SharpenGsm8k(_TaskBuilder):
    name, TASK, MANUAL_DOWNLOAD_INSTRUCTIONS = "sharpen_gsm8k", "gsm8k", _MANUAL


class SharpenMath(_TaskBuilder):
    name, TASK, MANUAL_DOWNLOAD_INSTRUCTIONS = "sharpen_math", "math", _MANUAL


class SharpenMath500(_TaskBuilder):
    name, TASK, MANUAL_DOWNLOAD_INSTRUCTIONS = "sharpen_math500", "math500", _MANUAL


class SharpenGame24(_TaskBuilder):
    name, TASK, MANUAL_DOWNLOAD_INSTRUCTIONS = "sharpen_game24", "game24", _MANUAL


class SharpenMmlu(_TaskBuilder):
    name, TASK, MANUAL_DOWNLOAD_INSTRUCTIONS = "sharpen_mmlu", "mmlu", _MANUAL


class SharpenProntoqa(_TaskBuilder):
    name, TASK = "sharpen_prontoqa", "prontoqa"


class SharpenArithmetic(_TaskBuilder):
    name, TASK = "sharpen_arithmetic", "arithmetic"


class SharpenSudoku4(_TaskBuilder):
    name, TASK = "sharpen_sudoku4", "sudoku4"


BUILDERS: dict[str, type[_TaskBuilder]] = {
    cls.TASK: cls
    for cls in (
        SharpenGsm8k, SharpenMath, SharpenMath500, SharpenGame24, SharpenMmlu,
        SharpenProntoqa, SharpenArithmetic, SharpenSudoku4,
    )
}  # fmt: skip


def build(
    name: str, out_dir: str | os.PathLike, *, data_dir: str | os.PathLike | None = None, **options
) -> Path:
    """Build task `name` into `out_dir` as array_record files; return the dataset directory.

    As everywhere in TFDS, a dataset already built under `out_dir` with the same name and options
    is reused as it is; build into a fresh `out_dir` after changing the raw files.
    """
    task = registry.get(name, data_dir=data_dir, **options)  # checks name, options, files early
    config = config_for(options) if options else "default"
    builder = BUILDERS[name](data_dir=os.fspath(out_dir), config=config, file_format="array_record")
    download_config = None
    if registry.reads_files(name):
        download_config = tfds.download.DownloadConfig(manual_dir=os.fspath(task.source_dir))
    builder.download_and_prepare(download_config=download_config)
    return Path(builder.data_dir)


def data_source(dataset_dir: str | os.PathLike, split: str):
    """The random-access TFDS source of one split of a built dataset (records, not Examples)."""
    path = Path(dataset_dir)
    if not (path / "dataset_info.json").is_file():
        raise FileNotFoundError(f"{str(path)!r} is not a built dataset (no dataset_info.json)")
    builder = tfds.builder_from_directory(os.fspath(path))
    if split not in builder.info.splits:
        raise ValueError(
            f"dataset {str(path)!r} has no split {split!r}; splits: {sorted(builder.info.splits)}"
        )
    return builder.as_data_source(split=split)


def read_examples(dataset_dir: str | os.PathLike, split: str) -> list[Example]:
    """All `Example`s of one split of a built dataset, in stored order."""
    source = data_source(dataset_dir, split)
    return [decode(source[index]) for index in range(len(source))]
