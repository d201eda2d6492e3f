"""Exact arithmetic on untrusted text: a recursive-descent parser and a Game-of-24 solver.

`evaluate(text)` accepts only whole-number literals, the binary operators + - * / and
parentheses (``×``, ``÷``, ``−`` and ``·`` are read as their ASCII forms), and computes the
value exactly with `fractions.Fraction`. It never hands text to Python's evaluator, so model output
cannot run code. Unary signs are rejected: in Game of 24 a leading minus would be an extra
operation. Division by zero, unknown characters, unbalanced parentheses, over-long input and
over-deep nesting raise `ExpressionError`.

`solve(numbers, target)` searches over pairs: pick two numbers, replace them by their sum,
difference, product or quotient, and recurse until one number is left, remembering small
multisets of values that cannot reach the target. It returns a fully parenthesised expression
that reaches the target exactly, or None when none exists; `solve_many` shares that memory
across puzzles.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Sequence
from fractions import Fraction

MAX_LENGTH = 200
MAX_DEPTH = 32
_TOKEN_RE = re.compile(r"\s*(?:(\d+)|(.))")
_SYNONYMS = str.maketrans({"×": "*", "·": "*", "÷": "/", "−": "-", "–": "-"})


class ExpressionError(ValueError):
    """The text is not a well-formed arithmetic expression over whole numbers."""


@dataclasses.dataclass(frozen=True)
class Evaluated:
    """An expression's exact value and the number literals it uses, in order of appearance."""

    value: Fraction
    numbers: tuple[int, ...]


class _Parser:
    def __init__(self, text: str):
        self.tokens: list[str | int] = []
        for match in _TOKEN_RE.finditer(text.translate(_SYNONYMS).rstrip()):
            number, symbol = match.groups()
            if number is not None:
                self.tokens.append(int(number))
            elif symbol in "+-*/()":
                self.tokens.append(symbol)
            else:
                raise ExpressionError(f"unexpected character {symbol!r} in {text!r}")
        self.position = 0
        self.numbers: list[int] = []

    def peek(self) -> str | int | None:
        return self.tokens[self.position] if self.position < len(self.tokens) else None

    def take(self) -> str | int | None:
        token = self.peek()
        self.position += 1
        return token

    def expression(self, depth: int) -> Fraction:
        value = self.term(depth)
        while self.peek() in ("+", "-"):
            operator = self.take()
            right = self.term(depth)
            value = value + right if operator == "+" else value - right
        return value

    def term(self, depth: int) -> Fraction:
        value = self.factor(depth)
        while self.peek() in ("*", "/"):
            operator = self.take()
            right = self.factor(depth)
            if operator == "*":
                value = value * right
            elif right == 0:
                raise ExpressionError("division by zero")
            else:
                value = value / right
        return value

    def factor(self, depth: int) -> Fraction:
        if depth > MAX_DEPTH:
            raise ExpressionError(f"parentheses nested deeper than {MAX_DEPTH}")
        token = self.take()
        if isinstance(token, int):
            self.numbers.append(token)
            return Fraction(token)
        if token == "(":
            value = self.expression(depth + 1)
            if self.take() != ")":
                raise ExpressionError("unbalanced parentheses: expected ')'")
            return value
        if token is None:
            raise ExpressionError("expression ends where a number or '(' was expected")
        raise ExpressionError(f"expected a number or '(', got {token!r}")


def evaluate(text: str) -> Evaluated:
    """The exact value of an arithmetic expression and its number literals (see module doc)."""
    if not isinstance(text, str):
        raise ExpressionError(f"expression must be a str, got {type(text).__name__}")
    if len(text) > MAX_LENGTH:
        raise ExpressionError(f"expression longer than {MAX_LENGTH} characters")
    if not text.strip():
        raise ExpressionError("empty expression")
    parser = _Parser(text)
    value = parser.expression(0)
    if parser.peek() is not None:
        raise ExpressionError(f"unexpected {parser.peek()!r} after a complete expression")
    return Evaluated(value=value, numbers=tuple(parser.numbers))


# The solver keeps each value as an unreduced integer fraction (numerator, denominator), which is
# exact and several times faster than `Fraction` for this many tiny operations.
_Value = tuple[int, int]


def _combinations(a: tuple[_Value, str], b: tuple[_Value, str]):
    ((p, q), left), ((r, s), right) = a, b
    yield (p * s + r * q, q * s), f"({left} + {right})"
    yield (p * r, q * s), f"({left} * {right})"
    yield (p * s - r * q, q * s), f"({left} - {right})"
    yield (r * q - p * s, q * s), f"({right} - {left})"
    if r != 0:
        yield (p * s, q * r), f"({left} / {right})"
    if p != 0:
        yield (r * q, s * p), f"({right} / {left})"


def _reduced(value: _Value) -> _Value:
    numerator, denominator = value
    if denominator < 0:
        numerator, denominator = -numerator, -denominator
    divisor = math.gcd(numerator, denominator)
    return numerator // divisor, denominator // divisor


def _search(items: list[tuple[_Value, str]], target: int, dead: set) -> str | None:
    if len(items) == 1:
        (numerator, denominator), text = items[0]
        return text if numerator == target * denominator else None
    # Small multisets of values recur across branches and across puzzles; remember dead ends.
    state = tuple(sorted(_reduced(value) for value, _ in items)) if len(items) <= 3 else None
    if state in dead:
        return None
    for i in range(len(items)):
        for j in range(i + 1, len(items)):
            rest = [item for k, item in enumerate(items) if k not in (i, j)]
            for combined in _combinations(items[i], items[j]):
                found = _search([*rest, combined], target, dead)
                if found is not None:
                    return found
    if state is not None:
        dead.add(state)
    return None


def solve(numbers: Sequence[int], target: int = 24) -> str | None:
    """An expression using each of `numbers` once with + - * / that equals `target`, or None."""
    return solve_many([numbers], target)[0]


def solve_many(puzzles: Sequence[Sequence[int]], target: int = 24) -> list[str | None]:
    """`solve` for many puzzles at once, sharing the memory of dead ends (several times faster)."""
    dead: set = set()
    solutions = []
    for numbers in puzzles:
        if not numbers:
            raise ValueError("numbers must be non-empty")
        found = _search([((int(n), 1), str(n)) for n in numbers], int(target), dead)
        if found is not None and found.startswith("(") and len(numbers) > 1:
            found = found[1:-1]
        solutions.append(found)
    return solutions
