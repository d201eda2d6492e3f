"""Programmatic solvers that write correct step-by-step solutions, and graded corruptions of them.

PIT's synthetic preference set (Wang et al., 2023, Sec. 4.1 / App.) has "a much larger LLM" write
y_w. Here a solver plays that role: it writes a correct, templated, step-by-step completion in the
task's answer format (deviation from the paper: our y_w is templated text, not fluent LLM text).

A solution is a `Worked`: a template whose slots hold the intermediate quantities and the final
answer, and whose `droppable` fragments are intermediate steps. `corrupted(worked, k, rng)` applies k
corruptions, each an intermediate slot changed or a step dropped (nested: the corruptions at level k
are a subset of those at level k + 1; a step holding a changed slot is never dropped, so no corruption
hides another; the final answer is changed last), which gives copies with a known total order of
quality, y^(0) > y^(1) > ... > y^(K) (issue 13, preference set c). Sudoku has no droppable step: its
grader's partial credit (right cells) orders its ladder, and dropping a listed step would leave the
grid, and so the credit, unchanged.

Solvers: arithmetic (tens/units decomposition), ProntoQA (forward chaining over the parsed text),
4x4 Sudoku (backtracking; each blank cell filled is a step) and Game of 24 (`expressions.solve`,
one step per operation).
"""

from __future__ import annotations

import dataclasses
import re
import string
from fractions import Fraction

import numpy as np

from sharpen_jax.tasks import prontoqa_solver, sudoku
from sharpen_jax.tasks.base import Example
from sharpen_jax.tasks.expressions import solve as solve24
from sharpen_jax.tasks.prontoqa import CONCEPTS, member_sentence, property_sentence, subtype_sentence


CHANGE, DROP = "change", "drop"  # the corruption kinds: (CHANGE, slot) or (DROP, index into `droppable`)


def _slots(fragment: str) -> set[int]:
    return {int(f) for _, f, _, _ in string.Formatter().parse(fragment) if f}


@dataclasses.dataclass(frozen=True)
class Worked:
    """A templated solution: `template.format(*values)` is the completion text.

    values: the slot contents (the correct ones); alternatives: per slot, the wrong values a
    corruption may put there; final: the slots that state the final answer (changed last);
    droppable: intermediate steps, each a fragment occurring once in `template` and holding no final
    slot, that a corruption may delete.
    """

    template: str
    values: tuple[str, ...]
    alternatives: tuple[tuple[str, ...], ...]
    final: tuple[int, ...]
    droppable: tuple[str, ...] = ()

    def __post_init__(self):
        for fragment in self.droppable:
            if self.template.count(fragment) != 1 or _slots(fragment) & set(self.final):
                raise ValueError(f"droppable step {fragment!r} must occur once in the template and hold no final "
                                 "slot")

    def text(self, values: tuple[str, ...] | None = None, dropped: tuple[int, ...] = ()) -> str:
        """The completion with `values` (default: the correct ones) in the slots, without the steps `dropped`."""
        template = self.template
        for index in dropped:
            template = template.replace(self.droppable[index], "", 1)
        return template.format(*(self.values if values is None else values))

    def corruption_order(self, rng: np.random.Generator) -> list[tuple[str, int]]:
        """Corruptions in the order they are applied: the intermediate ones (slot changes and step drops)
        shuffled, less those that would drop a step holding an earlier-changed slot or change a slot of an
        earlier-dropped step, then the final slots' changes."""
        inner = [(CHANGE, i) for i in range(len(self.values)) if i not in self.final]
        inner += [(DROP, j) for j in range(len(self.droppable))]
        order, changed, dropped_slots = [], set(), set()
        for index in rng.permutation(len(inner)):
            kind, i = inner[int(index)]
            if kind == CHANGE and i not in dropped_slots:
                changed.add(i)
            elif kind == DROP and not _slots(self.droppable[i]) & changed:
                dropped_slots |= _slots(self.droppable[i])
            else:
                continue
            order.append((kind, i))
        return order + [(CHANGE, i) for i in self.final]


def corrupted(worked: Worked, level: int, rng: np.random.Generator) -> tuple[str, tuple[tuple[str, int], ...]]:
    """(text with the first `level` corruptions of `corruption_order` applied, those corruptions). Levels
    are nested for one `rng` seed: call with equal-seeded generators to get the ladder y^(0) > ... > y^(K)."""
    order = worked.corruption_order(rng)
    if not 0 <= level <= len(order):
        raise ValueError(f"corruption level={level}; expected 0..{len(order)} (the solution's corruptions)")
    values = list(worked.values)
    picks = rng.integers(0, 1 << 30, len(order))
    for (kind, slot), pick in zip(order[:level], picks):
        if kind == CHANGE:
            options = worked.alternatives[slot]
            values[slot] = options[int(pick) % len(options)]
    dropped = tuple(j for kind, j in order[:level] if kind == DROP)
    return worked.text(tuple(values), dropped), tuple(order[:level])


def _number_alternatives(value: int | Fraction) -> tuple[str, ...]:
    return tuple(_fmt(value + delta) for delta in (1, -1, 2, 10, -10, 3))


def _fmt(value: int | Fraction) -> str:
    value = Fraction(value)
    return str(value.numerator) if value.denominator == 1 else f"{value.numerator}/{value.denominator}"


# ------------------------------------------------------------------------------------ arithmetic
def solve_arithmetic(example: Example) -> Worked:
    """a op b with b split into tens T and units U: a + b = a + T + U = (a + T) + U = r (and -, *)."""
    a, b, op = (example.metadata[k] for k in ("a", "b", "op"))
    tens, units = b - b % 10, b % 10
    result = {"+": a + b, "-": a - b, "*": a * b}[op]
    if tens == 0 or units == 0:
        return Worked(f" {a} {op} {b} = {{0}}", (str(result),), (_number_alternatives(result),), (0,))
    if op == "*":
        steps = (tens, units, a * tens, a * units, result)
        droppable = (f" = {a} * {{0}} + {a} * {{1}}", " = {2} + {3}")
    else:
        steps = (tens, units, a + tens if op == "+" else a - tens, result)
        droppable = (f" = {a} {op} {{0}} {op} {{1}}", f" = {{2}} {op} {{1}}")
    template = f" {a} {op} {b}" + "".join(droppable) + f" = {{{len(steps) - 1}}}"
    return Worked(template, tuple(map(str, steps)), tuple(map(_number_alternatives, steps)), (len(steps) - 1,),
                  droppable)


# -------------------------------------------------------------------------------------- ProntoQA
def solve_prontoqa(example: Example) -> Worked:
    """Forward chaining from the entity along subtype rules to the concept that decides the query."""
    subtypes, properties, members, (entity, adjective, positive) = prontoqa_solver.parse_question(example.question)
    parent_of = dict(subtypes)
    deciding = {owner: polarity for owner, adj, polarity in properties if adj == adjective}
    (_, concept), = [m for m in members if m[0] == entity]
    chain = [concept]
    while chain[-1] not in deciding:
        if chain[-1] not in parent_of:
            raise ValueError(f"the theory does not decide the query of {example.id}")
        chain.append(parent_of[chain[-1]])
    polarity = deciding[chain[-1]]
    verdict = "true" if polarity == positive else "false"
    if verdict.capitalize() != prontoqa_solver.solve(example.question):
        raise AssertionError(f"ProntoQA solver disagrees with forward chaining on {example.id}")
    steps, values, alternatives, droppable = [member_sentence(entity, chain[0])], [], [], []
    for child, parent in zip(chain, chain[1:]):
        steps += [subtype_sentence(child, parent), f"So {entity} is {{{len(values)}}}."]
        droppable += [" " + step for step in steps[-2:]]
        values.append(f"{'an' if parent[0] in 'aeiou' else 'a'} {parent}")
        alternatives.append(tuple(f"a {c}" for c in CONCEPTS if c not in chain))
    steps += [property_sentence(chain[-1], adjective, polarity),
              f"So {entity} is {{{len(values)}}}{adjective}.", f"The answer is {{{len(values) + 1}}}."]
    values += ["" if polarity else "not ", verdict]
    alternatives += [("not ",) if polarity else ("",), ("false",) if verdict == "true" else ("true",)]
    return Worked(" " + " ".join(steps), tuple(values), tuple(alternatives), (len(values) - 1,), tuple(droppable))


# ---------------------------------------------------------------------------------------- Sudoku
def solve_sudoku_grid(puzzle: sudoku.Grid) -> sudoku.Grid:
    """The unique completion of a 4x4 puzzle by backtracking (first solution found)."""
    grid = [row[:] for row in puzzle]
    blanks = [(r, c) for r in range(sudoku.SIZE) for c in range(sudoku.SIZE) if grid[r][c] == 0]

    def search(index: int) -> bool:
        if index == len(blanks):
            return True
        row, col = blanks[index]
        for digit in sorted(sudoku.DIGITS - {grid[r][c] for r, c in sudoku.PEERS[(row, col)]}):
            grid[row][col] = digit
            if search(index + 1):
                return True
        grid[row][col] = 0
        return False

    if not search(0):
        raise ValueError(f"the Sudoku puzzle has no solution:\n{sudoku.grid_to_text(puzzle)}")
    return grid


def solve_sudoku(example: Example) -> Worked:
    """One step per blank cell ("r1c2 = 3"), then the grid; each blank cell is a slot (all final)."""
    puzzle = sudoku.parse_grid(example.metadata["puzzle"])
    grid = solve_sudoku_grid(puzzle)
    blanks = [(r, c) for r in range(sudoku.SIZE) for c in range(sudoku.SIZE) if puzzle[r][c] == 0]
    slot = {cell: i for i, cell in enumerate(blanks)}
    steps = " ".join(f"r{r + 1}c{c + 1}={{{slot[(r, c)]}}}" for r, c in blanks)
    rows = ["".join(f"{{{slot[(r, c)]}}}" if (r, c) in slot else str(grid[r][c]) for c in range(sudoku.SIZE))
            for r in range(sudoku.SIZE)]
    values = tuple(str(grid[r][c]) for r, c in blanks)
    alternatives = tuple(tuple(str(d) for d in sorted(sudoku.DIGITS - {grid[r][c]})) for r, c in blanks)
    return Worked(f" {steps}\n" + "\n".join(rows), values, alternatives, tuple(range(len(blanks))))


def sudoku_partial_credit(example: Example, completion: str) -> int:
    """Number of cells of the completion's grid that equal the unique solution (0 with no grid)."""
    extracted = sudoku.Sudoku4().extract_answer(completion)
    if extracted is None:
        return 0
    solution = solve_sudoku_grid(sudoku.parse_grid(example.metadata["puzzle"]))
    grid = sudoku.parse_grid(extracted)
    return sum(grid[r][c] == solution[r][c] for r in range(sudoku.SIZE) for c in range(sudoku.SIZE))


# ---------------------------------------------------------------------------------- Game of 24
_TOKEN = re.compile(r"\s*(\d+|[-+*/()])")


def _parse_steps(tokens: list[str], steps: list[tuple[str, str, str, Fraction]]) -> Fraction:
    """operand op operand (fully parenthesised) -> its value, appending (a, op, b, value) per operation."""
    def operand() -> Fraction:
        token = tokens.pop(0)
        if token != "(":
            return Fraction(int(token))
        value = binary()
        tokens.pop(0)  # ")"
        return value

    def binary() -> Fraction:
        left = operand()
        op = tokens.pop(0)
        right = operand()
        value = {"+": left + right, "-": left - right, "*": left * right, "/": left / right}[op]
        steps.append((_fmt(left), op, _fmt(right), value))
        return value

    return binary()


def solve_game24(example: Example) -> Worked:
    """One line per operation ("4 + 8 = 12"), then the expression line "<expr> = 24" (the final slot)."""
    numbers = example.metadata["numbers"]
    expression = solve24(numbers)
    if expression is None:
        raise ValueError(f"puzzle {numbers} cannot make 24")
    steps: list[tuple[str, str, str, Fraction]] = []
    _parse_steps(_TOKEN.findall(expression), steps)
    lines = [f"{a} {op} {b} = {{{i}}}" for i, (a, op, b, _) in enumerate(steps)]
    values = [_fmt(v) for *_, v in steps]
    alternatives = [_number_alternatives(v) for *_, v in steps]
    first = re.search(r"\d+", expression)
    wrong = expression[:first.start()] + str(int(first.group()) + 1) + expression[first.end():]
    droppable = tuple(line + "\n" for line in lines)  # each operation line (with its slot, so unique)
    lines.append(f"{{{len(values)}}} = 24")
    values.append(expression)
    alternatives.append((wrong,))
    return Worked(" " + "\n".join(lines), tuple(values), tuple(alternatives), (len(values) - 1,), droppable)


SOLVERS = {"arithmetic": solve_arithmetic, "prontoqa": solve_prontoqa, "sudoku4": solve_sudoku,
           "game24": solve_game24}


def solver_for(task_name: str):
    """The step-by-step solver of a task; tasks without one are an error naming the ones that have one."""
    if task_name not in SOLVERS:
        raise ValueError(f"task {task_name!r} has no programmatic solver; solvers exist for {sorted(SOLVERS)}")
    return SOLVERS[task_name]
