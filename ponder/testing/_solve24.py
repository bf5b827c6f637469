"""Exhaustive Game-of-24 search. The stand-in's oracle knows answers by it, and its source
is the program that a curated cheatsheet carries (``oracle.GAME24_SOLVER``), so it uses
nothing but ``fractions``."""

from __future__ import annotations

from fractions import Fraction


def solve24(nums: list[int] | tuple[int, ...]) -> str | None:
    """An expression over nums (each once) equal to 24, or None: exhaustive search."""

    def go(items: list[tuple[Fraction, str]]) -> str | None:
        if len(items) == 1:
            return items[0][1] if items[0][0] == 24 else None
        for i in range(len(items)):
            for j in range(i + 1, len(items)):
                (a, ea), (b, eb) = items[i], items[j]
                rest = items[:i] + items[i + 1 : j] + items[j + 1 :]
                options = [
                    (a + b, f"({ea}+{eb})"),
                    (a * b, f"({ea}*{eb})"),
                    (a - b, f"({ea}-{eb})"),
                    (b - a, f"({eb}-{ea})"),
                ]
                if b != 0:
                    options.append((a / b, f"({ea}/{eb})"))
                if a != 0:
                    options.append((b / a, f"({eb}/{ea})"))
                for value, expr in options:
                    found = go([*rest, (value, expr)])
                    if found:
                        return found
        return None

    return go([(Fraction(n), str(n)) for n in sorted(nums)])
