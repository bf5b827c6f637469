"""Tools the agents call: a code-execution sandbox and a calculator (docs/tools.md)."""

from ponder.tools._calculator import calculate
from ponder.tools._sandbox import (
    RunResult,
    SandboxLimits,
    network_namespace_available,
    run_python,
)

__all__ = ["RunResult", "SandboxLimits", "calculate", "network_namespace_available", "run_python"]
