"""A preference file as a task: the prompts x of a user's (x, y_w, y_l) file, split into training and
held-out pairs, for PIT runs on data with no grader (HH-RLHF, TL;DR; Wang et al. 2023, Sec. 4).

`PreferenceFileTask` has the `tasks.base.Task` interface that the training experiments read (splits
of examples and their prompts), so the experiments encode, sample and fingerprint its prompts like a
task's. Each example carries its pair: `question` is x, `solution` is y_w and `answer` is y_l, so the
workdir identity (a hash of every example) covers the whole pair. Quality in such data is not exact:
`grade` is an error, and a run judges its responses with its reward model instead.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from sharpen_jax.tasks.base import Example, Grade
from sharpen_jax.tasks.preferences import HH_HUMAN, PreferencePair, read_preference_file, split_held_out

SPLITS = ("train", "test")


@dataclasses.dataclass(frozen=True)
class PreferenceFileTask:
    """The pairs of a preference file: split "train" (training pairs) and "test" (held-out pairs).

    The prompt of an example is the file's x as it stands (no shots); decoding stops at the next
    "\\n\\nHuman:" turn for HH-RLHF dialogues, at the end-of-sequence token otherwise."""

    name: str
    train_pairs: tuple[PreferencePair, ...]
    held_out_pairs: tuple[PreferencePair, ...]
    stop: tuple[str, ...] = ()
    splits: tuple[str, ...] = SPLITS

    def pairs(self, split: str) -> tuple[PreferencePair, ...]:
        """The preference pairs of `split`."""
        if split not in SPLITS:
            raise ValueError(f"task {self.name!r} has no split {split!r}; available splits: {list(SPLITS)}")
        return self.train_pairs if split == "train" else self.held_out_pairs

    def examples(self, split: str) -> Sequence[Example]:
        """One example per pair of `split`: question x, solution y_w, answer y_l."""
        return tuple(Example(id=f"{split}-{i}", question=p.prompt, answer=p.rejected, solution=p.chosen)
                     for i, p in enumerate(self.pairs(split)))

    def format_prompt(self, example: Example, *, num_shots: int = 0, chat: bool = False) -> str:
        """x itself: a preference file's prompt is already the model's input."""
        if num_shots or chat:
            raise ValueError(f"task {self.name!r}: a preference file's prompts take no shots and no chat template "
                             f"(got num_shots={num_shots}, chat={chat})")
        return example.question

    def reference_completion(self, example: Example) -> str:
        """y_w, the preferred response."""
        return example.solution

    def extract_answer(self, completion: str) -> str | None:
        """Not defined: open-ended responses have no final answer."""
        raise ValueError(f"task {self.name!r} has no answer to extract: quality in a preference file is judged "
                         "by a reward model")

    def grade(self, example: Example, completion: str) -> Grade:
        """Not defined: there is no grader for a preference file's prompts."""
        raise ValueError(f"task {self.name!r} has no grader: quality in a preference file is judged by a reward "
                         "model")

    def __repr__(self) -> str:
        return f"PreferenceFileTask(name={self.name!r}, splits={self.splits})"


def load_preference_task(pattern: str, file_format: str, *, num_held_out: int, num_train: int = 0,
                         seed: int = 0, held_out_pattern: str = "") -> PreferenceFileTask:
    """The pairs of the files of `pattern` (`preferences.read_preference_file`): `num_held_out` held-out
    pairs, the first of the files of `held_out_pattern` (a test split) or, when it is "", set aside from
    `pattern`'s pairs by a seeded split; then the first `num_train` of the rest (all when 0) for training."""
    pairs = read_preference_file(pattern, file_format)
    if held_out_pattern:
        held_out = read_preference_file(held_out_pattern, file_format)
        if not 0 < num_held_out <= len(held_out):
            raise ValueError(f"{num_held_out} held-out pairs asked for; the file(s) {held_out_pattern!r} hold "
                             f"{len(held_out)}")
        train, held_out = pairs, held_out[:num_held_out]
    else:
        train, held_out = split_held_out(pairs, num_held_out, seed)
    if num_train > len(train):
        raise ValueError(f"{num_train} training pairs asked for; the file(s) {pattern!r} hold {len(train)}"
                         + ("" if held_out_pattern else f" besides the {num_held_out} held out"))
    train = train[:num_train] if num_train else train
    stop = (HH_HUMAN,) if file_format == "hh_rlhf" else ()
    return PreferenceFileTask(f"preference file ({file_format})", tuple(train), tuple(held_out), stop)
