"""GSM8K grade-school math word problems, read from the official JSONL files.

Each line holds ``question`` and ``answer``; the answer is a worked solution with calculator
annotations (``<<16-3-4=9>>``) and a final line ``#### N``. `Example.solution` keeps the official
text unchanged; the reference completion (and hence every few-shot answer) drops the calculator
annotations, so the model sees ordinary prose that ends in ``#### N``. `Example.answer` is N in
canonical form (commas removed, "1,080" -> "1080").

Grading is numeric: the extractor of `answer_text.extract_final_number` reads ``#### N``, a boxed
number, "The answer is N" or the last number, tolerating commas, dollar signs, trailing periods
and units; the value must equal the reference.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

from sharpen_jax.tasks.answer_text import extract_final_number, normalize_number, numbers_equal
from sharpen_jax.tasks.base import Example, TaskBase
from sharpen_jax.tasks.files import (
    TaskDataError,
    check_split_files,
    find_task_files,
    read_jsonl,
)

_CALCULATOR_RE = re.compile(r"<<[^<>]*>>")
_SPLIT_FILES = {"train": "train.jsonl", "test": "test.jsonl"}


def split_solution(answer_text: str) -> tuple[str, str]:
    """(reasoning, final answer text) of an official GSM8K answer field ending in ``#### N``."""
    if "####" not in answer_text:
        raise ValueError("expected a GSM8K answer ending in '#### <number>'")
    reasoning, final = answer_text.rsplit("####", 1)
    return reasoning.rstrip(), final.strip()


class GSM8K(TaskBase):
    """GSM8K from ``train.jsonl`` / ``test.jsonl`` in `data_dir` (or its ``gsm8k/`` sub-folder).

    `files` maps split names to JSONL paths directly and overrides `data_dir`.
    """

    name = "gsm8k"
    instruction = (
        "Solve the grade-school math problem step by step. "
        "End with a final line of the form '#### <number>'."
    )

    def __init__(
        self,
        data_dir: str | os.PathLike | None = None,
        *,
        files: Mapping[str, str | os.PathLike] | None = None,
        shot_seed: int = 0,
    ):
        super().__init__(shot_seed=shot_seed)
        if files is not None:
            self._files = check_split_files(files, "gsm8k")
            self.source_dir = next(iter(self._files.values())).parent
        else:
            self.source_dir, found = find_task_files(data_dir, "gsm8k", list(_SPLIT_FILES.values()))
            self._files = {s: found[f] for s, f in _SPLIT_FILES.items() if f in found}
        self.splits = tuple(self._files)
        if "train" not in self._files:
            self.shot_split = self.splits[0]

    def _load(self, split: str) -> list[Example]:
        path = self._files[split]
        examples = []
        for index, (line, row) in enumerate(read_jsonl(path, ("question", "answer"))):
            try:
                _, final = split_solution(row["answer"])
            except ValueError as error:
                raise TaskDataError(f"{path}:{line}: {error}") from None
            answer = normalize_number(final)
            if answer is None:
                raise TaskDataError(f"{path}:{line}: final answer {final!r} is not a number")
            examples.append(
                Example(
                    id=f"{split}-{index:05d}",
                    question=row["question"].strip(),
                    answer=answer,
                    solution=row["answer"],
                    metadata={"line": line},
                )
            )
        return examples

    def reference_completion(self, example: Example) -> str:
        """The official solution without calculator annotations, ending in ``#### N``."""
        reasoning, _ = split_solution(example.solution or "")
        return f" {_CALCULATOR_RE.sub('', reasoning)}\n#### {example.answer}"

    def extract_answer(self, completion: str) -> str | None:
        """The final number of the completion in canonical form, or None when there is none."""
        return extract_final_number(completion)

    def is_equivalent(self, example: Example, extracted: str) -> bool:
        """Numeric equality with the reference answer."""
        return numbers_equal(extracted, example.answer)
