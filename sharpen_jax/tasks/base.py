"""The task interface: examples, prompt formats, answer extraction and grading.

Every task in this package is a `TaskBase` subclass, which implements the `Task` protocol that the
rest of the codebase programs against:

* `examples(split)` returns the split's `Example`s (loaded once, then cached);
* `format_prompt(example, num_shots=k, chat=False)` renders the k-shot plain-text prompt
  ``"Question: ...\\nAnswer: ...\\n\\nQuestion: ...\\nAnswer:"``; with ``chat=True`` it returns chat
  messages (a system instruction, the shots as user/assistant turns, then the question);
* `extract_answer(completion)` pulls the final answer out of a model completion;
* `grade(example, completion)` returns a `Grade` (correct, extracted answer);
* `stop` holds stop strings for the plain format; `reference_completion(example)` is a completion in
  the task's answer format that must grade correct.

Shots come from `shot_pool()` (the train split unless a task says otherwise), in a fixed order given
by a permutation seeded with `shot_seed`; the example being asked is never one of its own shots. For
test examples the same k shots therefore prefix every prompt, so a sampler can share that prefix.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

QUESTION_PREFIX = "Question: "
ANSWER_PREFIX = "Answer:"
SHOT_SEPARATOR = "\n\n"
# A completion that runs on into a new "Question:" has started a new few-shot example; extractors
# cut it there so that answers to hallucinated follow-up questions are never read.
CONTINUATION_MARKER = "\nQuestion:"


@dataclasses.dataclass(frozen=True)
class Example:
    """One task instance; `answer` is the canonical reference answer, `solution` the worked text.

    `metadata` holds JSON values only (str, int, float, bool, lists, dicts), so that examples
    survive the array_record round trip of `storage` unchanged.
    """

    id: str
    question: str
    answer: str
    solution: str | None = None
    metadata: Mapping[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Grade:
    """The grader's verdict on one completion and the answer it read from it."""

    correct: bool
    extracted: str | None


@runtime_checkable
class Task(Protocol):
    """What callers rely on; see the module docstring."""

    name: str
    splits: tuple[str, ...]
    stop: tuple[str, ...]

    def examples(self, split: str) -> Sequence[Example]: ...

    def format_prompt(
        self, example: Example, *, num_shots: int = 1, chat: bool = False
    ) -> str | list[dict[str, str]]: ...

    def extract_answer(self, completion: str) -> str | None: ...

    def grade(self, example: Example, completion: str) -> Grade: ...

    def reference_completion(self, example: Example) -> str: ...


def truncate_at_continuation(completion: str) -> str:
    """The completion up to (not including) the first sign that it began a new few-shot example."""
    cut = completion.find(CONTINUATION_MARKER)
    return completion if cut < 0 else completion[:cut]


class TaskBase(abc.ABC):
    """Shared machinery: split caching, deterministic shots, plain and chat prompt rendering.

    Subclasses set `name`, `splits`, `instruction` (the chat system message) and implement
    `_load(split)`, `extract_answer`, `is_equivalent` and `reference_completion`.
    """

    name: str = ""
    splits: tuple[str, ...] = ("train", "test")
    stop: tuple[str, ...] = ("\n\nQuestion:",)
    shot_split: str = "train"
    instruction: str = ""

    def __init__(self, *, shot_seed: int = 0):
        self.shot_seed = int(shot_seed)
        self._cache: dict[str, tuple[Example, ...]] = {}
        self._shot_orders: dict[int, tuple[int, ...]] = {}

    # ----------------------------------------------------------------------------------- examples
    def examples(self, split: str) -> Sequence[Example]:
        """All examples of `split`, loaded on first use and cached."""
        if split not in self.splits:
            raise ValueError(
                f"task {self.name!r} has no split {split!r}; available splits: {list(self.splits)}"
            )
        if split not in self._cache:
            self._cache[split] = tuple(self._load(split))
        return self._cache[split]

    @abc.abstractmethod
    def _load(self, split: str) -> Sequence[Example]:
        """Read or generate the examples of `split`."""

    # -------------------------------------------------------------------------------------- shots
    def shot_pool(self, example: Example) -> Sequence[Example]:
        """Examples that may serve as shots for `example` (the shot split by default)."""
        return self.examples(self.shot_split)

    def _shot_order(self, pool_size: int) -> tuple[int, ...]:
        if pool_size not in self._shot_orders:
            order = np.random.default_rng(self.shot_seed).permutation(pool_size)
            self._shot_orders[pool_size] = tuple(int(i) for i in order)
        return self._shot_orders[pool_size]

    def shots(self, example: Example, num_shots: int) -> list[Example]:
        """`num_shots` shots for `example`: the pool in a fixed seeded order, minus the example."""
        if num_shots < 0:
            raise ValueError(f"num_shots must be >= 0, got {num_shots}")
        if num_shots == 0:
            return []
        pool = self.shot_pool(example)
        chosen: list[Example] = []
        for index in self._shot_order(len(pool)):
            candidate = pool[index]
            if candidate.id == example.id or candidate.question == example.question:
                continue
            chosen.append(candidate)
            if len(chosen) == num_shots:
                return chosen
        raise ValueError(
            f"task {self.name!r} cannot give {num_shots} shots: its shot pool holds only "
            f"{len(chosen)} other examples"
        )

    # ------------------------------------------------------------------------------------ prompts
    def format_prompt(
        self, example: Example, *, num_shots: int = 1, chat: bool = False
    ) -> str | list[dict[str, str]]:
        """A k-shot prompt: plain "Question:/Answer:" text, or chat messages when `chat`."""
        shots = self.shots(example, num_shots)
        if chat:
            messages = [{"role": "system", "content": self.instruction}] if self.instruction else []
            for shot in shots:
                messages.append({"role": "user", "content": shot.question})
                messages.append(
                    {"role": "assistant", "content": self.reference_completion(shot).strip()}
                )
            messages.append({"role": "user", "content": example.question})
            return messages
        blocks = [
            f"{QUESTION_PREFIX}{shot.question}\n"
            f"{ANSWER_PREFIX}{self.reference_completion(shot)}"
            for shot in shots
        ]
        blocks.append(f"{QUESTION_PREFIX}{example.question}\n{ANSWER_PREFIX}")
        return SHOT_SEPARATOR.join(blocks)

    # ------------------------------------------------------------------------------------ grading
    @abc.abstractmethod
    def extract_answer(self, completion: str) -> str | None:
        """The final answer stated in `completion`, canonicalised, or None if there is none."""

    @abc.abstractmethod
    def is_equivalent(self, example: Example, extracted: str) -> bool:
        """Whether the extracted answer is a correct answer to `example`."""

    @abc.abstractmethod
    def reference_completion(self, example: Example) -> str:
        """A completion in the task's answer format (after "Answer:") that grades correct."""

    def grade(self, example: Example, completion: str) -> Grade:
        """Extract the answer from `completion` and check it against `example`."""
        if not isinstance(completion, str):
            raise TypeError(f"completion must be a str, got {type(completion).__name__}")
        extracted = self.extract_answer(completion)
        correct = extracted is not None and bool(self.is_equivalent(example, extracted))
        return Grade(correct=correct, extracted=extracted)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, splits={self.splits})"
