"""GSM8K: official files load, references grade correct, the extractor reads real outputs."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sharpen_jax import tasks
from sharpen_jax.tasks.answer_text import extract_final_number, normalize_number

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

# (completion, extracted number). Written the way small models actually answer GSM8K: official
# "####" style, chatty prose, markdown, LaTeX boxes, units, currency and runaway continuations.
COMPLETIONS = [
    (" Janet sells 16 - 3 - 4 = 9 duck eggs a day.\nShe makes 9 * 2 = $18 every day at the "
     "farmer's market.\n#### 18", "18"),
    (" She has 16 - 3 - 4 = <<16-3-4=9>>9 eggs left.\n9 * 2 = $<<9*2=18>>18\n#### 18", "18"),
    (" 16 - 3 - 4 = 9 eggs. 9 * 2 = 18 dollars.\n#### $18", "18"),
    (" The profit is 200,000 - 130,000 = 70,000.\n#### 70,000", "70000"),
    (" He runs 3 * 3 * 60 = 540 meters.\n#### 540 meters", "540"),
    (" The total is 1.5 + 2 = 3.5 hours.\n#### 3.50", "3.5"),
    (" #### 18.\n\nQuestion: A robe takes 2 bolts of blue fiber ...\nAnswer: 2 / 2 = 1\n#### 3",
     "18"),
    (" She makes 9 * 2 = 18 dollars a day. The answer is 18.", "18"),
    (" So Josh made a profit of $70,000.\nThe answer is $70,000.", "70000"),
    (" Adding everything, 1,000 + 234 = 1,234. The answer is 1,234.", "1234"),
    (" The answer is: 17", "17"),
    (" First 3 * 4 = 12, then 12 + 5 = 17.\nTherefore, the final answer is **17**.", "17"),
    (" We get 48 / 2 = 24 clips in May, so 48 + 24 = 72 clips.\nAnswer: 72 clips", "72"),
    (" The final answer is $\\boxed{72}$.", "72"),
    (" Total = 5 + 7 = 12 apples.\n\\boxed{12}\nShe also had 3 oranges.", "12"),
    (" She pays $1234 in total.", "1234"),
    (" He has 20 - 25 = -5 dollars, so he owes money. The answer is -5.", "-5"),
    (" The temperature ends at 3 - 10 = −7 degrees.", "-7"),
    (" Weng earns 12 / 60 = $0.2 per minute, so for 50 minutes she earns 0.2 * 50 = $10.", "10"),
    (" It takes 2 + 1 = 3 bolts in total.\n#### 3\n#### 4", "3"),
    (" They need 0 more boxes.\n#### 0", "0"),
    (" Betty needs 100 - 50 - 15 - 30 = $5 more.", "5"),
    (" The cost is $12.50 per ticket, so 4 tickets cost $50.00.", "50"),
    (" I'm not sure how to solve this problem.", None),
    ("", None),
]  # fmt: skip


@given(
    value=st.integers(-(10**9), 10**9),
    cents=st.sampled_from(["", ".0", ".00", ".5", ".50", ".25"]),
    dollar=st.booleans(),
    commas=st.booleans(),
    tail=st.sampled_from(["", ".", " dollars.", " apples in total", "!"]),
)
def test_number_formats_normalize_to_the_same_value(value, cents, dollar, commas, tail):
    digits = f"{abs(value):,}" if commas else str(abs(value))
    written = f"{'-' if value < 0 else ''}{'$' if dollar else ''}{digits}{cents}{tail}"
    expected = Fraction(value) + (Fraction(cents) if cents else 0) * (1 if value >= 0 else -1)
    extracted = extract_final_number(f"So the total is {written}")
    assert extracted is not None and Fraction(extracted) == expected
    assert extract_final_number(f"The answer is {written}") == extracted


@pytest.fixture(scope="module")
def gsm8k() -> tasks.TaskBase:
    if not DATA.exists():
        pytest.skip(f"shared data folder {DATA} is missing")
    return tasks.get("gsm8k", data_dir=DATA)


@pytest.mark.parametrize("completion, expected", COMPLETIONS)
def test_extractor_reads_real_looking_completions(completion, expected):
    assert extract_final_number(completion) == expected


@pytest.mark.parametrize(
    "reference, completion, correct",
    [
        ("18", " #### 18.00", True),
        ("18", " The answer is $18.", True),
        ("18", " The answer is 18 dollars per day.", True),
        ("1234", " The answer is 1,234.", True),
        ("18", " #### 180", False),
        ("18", " #### 1.8", False),
        ("70000", " The answer is 7,000.", False),
        ("5", " The answer is -5.", False),
    ],
)
def test_grading_is_numeric_and_tolerant_of_formatting(gsm8k, reference, completion, correct):
    example = tasks.Example(id="t", question="q", answer=reference, solution=f"x\n#### {reference}")
    assert gsm8k.grade(example, completion).correct is correct


def test_official_files_load_with_canonical_answers(gsm8k):
    train, test = gsm8k.examples("train"), gsm8k.examples("test")
    assert (len(train), len(test)) == (7473, 1319)
    first = test[0]
    assert first.question.startswith("Janet\u2019s ducks lay 16 eggs per day.")
    assert first.answer == "18" and first.solution.endswith("#### 18")
    # Some official final answers carry thousands separators; the canonical form drops them.
    assert all(normalize_number(e.answer) == e.answer and "," not in e.answer for e in train)


def test_every_reference_completion_grades_correct(gsm8k):
    for split in gsm8k.splits:
        for example in gsm8k.examples(split):
            grade = gsm8k.grade(example, gsm8k.reference_completion(example))
            assert grade.correct and grade.extracted == example.answer, example.id


def test_every_perturbed_answer_grades_incorrect(gsm8k):
    for example in gsm8k.examples("test"):
        wrong = int(example.answer) + 1
        reasoning = gsm8k.reference_completion(example).rsplit("####", 1)[0]
        grade = gsm8k.grade(example, f"{reasoning}#### {wrong}")
        assert not grade.correct and grade.extracted == str(wrong), example.id


def test_reference_completion_drops_calculator_annotations(gsm8k):
    example = gsm8k.examples("test")[0]
    assert "<<" in example.solution
    completion = gsm8k.reference_completion(example)
    assert "<<" not in completion and completion.endswith("\n#### 18")


def test_files_from_any_user_path(tmp_path):
    rows = [
        {"question": "Tom has 3 apples and buys 4 more. How many apples?",
         "answer": "3+4=<<3+4=7>>7\n#### 7"},
        {"question": "A pen costs $2. How much do 600 pens cost?",
         "answer": "2*600=<<2*600=1200>>1200\n#### 1,200"},
    ]  # fmt: skip
    folder = tmp_path / "my copy" / "gsm8k"
    folder.mkdir(parents=True)
    (folder / "test.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n", "utf-8")
    for data_dir in (folder, folder.parent):
        task = tasks.get("gsm8k", data_dir=data_dir)
        assert task.splits == ("test",)
        assert [e.answer for e in task.examples("test")] == ["7", "1200"]
    explicit = tasks.get("gsm8k", files={"test": str(folder / "test.jsonl")})
    example = explicit.examples("test")[1]
    assert explicit.grade(example, " 600 pens cost $1,200.").correct
    # With no train split, shots come from the other examples of the split itself.
    assert [s.id for s in explicit.shots(example, 1)] == ["test-00000"]
