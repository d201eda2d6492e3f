"""TFDS builders writing array_record, read back through tfds data sources and grain, without TF."""

from __future__ import annotations

import csv
import importlib.util
import itertools
import json
import sys
from pathlib import Path

import pytest
import tensorflow_datasets as tfds

from sharpen_jax import tasks
from sharpen_jax.tasks import pipeline, storage

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
GENERATED_OPTIONS = {
    "prontoqa": {"num_train": 40, "num_test": 12, "hops": (2, 4)},
    "arithmetic": {"num_train": 40, "num_test": 12, "digits": 3, "ops": ["+", "*"]},
    "sudoku4": {"num_train": 40, "num_test": 12, "seed": 5},
}


def write_sources(root: Path) -> dict[str, Path]:
    """Raw inputs for the file-backed tasks: shared data where it is small, subsets where not."""
    gsm8k = root / "gsm8k"
    gsm8k.mkdir(parents=True)
    for split, count in (("train", 60), ("test", 25)):
        lines = (DATA / "gsm8k" / f"{split}.jsonl").read_text("utf-8").splitlines()[:count]
        (gsm8k / f"{split}.jsonl").write_text("\n".join(lines) + "\n", "utf-8")
    math = root / "math"
    math.mkdir()
    rows = [json.loads(line) for line in (DATA / "math500" / "test.jsonl").open(encoding="utf-8")]
    for split, chunk in (("train", rows[:20]), ("test", rows[20:35])):
        (math / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in chunk), "utf-8")
    mmlu = root / "mmlu" / "test"
    mmlu.mkdir(parents=True)
    with (mmlu / "physics_test.csv").open("w", newline="", encoding="utf-8") as handle:
        rows = [[f"What is {i} + {i}?", str(2 * i), str(i), str(i + 1), "0", "A"] for i in range(6)]
        csv.writer(handle).writerows(rows)
    return {"gsm8k": gsm8k, "math": math, "math500": DATA, "game24": DATA, "mmlu": mmlu.parent}


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict[str, tuple[Path, tasks.TaskBase]]:
    """Every task built once into a temporary directory: name -> (dataset dir, raw task)."""
    if not DATA.exists():
        pytest.skip(f"shared data folder {DATA} is missing")
    sources = write_sources(tmp_path_factory.mktemp("raw"))
    out = tmp_path_factory.mktemp("tfds")
    result = {}
    for name in tasks.names():
        if name in GENERATED_OPTIONS:
            options = GENERATED_OPTIONS[name]
            result[name] = (storage.build(name, out, **options), tasks.get(name, **options))
        else:
            path = storage.build(name, out, data_dir=sources[name])
            result[name] = (path, tasks.get(name, data_dir=sources[name]))
    return result


def test_every_registered_task_has_a_builder():
    assert sorted(storage.BUILDERS) == tasks.names()


def test_tensorflow_is_not_installed_or_imported(built):
    assert importlib.util.find_spec("tensorflow") is None
    assert "tensorflow" not in sys.modules


@pytest.mark.parametrize("name", ["gsm8k", "math", "math500", "game24", "mmlu", *GENERATED_OPTIONS])
def test_each_dataset_builds_to_array_record_and_reads_back_identically(built, name):
    path, task = built[name]
    assert path.name == "1.0.0" and path.parent.parent.name == f"sharpen_{name}"
    for split in task.splits:
        files = sorted(path.glob(f"sharpen_{name}-{split}.array_record-*"))
        assert len(files) == 1 and files[0].stat().st_size > 0
        assert storage.read_examples(path, split) == list(task.examples(split))


def test_tfds_data_source_finds_builds_by_name(built):
    path, task = built["game24"]
    source = tfds.data_source("sharpen_game24", data_dir=path.parents[2], split="test")
    assert len(source) == 100 and source[0]["id"] == b"rank-0901"
    path, task = built["arithmetic"]
    source = tfds.data_source(f"sharpen_arithmetic/{path.parent.name}", data_dir=path.parents[2])
    assert storage.decode(source["test"][3]) == task.examples("test")[3]


def test_same_seed_builds_byte_identical_files_and_another_seed_differs(tmp_path):
    options = {"num_train": 30, "num_test": 10, "hops": 3}
    first = storage.build("prontoqa", tmp_path / "a", seed=11, **options)
    again = storage.build("prontoqa", tmp_path / "b", seed=11, **options)
    other = storage.build("prontoqa", tmp_path / "c", seed=12, **options)
    for split in ("train", "test"):
        name = f"sharpen_prontoqa-{split}.array_record-00000-of-00001"
        assert (first / name).read_bytes() == (again / name).read_bytes()
        assert (first / name).read_bytes() != (other / name).read_bytes()


def test_option_sets_that_read_alike_get_separate_directories(tmp_path):
    plus = storage.build("arithmetic", tmp_path, ops=["+"], num_train=5, num_test=5)
    times = storage.build("arithmetic", tmp_path, ops=["*"], num_train=5, num_test=5)
    assert plus != times
    assert "+" in storage.read_examples(plus, "test")[0].question
    assert "*" in storage.read_examples(times, "test")[0].question


def test_grain_batches_prompts_from_array_record_like_from_raw_examples(built):
    path, task = built["gsm8k"]
    from_disk = pipeline.prompt_dataset(
        task, storage.data_source(path, "test"), batch_size=8, num_shots=2
    )
    from_raw = pipeline.prompt_dataset(task, task.examples("test"), batch_size=8, num_shots=2)
    batches = list(from_disk)
    assert [len(b["prompt"]) for b in batches] == [8, 8, 8, 1]
    assert batches == list(from_raw)
    first = task.examples("test")[0]
    assert batches[0]["prompt"][0] == task.format_prompt(first, num_shots=2)
    assert batches[0]["answer"][0] == first.answer == "18"


def test_grain_shuffling_is_seeded_and_chat_prompts_batch(built):
    path, task = built["sudoku4"]
    source = storage.data_source(path, "train")

    def ids(seed):
        dataset = pipeline.prompt_dataset(task, source, batch_size=16, shuffle_seed=seed)
        return list(itertools.chain.from_iterable(b["id"] for b in dataset))

    assert ids(1) == ids(1) != ids(2)
    assert sorted(ids(1)) == [e.id for e in task.examples("train")]
    chat = pipeline.prompt_dataset(task, source, batch_size=16, chat=True, drop_remainder=True)
    assert len(chat) == 2 and chat[0]["prompt"][0][-1]["role"] == "user"


def test_bad_inputs_to_the_storage_path(tmp_path, built):
    with pytest.raises(ValueError, match=r"unknown task 'gsm'.*'gsm8k'"):
        storage.build("gsm", tmp_path)
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['digitz'\]"):
        storage.build("arithmetic", tmp_path, digitz=2)
    with pytest.raises(FileNotFoundError, match="not a built dataset"):
        storage.data_source(tmp_path, "test")
    with pytest.raises(ValueError, match=r"no split 'validation'.*\['test', 'train'\]"):
        storage.data_source(built["gsm8k"][0], "validation")
    with pytest.raises(FileNotFoundError, match="none of"):
        storage.build("gsm8k", tmp_path / "out", data_dir=tmp_path)
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        pipeline.prompt_dataset(built["gsm8k"][1], [], batch_size=0)


def test_command_line_prints_prompts_answers_and_verdicts(built, tmp_path, capsys):
    from sharpen_jax.tasks.__main__ import main

    assert main(["game24", "--data-dir", str(DATA), "--split", "test", "--show", "2"]) == 0
    printed = capsys.readouterr().out
    assert "split 'test' has 100 examples" in printed and "===== rank-0902 =====" in printed
    assert printed.count("grade: correct=True") == 2
    status = main(["arithmetic", "--show", "1", "--option", "digits=4", "--option", "num_train=5",
                   "--option", "num_test=3", "--build", str(tmp_path), "--chat"])  # fmt: skip
    printed = capsys.readouterr().out
    assert status == 0 and "built " in printed and "[system] Compute the result." in printed
    assert main(["gsm8k", "--data-dir", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
