"""PIT preference data: solver solutions grade correct, corruption ladders are ordered, the file
loaders read fixtures and name path:line for bad rows, and the task-built sets pair the right texts."""

from __future__ import annotations

import json
import os
import re

import numpy as np
import pytest

from conftest import SHARED_DATA
from sharpen_jax import tasks
from sharpen_jax.tasks import preferences, solvers
from sharpen_jax.tasks.expressions import evaluate
from sharpen_jax.tasks.files import TaskDataError


def _generated(name, **options):
    return tasks.get(name, num_train=4, **options)


@pytest.fixture(scope="module")
def task_set():
    found = {"arithmetic": _generated("arithmetic", num_test=60),
             "prontoqa": _generated("prontoqa", num_test=60),
             "sudoku4": _generated("sudoku4", num_test=30)}
    if os.path.isdir(os.path.join(SHARED_DATA, "game24")):
        found["game24"] = tasks.get("game24", data_dir=SHARED_DATA)
    return found


@pytest.mark.parametrize("name", ["arithmetic", "prontoqa", "sudoku4", "game24"])
def test_every_solver_solution_is_graded_correct(task_set, name):
    if name not in task_set:
        pytest.skip("shared data folder has no game24")
    task = task_set[name]
    examples = task.examples("test")
    texts = [solvers.solver_for(name)(e).text() for e in examples]
    wrong = [(e.id, t) for e, t in zip(examples, texts) if not task.grade(e, t).correct]
    assert not wrong, wrong[:3]
    # Step by step: the solution says more than the bare reference answer (for most examples).
    if name != "prontoqa":  # ProntoQA's reference is already the proof chain
        longer = np.mean([len(t) > len(task.reference_completion(e)) for e, t in zip(examples, texts)])
        assert longer > 0.5, longer


def test_arithmetic_solution_steps_are_true_equations():
    task = _generated("arithmetic", num_test=40, ops=("*",))
    for example in task.examples("test"):
        text = solvers.solve_arithmetic(example).text()
        sides = [s.strip() for s in text.split("=")]
        assert {evaluate(s).value for s in sides} == {int(example.answer)}, text


@pytest.mark.parametrize("name", ["arithmetic", "prontoqa", "sudoku4"])
def test_corruption_ladder_is_nested_and_ordered(task_set, name):
    task = task_set[name]
    for example in task.examples("test")[:20]:
        worked = solvers.solver_for(name)(example)
        full = len(worked.corruption_order(np.random.default_rng(5)))
        top = min(4, full)
        changed = [solvers.corrupted(worked, k, np.random.default_rng(5))[1] for k in range(top + 1)]
        for k in range(top):  # nested: level k's corruptions are a strict subset of level k+1's
            assert set(changed[k]) < set(changed[k + 1])
        ladder = preferences.corruption_ladder(task, example, top, seed=5)
        assert len(set(ladder)) == top + 1
        assert task.grade(example, ladder[0]).correct
        if name == "sudoku4":  # partial credit: the number of right cells falls strictly with the level
            credit = [solvers.sudoku_partial_credit(example, y) for y in ladder]
            assert credit == [16 - k for k in range(top + 1)], credit
        worst = solvers.corrupted(worked, full, np.random.default_rng(5))[0]
        assert not task.grade(example, worst).correct  # the final answer is changed last
        # the final answer is the last slot to change: every level below it keeps it right
        if name != "sudoku4":
            below = solvers.corrupted(worked, full - len(worked.final), np.random.default_rng(5))[0]
            assert task.grade(example, below).correct


@pytest.mark.parametrize("name", ["arithmetic", "prontoqa", "game24"])
def test_step_dropped_corruption_deletes_one_rendered_step(task_set, name):
    """A "step dropped" rung is the rung below it with one intermediate step's rendered text deleted,
    the other corruptions kept, and no drop hides a changed slot (so each rung is one corruption worse)."""
    if name not in task_set:
        pytest.skip("shared data folder has no game24")
    task, drops = task_set[name], 0
    for example in task.examples("test")[:30]:
        worked = solvers.solver_for(name)(example)
        ops = solvers.corrupted(worked, len(worked.corruption_order(np.random.default_rng(3))),
                                np.random.default_rng(3))[1]
        changed = {slot for kind, slot in ops if kind == solvers.CHANGE}
        for k, (kind, j) in enumerate(ops):
            if kind != solvers.DROP:
                continue
            drops += 1
            fragment = worked.droppable[j]
            assert not {int(f) for f in re.findall(r"\{(\d+)\}", fragment)} & changed
            before, _ = solvers.corrupted(worked, k, np.random.default_rng(3))
            after, _ = solvers.corrupted(worked, k + 1, np.random.default_rng(3))
            values = [v for v in worked.values]
            for slot in [s for kind_, s in ops[:k] if kind_ == solvers.CHANGE]:
                values[slot] = None  # a changed slot is never inside a dropped step, so it is not rendered here
            rendered = fragment.format(*values)
            assert rendered in before and after == before.replace(rendered, "", 1) and len(after) < len(before)
    assert drops >= 10, drops  # the drops do occur among the rungs


def test_corruption_pairs_prefer_the_lower_level(task_set):
    task = task_set["arithmetic"]
    examples = [e for e in task.examples("test") if e.metadata["b"] % 10][:5]
    pairs = preferences.corruption_pairs(task, examples, max_level=3, seed=1)
    assert len(pairs) == 5 * 6  # 4 rungs -> 6 ordered pairs each
    assert all(p.metadata["levels"][0] < p.metadata["levels"][1] for p in pairs)
    ladder = preferences.corruption_ladder(task, examples[0], 3, seed=1)
    assert pairs[0].chosen == ladder[0] and pairs[0].rejected == ladder[1]
    with pytest.raises(ValueError, match="max_level=0"):
        preferences.corruption_pairs(task, examples, max_level=0)


def test_solver_gold_and_self_sampled_pairs_use_the_grader(task_set):
    task = task_set["arithmetic"]
    examples = task.examples("test")[:3]
    right = [task.reference_completion(e) for e in examples]
    samples = [[" -1", right[0], " -2"], [right[1]], [" -7", right[2]]]
    solver = preferences.solver_pairs(task, examples, samples)
    assert [p.metadata["id"] for p in solver] == [examples[0].id, examples[2].id]  # example 1 has no wrong sample
    assert all(task.grade(e, p.chosen).correct and not task.grade(e, p.rejected).correct
               for e, p in zip([examples[0], examples[2]], solver))
    assert solver[0].rejected == " -1" and solver[0].prompt == task.format_prompt(examples[0], num_shots=0)
    selfs = preferences.self_sampled_pairs(task, examples, samples)
    assert [(p.chosen, p.rejected) for p in selfs] == [(right[0], " -1"), (right[2], " -7")]
    with pytest.raises(ValueError, match="3 examples"):
        preferences.solver_pairs(task, examples, samples[:2])


def test_blank_samples_are_never_a_rejected_response(task_set, tmp_path):
    """A blank sample grades wrong but is no response to improve on; every kind skips it, so a written
    set reads back (the file reader refuses empty fields)."""
    task = task_set["arithmetic"]
    examples = task.examples("test")[:2]
    right = [task.reference_completion(e) for e in examples]
    samples = [["", " \n", " -3", right[0]], ["  ", right[1]]]
    for kind in ("solver", "self", "gold"):
        pairs = preferences.build_pairs(kind, task, examples, samples)
        assert [(p.metadata["id"], p.rejected) for p in pairs] == [(examples[0].id, " -3")], kind
        preferences.write_pairs(tmp_path / f"{kind}.jsonl", pairs)
        assert [p.rejected for p in preferences.read_preference_jsonl(tmp_path / f"{kind}.jsonl")] == [" -3"]


def test_gsm8k_gold_pairs_on_real_data():
    if not os.path.isdir(os.path.join(SHARED_DATA, "gsm8k")):
        pytest.skip("shared data folder has no gsm8k")
    task = tasks.get("gsm8k", data_dir=SHARED_DATA)
    examples = task.examples("test")[:4]
    samples = [["The answer is 123456789.", task.reference_completion(e)] for e in examples]
    pairs = preferences.gold_pairs(task, examples, samples)
    assert len(pairs) == 4
    assert all(task.grade(e, p.chosen).correct and "####" in p.chosen for e, p in zip(examples, pairs))
    with pytest.raises(ValueError, match="no programmatic solver"):
        preferences.solver_pairs(task, examples, samples)


def _write(path, lines):
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return path


def test_preference_jsonl_loader_reads_and_rejects_bad_rows(tmp_path):
    good = _write(tmp_path / "prefs.jsonl", [{"prompt": "Q1", "chosen": "A", "rejected": "B", "source": "x"},
                                             "", {"prompt": "Q2", "chosen": "C", "rejected": "D"}])
    pairs = preferences.read_preference_jsonl(good)
    assert [(p.prompt, p.chosen, p.rejected) for p in pairs] == [("Q1", "A", "B"), ("Q2", "C", "D")]
    assert pairs[0].metadata == {"source": "x", "line": 1} and pairs[1].metadata["line"] == 3
    bad_rows = {"missing": {"prompt": "Q", "chosen": "A"}, "number": {"prompt": "Q", "chosen": 3, "rejected": "B"},
                "empty": {"prompt": "Q", "chosen": " ", "rejected": "B"},
                "same": {"prompt": "Q", "chosen": "A", "rejected": "A"}, "json": "{not json"}
    messages = {"missing": r"rejected", "number": r"chosen", "empty": r"empty", "same": r"equals", "json": r"malformed"}
    for name, row in bad_rows.items():
        path = _write(tmp_path / f"{name}.jsonl", [{"prompt": "Q", "chosen": "A", "rejected": "B"}, row,
                                                   {"prompt": "Q", "chosen": "A", "rejected": "B"}])
        with pytest.raises(TaskDataError, match=rf"{name}\.jsonl:2: .*{messages[name]}"):
            preferences.read_preference_jsonl(path)
    with pytest.raises(TaskDataError, match="no preference pairs"):
        preferences.read_preference_jsonl(_write(tmp_path / "blank.jsonl", [""]))


def test_hh_rlhf_loader_splits_the_last_assistant_turn(tmp_path):
    dialogue = "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: Tell me a fact.\n\nAssistant:"
    path = _write(tmp_path / "hh.jsonl", [{"chosen": dialogue + " Water is wet.", "rejected": dialogue + " No."}])
    (pair,) = preferences.read_hh_rlhf_jsonl(path)
    assert pair.prompt == dialogue and pair.chosen == " Water is wet." and pair.rejected == " No."
    bad = _write(tmp_path / "bad.jsonl", [{"chosen": dialogue + " a", "rejected": dialogue + " b"},
                                          {"chosen": "\n\nHuman: A\n\nAssistant: x",
                                           "rejected": "\n\nHuman: B\n\nAssistant: y"},
                                          {"chosen": "no turns", "rejected": "at all"}])
    with pytest.raises(TaskDataError, match=r"bad\.jsonl:2: .*differ before their last"):
        preferences.read_hh_rlhf_jsonl(bad)
    worse = _write(tmp_path / "worse.jsonl", [{"chosen": "no turns", "rejected": dialogue + " b"}])
    with pytest.raises(TaskDataError, match=r"worse\.jsonl:1: field 'chosen': expected a dialogue"):
        preferences.read_hh_rlhf_jsonl(worse)


def test_cached_pairs_are_built_once_and_read_back(tmp_path):
    calls = []
    pairs = [preferences.PreferencePair("Q", "A", "B", {"id": "t-1"})]

    def build():
        calls.append(1)
        return pairs

    path = tmp_path / "arithmetic-solver-seed0.jsonl"
    first = preferences.cached_pairs(path, build)
    second = preferences.cached_pairs(path, build)
    assert calls == [1] and first == second == pairs
    with pytest.raises(ValueError, match="empty"):
        preferences.cached_pairs(tmp_path / "none.jsonl", lambda: [])
