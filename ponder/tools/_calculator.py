"""A calculator tool: exact arithmetic on an expression, nothing else evaluated."""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable
from fractions import Fraction

from ponder.errors import ToolExecutionError

__all__ = ["calculate"]

_BINARY: dict[type[ast.operator], Callable[[Fraction, Fraction], Fraction]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: lambda a, b: Fraction(a // b),
    ast.Mod: operator.mod,
}
_FUNCS: dict[str, Callable[[float], float]] = {
    "sqrt": math.sqrt,
    "log": math.log,
    "exp": math.exp,
    "sin": math.sin,
    "cos": math.cos,
    "tan": math.tan,
}
_CONSTS = {"pi": math.pi, "e": math.e}
_MAX_EXPONENT = 10_000


def calculate(expression: str) -> str:
    """Evaluate ``expression`` (numbers, + - * / // % **, parentheses, sqrt/log/exp/sin/
    cos/tan, pi, e) exactly where possible; integers and fractions stay exact.

    Anything else (names, calls, attributes) raises :class:`ToolExecutionError` naming it.
    """
    try:
        tree = ast.parse(expression.replace("^", "**").replace("×", "*"), mode="eval")
    except SyntaxError as e:
        raise ToolExecutionError(
            f"not an arithmetic expression: {expression!r} ({e.msg})"
        ) from None
    value = _eval(tree.body, expression)
    if isinstance(value, Fraction):
        return str(value.numerator) if value.denominator == 1 else str(value)
    return repr(value)


def _eval(node: ast.AST, src: str) -> Fraction | float:
    if (
        isinstance(node, ast.Constant)
        and isinstance(node.value, int | float)
        and not isinstance(node.value, bool)
    ):
        return Fraction(node.value) if isinstance(node.value, int) else node.value
    if isinstance(node, ast.Name) and node.id in _CONSTS:
        return _CONSTS[node.id]
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        v = _eval(node.operand, src)
        return -v if isinstance(node.op, ast.USub) else v
    if isinstance(node, ast.BinOp):
        a, b = _eval(node.left, src), _eval(node.right, src)
        try:
            if isinstance(node.op, ast.Pow):
                if abs(float(b)) > _MAX_EXPONENT:
                    raise ToolExecutionError(f"exponent {b} is too large in {src!r}")
                if isinstance(a, Fraction) and isinstance(b, Fraction) and b.denominator == 1:
                    return Fraction(a ** int(b))
                return float(float(a) ** float(b))
            op = _BINARY.get(type(node.op))
            if op is None:
                raise ToolExecutionError(f"operator {type(node.op).__name__} is not allowed")
            if isinstance(a, Fraction) and isinstance(b, Fraction):
                return op(a, b)
            return float(op(Fraction(a), Fraction(b)))
        except ZeroDivisionError:
            raise ToolExecutionError(f"division by zero in {src!r}") from None
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id in _FUNCS
        and len(node.args) == 1
        and not node.keywords
    ):
        try:
            return _FUNCS[node.func.id](float(_eval(node.args[0], src)))
        except (ValueError, OverflowError) as e:
            raise ToolExecutionError(f"{node.func.id}: {e} in {src!r}") from None
    raise ToolExecutionError(
        f"{ast.unparse(node)!r} is not allowed in a calculation (numbers, + - * / // % **, "
        "parentheses, sqrt/log/exp/sin/cos/tan, pi, e)"
    )
