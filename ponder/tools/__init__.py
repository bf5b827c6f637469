"""Tools: typed tools from Python functions (:class:`Tool`, ``@tool``), the code-execution
sandbox and the calculator, also as tools a model can call (docs/tools.md, docs/agents.md)."""

from ponder.tools._builtin import (
    TOOLS,
    calculator_tool,
    gather_tools,
    python_tool,
    register_tool,
    resolve_tools,
)
from ponder.tools._calculator import calculate
from ponder.tools._checked import CheckedRun, run_checked
from ponder.tools._mcp import MCPServer
from ponder.tools._sandbox import (
    RunResult,
    SandboxLimits,
    allow_weak_sandbox,
    network_namespace_available,
    run_python,
    sandbox_unavailable_reason,
    seccomp_filter,
)
from ponder.tools._tool import Tool, ToolOutput, ToolResult, ToolSource, tool, tools_by_name

__all__ = [
    "TOOLS",
    "CheckedRun",
    "MCPServer",
    "RunResult",
    "SandboxLimits",
    "Tool",
    "ToolOutput",
    "ToolResult",
    "ToolSource",
    "allow_weak_sandbox",
    "calculate",
    "calculator_tool",
    "gather_tools",
    "network_namespace_available",
    "python_tool",
    "register_tool",
    "resolve_tools",
    "run_checked",
    "run_python",
    "sandbox_unavailable_reason",
    "seccomp_filter",
    "tool",
    "tools_by_name",
]
