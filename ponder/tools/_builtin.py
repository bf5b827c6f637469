"""The built-in tools: the calculator and the sandboxed Python runner, as :class:`Tool` s
(the memory package adds Dynamic Cheatsheet look-up and BM25 search over a corpus)."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from pydantic import ValidationError

from ponder.errors import ConfigurationError
from ponder.tools._calculator import calculate
from ponder.tools._sandbox import SandboxLimits, run_python
from ponder.tools._tool import Tool, ToolSource

__all__ = [
    "TOOLS",
    "calculator_tool",
    "gather_tools",
    "python_tool",
    "register_tool",
    "resolve_tools",
]

ToolFactory = Callable[..., Tool | ToolSource]


def calculator_tool() -> Tool:
    """``calculator(expression)``: exact arithmetic (fractions stay exact)."""

    def calculator(expression: str) -> str:
        """Evaluate an arithmetic expression exactly: numbers, + - * / // % **,
        parentheses, sqrt, log, exp, sin, cos, tan, pi and e.

        Args:
            expression: the expression, for example "(17 * 23) + 4"
        """
        return calculate(expression)

    return Tool(calculator, timeout=5.0)


def python_tool(limits: SandboxLimits | Mapping[str, Any] | None = None, **fields: Any) -> Tool:
    """``python(code)``: run a program in the OS sandbox (bubblewrap + seccomp, no
    network) and get what it printed, or why it failed. ``limits`` is a
    :class:`SandboxLimits` or its fields; so are keyword arguments (YAML:
    ``{python: {timeout: 20, memory_mb: 256}}``)."""
    if isinstance(limits, Mapping) or fields:
        try:
            base = limits.model_dump() if isinstance(limits, SandboxLimits) else dict(limits or {})
            limits = SandboxLimits.model_validate({**base, **fields})
        except ValidationError as e:
            raise ConfigurationError(f"python tool: invalid sandbox limits: {e}") from None
    lim = limits or SandboxLimits()

    async def python(code: str) -> str:
        """Run a complete Python program in a sandbox (no network, no files outside its
        own directory) and return what it printed. Print the result you need.

        Args:
            code: the program's source code
        """
        r = await run_python(code, limits=lim)
        out = r.stdout
        if r.output_truncated:
            out += "\n[output cut at the sandbox's limit]"
        if r.ok:
            return out if out.strip() else "(the program printed nothing: print the result)"
        why = r.killed_reason or f"exit code {r.exit_code}"
        raise RuntimeError(f"the program failed ({why}):\n{r.stderr[-4000:] or out[-4000:]}")

    return Tool(python, timeout=lim.timeout + 5.0)


def _mcp(**options: Any) -> ToolSource:
    from ponder.tools._mcp import MCPServer

    return MCPServer(**options)


TOOLS: dict[str, ToolFactory] = {"calculator": calculator_tool, "python": python_tool, "mcp": _mcp}
"""Tools by the name YAML gives them: name -> factory(**options) -> Tool. The memory
package adds ``search`` and ``cheatsheet``, the MCP module ``mcp``."""


def register_tool(name: str, factory: ToolFactory) -> None:
    """Make ``factory`` buildable by ``name`` from YAML (``tools: [name]`` or
    ``tools: [{name: {option: value}}]``)."""
    old = TOOLS.get(name)
    if old is not None and old is not factory:
        raise ConfigurationError(f"a tool named {name!r} is already registered")
    TOOLS[name] = factory


def resolve_tools(
    items: Sequence[Tool | ToolSource | str | Mapping[str, Any]],
) -> list[Tool | ToolSource]:
    """Tools from what a config names: a :class:`Tool` (or a source of tools, such as an
    MCP server) as it is, a registered name, or ``{name: {options}}``. Unknown names are
    errors with a suggestion."""
    out: list[Tool | ToolSource] = []
    for item in items:
        if isinstance(item, Tool | ToolSource):
            out.append(item)
            continue
        if isinstance(item, str):
            name, options = item, {}
        elif isinstance(item, Mapping) and len(item) == 1:
            name, raw = next(iter(item.items()))
            options = dict(raw or {})
        else:
            raise ConfigurationError(f"a tool is a name or {{name: {{options}}}}, got {item!r}")
        factory = TOOLS.get(name)
        if factory is None:
            close = difflib.get_close_matches(name, list(TOOLS), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigurationError(
                f"unknown tool {name!r}{hint} (known: {', '.join(sorted(TOOLS))})"
            )
        try:
            out.append(factory(**options))
        except TypeError as e:
            raise ConfigurationError(f"tool {name!r}: {e}") from None
    names = [t.name for t in out if isinstance(t, Tool)]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigurationError(f"two tools are named {dupes[0]!r}: give one another name")
    return out


async def gather_tools(items: Sequence[Tool | ToolSource]) -> list[Tool]:
    """The tools of ``items``, sources started (at most once each: they cache); two
    tools of one name are an error."""
    out: list[Tool] = []
    for item in items:
        out += [item] if isinstance(item, Tool) else await item.tools()
    names = [t.name for t in out]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigurationError(
            f"two tools are named {dupes[0]!r}: give an MCP server a prefix, or rename one"
        )
    return out
