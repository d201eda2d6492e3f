"""MATH-style problems from JSONL (``problem``, ``solution``, ``answer`` fields), e.g. MATH-500.

The generic task "math" reads ``train.jsonl`` / ``test.jsonl`` from `data_dir` (or its ``math/``
sub-folder); "math500" is the same task reading the ``math500/`` sub-folder, which ships only a test
split. Optional fields ``subject``, ``level`` and ``unique_id`` go to `Example.metadata` / the id.

The final answer is the content of the last ``\\boxed{...}`` (falling back to "The answer is
$...$"). Equivalence is decided by the `math-verify` library, which parses both LaTeX answers to
sympy and compares them (so ``\\frac{1}{2}``, ``0.5`` and ``\\dfrac12`` agree), never by string
comparison alone. math-verify bounds its work with SIGALRM, which only the main thread may use;
graders called from other threads run without that time limit.

When there is no train split, shots come from `BUILTIN_SHOTS`, a handful of short problems written
for this module in the MATH answer style, so test problems never appear in each other's prompts.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Mapping, Sequence

from math_verify import parse, verify

from sharpen_jax.tasks.answer_text import last_boxed
from sharpen_jax.tasks.base import Example, TaskBase, truncate_at_continuation
from sharpen_jax.tasks.files import check_split_files, find_task_files, read_jsonl

_SPLIT_FILES = {"train": "train.jsonl", "test": "test.jsonl"}
_VARIANT_SUBDIRS = {"math": "math", "math500": "math500"}
_ANSWER_IS_RE = re.compile(
    r"answer is:?\s*(?:\$(?P<math>[^$]+)\$|(?P<plain>[^\n$]+?))\s*\.?\s*$",
    re.IGNORECASE | re.MULTILINE,
)

BUILTIN_SHOTS: tuple[Example, ...] = tuple(
    Example(id=f"shot-{i}", question=q, answer=a, solution=s, metadata={"subject": sub, "level": 1})
    for i, (q, s, a, sub) in enumerate(
        [
            (
                "Solve for $x$: $3x - 7 = 11$.",
                "Adding 7 to both sides gives $3x = 18$, and dividing by 3 gives $x = \\boxed{6}$.",
                "6",
                "Algebra",
            ),
            (
                "What is $\\frac{2}{3}$ of $\\frac{3}{4}$?",
                "We multiply: $\\frac{2}{3} \\cdot \\frac{3}{4} = \\frac{6}{12} = "
                "\\boxed{\\frac{1}{2}}$.",
                "\\frac{1}{2}",
                "Prealgebra",
            ),
            (
                "Find the distance between the points $(1, 2)$ and $(4, 6)$.",
                "By the distance formula the distance is $\\sqrt{(4-1)^2 + (6-2)^2} = "
                "\\sqrt{9 + 16} = \\sqrt{25} = \\boxed{5}$.",
                "5",
                "Algebra",
            ),
            (
                "In how many ways can 3 books be chosen from a shelf of 5 different books?",
                "The order does not matter, so the count is $\\binom{5}{3} = "
                "\\frac{5 \\cdot 4 \\cdot 3}{3 \\cdot 2 \\cdot 1} = \\boxed{10}$.",
                "10",
                "Counting & Probability",
            ),
            (
                "What is the remainder when $2^{10}$ is divided by 7?",
                "Since $2^3 = 8 \\equiv 1 \\pmod 7$, we have $2^{10} = (2^3)^3 \\cdot 2 "
                "\\equiv 2 \\pmod 7$. The remainder is $\\boxed{2}$.",
                "2",
                "Number Theory",
            ),
        ]
    )
)


def _parse_latex(answer: str) -> list:
    timeout = 5 if threading.current_thread() is threading.main_thread() else None
    return parse(f"\\boxed{{{answer}}}", parsing_timeout=timeout)


def latex_equivalent(reference: str, candidate: str) -> bool:
    """Whether two LaTeX answers are mathematically equal according to math-verify."""
    if reference.strip() == candidate.strip():
        return True
    gold, predicted = _parse_latex(reference), _parse_latex(candidate)
    if not gold or not predicted:
        return False
    timeout = 5 if threading.current_thread() is threading.main_thread() else None
    return bool(verify(gold, predicted, timeout_seconds=timeout))


class MathProblems(TaskBase):
    """MATH-style problems; `variant` picks the data sub-folder ("math" or "math500")."""

    instruction = (
        "Solve the competition math problem. Reason step by step and put the final answer "
        "in \\boxed{}."
    )

    def __init__(
        self,
        data_dir: str | os.PathLike | None = None,
        *,
        variant: str = "math",
        files: Mapping[str, str | os.PathLike] | None = None,
        shot_seed: int = 0,
    ):
        super().__init__(shot_seed=shot_seed)
        if variant not in _VARIANT_SUBDIRS:
            raise ValueError(f"variant must be one of {list(_VARIANT_SUBDIRS)}, got {variant!r}")
        self.name = variant
        if files is not None:
            self._files = check_split_files(files, variant)
            self.source_dir = next(iter(self._files.values())).parent
        else:
            self.source_dir, found = find_task_files(
                data_dir, _VARIANT_SUBDIRS[variant], list(_SPLIT_FILES.values())
            )
            self._files = {s: found[f] for s, f in _SPLIT_FILES.items() if f in found}
        self.splits = tuple(self._files)

    def _load(self, split: str) -> list[Example]:
        rows = read_jsonl(self._files[split], ("problem", "solution", "answer"))
        examples = []
        for index, (line, row) in enumerate(rows):
            metadata = {"line": line}
            metadata.update({k: row[k] for k in ("subject", "level") if k in row})
            examples.append(
                Example(
                    id=str(row.get("unique_id") or f"{split}-{index:04d}"),
                    question=row["problem"].strip(),
                    answer=row["answer"].strip(),
                    solution=row["solution"],
                    metadata=metadata,
                )
            )
        return examples

    def shot_pool(self, example: Example) -> Sequence[Example]:
        """The train split when there is one, else the built-in shots."""
        return self.examples("train") if "train" in self.splits else BUILTIN_SHOTS

    def reference_completion(self, example: Example) -> str:
        """The reference solution, which ends in ``\\boxed{answer}``; boxes the answer if not."""
        solution = (example.solution or "").strip()
        if last_boxed(solution) is None:
            solution = f"{solution} The answer is $\\boxed{{{example.answer}}}$.".strip()
        return f" {solution}"

    def extract_answer(self, completion: str) -> str | None:
        """The last boxed expression, else the text after a final "The answer is"."""
        text = truncate_at_continuation(completion)
        boxed = last_boxed(text)
        if boxed is not None:
            return boxed.strip() or None
        matches = list(_ANSWER_IS_RE.finditer(text))
        if not matches:
            return None
        last = matches[-1]
        return (last.group("math") or last.group("plain")).strip() or None

    def is_equivalent(self, example: Example, extracted: str) -> bool:
        """math-verify equivalence of the extracted and reference answers."""
        return latex_equivalent(example.answer, extracted)
