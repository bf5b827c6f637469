"""The response cache: a rerun of the same request is free and returns the same samples.

Entries are keyed by a hash of the full request (provider, model, messages, every sampling
parameter except ``n`` and ``timeout``) plus the sample index, so asking for 8 samples after
having asked for 5 pays only for 3 new ones.
"""

from __future__ import annotations

import atexit
import dataclasses
import hashlib
import sqlite3
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import orjson

from ponder.errors import ConfigurationError
from ponder.types import Choice, GenerateParams, Message, TokenLogprob, ToolCall, Usage

__all__ = ["MemoryCache", "ResponseCache", "SQLiteCache", "request_key", "share_usage"]


def _params_bytes(params: GenerateParams) -> bytes:
    # no memo: about 1 us of a request's ~450 us of client CPU (benchmarks/batch.py), not
    # worth an identity-keyed table (removed after benchmarks/fanout.py --stress showed no
    # difference)
    return params.model_dump_json(exclude={"n", "timeout"}).encode()


def request_key(model: str, messages: Sequence[Message], params: GenerateParams) -> str:
    """A stable hash of everything that determines a sample's distribution."""
    h = hashlib.sha256(model.encode())
    h.update(b"\0")
    h.update(_params_bytes(params))
    for m in messages:
        h.update(b"\0" + m.role.encode() + b"\0" + m.content.encode())
        if m.tool_calls or m.tool_call_id is not None:  # a tool turn: its calls and ids too
            h.update(m.model_dump_json(include={"tool_calls", "tool_call_id", "name"}).encode())
    return h.hexdigest()


def _dump_choice(c: Choice) -> str:
    lp = None
    if c.logprobs is not None:
        lp = [[t.token, t.logprob, [list(x) for x in t.top]] for t in c.logprobs]
    d: dict[str, object] = {"t": c.text, "f": c.finish_reason, "l": lp}
    if c.usage is not None:
        d["u"] = [c.usage.prompt_tokens, c.usage.completion_tokens]
    if c.tool_calls:
        d["c"] = [[t.id, t.name, t.arguments] for t in c.tool_calls]
    return orjson.dumps(d).decode()


def _load_choice(index: int, raw: str) -> Choice:
    d = orjson.loads(raw)
    lp = None
    if d.get("l") is not None:
        lp = tuple(
            TokenLogprob(tok, float(p), tuple((str(a), float(b)) for a, b in top))
            for tok, p, top in d["l"]
        )
    u = d.get("u")
    usage = Usage(int(u[0]), int(u[1])) if u else None
    calls = tuple(ToolCall(id=i, name=n, arguments=a) for i, n, a in d.get("c") or ())
    return Choice(
        index=index,
        text=d["t"],
        finish_reason=d["f"],
        logprobs=lp,
        cached=True,
        usage=usage,
        tool_calls=calls,
    )


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
                out[i] = dataclasses.replace(c, cached=True, parsed=None)
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

    Look-ups are primary-key reads of a few microseconds and run inline. Writes never
    touch the disk on the caller's thread: ``put_many`` hands entries to a writer thread
    that commits whatever has accumulated within ``linger`` seconds in one transaction, so
    the event loop never waits for the disk and a fan-out whose answers arrive one by one
    costs a few transactions, not one each. Entries are visible to ``get_many`` as soon as
    they are put. ``flush()`` (also run by ``close()``, ``len()`` and at interpreter exit)
    commits at once and waits until everything put so far is in the file.
    """

    def __init__(self, path: str | Path, *, linger: float = 0.05) -> None:
        self.path = Path(path)
        self.linger = linger
        self._urgent = 0  # flush() calls waiting: the writer commits without lingering
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._pending: dict[tuple[str, int], str] = {}
        self._writing: dict[tuple[str, int], str] = {}
        self._closed = False
        self._error: BaseException | None = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = self._connect()
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS responses (key TEXT NOT NULL, idx INTEGER NOT NULL,"
                " choice TEXT NOT NULL, created REAL NOT NULL, PRIMARY KEY (key, idx))"
                " WITHOUT ROWID"
            )
            self._wdb = self._connect()
        except (sqlite3.Error, OSError) as e:
            raise ConfigurationError(
                f"cannot open the response cache at {self.path}: {e}. Point PONDER_CACHE_PATH "
                "at a writable file, or disable the cache with PONDER_CACHE=false"
            ) from None
        self._writer = threading.Thread(
            target=self._write_loop, name=f"ponder-cache-{self.path.name}", daemon=True
        )
        self._writer.start()
        atexit.register(self.close)

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("PRAGMA busy_timeout=5000")
        return db

    def get_many(self, key: str, n: int) -> dict[int, Choice]:
        # Snapshot the uncommitted entries *before* reading the file: an entry leaves
        # ``_writing`` only after its commit, so it is in the snapshot or in the file
        # (reading the file first could miss one committed and cleared in between).
        unsaved: dict[int, str] = {}
        if self._pending or self._writing:
            with self._lock:
                for i in range(n):
                    raw = self._pending.get((key, i)) or self._writing.get((key, i))
                    if raw is not None:
                        unsaved[i] = raw
        out = {
            idx: _load_choice(idx, raw)
            for idx, raw in self._db.execute(
                "SELECT idx, choice FROM responses WHERE key = ? AND idx < ?", (key, n)
            ).fetchall()
        }
        for i, raw in unsaved.items():
            out[i] = _load_choice(i, raw)
        return out

    def put_many(self, key: str, choices: Sequence[Choice]) -> None:
        """Store ``choices``; the writer thread commits them shortly after."""
        rows = {(key, c.index): _dump_choice(c) for c in choices}
        with self._lock:
            if self._closed:
                raise ConfigurationError(f"the response cache at {self.path} is closed")
            first = not self._pending
            self._pending.update(rows)
            if first:  # the writer is asleep only when nothing was pending
                self._wake.notify()

    def _write_loop(self) -> None:
        while True:
            with self._lock:
                while not self._pending and not self._closed:
                    self._wake.wait()
                if not self._pending and self._closed:
                    return
                deadline = time.monotonic() + self.linger
                while not self._closed and not self._urgent:  # gather a batch
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._wake.wait(left)
                self._writing, self._pending = self._pending, {}
                batch = self._writing
            now = time.time()
            try:
                with self._wdb:
                    self._wdb.executemany(
                        "INSERT OR REPLACE INTO responses (key, idx, choice, created)"
                        " VALUES (?, ?, ?, ?)",
                        [(k, i, raw, now) for (k, i), raw in batch.items()],
                    )
            except sqlite3.Error as e:  # keep them readable; report at flush/close
                with self._lock:
                    self._error = e
                    self._writing = {}
                    self._wake.notify_all()
                return
            with self._lock:
                self._writing = {}
                self._wake.notify_all()

    def flush(self) -> None:
        """Wait until every entry put so far is committed to the file."""
        with self._lock:
            self._urgent += 1
            try:
                while (self._pending or self._writing) and self._error is None:
                    if not self._writer.is_alive():
                        break
                    self._wake.notify_all()
                    self._wake.wait(0.1)
            finally:
                self._urgent -= 1
            if self._error is not None:
                raise ConfigurationError(
                    f"the response cache at {self.path} could not be written: {self._error}. "
                    "Completed samples of this run are not cached; check the disk"
                )

    def __len__(self) -> int:
        self.flush()
        (count,) = self._db.execute("SELECT COUNT(*) FROM responses").fetchone()
        return int(count)

    def clear(self) -> None:
        self.flush()
        with self._lock:
            self._pending.clear()
        self._db.execute("DELETE FROM responses")

    def close(self) -> None:
        """Commit what is pending, stop the writer and close the file (idempotent)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._wake.notify_all()
        self._writer.join()
        atexit.unregister(self.close)
        self._wdb.close()
        self._db.close()
        if self._error is not None:
            raise ConfigurationError(
                f"the response cache at {self.path} could not be written: {self._error}"
            )


def share_usage(choices: list[Choice], usage: Usage) -> list[Choice]:
    """Each choice with its share of the request's usage (what the cache keeps, so a hit
    can say what it saved)."""
    k = len(choices)
    if k == 0:
        return choices
    if k == 1:
        c = choices[0]
        return [dataclasses.replace(c, usage=usage)]
    p, c_ = usage.prompt_tokens, usage.completion_tokens
    out = []
    for j, c in enumerate(choices):
        u = Usage(p // k + (j < p % k), c_ // k + (j < c_ % k))
        out.append(dataclasses.replace(c, usage=u))
    return out
