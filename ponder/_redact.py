"""Secrets never leave in text: every API key value Ponder holds is replaced by
``[redacted]`` in its errors, events, logs and spans.

The process registers each key once it holds it (a model's provider key, ``ponder
serve``'s client keys, Slack tokens); :func:`redact` is applied where text leaves: the
message of every :class:`~ponder.errors.PonderError` (so HTTP error bodies, stream
errors, run events and span attributes built from it), and a filter on the ``ponder``
logger. An upstream error body that quotes the key thus reaches nobody.
"""

from __future__ import annotations

import logging
import threading

__all__ = ["REDACTED", "RedactingFilter", "redact", "register_secret"]

REDACTED = "[redacted]"
_MIN_LENGTH = 8  # shorter values are not secrets worth hiding (and would garble text)

# process-wide by nature: a key held anywhere in the process must be hidden everywhere
_secrets: frozenset[str] = frozenset()
_lock = threading.Lock()


def register_secret(value: str | None) -> None:
    """Hide ``value`` from every text Ponder emits from now on."""
    global _secrets
    if value is None or len(value) < _MIN_LENGTH or value in _secrets:
        return
    with _lock:
        _secrets = _secrets | {value}


def redact(text: str) -> str:
    """``text`` with every registered secret replaced by ``[redacted]``."""
    for s in _secrets:  # a handful of keys: a plain scan is cheapest
        if s in text:
            text = text.replace(s, REDACTED)
    return text


class RedactingFilter(logging.Filter):
    """Redacts log records of the ``ponder`` logger (message and arguments)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if _secrets:
            message = record.getMessage()
            clean = redact(message)
            if clean != message:
                record.msg, record.args = clean, None
        return True


logging.getLogger("ponder").addFilter(RedactingFilter())
