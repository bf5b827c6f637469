"""The switch that blocks real (non-loopback) model requests, used by ``ponder.testing``."""

from __future__ import annotations

from ponder.errors import ConfigurationError

_remote_allowed = True


def remote_allowed() -> bool:
    return _remote_allowed


def set_remote_allowed(value: bool) -> bool:
    """Set the switch; returns the previous value."""
    global _remote_allowed
    previous, _remote_allowed = _remote_allowed, value
    return previous


def refuse(url: str) -> ConfigurationError:
    return ConfigurationError(
        f"Ponder blocked a model request to {url}: requests to non-loopback model servers are "
        "disabled here (ponder.testing.block_remote_models). Use ponder.testing.FakeModel or "
        "the stand-in server (ponder.testing.server) in tests."
    )
