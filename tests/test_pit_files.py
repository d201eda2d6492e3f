"""PIT on a preference file: the TL;DR comparison loader, shards and .gz files, the seeded held-out split,
the file as a task, and R_PIT's verdicts on the iterates recomputed in numpy from a known judge."""

from __future__ import annotations

import dataclasses
import gzip
import json

import numpy as np
import pytest

from experiments import pit_files
from experiments.configs import pit as configs
from sharpen_jax.tasks import preference_file, preferences
from sharpen_jax.tasks.files import TaskDataError


def _lines(rows) -> str:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows)


def _pairs(n: int, tag: str = "") -> list[dict]:
    return [{"prompt": f"Q{tag}{i}", "chosen": f"good {i}", "rejected": f"bad {i}"} for i in range(n)]


def _tldr(post="I lost my keys.", chosen=" Lost keys.", other=" Found a cat.", choice=1):
    summaries = [{"text": other}, {"text": chosen}] if choice == 1 else [{"text": chosen}, {"text": other}]
    return {"info": {"id": "t3_1", "post": post, "title": "Keys", "subreddit": "tifu"}, "summaries": summaries,
            "choice": choice}


def test_tldr_comparisons_take_the_chosen_summary_and_name_bad_rows(tmp_path):
    path = tmp_path / "batch0.json"
    path.write_text(_lines([_tldr(choice=1), _tldr(chosen=" Keys gone.", other=" Cat.", choice=0)]))
    first, second = preferences.read_tldr_comparisons_jsonl(path)
    assert first.prompt == "SUBREDDIT: r/tifu\n\nTITLE: Keys\n\nPOST: I lost my keys.\n\nTL;DR:"
    assert (first.chosen, first.rejected) == (" Lost keys.", " Found a cat.")
    assert (second.chosen, second.rejected) == (" Keys gone.", " Cat.")
    bad = {"choice": dict(_tldr(), choice=2), "summaries": dict(_tldr(), summaries=[{"text": "a"}]),
           "info": dict(_tldr(), info={"post": "p"}), "equal": _tldr(chosen=" same", other=" same"),
           "bool": dict(_tldr(), choice=True)}
    messages = {"choice": "expected 0 or 1", "summaries": "list of two", "info": "post, title and subreddit",
                "equal": "are equal", "bool": "expected 0 or 1"}
    for name, row in bad.items():
        bad_path = tmp_path / f"{name}.json"
        bad_path.write_text(_lines([_tldr(), row]))
        with pytest.raises(TaskDataError, match=rf"{name}\.json:2: .*{messages[name]}"):
            preferences.read_tldr_comparisons_jsonl(bad_path)


def test_shards_and_gzip_files_are_read_in_order(tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / "a").mkdir()
    with gzip.open(tmp_path / "b" / "train.jsonl.gz", "wt") as f:
        f.write(_lines(_pairs(2, "b")))
    (tmp_path / "a" / "train.jsonl").write_text(_lines(_pairs(3, "a")))
    pairs = preferences.read_preference_file(f"{tmp_path}/*/train.jsonl*", "jsonl")
    assert [p.prompt for p in pairs] == ["Qa0", "Qa1", "Qa2", "Qb0", "Qb1"]
    assert [p.metadata["file"] for p in pairs] == ["train.jsonl"] * 3 + ["train.jsonl.gz"] * 2
    listed = preferences.read_preference_file(f"{tmp_path}/b/train.jsonl.gz, {tmp_path}/a/train.jsonl", "jsonl")
    assert [p.prompt for p in listed] == ["Qb0", "Qb1", "Qa0", "Qa1", "Qa2"]
    with pytest.raises(FileNotFoundError, match="missing.*matches no file"):
        preferences.read_preference_file(f"{tmp_path}/missing*.jsonl", "jsonl")
    with pytest.raises(ValueError, match="format='csv'.*'jsonl', 'hh_rlhf', 'tldr'"):
        preferences.read_preference_file(f"{tmp_path}/a/train.jsonl", "csv")
    with gzip.open(tmp_path / "cut.jsonl.gz", "wt") as f:
        f.write(_lines([*_pairs(1), "{broken"]) + _lines(_pairs(1)))
    with pytest.raises(TaskDataError, match=r"cut\.jsonl\.gz:2: malformed JSON"):
        preferences.read_preference_file(f"{tmp_path}/cut.jsonl.gz", "jsonl")


def test_held_out_split_is_seeded_disjoint_and_keeps_file_order():
    pairs = [preferences.PreferencePair(f"Q{i}", "a", "b") for i in range(50)]
    train, held = preferences.split_held_out(pairs, 10, seed=3)
    assert len(train) == 40 and len(held) == 10
    assert sorted(p.prompt for p in train + held) == sorted(p.prompt for p in pairs)
    for part in (train, held):
        order = [int(p.prompt[1:]) for p in part]
        assert order == sorted(order)
    assert preferences.split_held_out(pairs, 10, seed=3)[1] == held
    assert preferences.split_held_out(pairs, 10, seed=4)[1] != held
    for bad in (0, 50):
        with pytest.raises(ValueError, match=f"{bad} held-out pairs of 50"):
            preferences.split_held_out(pairs, bad, seed=0)


def test_the_file_task_carries_each_pair_and_has_no_grader(tmp_path):
    (tmp_path / "train.jsonl").write_text(_lines(_pairs(12)))
    (tmp_path / "test.jsonl").write_text(_lines(_pairs(5, "t")))
    task = preference_file.load_preference_task(str(tmp_path / "train.jsonl"), "jsonl", num_held_out=4,
                                                num_train=6, seed=0)
    assert len(task.examples("train")) == 6 and len(task.examples("test")) == 4
    example = task.examples("train")[0]
    pair = task.pairs("train")[0]
    assert (example.question, example.solution, example.answer) == (pair.prompt, pair.chosen, pair.rejected)
    assert task.format_prompt(example, num_shots=0) == pair.prompt and task.reference_completion(example) == pair.chosen
    with pytest.raises(ValueError, match="no grader"):
        task.grade(example, "anything")
    with pytest.raises(ValueError, match="no shots"):
        task.format_prompt(example, num_shots=1)
    with pytest.raises(ValueError, match="9 training pairs asked for.*hold 8 besides the 4 held out"):
        preference_file.load_preference_task(str(tmp_path / "train.jsonl"), "jsonl", num_held_out=4, num_train=9)
    split = preference_file.load_preference_task(str(tmp_path / "train.jsonl"), "jsonl", num_held_out=3,
                                                 held_out_pattern=str(tmp_path / "test.jsonl"))
    assert [p.prompt for p in split.pairs("test")] == ["Qt0", "Qt1", "Qt2"] and len(split.pairs("train")) == 12
    with pytest.raises(ValueError, match="6 held-out pairs asked for.*hold 5"):
        preference_file.load_preference_task(str(tmp_path / "train.jsonl"), "jsonl", num_held_out=6,
                                             held_out_pattern=str(tmp_path / "test.jsonl"))
    dialogue = "\n\nHuman: Hi\n\nAssistant:"
    (tmp_path / "hh.jsonl").write_text(_lines([{"chosen": f"{dialogue} Hello {i}", "rejected": f"{dialogue} No {i}"}
                                               for i in range(3)]))
    hh = preference_file.load_preference_task(str(tmp_path / "hh.jsonl"), "hh_rlhf", num_held_out=1)
    assert hh.stop == ("\n\nHuman:",) and split.stop == ()


def test_relative_files_resolve_under_the_data_directory(tmp_path):
    (tmp_path / "hh").mkdir()
    cfg = configs.get_config("smoke")
    cfg.task.data_dir = str(tmp_path)
    assert pit_files.resolve_files(cfg, "hh/*.jsonl.gz, /abs/x.jsonl") == f"{tmp_path}/hh/*.jsonl.gz,/abs/x.jsonl"
    assert pit_files.resolve_files(cfg, "/abs/x.jsonl") == "/abs/x.jsonl"


@dataclasses.dataclass
class _Prompts:
    texts: tuple


@dataclasses.dataclass
class _Setup:
    eval_prompts: _Prompts


def test_judged_iterates_are_the_judges_verdicts_recomputed_in_numpy(monkeypatch):
    """With r_gap(x, y, y_ref) = len(y) - len(y_ref) + len(x) / 10, every entry of the row is a
    numpy expression of the iterates' lengths."""
    def judge(cfg, setup, backbone, head, contexts, responses):
        return np.asarray([len(y) - len(ref) + len(x) / 10 for (x, ref), y in zip(contexts, responses)], np.float32)

    monkeypatch.setattr(pit_files, "judge", judge)
    prompts = ("ab", "abcd", "a", "abc")
    history = [["xx", "x", "xxxx", "xxx"], ["xxx", "x", "x", "xxxxx"], ["x", "xxxxxx", "xx", "xxx"]]
    row = pit_files.judged_iterates(None, _Setup(_Prompts(prompts)), None, None, history)
    lengths = np.asarray([[len(y) for y in ys] for ys in history], float)
    bonus = np.asarray([len(x) / 10 for x in prompts])
    for t in (1, 2):
        previous = lengths[t] - lengths[t - 1] + bonus
        first = lengths[t] - lengths[0] + bonus
        assert row["gap_vs_previous"][t - 1] == pytest.approx(previous.mean(), abs=1e-6)
        assert row["gap_vs_previous_stderr"][t - 1] == pytest.approx(previous.std(ddof=1) / 2, abs=1e-6)
        assert row["gap_vs_first"][t - 1] == pytest.approx(first.mean(), abs=1e-6)
        assert row["delta_vs_first"][t - 1] == pytest.approx(np.mean(first > 0) - np.mean(first < 0))
    assert len(row["delta_vs_first"]) == 2
