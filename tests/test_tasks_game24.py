"""Game of 24: the safe expression checker, the exact solver, and grading of real puzzles."""

from __future__ import annotations

import ast
import os
import re
from fractions import Fraction
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sharpen_jax import tasks
from sharpen_jax.tasks.expressions import ExpressionError, evaluate, solve, solve_many

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="module")
def small_game24(tmp_path_factory) -> tasks.TaskBase:
    """A task over a two-puzzle CSV written by the test (the same layout as 24.csv)."""
    path = tmp_path_factory.mktemp("game24") / "24.csv"
    path.write_text("Rank,Puzzles,AMT (s)\n1,1 1 4 6,4.4\n901,4 4 6 8,9.9\n", "utf-8")
    return tasks.get("game24", csv_path=path)


@pytest.fixture(scope="module")
def game24() -> tasks.TaskBase:
    if not DATA.exists():
        pytest.skip(f"shared data folder {DATA} is missing")
    return tasks.get("game24", data_dir=DATA)


@pytest.mark.parametrize(
    "text, value, numbers",
    [
        ("(4 + 8) * (6 - 4)", 24, (4, 8, 6, 4)),
        ("8 / (3 - 8 / 3)", 24, (8, 3, 8, 3)),
        ("4 × 6 ÷ 1", 24, (4, 6, 1)),
        ("  ((2)) - 5  ", -3, (2, 5)),
        ("1 - 2 - 3", -4, (1, 2, 3)),
        ("2 * 3 + 4 * 5", 26, (2, 3, 4, 5)),
        ("7 / 2", Fraction(7, 2), (7, 2)),
    ],
)
def test_evaluate_is_exact_with_standard_precedence(text, value, numbers):
    result = evaluate(text)
    assert result.value == value and result.numbers == numbers


def _trees(leaves=st.integers(0, 99)):
    """Random expression trees: an int, or (operator, left, right)."""
    return st.recursive(
        leaves,
        lambda inner: st.tuples(st.sampled_from("+-*/"), inner, inner),
        max_leaves=8,
    )


def _render(tree, spaces: bool) -> str:
    if isinstance(tree, int):
        return str(tree)
    op, left, right = tree
    gap = " " if spaces else ""
    return f"({_render(left, spaces)}{gap}{op}{gap}{_render(right, spaces)})"


def _value(tree) -> Fraction:
    if isinstance(tree, int):
        return Fraction(tree)
    op, left, right = tree
    a, b = _value(left), _value(right)
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    return a * b if op == "*" else a / b  # Fraction raises ZeroDivisionError for b == 0


@settings(max_examples=300, deadline=None)
@given(tree=_trees(), spaces=st.booleans())
def test_evaluate_matches_direct_fraction_arithmetic_on_random_trees(tree, spaces):
    text = _render(tree, spaces)
    try:
        expected = _value(tree)
    except ZeroDivisionError:
        with pytest.raises(ExpressionError, match="division by zero"):
            evaluate(text)
        return
    result = evaluate(text)
    assert result.value == expected
    assert list(result.numbers) == [int(n) for n in re.findall(r"\d+", text)]


@pytest.mark.parametrize(
    "text, message",
    [
        ("4 / (2 - 2)", "division by zero"),
        ("__import__('os')", "unexpected character '_'"),
        ("2 ** 3", "expected a number or '\\(', got '\\*'"),
        ("-4 + 28", "got '-'"),
        ("1.5 * 16", "unexpected character '.'"),
        ("(4 + 8", "unbalanced parentheses"),
        ("4 + 8)", "unexpected '\\)'"),
        ("4 8", "unexpected 8"),
        ("4 +", "expression ends"),
        ("", "empty expression"),
        ("(" * 40 + "1" + ")" * 40, "nested deeper"),
        ("1+" * 150 + "1", "longer than 200"),
    ],
)
def test_evaluate_rejects_non_arithmetic_text(text, message):
    with pytest.raises(ExpressionError, match=message):
        evaluate(text)


@pytest.mark.parametrize(
    "completion, correct",
    [
        (" (4 + 8) * (6 - 4) = 24", True),
        (" (6 - 4) * (8 + 4) = 24", True),
        (" 2 * (4 + 8) where 2 = 6 - 4", False),
        (" ((4 + 8)) * ((6 - 4))", True),
        (" $(4+8) \\times (6-4) = 24$", True),
        (" 24 = (8 + 4) × (6 − 4)", True),
        ("4 + 8 = 12 (left: 4 6 12)\n6 - 4 = 2 (left: 2 12)\n12 * 2 = 24\n"
         "Answer: (4 + 8) * (6 - 4) = 24", True),
        (" 4 * 6 = 24", False),  # uses only two of the numbers
        (" (4 + 8) * (6 - 3) = 24", False),  # a number that is not in the puzzle
        (" (4 + 8) * (6 - 4) * 4 / 4 = 24", False),  # reuses 4
        (" (8 + 8) + (6 + 4) = 24", False),  # reuses 8, drops a 4
        (" 4 * 4 + 6 + 8 = 24", False),  # right numbers, value 30
        (" (4 + 8) * 6 / (4 - 4) = 24", False),  # division by zero
        (" Let me think: import os; os.system('ls') = 24", False),
        (" There is no solution.", False),
    ],
)  # fmt: skip
def test_grader_accepts_equivalent_forms_and_rejects_cheats(small_game24, completion, correct):
    (puzzle,) = small_game24.examples("test")
    assert puzzle.metadata["numbers"] == [4, 4, 6, 8]
    assert small_game24.grade(puzzle, completion).correct is correct


@pytest.mark.parametrize(
    "numbers, solvable",
    [([4, 4, 6, 8], True), ([3, 3, 8, 8], True), ([1, 5, 5, 5], True), ([1, 1, 1, 1], False),
     ([24], True), ([5], False)],
)  # fmt: skip
def test_solver_finds_exact_solutions_including_fractional_steps(numbers, solvable):
    found = solve(numbers)
    if not solvable:
        assert found is None
        return
    result = evaluate(found)
    assert result.value == 24 and sorted(result.numbers) == sorted(numbers)


def test_solve_many_agrees_with_solve():
    puzzles = [[4, 4, 6, 8], [1, 1, 1, 1], [3, 3, 8, 8], [2, 2, 2, 2]]
    assert solve_many(puzzles) == [solve(p) for p in puzzles]


def test_csv_splits_follow_tree_of_thoughts(game24):
    test, train = game24.examples("test"), game24.examples("train")
    assert len(test) == 100 and len(train) + len(test) == 1362
    assert [e.metadata["rank"] for e in test] == list(range(901, 1001))
    assert test[0].metadata["numbers"] == [4, 5, 6, 10]


def test_every_reference_completion_grades_correct(game24):
    for split in game24.splits:
        for example in game24.examples(split):
            assert game24.grade(example, game24.reference_completion(example)).correct, example.id


def test_every_perturbed_answer_grades_incorrect(game24):
    for example in game24.examples("test"):
        first = re.search(r"\d+", example.answer)
        bumped = str(int(first.group()) + 1)
        changed = example.answer[: first.start()] + bumped + example.answer[first.end() :]
        grade = game24.grade(example, f" {changed} = 24")
        assert grade.extracted == changed and not grade.correct, example.id


def test_bad_csv_rows_are_reported_with_line_numbers(tmp_path):
    path = tmp_path / "puzzles.csv"
    path.write_text("Rank,Puzzles\n1,1 1 4 6\n2,1 1 11\n", "utf-8")
    with pytest.raises(tasks.TaskDataError, match=r"puzzles\.csv:3: expected four numbers"):
        tasks.get("game24", csv_path=path).examples("train")
    path.write_text("Rank,Puzzles\n1,1 1 1 1\n", "utf-8")
    with pytest.raises(tasks.TaskDataError, match=r"puzzles\.csv:2: .*cannot make 24"):
        tasks.get("game24", csv_path=path).examples("train")
    path.write_text("Id,Numbers\n1,1 1 4 6\n", "utf-8")
    with pytest.raises(tasks.TaskDataError, match="expected columns Rank and Puzzles"):
        tasks.get("game24", csv_path=path).examples("test")


def _python_files() -> list[Path]:
    """The project's own Python files (library, experiments, scripts; not tests or the venv)."""
    found = []
    for folder, subfolders, files in os.walk(REPO):
        subfolders[:] = [
            d for d in subfolders if not d.startswith(".") and d not in ("tests", "build")
        ]
        found += [Path(folder) / f for f in files if f.endswith(".py")]
    return found


def test_no_eval_or_exec_anywhere_in_the_codebase():
    files = _python_files()
    assert any(p.name == "expressions.py" for p in files)
    offenders = [
        f"{path.relative_to(REPO)}:{node.lineno}"
        for path in files
        for node in ast.walk(ast.parse(path.read_text("utf-8"), filename=str(path)))
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id in ("eval", "exec")
    ]
    assert offenders == []
