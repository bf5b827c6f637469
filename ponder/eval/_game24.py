"""Game of 24: the 1,362 puzzles of Yao et al. (Tree of Thoughts) and an exact checker.

The puzzles ship in ``ponder/eval/data/game24.csv`` (taken from the MIT-licensed
``tree-of-thoughts-llm`` package, ``tot/data/24/24.csv``; its licence is beside it), sorted
from easiest to hardest as in the source.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from importlib import resources

from ponder._internal.game24 import check_24

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
