"""MMLU-style multiple choice from CSV files in the standard layout, written by the tests."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from sharpen_jax import tasks

ROWS = {
    "astronomy": {
        "dev": [
            ["Which planet is closest to the Sun?", "Venus", "Mercury", "Earth", "Mars", "B"],
            ["What is the Sun mostly made of?", "Iron", "Oxygen", "Hydrogen", "Carbon", "C"],
            ["How many moons does Mars have?", "0", "1", "2", "3", "C"],
        ],
        "test": [
            ["Which planet has the most prominent rings?", "Saturn", "Mars", "Venus", "Mercury",
             "A"],
            ["What is a light-year a unit of?", "Time", "Speed", "Brightness", "Distance", "D"],
            ["Which star is closest to Earth?", "Sirius", "The Sun", "Vega", "Polaris", "B"],
        ],
    },
    "college_chemistry": {
        "dev": [
            ["What is the pH of pure water at 25 C?", "5", "6", "7", "8", "C"],
            ["Which gas do plants absorb?", "O2", "CO2", "N2", "He", "B"],
        ],
        "test": [
            ["Which element has atomic number 1?", "Helium", "Hydrogen", "Lithium", "Carbon", "B"],
            ["What is the formula of table salt?", "NaCl", "KCl", "NaOH", "HCl", "A"],
        ],
    },
}  # fmt: skip


def write_mmlu(root: Path) -> Path:
    """The MMLU release layout: <root>/<split>/<subject>_<split>.csv, no header."""
    for subject, splits in ROWS.items():
        for split, rows in splits.items():
            folder = root / split
            folder.mkdir(parents=True, exist_ok=True)
            with (folder / f"{subject}_{split}.csv").open("w", newline="", encoding="utf-8") as f:
                csv.writer(f).writerows(rows)
    return root


@pytest.fixture()
def mmlu(tmp_path) -> tasks.TaskBase:
    return tasks.get("mmlu", data_dir=write_mmlu(tmp_path / "mmlu data"))


def test_loads_splits_subjects_and_options(mmlu):
    assert mmlu.splits == ("dev", "test")
    test = mmlu.examples("test")
    assert [e.metadata["subject"] for e in test] == ["astronomy"] * 3 + ["college_chemistry"] * 2
    first = test[0]
    assert first.question == (
        "Which planet has the most prominent rings?\nA. Saturn\nB. Mars\nC. Venus\nD. Mercury"
    )
    assert first.answer == "A" and first.metadata["choices"][0] == "Saturn"


def test_prompt_format_and_same_subject_shots(mmlu):
    example = mmlu.examples("test")[3]
    prompt = mmlu.format_prompt(example, num_shots=2)
    assert prompt.endswith("C. Lithium\nD. Carbon\nAnswer:")
    assert "pH of pure water" in prompt and "plants absorb" in prompt and "Sun" not in prompt
    assert "\nD. 8\nAnswer: C\n\nQuestion: " in prompt and "\nD. He\nAnswer: B\n\n" in prompt


def test_references_correct_and_every_other_letter_incorrect(mmlu):
    for split in mmlu.splits:
        for example in mmlu.examples(split):
            assert mmlu.grade(example, mmlu.reference_completion(example)).correct
            for letter in "ABCD".replace(example.answer, ""):
                assert not mmlu.grade(example, f" {letter}").correct


@pytest.mark.parametrize(
    "completion, letter",
    [
        (" B", "B"),
        (" (C)", "C"),
        (" D. Distance", "D"),
        (" **A**", "A"),
        (" The answer is (B).", "B"),
        (" Answer: C", "C"),
        (" A light-year measures distance, so the correct option is D.", "D"),
        (" Saturn has rings. The answer is A", "A"),
        (" A good guess: rings are icy. I choose (A)", "A"),
        (" Option B is wrong, so the answer is C.", "C"),
        (" B\n\nQuestion: Which gas do plants absorb?\nAnswer: D", "B"),
        (" A planet with rings is hard to pick.", None),
        (" I don't know.", None),
    ],
)
def test_letter_extraction(mmlu, completion, letter):
    assert mmlu.extract_answer(completion) == letter


def test_explicit_files_header_and_subject_filter(tmp_path):
    path = tmp_path / "custom_test.csv"
    with path.open("w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows(
            [["question", "A", "B", "C", "D", "answer"], ["2 + 2 =", "3", "4", "5", "6", "b"],
             ["Multi-line\nquestion?", "x", "y", "z", "w", "D"]]
        )  # fmt: skip
    task = tasks.get("mmlu", files={"test": path})
    examples = task.examples("test")
    assert [e.answer for e in examples] == ["B", "D"]
    assert examples[1].question.startswith("Multi-line\nquestion?\nA. x")
    assert examples[1].metadata["line"] == 3
    assert task.grade(examples[0], " B. 4").correct
    root = write_mmlu(tmp_path / "full")
    astronomy = tasks.get("mmlu", data_dir=root, subjects=["astronomy"])
    assert len(astronomy.examples("test")) == 3
    with pytest.raises(ValueError, match=r"unknown mmlu subject\(s\) \['astrology'\]"):
        tasks.get("mmlu", data_dir=root, subjects=["astrology"])


@pytest.mark.parametrize(
    "row, message",
    [
        (["Q?", "a", "b", "c", "d"], "expected 6 columns"),
        (["Q?", "a", "b", "c", "d", "E"], r"answer must be one of \['A', 'B', 'C', 'D'\], got 'E'"),
    ],
)
def test_malformed_rows_are_reported_with_line_numbers(tmp_path, row, message):
    path = tmp_path / "bad_test.csv"
    with path.open("w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([["Fine?", "a", "b", "c", "d", "A"], row])
    with pytest.raises(tasks.TaskDataError, match=rf"bad_test\.csv:2: {message}"):
        tasks.get("mmlu", files={"test": path}).examples("test")


def test_folder_without_csv_files_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no MMLU CSV files"):
        tasks.get("mmlu", data_dir=tmp_path)


def test_shared_data_dir_finds_the_mmlu_sub_folder(tmp_path):
    """A data_dir holding every task's folder (math/, gsm8k/, mmlu/, ...) finds MMLU in mmlu/."""
    direct = tasks.get("mmlu", data_dir=write_mmlu(tmp_path / "mmlu"))
    shared = tasks.get("mmlu", data_dir=tmp_path)
    assert shared.source_dir == tmp_path / "mmlu"
    assert [e.question for e in shared.examples("test")] == [e.question for e in direct.examples("test")]
    assert len(shared.examples("test")) == sum(len(rows["test"]) for rows in ROWS.values())
