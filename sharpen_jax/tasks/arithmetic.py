"""Generated multi-digit arithmetic: "Question: What is 37 + 48?\\nAnswer: 85".

Operands have exactly `digits` digits (0-9 when ``digits=1``); the operator is drawn from `ops`
(any of "+", "-", "*"). Subtraction puts the larger operand first unless `allow_negative`, so
answers are non-negative by default. The answer sits on the "Answer:" line itself, so the plain
format stops at a newline (``stop=("\\n",)``).

Extraction reuses the GSM8K number reader, so "85", "37 + 48 = 85", "The answer is 85." and
"\\boxed{85}" all read as 85; grading compares the values exactly.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from sharpen_jax.tasks.answer_text import extract_final_number, numbers_equal
from sharpen_jax.tasks.base import Example
from sharpen_jax.tasks.generated import GeneratedTask

OPERATORS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b}
MAX_DIGITS = 30


class Arithmetic(GeneratedTask):
    """Addition, subtraction and multiplication of `digits`-digit whole numbers."""

    name = "arithmetic"
    stop = ("\n",)
    instruction = "Compute the result. Reply with the number only."

    def __init__(
        self,
        *,
        digits: int = 2,
        ops: Sequence[str] = ("+", "-", "*"),
        allow_negative: bool = False,
        seed: int = 0,
        num_train: int = 1000,
        num_test: int = 200,
        shot_seed: int = 0,
    ):
        super().__init__(seed=seed, num_train=num_train, num_test=num_test, shot_seed=shot_seed)
        if not isinstance(digits, (int, np.integer)) or not 1 <= digits <= MAX_DIGITS:
            raise ValueError(f"digits must be an int in [1, {MAX_DIGITS}], got {digits!r}")
        ops = tuple(ops)
        unknown = [op for op in ops if op not in OPERATORS]
        if not ops or unknown:
            raise ValueError(f"ops must be a non-empty subset of {list(OPERATORS)}, got {ops!r}")
        self.digits = int(digits)
        self.ops = ops
        self.allow_negative = bool(allow_negative)

    def _operand(self, rng: np.random.Generator) -> int:
        # Digit by digit (leading digit non-zero unless digits == 1): uniform over all numbers
        # with exactly `digits` digits, and exact for any length (no int64 overflow).
        value = int(rng.integers(0 if self.digits == 1 else 1, 10))
        for _ in range(self.digits - 1):
            value = value * 10 + int(rng.integers(10))
        return value

    def generate(self, rng: np.random.Generator) -> Example:
        """One "What is a op b?" question with its exact answer."""
        a, b = self._operand(rng), self._operand(rng)
        op = self.ops[int(rng.integers(len(self.ops)))]
        if op == "-" and not self.allow_negative and b > a:
            a, b = b, a
        result = OPERATORS[op](a, b)
        return Example(
            id="",
            question=f"What is {a} {op} {b}?",
            answer=str(result),
            solution=f"{a} {op} {b} = {result}",
            metadata={"a": a, "b": b, "op": op},
        )

    def reference_completion(self, example: Example) -> str:
        """The bare result on the answer line."""
        return f" {example.answer}"

    def extract_answer(self, completion: str) -> str | None:
        """The final number of the completion in canonical form."""
        return extract_final_number(completion)

    def is_equivalent(self, example: Example, extracted: str) -> bool:
        """Exact numeric equality."""
        return numbers_equal(extracted, example.answer)
