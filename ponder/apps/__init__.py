"""Front ends: the ``ponder`` CLI, ``ponder serve`` (OpenAI-compatible API, web chat page,
Slack app). See docs/serve.md.

``PonderServer`` and ``ServeSettings`` load on first use, so the CLI works without the
``web`` extra.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ponder.apps._serve_settings import ServeSettings
    from ponder.apps.server import PonderServer

__all__ = ["PonderServer", "ServeSettings"]


def __getattr__(name: str) -> Any:
    if name == "PonderServer":
        from ponder.apps.server import PonderServer

        return PonderServer
    if name == "ServeSettings":
        from ponder.apps._serve_settings import ServeSettings

        return ServeSettings
    raise AttributeError(f"module 'ponder.apps' has no attribute {name!r}")
