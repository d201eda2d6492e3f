"""Preference data D = {(x, y_w, y_l)} for PIT (Wang et al., 2023): file loaders and task-built sets.

Files (read from a user's local copies; a bad row is a `TaskDataError` naming path:line):

* `read_preference_jsonl`: one {"prompt", "chosen", "rejected"} object per line (TRL / UltraFeedback
  binarized layout), extra keys kept in `metadata`;
* `read_hh_rlhf_jsonl`: Anthropic HH-RLHF lines {"chosen", "rejected"}, each a whole dialogue
  "\\n\\nHuman: ... \\n\\nAssistant: ..."; the prompt is the dialogue up to and including the last
  "\\n\\nAssistant:", the response what follows it, and both sides must share the prompt;
* `read_tldr_comparisons_jsonl`: OpenAI's summarize-from-feedback (TL;DR) comparisons.

`read_preference_file` reads one or more files (shards, .gz allowed) in one of FORMATS, and
`split_held_out` sets a seeded held-out part aside.

Sets built from the project's tasks (issue 13), each a list of `PreferencePair`:

* (a) `solver_pairs`: y_w from a programmatic solver (`tasks.solvers`), y_l a model sample graded wrong;
* (b) `self_sampled_pairs`: y_w and y_l a correct and a wrong model sample of the same prompt;
* (c) `corruption_pairs`: copies of a solver solution with 0..K nested corruptions, every ordered
  pair (level i < level j) with y_w = level i;
* (d) `gold_pairs`: the task's gold solution (`reference_completion`, e.g. GSM8K's rationale) as y_w
  against model samples graded wrong.

`build_pairs(kind, ...)` picks one of them. Model samples come in as text (`samples[i]` = the
completions drawn for `examples[i]`; `sharpen_jax.methods.pit.sampled_texts` draws them).
`cached_pairs` writes a set once per (task, kind, seed) path and reads it back after.
"""

from __future__ import annotations

import dataclasses
import glob
import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from sharpen_jax.jsonl import rewrite_jsonl
from sharpen_jax.tasks.base import Example, TaskBase
from sharpen_jax.tasks.files import TaskDataError, read_jsonl
from sharpen_jax.tasks.solvers import corrupted, solver_for

HH_ASSISTANT = "\n\nAssistant:"
HH_HUMAN = "\n\nHuman:"
FIELDS = ("prompt", "chosen", "rejected")


@dataclasses.dataclass(frozen=True)
class PreferencePair:
    """One preference (x, y_w, y_l): `chosen` y_w is better than `rejected` y_l for `prompt` x."""

    prompt: str
    chosen: str
    rejected: str
    metadata: dict[str, Any] = dataclasses.field(default_factory=dict)

    def record(self) -> dict[str, Any]:
        """The JSON-lines record of `read_preference_jsonl`."""
        return {"prompt": self.prompt, "chosen": self.chosen, "rejected": self.rejected, **self.metadata}


def _check_nonempty(path, line: int, record: dict, keys: Sequence[str]) -> None:
    empty = [key for key in keys if not record[key].strip()]
    if empty:
        raise TaskDataError(f"{path}:{line}: field(s) {empty} are empty; expected non-empty text")


def read_preference_jsonl(path: str | os.PathLike) -> list[PreferencePair]:
    """Pairs from a JSONL file of {"prompt", "chosen", "rejected"} string fields (others -> metadata)."""
    pairs = []
    for line, record in read_jsonl(path, FIELDS):
        _check_nonempty(path, line, record, ("chosen", "rejected"))
        if record["chosen"] == record["rejected"]:
            raise TaskDataError(f"{path}:{line}: 'chosen' equals 'rejected'; a preference needs two different "
                                "responses")
        metadata = {k: v for k, v in record.items() if k not in FIELDS}
        pairs.append(PreferencePair(record["prompt"], record["chosen"], record["rejected"], {**metadata, "line": line}))
    if not pairs:
        raise TaskDataError(f"{path}: no preference pairs; expected one JSON object per line with {list(FIELDS)}")
    return pairs


def split_hh_dialogue(text: str) -> tuple[str, str]:
    """(prompt through the last "\\n\\nAssistant:", final response) of an HH-RLHF dialogue."""
    cut = text.rfind(HH_ASSISTANT)
    if cut < 0 or HH_HUMAN not in text[:cut]:
        raise ValueError(f"expected a dialogue '\\n\\nHuman: ... \\n\\nAssistant: ...', got {text[:60]!r}")
    return text[:cut + len(HH_ASSISTANT)], text[cut + len(HH_ASSISTANT):]


def read_hh_rlhf_jsonl(path: str | os.PathLike) -> list[PreferencePair]:
    """Pairs from an HH-RLHF JSONL file ({"chosen", "rejected"} dialogues sharing their prompt)."""
    pairs = []
    for line, record in read_jsonl(path, ("chosen", "rejected")):
        sides = {}
        for key in ("chosen", "rejected"):
            try:
                sides[key] = split_hh_dialogue(record[key])
            except ValueError as err:
                raise TaskDataError(f"{path}:{line}: field {key!r}: {err}") from None
        if sides["chosen"][0] != sides["rejected"][0]:
            raise TaskDataError(f"{path}:{line}: 'chosen' and 'rejected' differ before their last "
                                "'\\n\\nAssistant:'; expected two responses to one prompt")
        pairs.append(PreferencePair(sides["chosen"][0], sides["chosen"][1], sides["rejected"][1], {"line": line}))
    if not pairs:
        raise TaskDataError(f"{path}: no preference pairs; expected HH-RLHF lines with 'chosen' and 'rejected'")
    return pairs


TLDR_TEMPLATE = "SUBREDDIT: r/{subreddit}\n\nTITLE: {title}\n\nPOST: {post}\n\nTL;DR:"


def read_tldr_comparisons_jsonl(path: str | os.PathLike) -> list[PreferencePair]:
    """Pairs from OpenAI's summarize-from-feedback comparison lines (the TL;DR set: {"info": {"post",
    "title", "subreddit", ...}, "summaries": [{"text"}, {"text"}], "choice": 0 | 1}); the prompt is
    `TLDR_TEMPLATE` of the post, y_w the chosen summary, y_l the other."""
    pairs = []
    for line, record in read_jsonl(path, ()):
        info, summaries, choice = record.get("info"), record.get("summaries"), record.get("choice")
        if not isinstance(info, dict) or not all(isinstance(info.get(k), str) for k in ("post", "title", "subreddit")):
            raise TaskDataError(f"{path}:{line}: expected 'info' with string fields post, title and subreddit "
                                "(a Reddit TL;DR comparison)")
        if (not isinstance(summaries, list) or len(summaries) != 2
                or not all(isinstance(x, dict) and isinstance(x.get("text"), str) for x in summaries)):
            raise TaskDataError(f"{path}:{line}: expected 'summaries', a list of two {{'text': str}} objects")
        if choice not in (0, 1) or isinstance(choice, bool):
            raise TaskDataError(f"{path}:{line}: 'choice'={choice!r}; expected 0 or 1 (the preferred summary)")
        chosen, rejected = summaries[choice]["text"], summaries[1 - choice]["text"]
        record = {"chosen": chosen, "rejected": rejected}
        _check_nonempty(path, line, record, ("chosen", "rejected"))
        if chosen == rejected:
            raise TaskDataError(f"{path}:{line}: the two summaries are equal; a preference needs two different ones")
        pairs.append(PreferencePair(TLDR_TEMPLATE.format(**{k: info[k] for k in ("subreddit", "title", "post")}),
                                    chosen, rejected, {"line": line}))
    if not pairs:
        raise TaskDataError(f"{path}: no preference pairs; expected TL;DR comparison lines")
    return pairs


FORMATS: dict[str, Callable[[str | os.PathLike], list[PreferencePair]]] = {
    "jsonl": read_preference_jsonl, "hh_rlhf": read_hh_rlhf_jsonl, "tldr": read_tldr_comparisons_jsonl}


def preference_files(pattern: str) -> list[str]:
    """The files of `pattern`: comma-separated paths or glob patterns (shards such as
    "train-*.jsonl.gz"), each matching at least one file, in sorted order within a pattern."""
    paths = []
    for part in (p.strip() for p in pattern.split(",")):
        found = sorted(glob.glob(os.path.expanduser(part))) if part else []
        if not found:
            raise FileNotFoundError(f"preference file {part!r} matches no file")
        paths += found
    return paths


def read_preference_file(pattern: str, file_format: str) -> list[PreferencePair]:
    """Every pair of the files of `pattern` (`preference_files`) in the layout `file_format` of FORMATS
    (gzip-compressed files end in .gz); each pair's metadata names its file and line."""
    if file_format not in FORMATS:
        raise ValueError(f"preference file format={file_format!r}; expected one of {list(FORMATS)}")
    return [dataclasses.replace(pair, metadata={**pair.metadata, "file": os.path.basename(path)})
            for path in preference_files(pattern) for pair in FORMATS[file_format](path)]


def split_held_out(pairs: Sequence[PreferencePair], num_held_out: int, seed: int
                   ) -> tuple[list[PreferencePair], list[PreferencePair]]:
    """(training pairs, `num_held_out` held-out pairs): a seeded permutation of the pairs, its first
    `num_held_out` held out; the two keep the file order within themselves."""
    if not 0 < num_held_out < len(pairs):
        raise ValueError(f"{num_held_out} held-out pairs of {len(pairs)}; expected between 1 and {len(pairs) - 1}")
    held = np.zeros(len(pairs), bool)
    held[np.random.default_rng(seed).permutation(len(pairs))[:num_held_out]] = True
    return [p for p, h in zip(pairs, held) if not h], [p for p, h in zip(pairs, held) if h]


def write_pairs(path: str | os.PathLike, pairs: Sequence[PreferencePair]) -> None:
    """Write pairs atomically in the layout `read_preference_jsonl` reads."""
    rewrite_jsonl(path, [pair.record() for pair in pairs])


def cached_pairs(path: str | os.PathLike, build: Callable[[], list[PreferencePair]]) -> list[PreferencePair]:
    """The pairs at `path`, built by `build()` and written there first when the file does not exist."""
    if not os.path.exists(path):
        pairs = build()
        if not pairs:
            raise ValueError(f"preference set for {path} is empty: no example gave a pair")
        write_pairs(path, pairs)
    return [dataclasses.replace(p, metadata={k: v for k, v in p.metadata.items() if k != "line"})
            for p in read_preference_jsonl(path)]


def _check_samples(examples: Sequence[Example], samples: Sequence[Sequence[str]]) -> None:
    if len(samples) != len(examples):
        raise ValueError(f"{len(samples)} sample lists for {len(examples)} examples; expected one list per example")


def _wrong(task: TaskBase, example: Example, completions: Sequence[str]) -> list[str]:
    """The completions graded wrong, leaving out blank ones: an empty response is no y_l to improve on
    (and `read_preference_jsonl` refuses empty fields, so a written set must not hold one)."""
    return [c for c in completions if c.strip() and not task.grade(example, c).correct]


def _prompt(task: TaskBase, example: Example, num_shots: int) -> str:
    return task.format_prompt(example, num_shots=num_shots)


def solver_pairs(task: TaskBase, examples: Sequence[Example], samples: Sequence[Sequence[str]], *,
                 num_shots: int = 0) -> list[PreferencePair]:
    """(a) y_w = the solver's step-by-step solution, y_l = the first sample graded wrong (if any)."""
    _check_samples(examples, samples)
    solve = solver_for(task.name)
    pairs = []
    for example, completions in zip(examples, samples):
        wrong = _wrong(task, example, completions)
        if wrong:
            pairs.append(PreferencePair(_prompt(task, example, num_shots), solve(example).text(), wrong[0],
                                        {"id": example.id, "kind": "solver"}))
    return pairs


def gold_pairs(task: TaskBase, examples: Sequence[Example], samples: Sequence[Sequence[str]], *,
               num_shots: int = 0) -> list[PreferencePair]:
    """(d) y_w = the task's gold solution (`reference_completion`), y_l = the first sample graded wrong."""
    _check_samples(examples, samples)
    pairs = []
    for example, completions in zip(examples, samples):
        wrong = _wrong(task, example, completions)
        if wrong:
            pairs.append(PreferencePair(_prompt(task, example, num_shots), task.reference_completion(example),
                                        wrong[0], {"id": example.id, "kind": "gold"}))
    return pairs


def self_sampled_pairs(task: TaskBase, examples: Sequence[Example], samples: Sequence[Sequence[str]], *,
                       num_shots: int = 0) -> list[PreferencePair]:
    """(b) y_w = the first sample graded correct, y_l = the first non-blank one graded wrong, for prompts
    with both."""
    _check_samples(examples, samples)
    pairs = []
    for example, completions in zip(examples, samples):
        right = [c for c in completions if task.grade(example, c).correct]
        wrong = _wrong(task, example, completions)
        if right and wrong:
            pairs.append(PreferencePair(_prompt(task, example, num_shots), right[0], wrong[0],
                                        {"id": example.id, "kind": "self"}))
    return pairs


def corruption_ladder(task: TaskBase, example: Example, max_level: int, seed: int) -> list[str]:
    """[y^(0), ..., y^(K)]: the solver's solution with 0..K nested corruptions (slot changes and dropped
    steps; K = max_level, capped by the solution's corruptions), so that quality strictly falls with the
    level by construction."""
    worked = solver_for(task.name)(example)
    top = min(max_level, len(worked.corruption_order(np.random.default_rng(seed))))
    return [corrupted(worked, level, np.random.default_rng(seed))[0] for level in range(top + 1)]


def corruption_pairs(task: TaskBase, examples: Sequence[Example], *, max_level: int = 3, seed: int = 0,
                     num_shots: int = 0) -> list[PreferencePair]:
    """(c) every ordered pair (level i < level j) of each example's corruption ladder; y_w = level i."""
    if max_level < 1:
        raise ValueError(f"max_level={max_level}; expected >= 1 (a ladder needs two rungs)")
    pairs = []
    for index, example in enumerate(examples):
        ladder = corruption_ladder(task, example, max_level, seed + index)
        prompt = _prompt(task, example, num_shots)
        for i in range(len(ladder)):
            for j in range(i + 1, len(ladder)):
                pairs.append(PreferencePair(prompt, ladder[i], ladder[j],
                                            {"id": example.id, "kind": "corruption", "levels": [i, j]}))
    return pairs


KINDS = ("solver", "self", "corruption", "gold")


def build_pairs(kind: str, task: TaskBase, examples: Sequence[Example], samples: Sequence[Sequence[str]] | None = None,
                *, seed: int = 0, max_level: int = 3, num_shots: int = 0) -> list[PreferencePair]:
    """The preference set `kind` (one of KINDS, module docstring) of `examples`; all but "corruption"
    read the model samples `samples[i]` of `examples[i]`."""
    if kind not in KINDS:
        raise ValueError(f"preference set kind={kind!r}; expected one of {list(KINDS)}")
    if kind == "corruption":
        return corruption_pairs(task, examples, max_level=max_level, seed=seed, num_shots=num_shots)
    if samples is None:
        raise ValueError(f"preference set {kind!r} pairs model samples; none were given")
    build = {"solver": solver_pairs, "self": self_sampled_pairs, "gold": gold_pairs}[kind]
    return build(task, examples, samples, num_shots=num_shots)
