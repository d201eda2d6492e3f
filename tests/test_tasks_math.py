"""MATH-style problems: boxed-answer extraction and math-verify equivalence on MATH-500."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from sharpen_jax import tasks
from sharpen_jax.tasks.answer_text import last_boxed
from sharpen_jax.tasks.math_problems import BUILTIN_SHOTS, latex_equivalent

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="module")
def math500() -> tasks.TaskBase:
    if not DATA.exists():
        pytest.skip(f"shared data folder {DATA} is missing")
    return tasks.get("math500", data_dir=DATA)


def perturb(answer: str) -> str:
    """A different answer: bump the first digit, or append "+1" when there is none."""
    match = re.search(r"\d", answer)
    if match is None:
        return answer + "+1"
    digit = str((int(match.group()) + 1) % 10)
    return answer[: match.start()] + digit + answer[match.end() :]


@pytest.mark.parametrize(
    "text, content",
    [
        ("so $x = \\boxed{5}$.", "5"),
        ("first \\boxed{1} then \\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),
        ("\\boxed{\\left( 3, \\frac{\\pi}{2} \\right)}", "\\left( 3, \\frac{\\pi}{2} \\right)"),
        ("The answer is $\\boxed 7$.", "7"),
        ("\\fbox{x^2+1}", "x^2+1"),
        ("unbalanced \\boxed{\\frac{1}{2}", None),
        ("no box at all", None),
    ],
)
def test_last_boxed(text, content):
    assert last_boxed(text) == content


@pytest.mark.parametrize(
    "reference, candidate, equal",
    [
        ("\\frac{1}{2}", "0.5", True),
        ("\\frac{1}{2}", "\\dfrac12", True),
        ("\\frac{1}{2}", "1/2", True),
        ("3\\sqrt{13}", "\\sqrt{117}", True),
        ("6 - 5i", "-5i + 6", True),
        ("\\left( 3, \\frac{\\pi}{2} \\right)", "(3, \\pi/2)", True),
        ("90^\\circ", "90", True),
        ("x^5 - x^4 + x^3 - x^2 + x - 1", "x^5-x^4+x^3-x^2+x-1", True),
        ("\\frac{1}{2}", "\\frac{1}{3}", False),
        ("3\\sqrt{13}", "3\\sqrt{12}", False),
        ("\\left( 3, \\frac{\\pi}{2} \\right)", "(3, \\pi)", False),
        ("-50", "50", False),
        ("\\text{Evelyn}", "\\text{Angela}", False),
    ],
)
def test_equivalence_uses_math_verify(reference, candidate, equal):
    assert latex_equivalent(reference, candidate) is equal


@pytest.mark.parametrize(
    "completion, extracted",
    [
        (" We get $x = 3$, so the answer is $\\boxed{3}$.", "3"),
        (" Simplifying, the final answer is $\\frac{14}{3}$.", "\\frac{14}{3}"),
        (" The answer is 42.", "42"),
        (" \\boxed{2}\n\nQuestion: next problem\nAnswer: \\boxed{9}", "2"),
        (" I could not finish the computation.", None),
    ],
)
def test_extraction(math500, completion, extracted):
    assert math500.extract_answer(completion) == extracted


def test_math500_loads_with_subjects_and_levels(math500):
    examples = math500.examples("test")
    assert len(examples) == 500 and math500.splits == ("test",)
    assert examples[0].answer == "\\left( 3, \\frac{\\pi}{2} \\right)"
    assert examples[0].metadata["subject"] == "Precalculus" and examples[0].metadata["level"] == 2


def test_every_reference_completion_grades_correct(math500):
    for example in math500.examples("test"):
        grade = math500.grade(example, math500.reference_completion(example))
        assert grade.correct, (example.id, grade)


def check_perturbed_answers_grade_incorrect(task, examples):
    for example in examples:
        wrong = perturb(example.answer)
        grade = task.grade(example, f" The answer is $\\boxed{{{wrong}}}$.")
        assert grade.extracted == wrong and not grade.correct, (example.id, wrong)


def test_perturbed_answers_grade_incorrect_on_a_sample(math500):
    check_perturbed_answers_grade_incorrect(math500, math500.examples("test")[::5])


@pytest.mark.slow
def test_every_perturbed_answer_grades_incorrect(math500):
    check_perturbed_answers_grade_incorrect(math500, math500.examples("test"))


def test_equivalent_rewrites_of_references_grade_correct(math500):
    by_answer = {e.answer: e for e in math500.examples("test")}
    rewrites = {"\\frac{14}{3}": "14/3", "3\\sqrt{13}": "\\sqrt{117}", "\\frac{3}{56}": "3/56"}
    for answer, rewrite in rewrites.items():
        assert math500.grade(by_answer[answer], f"so \\boxed{{{rewrite}}}").correct


def test_shots_without_a_train_split_come_from_the_builtin_pool(math500):
    example = math500.examples("test")[3]
    shots = math500.shots(example, 3)
    assert all(shot in BUILTIN_SHOTS for shot in shots)
    for shot in BUILTIN_SHOTS:
        assert math500.grade(shot, math500.reference_completion(shot)).correct


def test_generic_math_task_reads_train_and_test_from_a_user_path(tmp_path):
    rows = {
        "train": [{"problem": "What is $2+3$?", "solution": "$2+3=\\boxed{5}$.", "answer": "5"}],
        "test": [{"problem": "What is $1/4+1/4$?", "solution": "It is $\\boxed{\\frac12}$.",
                  "answer": "\\frac{1}{2}", "unique_id": "test/algebra/1.json"}],
    }  # fmt: skip
    for split, items in rows.items():
        lines = "\n".join(json.dumps(item) for item in items)
        (tmp_path / f"{split}.jsonl").write_text(lines + "\n", "utf-8")
    task = tasks.get("math", data_dir=tmp_path)
    assert task.splits == ("train", "test")
    example = task.examples("test")[0]
    assert example.id == "test/algebra/1.json"
    assert task.grade(example, task.reference_completion(example)).correct
    assert task.grade(example, "The answer is $0.5$.").correct
    assert task.shots(example, 1)[0].question == "What is $2+3$?"


def test_missing_required_field_is_reported(tmp_path):
    line = json.dumps({"problem": "p", "answer": "1"})
    (tmp_path / "test.jsonl").write_text(line + "\n", "utf-8")
    with pytest.raises(tasks.TaskDataError, match=r"test\.jsonl:1: .*\['solution'\]"):
        tasks.get("math", data_dir=tmp_path).examples("test")
