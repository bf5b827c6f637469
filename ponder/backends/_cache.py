"""The response cache: a rerun of the same request is free and returns the same samples.

Entries are keyed by a hash of the full request (provider, model, messages, every sampling
parameter except ``n`` and ``timeout``) plus the sample index, so asking for 8 samples after
having asked for 5 pays only for 3 new ones.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

from ponder.errors import ConfigurationError
from ponder.types import Choice, GenerateParams, Message, TokenLogprob

__all__ = ["MemoryCache", "ResponseCache", "SQLiteCache", "request_key"]


def request_key(model: str, messages: Sequence[Message], params: GenerateParams) -> str:
    """A stable hash of everything that determines a sample's distribution."""
    h = hashlib.sha256(model.encode())
    h.update(b"\0")
    h.update(params.model_dump_json(exclude={"n", "timeout"}).encode())
    for m in messages:
        h.update(b"\0" + m.role.encode() + b"\0" + m.content.encode())
    return h.hexdigest()


def _dump_choice(c: Choice) -> str:
    lp = None
    if c.logprobs is not None:
        lp = [[t.token, t.logprob, [list(x) for x in t.top]] for t in c.logprobs]
    return json.dumps({"t": c.text, "f": c.finish_reason, "l": lp}, ensure_ascii=False)


def _load_choice(index: int, raw: str) -> Choice:
    d = json.loads(raw)
    lp = None
    if d.get("l") is not None:
        lp = tuple(
            TokenLogprob(tok, float(p), tuple((str(a), float(b)) for a, b in top))
            for tok, p, top in d["l"]
        )
    return Choice(index=index, text=d["t"], finish_reason=d["f"], logprobs=lp, cached=True)


@runtime_checkable
class ResponseCache(Protocol):
    """Where completed samples are kept. Implementations must be safe to share by tasks."""

    def get_many(self, key: str, n: int) -> dict[int, Choice]:
        """Cached choices for sample indexes ``0..n-1`` of ``key`` (missing ones absent)."""
        ...

    def put_many(self, key: str, choices: Sequence[Choice]) -> None:
        """Store choices under ``key`` at their ``index``."""
        ...

    def close(self) -> None: ...


class MemoryCache:
    """A process-local cache (tests, notebooks)."""

    def __init__(self) -> None:
        self._data: dict[tuple[str, int], Choice] = {}

    def get_many(self, key: str, n: int) -> dict[int, Choice]:
        out: dict[int, Choice] = {}
        for i in range(n):
            c = self._data.get((key, i))
            if c is not None:
                out[i] = Choice(c.index, c.text, c.finish_reason, c.logprobs, cached=True)
        return out

    def put_many(self, key: str, choices: Sequence[Choice]) -> None:
        for c in choices:
            self._data[(key, c.index)] = c

    def close(self) -> None:
        self._data.clear()

    def __len__(self) -> int:
        return len(self._data)


class SQLiteCache:
    """The default persistent cache: one SQLite file in WAL mode, shared by processes.

    Look-ups and inserts are primary-key operations of a few microseconds on a local
    file (no fsync per commit with ``synchronous=NORMAL`` in WAL mode), cheaper than a
    thread hop, so they run inline on the event loop. Inserts made in one event-loop
    iteration are written together at its end, in one transaction.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._pending: dict[tuple[str, int], str] = {}
        self._flush_scheduled = False
        self._closed = False
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA busy_timeout=5000")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS responses (key TEXT NOT NULL, idx INTEGER NOT NULL,"
                " choice TEXT NOT NULL, created REAL NOT NULL, PRIMARY KEY (key, idx))"
                " WITHOUT ROWID"
            )
        except (sqlite3.Error, OSError) as e:
            raise ConfigurationError(
                f"cannot open the response cache at {self.path}: {e}. Point PONDER_CACHE_PATH "
                "at a writable file, or disable the cache with PONDER_CACHE=false"
            ) from None

    def get_many(self, key: str, n: int) -> dict[int, Choice]:
        out = {
            idx: _load_choice(idx, raw)
            for idx, raw in self._db.execute(
                "SELECT idx, choice FROM responses WHERE key = ? AND idx < ?", (key, n)
            ).fetchall()
        }
        for i in range(n):
            raw = self._pending.get((key, i))
            if raw is not None:
                out[i] = _load_choice(i, raw)
        return out

    def put_many(self, key: str, choices: Sequence[Choice]) -> None:
        """Store now, or (inside an event loop) at the end of this loop iteration, in one
        transaction with the other puts of the same iteration."""
        for c in choices:
            self._pending[(key, c.index)] = _dump_choice(c)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.flush()
            return
        if not self._flush_scheduled:
            self._flush_scheduled = True
            loop.call_soon(self.flush)

    def flush(self) -> None:
        """Write pending entries (called automatically; call before reading elsewhere)."""
        self._flush_scheduled = False
        if not self._pending or self._closed:
            return
        pending, self._pending = self._pending, {}
        now = time.time()
        with self._db:
            self._db.executemany(
                "INSERT OR REPLACE INTO responses (key, idx, choice, created) VALUES (?, ?, ?, ?)",
                [(k, i, raw, now) for (k, i), raw in pending.items()],
            )

    def __len__(self) -> int:
        self.flush()
        (count,) = self._db.execute("SELECT COUNT(*) FROM responses").fetchone()
        return int(count)

    def clear(self) -> None:
        self._pending.clear()
        self._db.execute("DELETE FROM responses")

    def close(self) -> None:
        if not self._closed:
            self.flush()
            self._closed = True
            self._db.close()
