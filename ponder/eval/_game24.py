"""Game of 24: the 1,362 puzzles of Yao et al. (Tree of Thoughts) and an exact checker.

The puzzles ship in ``ponder/eval/data/game24.csv`` (taken from the MIT-licensed
``tree-of-thoughts-llm`` package, ``tot/data/24/24.csv``; its licence is beside it), sorted
from easiest to hardest as in the source.
"""

from __future__ import annotations

import ast
import csv
import re
from dataclasses import dataclass
from fractions import Fraction
from importlib import resources

__all__ = ["Game24Puzzle", "check_24", "extract_expression", "load_game24"]


@dataclass(frozen=True, slots=True)
class Game24Puzzle:
    """One puzzle: its rank in the source (1 = easiest) and its four numbers."""

    rank: int
    numbers: tuple[int, int, int, int]

    @property
    def question(self) -> str:
        """The puzzle as Ponder's prompts state it (the stand-in oracle recognises it)."""
        nums = " ".join(map(str, self.numbers))
        return (
            f"Game of 24: {nums}. Use each of the numbers {nums} exactly once with + - * / "
            "and parentheses to make 24. Give the expression as \\boxed{EXPRESSION}."
        )


def load_game24(start: int = 0, count: int | None = None) -> list[Game24Puzzle]:
    """Puzzles ``start .. start+count`` of the 1,362 (all from ``start`` if ``count`` is None)."""
    text = (resources.files("ponder.eval") / "data" / "game24.csv").read_text()
    rows = list(csv.DictReader(text.splitlines()))
    out = []
    for row in rows:
        a, b, c, d = (int(x) for x in row["Puzzles"].split())
        out.append(Game24Puzzle(int(row["Rank"]), (a, b, c, d)))
    end = None if count is None else start + count
    return out[start:end]


_BOXED = re.compile(r"\\boxed\{((?:[^{}]|\{[^{}]*\})*)\}")
_EXPR_LINE = re.compile(r"^[\d\s+\-*/().×÷xX]+(?:=\s*24)?\s*$")


def extract_expression(text: str | None) -> str | None:
    """The proposed expression: the last ``\\boxed{...}``, else the last line made only of
    numbers and operators (an ``= 24`` tail is dropped)."""
    if not text:
        return None
    boxed = _BOXED.findall(text)
    if boxed:
        return str(boxed[-1]).split("=")[0].strip()
    for line in reversed(text.strip().splitlines()):
        line = line.strip().strip("`")
        if line and _EXPR_LINE.match(line) and any(ch.isdigit() for ch in line):
            return line.split("=")[0].strip()
    return None


def _eval(node: ast.AST) -> tuple[Fraction, list[int]]:
    if isinstance(node, ast.Expression):
        return _eval(node.body)
    if isinstance(node, ast.Constant) and isinstance(node.value, int):
        return Fraction(node.value), [node.value]
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        v, used = _eval(node.operand)
        return -v, used
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Sub, ast.Mult, ast.Div)):
        a, ua = _eval(node.left)
        b, ub = _eval(node.right)
        if isinstance(node.op, ast.Add):
            return a + b, ua + ub
        if isinstance(node.op, ast.Sub):
            return a - b, ua + ub
        if isinstance(node.op, ast.Mult):
            return a * b, ua + ub
        if b == 0:
            raise ZeroDivisionError
        return a / b, ua + ub
    raise ValueError(f"not allowed in a Game-of-24 expression: {ast.dump(node)[:40]}")


def check_24(expression: str | None, numbers: tuple[int, ...] | list[int]) -> bool:
    """True iff ``expression`` uses exactly ``numbers`` (each once) with + - * / and
    parentheses and equals 24 exactly (fractions, no rounding). Never raises."""
    if not expression:
        return False
    expr = expression.replace("×", "*").replace("÷", "/").replace("x", "*").replace("X", "*")
    if len(expr) > 200:
        return False
    try:
        value, used = _eval(ast.parse(expr, mode="eval"))
    except (SyntaxError, ValueError, ZeroDivisionError, RecursionError):
        return False
    return value == 24 and sorted(used) == sorted(numbers)
