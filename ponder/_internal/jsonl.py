"""JSON Lines files as users write them: blank lines skipped, a bad line named by
``file:line`` (datasets, question files, search corpora)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ponder.errors import ConfigurationError

__all__ = ["read_jsonl"]


def read_jsonl(path: str | Path, what: str = "the file") -> Iterator[tuple[int, Any]]:
    """``(line number, value)`` for each non-blank line of ``path``.

    A file that cannot be read raises ``ConfigurationError`` naming ``what`` and the path;
    a line that is not JSON raises one naming ``path:line``."""
    p = Path(path)
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise ConfigurationError(f"cannot read {what} {p}: {e.strerror or e}") from None
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except ValueError as e:
            raise ConfigurationError(f"{p}:{n}: not a JSON value ({e})") from None
        yield n, value
