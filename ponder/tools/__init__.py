"""Tools the agents call: a code-execution sandbox and a calculator (docs/tools.md)."""

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

__all__ = [
    "RunResult",
    "SandboxLimits",
    "allow_weak_sandbox",
    "calculate",
    "network_namespace_available",
    "run_python",
    "sandbox_unavailable_reason",
    "seccomp_filter",
]
