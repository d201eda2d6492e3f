"""Game of 24 from the Tree-of-Thoughts CSV (columns ``Rank``, ``Puzzles`` = "1 1 4 6", ...).

The split follows Tree of Thoughts: puzzles ranked 901-1000 form "test" (`test_ranks`), all others
"train". The CSV holds no solutions, so `expressions.solve` (an exact search over pairs) supplies
one per puzzle: it is `Example.answer` and the basis of the reference completion
``" (4 + 8) * (6 - 4) = 24"``.

A completion is correct when the expression on its answer line uses exactly the four given numbers,
each once, and evaluates to exactly 24 under `expressions.evaluate` (a safe parser; model text is
never executed). The answer line is the first line after the last "Answer:" if the completion has
one, else its last line that contains an operator; LaTeX operators and "= 24" are stripped.
"""

from __future__ import annotations

import os
import re
from collections import Counter

from sharpen_jax.tasks.base import Example, TaskBase, truncate_at_continuation
from sharpen_jax.tasks.expressions import ExpressionError, evaluate, solve_many
from sharpen_jax.tasks.files import TaskDataError, check_file, find_task_files, read_csv_rows

TARGET = 24
_LATEX = (
    ("\\times", "*"),
    ("\\cdot", "*"),
    ("\\div", "/"),
    ("\\left", ""),
    ("\\right", ""),
    ("$", ""),
    ("\\(", ""),
    ("\\)", ""),
)
_OPERATOR_RE = re.compile(r"[-+*/×÷−·]|\\times|\\div|\\cdot")
_ANSWER_RE = re.compile(r"answer\s*:", re.IGNORECASE)


def _clean(line: str) -> str:
    for latex, plain in _LATEX:
        line = line.replace(latex, plain)
    return line.strip().rstrip(".").strip()


def expression_of(line: str) -> str:
    """The arithmetic side of an answer line such as ``(4 + 8) * (6 - 4) = 24``."""
    sides = [_clean(side) for side in _clean(line).split("=")]
    with_operator = [side for side in sides if _OPERATOR_RE.search(side)]
    return with_operator[0] if with_operator else sides[0]


class Game24(TaskBase):
    """Game of 24 puzzles from ``24.csv`` in `data_dir` (or ``game24/``), or from `csv_path`."""

    name = "game24"
    instruction = (
        "Use the four given numbers and + - * / to make 24, using each number exactly once. "
        "Reply with one line of the form 'Answer: <expression> = 24'."
    )

    def __init__(
        self,
        data_dir: str | os.PathLike | None = None,
        *,
        csv_path: str | os.PathLike | None = None,
        test_ranks: tuple[int, int] = (901, 1000),
        shot_seed: int = 0,
    ):
        super().__init__(shot_seed=shot_seed)
        if csv_path is not None:
            self._path = check_file(csv_path, "Game of 24 CSV")
        else:
            self._path = find_task_files(data_dir, "game24", ["24.csv"])[1]["24.csv"]
        self.source_dir = self._path.parent
        low, high = test_ranks
        if low > high:
            raise ValueError(f"test_ranks must be (low, high) with low <= high, got {test_ranks}")
        self.test_ranks = (int(low), int(high))

    def _puzzles(self) -> list[tuple[int, int, list[int]]]:
        rows = read_csv_rows(self._path)
        if not rows:
            raise TaskDataError(f"{self._path}: empty file, expected a header with Rank,Puzzles")
        header = [cell.strip() for cell in rows[0][1]]
        if "Rank" not in header or "Puzzles" not in header:
            raise TaskDataError(f"{self._path}:1: expected columns Rank and Puzzles, got {header}")
        rank_col, puzzle_col = header.index("Rank"), header.index("Puzzles")
        puzzles = []
        for line, cells in rows[1:]:
            try:
                rank = int(cells[rank_col])
                numbers = [int(token) for token in cells[puzzle_col].split()]
            except (ValueError, IndexError):
                raise TaskDataError(
                    f"{self._path}:{line}: expected an integer Rank and four integers in Puzzles, "
                    f"got {cells}"
                ) from None
            if len(numbers) != 4:
                raise TaskDataError(f"{self._path}:{line}: expected four numbers, got {numbers}")
            puzzles.append((line, rank, numbers))
        return puzzles

    def _load(self, split: str) -> list[Example]:
        low, high = self.test_ranks
        puzzles = [p for p in self._puzzles() if (split == "test") == (low <= p[1] <= high)]
        solutions = solve_many([numbers for _, _, numbers in puzzles], TARGET)
        examples = []
        for (line, rank, numbers), expression in zip(puzzles, solutions):
            if expression is None:
                raise TaskDataError(f"{self._path}:{line}: puzzle {numbers} cannot make {TARGET}")
            examples.append(
                Example(
                    id=f"rank-{rank:04d}",
                    question=self.question_text(numbers),
                    answer=expression,
                    solution=f"{expression} = {TARGET}",
                    metadata={"numbers": numbers, "rank": rank, "line": line},
                )
            )
        return examples

    @staticmethod
    def question_text(numbers: list[int]) -> str:
        """The question shown for a puzzle."""
        shown = " ".join(str(n) for n in numbers)
        return (
            f"Use the numbers {shown} and the operations + - * / to make {TARGET}. "
            "Use each number exactly once."
        )

    def reference_completion(self, example: Example) -> str:
        """The solver's expression followed by "= 24"."""
        return f" {example.answer} = {TARGET}"

    def extract_answer(self, completion: str) -> str | None:
        """The expression on the completion's answer line, or None when it has none."""
        text = truncate_at_continuation(completion)
        markers = list(_ANSWER_RE.finditer(text))
        if markers:
            lines = [line for line in text[markers[-1].end() :].splitlines() if line.strip()]
            candidate = lines[0] if lines else ""
        else:
            lines = [line for line in text.splitlines() if _OPERATOR_RE.search(line)]
            candidate = lines[-1] if lines else ""
        expression = expression_of(candidate) if candidate.strip() else ""
        return expression or None

    def is_equivalent(self, example: Example, extracted: str) -> bool:
        """True when `extracted` uses the puzzle's numbers once each and equals 24 exactly."""
        try:
            result = evaluate(extracted)
        except ExpressionError:
            return False
        uses_numbers = Counter(result.numbers) == Counter(example.metadata["numbers"])
        return uses_numbers and result.value == TARGET
