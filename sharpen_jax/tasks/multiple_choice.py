"""MMLU-style four-option multiple choice from CSV files in the standard layout.

Each row is ``question, option A, option B, option C, option D, answer letter`` with no header (a
header row starting with "question" is tolerated). Files follow the MMLU release:
``<data_dir>/<split>/<subject>_<split>.csv`` (or ``<data_dir>/<subject>_<split>.csv``) for the
splits "dev" (the few-shot pool), "val" and "test"; `files` maps splits to explicit CSV paths
instead, and `subjects` keeps only the named subjects. The subject is the file name without the
``_<split>.csv`` suffix.

`Example.question` includes the options; the reference completion is the letter alone:
``"Question: ...\\nA. ...\\nB. ...\\nC. ...\\nD. ...\\nAnswer: B"``. Shots come from the dev
split of the same subject (falling back to the whole dev split), in the seeded order of `TaskBase`.

Letter extraction accepts "B", "(B)", "B. Paris", "The answer is (B)", "Answer: B" and a final
lone letter; an English article "A" inside a sentence is not mistaken for an option.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from sharpen_jax.tasks.base import Example, TaskBase, truncate_at_continuation
from sharpen_jax.tasks.files import TaskDataError, check_file, read_csv_rows, resolve_data_dir

LETTERS = ("A", "B", "C", "D")
_SPLITS = ("dev", "val", "test")
_STATED_RE = re.compile(r"(?i:answer|option|choice)\s*(?:is|:)?\s*:?\s*\**\(?([ABCD])\)?(?![\w'])")
_LEADING_RE = re.compile(r"^\s*\**\(?([ABCD])(?:[).:\]*]|\s*$|\s+[-–])")
_LONE_RE = re.compile(r"(?<![\w'])\(([ABCD])\)|(?<![\w'])([ABCD])(?=\s*[.)]?\s*$)")


def _as_list(paths: str | os.PathLike | Iterable[str | os.PathLike]) -> list:
    return [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)


def format_options(question: str, options: Sequence[str]) -> str:
    """The question followed by its lettered options, one per line."""
    lines = [f"{letter}. {text.strip()}" for letter, text in zip(LETTERS, options)]
    return "\n".join([question.strip(), *lines])


class MultipleChoice(TaskBase):
    """Four-option multiple choice (MMLU layout) from a user directory or explicit files."""

    name = "mmlu"
    shot_split = "dev"
    instruction = "Answer the multiple-choice question with the letter of the correct option."

    def __init__(
        self,
        data_dir: str | os.PathLike | None = None,
        *,
        files: Mapping[str, str | os.PathLike | Iterable[str | os.PathLike]] | None = None,
        subjects: Iterable[str] | None = None,
        shot_seed: int = 0,
    ):
        super().__init__(shot_seed=shot_seed)
        if files is not None:
            if not files:
                raise ValueError("files for mmlu must map at least one split name to CSV paths")
            self._files = {
                split: [check_file(path, f"mmlu {split}") for path in _as_list(paths)]
                for split, paths in files.items()
            }
            self.source_dir = next(iter(self._files.values()))[0].parent
        else:
            self.source_dir, self._files = self._discover(resolve_data_dir(data_dir))
        self.splits = tuple(self._files)
        available = {
            path.stem.removesuffix(f"_{split}")
            for split, paths in self._files.items()
            for path in paths
        }
        self.subjects = None if subjects is None else frozenset(subjects)
        if self.subjects is not None and not self.subjects <= available:
            raise ValueError(
                f"unknown mmlu subject(s) {sorted(self.subjects - available)}; "
                f"available: {sorted(available)}"
            )

    @staticmethod
    def _discover(root: Path) -> tuple[Path, dict[str, list[Path]]]:
        """(folder, {split: CSV paths}) from `root` or its mmlu/ sub-folder, as the other tasks look."""
        for folder in (root, root / "mmlu"):
            found = {}
            for split in _SPLITS:
                paths = sorted(folder.glob(f"{split}/*_{split}.csv"))
                paths = paths or sorted(folder.glob(f"*_{split}.csv"))
                if paths:
                    found[split] = paths
            if found:
                return folder, found
        raise FileNotFoundError(
            f"no MMLU CSV files (<split>/<subject>_<split>.csv for splits {list(_SPLITS)}) "
            f"in {str(root)!r} or its mmlu/ sub-folder"
        )

    def _load(self, split: str) -> list[Example]:
        examples = []
        for path in self._files[split]:
            subject = path.stem.removesuffix(f"_{split}")
            if self.subjects is not None and subject not in self.subjects:
                continue
            for line, cells in read_csv_rows(path):
                if line == 1 and cells and cells[0].strip().lower() == "question":
                    continue
                examples.append(self._example(path, line, cells, subject, len(examples), split))
        return examples

    @staticmethod
    def _example(
        path: Path, line: int, cells: list[str], subject: str, index: int, split: str
    ) -> Example:
        if len(cells) != 6:
            raise TaskDataError(
                f"{path}:{line}: expected 6 columns (question, A, B, C, D, answer), "
                f"got {len(cells)}"
            )
        letter = cells[5].strip().upper()
        if letter not in LETTERS:
            raise TaskDataError(
                f"{path}:{line}: answer must be one of {list(LETTERS)}, got {cells[5]!r}"
            )
        return Example(
            id=f"{split}-{index:05d}",
            question=format_options(cells[0], cells[1:5]),
            answer=letter,
            solution=None,
            metadata={"subject": subject, "choices": [c.strip() for c in cells[1:5]], "line": line},
        )

    def shot_pool(self, example: Example) -> Sequence[Example]:
        """Dev examples of the same subject, or the whole dev split when it has none."""
        pool = self.examples(self.shot_split if self.shot_split in self.splits else self.splits[0])
        same = [e for e in pool if e.metadata["subject"] == example.metadata.get("subject")]
        return same if len(same) > 1 else pool

    def reference_completion(self, example: Example) -> str:
        """The answer letter."""
        return f" {example.answer}"

    def extract_answer(self, completion: str) -> str | None:
        """The chosen letter (see the module docstring for the accepted forms)."""
        text = truncate_at_continuation(completion)
        stated = list(_STATED_RE.finditer(text))
        if stated:
            return stated[-1].group(1).upper()
        leading = _LEADING_RE.match(text)
        if leading:
            return leading.group(1)
        for line in reversed(text.splitlines()):
            lone = list(_LONE_RE.finditer(line))
            if lone:
                return lone[-1].group(1) or lone[-1].group(2)
        return None

    def is_equivalent(self, example: Example, extracted: str) -> bool:
        """Exact letter match."""
        return extracted == example.answer
