"""The shared task interface: registry, prompt formats, shots, and errors on bad input."""

from __future__ import annotations

import dataclasses
import functools
import json
import subprocess
import sys
from pathlib import Path

import pytest

from sharpen_jax import tasks
from sharpen_jax.tasks.base import Example, Grade

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SMALL = {"num_train": 30, "num_test": 10}
GENERATED = {"prontoqa": SMALL, "arithmetic": SMALL, "sudoku4": SMALL}


@pytest.fixture(scope="module")
def data_dir() -> Path:
    if not DATA.exists():
        pytest.skip(f"shared data folder {DATA} is missing")
    return DATA


@functools.cache
def make_task(name: str, data_dir: Path):
    """One task instance per name for the whole module (loading is the slow part)."""
    if name in GENERATED:
        return tasks.get(name, **GENERATED[name])
    return tasks.get(name, data_dir=data_dir)


FILE_TASKS = ["gsm8k", "math500", "game24"]
ALL_SHIPPED = FILE_TASKS + list(GENERATED)


def test_names_lists_every_task():
    assert tasks.names() == sorted(
        ["gsm8k", "math", "math500", "game24", "prontoqa", "arithmetic", "sudoku4", "mmlu"]
    )


def test_unknown_task_name_lists_known_names():
    with pytest.raises(ValueError, match=r"unknown task 'gsm9k'.*'arithmetic'.*'sudoku4'"):
        tasks.get("gsm9k")


def test_unknown_option_is_named_with_accepted_ones():
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['digit'\].*'digits'"):
        tasks.get("arithmetic", digit=3)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"digits": 0}, "digits must be an int"),
        ({"ops": ("^",)}, "ops must be a non-empty subset"),
        ({"num_test": -1}, "num_test must be a non-negative int"),
    ],
)
def test_bad_generated_options_raise(options, message):
    with pytest.raises(ValueError, match=message):
        tasks.get("arithmetic", **options)


def test_example_and_grade_are_frozen():
    example = Example(id="x", question="q", answer="1")
    with pytest.raises(dataclasses.FrozenInstanceError):
        example.answer = "2"
    with pytest.raises(dataclasses.FrozenInstanceError):
        Grade(correct=True, extracted="1").correct = False


@pytest.mark.parametrize("name", ALL_SHIPPED)
def test_every_task_meets_the_protocol(name, data_dir):
    task = make_task(name, data_dir)
    assert isinstance(task, tasks.Task)
    assert task.name == name
    assert set(task.splits) >= {"test"}
    assert task.stop and all(isinstance(s, str) and s for s in task.stop)


@pytest.mark.parametrize("name", ALL_SHIPPED)
def test_plain_prompt_is_question_answer_blocks_split_by_the_stop(name, data_dir):
    task = make_task(name, data_dir)
    example = task.examples("test")[0]
    prompt = task.format_prompt(example, num_shots=3)
    assert prompt.startswith("Question: ") and prompt.endswith("\nAnswer:")
    assert prompt.count("Question: ") == 4
    assert prompt.endswith(f"Question: {example.question}\nAnswer:")
    for shot in task.shots(example, 3):
        block = f"Question: {shot.question}\nAnswer:{task.reference_completion(shot)}"
        assert block in prompt
        # A model that reproduces a shot's answer and runs on is cut by the stop string.
        continued = task.reference_completion(shot) + "\n\nQuestion: next"
        cut = min(continued.find(s) for s in task.stop if s in continued)
        assert task.grade(shot, continued[:cut]).correct


@pytest.mark.parametrize("name", ALL_SHIPPED)
def test_chat_prompt_alternates_shots_and_ends_with_the_question(name, data_dir):
    task = make_task(name, data_dir)
    example = task.examples("test")[1]
    messages = task.format_prompt(example, num_shots=2, chat=True)
    roles = [m["role"] for m in messages]
    assert roles == ["system", "user", "assistant", "user", "assistant", "user"]
    assert messages[-1]["content"] == example.question
    shots = task.shots(example, 2)
    assert messages[2]["content"] == task.reference_completion(shots[0]).strip()
    assert task.format_prompt(example, num_shots=0, chat=True)[1:] == messages[-1:]


@pytest.mark.parametrize("name", ALL_SHIPPED)
def test_shots_are_deterministic_and_never_the_example_itself(name, data_dir):
    task = make_task(name, data_dir)
    pool_split = "train" if "train" in task.splits else "test"
    pool = task.examples(pool_split)
    first = task.shots(pool[0], 4)
    fresh = tasks.get(name, **GENERATED[name]) if name in GENERATED else tasks.get(name, data_dir)
    assert [s.id for s in first] == [s.id for s in fresh.shots(pool[0], 4)]
    for shot in first:
        # Formatting a shot example itself must skip it and still give 4 distinct shots.
        ids = [s.id for s in task.shots(shot, 4)]
        assert shot.id not in ids and len(set(ids)) == 4


def test_shot_seed_changes_the_shots():
    example = tasks.get("arithmetic", **SMALL).examples("test")[0]
    seeds = {
        tuple(s.id for s in tasks.get("arithmetic", shot_seed=k, **SMALL).shots(example, 3))
        for k in range(3)
    }
    assert len(seeds) == 3


def test_too_many_shots_is_an_error():
    task = tasks.get("arithmetic", num_train=3, num_test=2)
    with pytest.raises(ValueError, match="cannot give 4 shots"):
        task.format_prompt(task.examples("test")[0], num_shots=4)


def test_unknown_split_lists_available_splits(data_dir):
    with pytest.raises(ValueError, match=r"no split 'validation'.*\['test'\]"):
        tasks.get("math500", data_dir=data_dir).examples("validation")


def test_missing_data_dir_is_named(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match="nowhere"):
        tasks.get("gsm8k", data_dir=missing)


def test_folder_without_task_files_names_what_was_searched(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"train\.jsonl.*gsm8k"):
        tasks.get("gsm8k", data_dir=tmp_path)


def test_missing_explicit_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="gsm8k test file .*absent.jsonl"):
        tasks.get("gsm8k", files={"test": tmp_path / "absent.jsonl"})


@pytest.mark.parametrize(
    "line, message",
    [
        ('{"question": "q", "answer": "#### 3"', "malformed JSON"),
        ('["q", "#### 3"]', "expected a JSON object, got list"),
        ('{"question": "q"}', r"expected string field\(s\) \['answer'\]"),
        ('{"question": "q", "answer": "three"}', "ending in '#### <number>'"),
        ('{"question": "q", "answer": "#### three"}', "'three' is not a number"),
    ],
)
def test_malformed_jsonl_line_is_reported_with_its_number(tmp_path, line, message):
    good = json.dumps({"question": "What is 1 + 2?", "answer": "1 + 2 = 3\n#### 3"})
    path = tmp_path / "test.jsonl"
    path.write_text(f"{good}\n\n{good}\n{line}\n", encoding="utf-8")
    task = tasks.get("gsm8k", files={"test": path})
    with pytest.raises(tasks.TaskDataError, match=rf"test\.jsonl:4: .*{message}"):
        task.examples("test")


def test_everyday_path_imports_neither_tfds_nor_grain_nor_sympy(data_dir):
    code = (
        "import sys\n"
        "from sharpen_jax import tasks\n"
        f"task = tasks.get('gsm8k', data_dir={str(data_dir)!r})\n"
        "example = task.examples('test')[0]\n"
        "assert task.grade(example, task.reference_completion(example)).correct\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & "
        "{'tensorflow_datasets', 'grain', 'sympy', 'math_verify', 'jax', 'tensorflow'}))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=Path(__file__).resolve().parents[1], timeout=120)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_grade_rejects_non_string_completions():
    task = tasks.get("arithmetic", **SMALL)
    with pytest.raises(TypeError, match="completion must be a str"):
        task.grade(task.examples("test")[0], None)
