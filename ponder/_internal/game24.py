"""The exact Game-of-24 checker, below every layer: the eval harness and the stand-in's
oracle both use it (``ponder.eval.check_24`` is the public name)."""

from __future__ import annotations

import ast
from fractions import Fraction

__all__ = ["check_24"]


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
