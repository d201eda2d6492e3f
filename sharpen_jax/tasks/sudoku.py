"""Generated 4x4 Sudoku with a unique solution.

A solved grid comes from a fixed valid grid under a random symmetry (relabel the digits, permute
rows within bands, bands, columns within stacks, stacks, and optionally transpose). Clues are then
removed in random order, each removal kept only while the puzzle still has exactly one solution
(checked by a backtracking counter that stops at two), until `num_givens` clues remain or no
further clue can go.

The puzzle is shown as four rows with "." for blanks; the answer is the completed grid as four
rows of digits, one row per line::

    Question: Fill in the 4x4 Sudoku ... blank cells are shown as '.'.
    1.3.
    ..2.
    ...
    Answer:
    1234
    3412
    2143
    4321

A completion is correct when its grid is a valid completed Sudoku (every row, column and 2x2 box
holds 1-4 once) that agrees with every given clue.
"""

from __future__ import annotations

import re

import numpy as np

from sharpen_jax.tasks.base import Example, truncate_at_continuation
from sharpen_jax.tasks.generated import GeneratedTask

SIZE, BOX = 4, 2
DIGITS = frozenset(range(1, SIZE + 1))
_ROW_LABEL_RE = re.compile(r"^\s*row\s*\d\s*[:.)-]", re.IGNORECASE)
_ANSWER_RE = re.compile(r"answer\s*:", re.IGNORECASE)

Grid = list[list[int]]  # rows of digits; 0 marks a blank


def _peers(row: int, col: int) -> set[tuple[int, int]]:
    top, left = row - row % BOX, col - col % BOX
    cells = {(row, c) for c in range(SIZE)} | {(r, col) for r in range(SIZE)}
    cells |= {(top + r, left + c) for r in range(BOX) for c in range(BOX)}
    return cells - {(row, col)}


PEERS = {(r, c): _peers(r, c) for r in range(SIZE) for c in range(SIZE)}


def is_valid_solution(grid: Grid) -> bool:
    """Whether `grid` is a completed 4x4 Sudoku: every row, column and box holds 1-4 once."""
    if len(grid) != SIZE or any(len(row) != SIZE for row in grid):
        return False
    return all(
        grid[r][c] in DIGITS and all(grid[r][c] != grid[pr][pc] for pr, pc in PEERS[(r, c)])
        for r in range(SIZE)
        for c in range(SIZE)
    )


def count_solutions(puzzle: Grid, limit: int = 2) -> int:
    """The number of completions of `puzzle`, counting no further than `limit`."""
    grid = [row[:] for row in puzzle]
    blanks = [(r, c) for r in range(SIZE) for c in range(SIZE) if grid[r][c] == 0]

    def search(index: int) -> int:
        if index == len(blanks):
            return 1
        row, col = blanks[index]
        found = 0
        for digit in sorted(DIGITS - {grid[r][c] for r, c in PEERS[(row, col)]}):
            grid[row][col] = digit
            found += search(index + 1)
            grid[row][col] = 0
            if found >= limit:
                break
        return found

    return search(0)


def random_solution(rng: np.random.Generator) -> Grid:
    """A uniformly relabelled and permuted valid 4x4 grid."""
    base = [[(BOX * (r % BOX) + r // BOX + c) % SIZE for c in range(SIZE)] for r in range(SIZE)]
    labels = [int(d) + 1 for d in rng.permutation(SIZE)]
    bands = [int(b) for b in rng.permutation(BOX)]
    rows = [band * BOX + int(r) for band in bands for r in rng.permutation(BOX)]
    stacks = [int(s) for s in rng.permutation(BOX)]
    cols = [stack * BOX + int(c) for stack in stacks for c in rng.permutation(BOX)]
    grid = [[labels[base[r][c]] for c in cols] for r in rows]
    if rng.integers(2):
        grid = [list(column) for column in zip(*grid)]
    return grid


def make_puzzle(solution: Grid, num_givens: int, rng: np.random.Generator) -> Grid:
    """`solution` with clues removed (random order) while the solution stays unique."""
    puzzle = [row[:] for row in solution]
    givens = SIZE * SIZE
    for index in rng.permutation(SIZE * SIZE):
        if givens <= num_givens:
            break
        row, col = divmod(int(index), SIZE)
        digit, puzzle[row][col] = puzzle[row][col], 0
        if count_solutions(puzzle) == 1:
            givens -= 1
        else:
            puzzle[row][col] = digit
    return puzzle


def grid_to_text(grid: Grid, blank: str = ".") -> str:
    """Four lines of four characters, `blank` for zeros."""
    return "\n".join("".join(str(d) if d else blank for d in row) for row in grid)


def parse_grid(text: str) -> Grid:
    """The grid of `grid_to_text` output ("." or "0" for blanks)."""
    rows = [[0 if ch in ".0" else int(ch) for ch in line.strip()] for line in text.splitlines()]
    if len(rows) != SIZE or any(len(row) != SIZE for row in rows):
        raise ValueError(f"expected {SIZE} lines of {SIZE} cells, got {text!r}")
    return rows


class Sudoku4(GeneratedTask):
    """4x4 Sudoku puzzles with `num_givens` clues (as few as uniqueness allows, at least 4)."""

    name = "sudoku4"
    instruction = (
        "Solve the 4x4 Sudoku: every row, column and 2x2 box must contain 1, 2, 3 and 4 once. "
        "Reply with the completed grid as four lines of four digits."
    )

    def __init__(
        self,
        *,
        num_givens: int = 6,
        seed: int = 0,
        num_train: int = 1000,
        num_test: int = 200,
        shot_seed: int = 0,
    ):
        super().__init__(seed=seed, num_train=num_train, num_test=num_test, shot_seed=shot_seed)
        if not isinstance(num_givens, (int, np.integer)) or not 4 <= num_givens <= SIZE * SIZE:
            raise ValueError(f"num_givens must be an int in [4, {SIZE * SIZE}], got {num_givens!r}")
        self.num_givens = int(num_givens)

    def generate(self, rng: np.random.Generator) -> Example:
        """One puzzle with a unique solution."""
        solution = random_solution(rng)
        puzzle = make_puzzle(solution, self.num_givens, rng)
        givens = sum(1 for row in puzzle for d in row if d)
        return Example(
            id="",
            question=(
                "Fill in the 4x4 Sudoku so that every row, column and 2x2 box contains the digits "
                f"1-4 exactly once; blank cells are shown as '.'.\n{grid_to_text(puzzle)}"
            ),
            answer=grid_to_text(solution),
            solution=grid_to_text(solution),
            metadata={"puzzle": grid_to_text(puzzle), "num_givens": givens},
        )

    def reference_completion(self, example: Example) -> str:
        """The solved grid on the lines after "Answer:"."""
        return f"\n{example.answer}"

    def extract_answer(self, completion: str) -> str | None:
        """The last four consecutive 4-digit rows (or one 16-digit line) as four lines."""
        text = truncate_at_continuation(completion)
        markers = list(_ANSWER_RE.finditer(text))
        if markers:
            text = text[markers[-1].end() :]
        rows: list[str] = []
        best: list[str] | None = None
        for line in text.splitlines():
            digits = re.sub(r"\D", "", _ROW_LABEL_RE.sub("", line))
            if len(digits) == SIZE * SIZE:
                best, rows = [digits[i : i + SIZE] for i in range(0, SIZE * SIZE, SIZE)], []
            elif len(digits) == SIZE:
                rows.append(digits)
                if len(rows) >= SIZE:
                    best = rows[-SIZE:]
            else:
                rows = []
        return "\n".join(best) if best else None

    def is_equivalent(self, example: Example, extracted: str) -> bool:
        """A valid completed grid that keeps every clue of the puzzle."""
        grid = parse_grid(extracted)
        puzzle = parse_grid(example.metadata["puzzle"])
        keeps_clues = all(
            puzzle[r][c] in (0, grid[r][c]) for r in range(SIZE) for c in range(SIZE)
        )
        return keeps_clues and is_valid_solution(grid)
