"""Tools: typed tools from Python functions (:class:`Tool`, ``@tool``), the code-execution
sandbox and the calculator, also as tools a model can call (docs/tools.md, docs/agents.md)."""

from ponder.tools._builtin import (
    TOOLS,
    calculator_tool,
    python_tool,
    register_tool,
    resolve_tools,
)
from ponder.tools._calculator import calculate
from ponder.tools._sandbox import (
    RunResult,
    SandboxLimits,
    allow_weak_sandbox,
    network_namespace_available,
    run_python,
    sandbox_unavailable_reason,
    seccomp_filter,
)
from ponder.tools._tool import Tool, ToolResult, tool, tools_by_name

__all__ = [
    "TOOLS",
    "RunResult",
    "SandboxLimits",
    "Tool",
    "ToolResult",
    "allow_weak_sandbox",
    "calculate",
    "calculator_tool",
    "network_namespace_available",
    "python_tool",
    "register_tool",
    "resolve_tools",
    "run_python",
    "sandbox_unavailable_reason",
    "seccomp_filter",
    "tool",
    "tools_by_name",
]
