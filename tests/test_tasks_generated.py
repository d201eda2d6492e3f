"""Generated tasks (ProntoQA, arithmetic, 4x4 Sudoku): reproducibility, labels and graders."""

from __future__ import annotations

import collections

import pytest

from sharpen_jax import tasks
from sharpen_jax.tasks import prontoqa_solver
from sharpen_jax.tasks.expressions import evaluate
from sharpen_jax.tasks.sudoku import count_solutions, is_valid_solution, parse_grid

SIZES = {"num_train": 200, "num_test": 60}
GENERATED = ["prontoqa", "arithmetic", "sudoku4"]


def perturbed_completion(name: str, example: tasks.Example) -> str:
    """A completion in the task's format whose answer is wrong."""
    if name == "prontoqa":
        flipped = "false" if example.answer == "True" else "true"
        return example.solution.rsplit("The answer is", 1)[0] + f"The answer is {flipped}."
    if name == "arithmetic":
        return f" {int(example.answer) + 1}"
    rows = example.answer.splitlines()
    rows[0] = rows[0][1] + rows[0][0] + rows[0][2:]  # swap two cells: columns now repeat
    return "\n" + "\n".join(rows)


@pytest.mark.parametrize("name", GENERATED)
def test_same_seed_same_examples_and_different_seed_different(name):
    first = tasks.get(name, seed=7, **SIZES)
    again = tasks.get(name, seed=7, **SIZES)
    other = tasks.get(name, seed=8, **SIZES)
    for split in ("train", "test"):
        assert first.examples(split) == again.examples(split)
        questions = {e.question for e in first.examples(split)}
        assert len(questions & {e.question for e in other.examples(split)}) < len(questions) // 2


@pytest.mark.parametrize("name", GENERATED)
def test_splits_have_the_asked_sizes_distinct_questions_and_no_overlap(name):
    task = tasks.get(name, **SIZES)
    train = {e.question for e in task.examples("train")}
    test = {e.question for e in task.examples("test")}
    assert (len(train), len(test)) == (200, 60)
    assert not train & test


@pytest.mark.parametrize("name", GENERATED)
def test_references_grade_correct_and_perturbed_answers_incorrect(name):
    task = tasks.get(name, **SIZES)
    for example in task.examples("train") + task.examples("test"):
        assert task.grade(example, task.reference_completion(example)).correct, example
        assert not task.grade(example, perturbed_completion(name, example)).correct, example


# ------------------------------------------------------------------------------------- ProntoQA
@pytest.mark.parametrize("hops, distractors", [(1, 0), (3, 2), (5, 4), ((1, 5), (0, 3))])
def test_prontoqa_labels_match_a_forward_chaining_solver(hops, distractors):
    task = tasks.get("prontoqa", hops=hops, distractors=distractors, **SIZES)
    for example in task.examples("train") + task.examples("test"):
        assert prontoqa_solver.solve(example.question) == example.answer, example.question


def test_prontoqa_difficulty_settings_shape_the_questions():
    task = tasks.get("prontoqa", hops=4, distractors=3, **SIZES)
    for example in task.examples("test"):
        assert example.metadata["hops"] == 4 and example.metadata["distractors"] == 3
        # Proof: membership, then per hop a rule and its conclusion.
        assert len(example.metadata["proof"]) == 1 + 2 * 4
        subtypes, properties, members, _ = prontoqa_solver.parse_question(example.question)
        # 3 chain subtypes + 1 query property; distractor 0 adds 1 rule, the others 2 each.
        assert len(subtypes) + len(properties) == 4 + 1 + 2 * 2 and len(members) == 1
    labels = collections.Counter(e.answer for e in task.examples("train"))
    assert 70 <= labels["True"] <= 130


def test_prontoqa_example_reads_like_the_paper():
    example = tasks.get("prontoqa", hops=2, distractors=0, shuffle_rules=False, **SIZES).examples(
        "test"
    )[0]
    sentences = example.question.split(". ")
    assert sentences[0].startswith("Every ") and " is a" in sentences[0]
    assert "True or false: " in example.question
    assert example.solution.startswith(example.metadata["proof"][0])
    assert example.solution.endswith(f"The answer is {example.answer.lower()}.")


@pytest.mark.parametrize(
    "completion, extracted",
    [
        (" Max is a wumpus. So Max is sour. The answer is true.", "True"),
        (" The answer is: **False**", "False"),
        (" It is true that Max is a wumpus, but Max is not sour. False.", "False"),
        (" True\n\nQuestion: Every impus is hot. Rex is an impus. True or false: Rex is hot.\n"
         "Answer: false", "True"),
        (" I cannot tell.", None),
    ],
)
def test_prontoqa_extraction(completion, extracted):
    assert tasks.get("prontoqa", **SIZES).extract_answer(completion) == extracted


@pytest.mark.parametrize(
    "question, message",
    [
        ("Every wumpus is sour. Max is a wumpus.", "no 'True or false:' query"),
        ("Max likes wumpuses. True or false: Max is sour.", "cannot parse the sentence"),
        ("Every wumpus is sour. Max is a tumpus. True or false: Max is sour.", "does not decide"),
        ("Every wumpus is sour. Every wumpus is not sour. Max is a wumpus. True or false: Max is "
         "sour.", "inconsistent"),
    ],
)  # fmt: skip
def test_prontoqa_solver_refuses_what_it_cannot_decide(question, message):
    with pytest.raises(ValueError, match=message):
        prontoqa_solver.solve(question)


# ----------------------------------------------------------------------------------- arithmetic
@pytest.mark.parametrize(
    "digits, ops", [(1, ("+",)), (2, ("+", "-")), (4, ("*",)), (12, ("+", "-", "*"))]
)
def test_arithmetic_answers_match_an_independent_evaluation(digits, ops):
    task = tasks.get("arithmetic", digits=digits, ops=ops, num_train=40, num_test=20)
    for example in task.examples("test") + task.examples("train"):
        expression = example.question.removeprefix("What is ").removesuffix("?")
        a, op, b = expression.split(" ")
        assert op in ops and len(a) == len(b) == digits
        assert evaluate(expression).value == int(example.answer) >= 0


def test_arithmetic_negative_answers_when_allowed():
    task = tasks.get("arithmetic", ops="-", allow_negative=True, num_train=50, num_test=50)
    answers = [int(e.answer) for e in task.examples("test")]
    assert min(answers) < 0 < max(answers)
    for example in task.examples("test"):
        assert task.grade(example, f" {example.answer}").correct
        assert not task.grade(example, f" {abs(int(example.answer)) + 1}").correct


@pytest.mark.parametrize(
    "completion, correct",
    [(" 85", True), (" 85\nQuestion: What is 12 + 3?\nAnswer: 15", True), (" 37 + 48 = 85", True),
     (" The answer is 85.", True), (" \\boxed{85}", True), (" 86", False), (" 58", False),
     (" 8 5", False), (" eighty-five", False)],
)  # fmt: skip
def test_arithmetic_grading(completion, correct):
    example = tasks.Example(id="x", question="What is 37 + 48?", answer="85")
    assert tasks.get("arithmetic", **SIZES).grade(example, completion).correct is correct


def test_arithmetic_prompt_answers_on_one_line_and_stops_at_newline():
    task = tasks.get("arithmetic", **SIZES)
    assert task.stop == ("\n",)
    prompt = task.format_prompt(task.examples("test")[0], num_shots=2)
    for block in prompt.split("\n\n")[:-1]:
        question, answer = block.split("\n")
        assert question.startswith("Question: What is ") and answer.startswith("Answer: ")


def test_arithmetic_small_space_is_reported():
    with pytest.raises(ValueError, match="only 90 distinct train questions of the 100"):
        tasks.get("arithmetic", digits=1, ops=("+",), num_train=100, num_test=10).examples("train")


# --------------------------------------------------------------------------------------- sudoku
@pytest.mark.parametrize("num_givens", [4, 6, 10])
def test_sudoku_puzzles_have_unique_solutions_consistent_with_givens(num_givens):
    task = tasks.get("sudoku4", num_givens=num_givens, num_train=30, num_test=30)
    for example in task.examples("test") + task.examples("train"):
        puzzle, solution = parse_grid(example.metadata["puzzle"]), parse_grid(example.answer)
        assert count_solutions(puzzle) == 1 and is_valid_solution(solution)
        assert all(p in (0, s) for prow, srow in zip(puzzle, solution) for p, s in zip(prow, srow))
        givens = example.metadata["num_givens"]
        assert givens == sum(1 for row in puzzle for d in row if d)
        assert givens == num_givens if num_givens >= 6 else num_givens <= givens <= 6


@pytest.mark.parametrize(
    "completion, correct",
    [
        ("\n1234\n3412\n2143\n4321", True),
        (" 1 2 3 4\n3 4 1 2\n2 1 4 3\n4 3 2 1", True),
        (" | 1 | 2 | 3 | 4 |\n| 3 | 4 | 1 | 2 |\n| 2 | 1 | 4 | 3 |\n| 4 | 3 | 2 | 1 |", True),
        ("Row 1: 1234\nRow 2: 3412\nRow 3: 2143\nRow 4: 4321", True),
        (" The solved grid is 1234 3412 2143 4321.", True),
        ("Let me try 1243.\nAnswer:\n1234\n3412\n2143\n4321", True),
        ("\n1234\n3412\n2143\n4312", False),  # invalid: repeats in the last two columns
        ("\n2143\n4321\n1234\n3412", False),  # a valid grid that ignores the givens
        ("\n1234\n3412\n2143", None),  # incomplete
        (" I am not sure.", None),
    ],
)
def test_sudoku_extraction_and_grading(completion, correct):
    example = tasks.Example(
        id="s", question="q", answer="1234\n3412\n2143\n4321",
        metadata={"puzzle": "1...\n..1.\n.1..\n...1", "num_givens": 4},
    )  # fmt: skip
    task = tasks.get("sudoku4", **SIZES)
    grade = task.grade(example, completion)
    assert grade.correct is bool(correct)
    assert (grade.extracted is None) is (correct is None)
