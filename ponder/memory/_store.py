"""Where cheatsheets live: one Protocol, three stores (in-memory, SQLite, Redis).

Every update makes a new version; nothing is overwritten, so any version can be shown,
exported or rolled back to. Writers use compare-and-set on the version number
(:func:`update` retries on a conflict), so with many concurrent curators no update is
lost and none is applied twice.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

from ponder.errors import ConfigurationError, PonderError

__all__ = [
    "Cheatsheet",
    "InMemoryStore",
    "MemoryStore",
    "RedisStore",
    "SQLiteStore",
    "VersionConflict",
    "export_namespace",
    "import_namespace",
    "open_store",
    "rollback",
    "update",
]


class VersionConflict(PonderError):
    """Someone else wrote a newer version first; re-read and try again."""

    def __init__(self, namespace: str, expected: int, actual: int) -> None:
        self.namespace, self.expected, self.actual = namespace, expected, actual
        super().__init__(
            f"cheatsheet {namespace!r} is at version {actual}, not {expected}: another "
            "writer updated it; re-read it and apply the change again (ponder.memory.update "
            "does this)"
        )


class Cheatsheet(BaseModel):
    """One version of a namespace's cheatsheet."""

    model_config = ConfigDict(frozen=True)

    namespace: str
    version: int = Field(ge=1)
    content: str
    created: float
    note: str = Field("", description="Why this version exists (curated after ..., rollback).")


@runtime_checkable
class MemoryStore(Protocol):
    """The store interface every backend implements (see tests/test_memory.py)."""

    async def latest(self, namespace: str) -> Cheatsheet | None: ...

    async def put(
        self, namespace: str, content: str, *, expected_version: int, note: str = ""
    ) -> Cheatsheet:
        """Write version ``expected_version + 1`` if the latest is ``expected_version``
        (0: none yet); else raise :class:`VersionConflict`."""
        ...

    async def history(self, namespace: str) -> list[Cheatsheet]: ...

    async def namespaces(self) -> list[str]: ...

    async def aclose(self) -> None: ...


async def update(
    store: MemoryStore,
    namespace: str,
    change: Callable[[Cheatsheet | None], Awaitable[str | None]],
    *,
    note: str = "",
    attempts: int = 20,
) -> Cheatsheet | None:
    """Apply ``change`` (latest -> new content, or None to leave it) atomically.

    On a conflict the latest version is re-read and ``change`` runs again on it, so each
    update is applied exactly once on top of every other.
    """
    for _ in range(attempts):
        current = await store.latest(namespace)
        new = await change(current)
        if new is None or (current is not None and new == current.content):
            return current
        try:
            return await store.put(
                namespace,
                new,
                expected_version=current.version if current else 0,
                note=note,
            )
        except VersionConflict:
            await asyncio.sleep(0)
    raise VersionConflict(namespace, -1, -1)


async def rollback(store: MemoryStore, namespace: str, version: int) -> Cheatsheet:
    """A new version with the content of ``version`` (history is kept)."""
    old = next((c for c in await store.history(namespace) if c.version == version), None)
    if old is None:
        raise ConfigurationError(f"cheatsheet {namespace!r} has no version {version}")

    async def back(_current: Cheatsheet | None) -> str:
        return old.content

    out = await update(store, namespace, back, note=f"rollback to version {version}")
    assert out is not None
    return out


async def export_namespace(store: MemoryStore, namespace: str) -> dict[str, Any]:
    """The whole history as JSON-ready data."""
    return {
        "namespace": namespace,
        "versions": [c.model_dump() for c in await store.history(namespace)],
    }


async def import_namespace(
    store: MemoryStore, data: dict[str, Any], *, namespace: str | None = None
) -> Cheatsheet | None:
    """Replay an export into ``store`` (as new versions after any existing ones)."""
    ns = namespace or str(data.get("namespace") or "")
    if not ns:
        raise ConfigurationError("the export names no namespace; pass namespace=...")
    versions = data.get("versions")
    if not isinstance(versions, list):
        raise ConfigurationError("an export has a list of 'versions'")
    last: Cheatsheet | None = None
    for v in versions:
        item = Cheatsheet.model_validate({**v, "namespace": ns})
        content = item.content

        async def put(_current: Cheatsheet | None, content: str = content) -> str:
            return content

        last = await update(store, ns, put, note=item.note or f"imported v{item.version}")
    return last


# -- in-memory -----------------------------------------------------------------------------


def _next(namespace: str, actual: int, content: str, note: str) -> Cheatsheet:
    """The version after ``actual`` of ``namespace``, written now."""
    return Cheatsheet(
        namespace=namespace, version=actual + 1, content=content, created=time.time(), note=note
    )


class InMemoryStore:
    """Process-local (tests, notebooks)."""

    def __init__(self) -> None:
        self._data: dict[str, list[Cheatsheet]] = {}
        self._lock = asyncio.Lock()

    async def latest(self, namespace: str) -> Cheatsheet | None:
        versions = self._data.get(namespace)
        return versions[-1] if versions else None

    async def put(
        self, namespace: str, content: str, *, expected_version: int, note: str = ""
    ) -> Cheatsheet:
        async with self._lock:
            versions = self._data.setdefault(namespace, [])
            actual = versions[-1].version if versions else 0
            if actual != expected_version:
                raise VersionConflict(namespace, expected_version, actual)
            c = _next(namespace, actual, content, note)
            versions.append(c)
            return c

    async def history(self, namespace: str) -> list[Cheatsheet]:
        return list(self._data.get(namespace, []))

    async def namespaces(self) -> list[str]:
        return sorted(self._data)

    async def aclose(self) -> None:
        return None


# -- SQLite --------------------------------------------------------------------------------


class SQLiteStore:
    """The default: one SQLite file, safe for several processes (WAL, immediate locks)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with closing(self._connect()) as db:
                # a damaged file is refused before anything reads or writes it: SQLite
                # itself notices some damage only when a query reaches the bad page
                check = db.execute("PRAGMA quick_check").fetchone()
                if check is None or check[0] != "ok":
                    found = str(check[0] if check else "no answer").replace("\n", "; ")
                    raise sqlite3.DatabaseError(f"integrity check: {found[:200]}")
                db.execute(
                    "CREATE TABLE IF NOT EXISTS cheatsheets (namespace TEXT NOT NULL, "
                    "version INTEGER NOT NULL, content TEXT NOT NULL, created REAL NOT NULL, "
                    "note TEXT NOT NULL, PRIMARY KEY (namespace, version))"
                )
        except sqlite3.DatabaseError as e:
            if isinstance(e, sqlite3.OperationalError):
                raise ConfigurationError(
                    f"cannot open the memory store at {self.path}: {e}; point "
                    "PONDER_MEMORY_PATH at a writable file"
                ) from None
            raise self._broken(e) from None
        except (sqlite3.Error, OSError) as e:
            raise ConfigurationError(
                f"cannot open the memory store at {self.path}: {e}; point PONDER_MEMORY_PATH "
                "at a writable file"
            ) from None

    @contextmanager
    def _session(self) -> Iterator[sqlite3.Connection]:
        """A connection whose failures say which file is broken and what to do."""
        try:
            with closing(self._connect()) as db:
                yield db
        except sqlite3.OperationalError as e:
            if "locked" in str(e) or "busy" in str(e):
                raise ConfigurationError(
                    f"the memory store at {self.path} stayed locked by another process for 30 s"
                    f" ({e}); retry when it is done"
                ) from None
            raise self._broken(e) from None
        except sqlite3.DatabaseError as e:
            raise self._broken(e) from None

    def _broken(self, e: BaseException) -> ConfigurationError:
        return ConfigurationError(
            f"the memory store at {self.path} is unreadable ({e}): the file is corrupted or is "
            "not a Ponder memory store. Restore it from an export (ponder memory import) or "
            "give another --store / PONDER_MEMORY_PATH"
        )

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA busy_timeout=30000")
        return db

    def _versions(self, namespace: str, order: str = "", limit: int = -1) -> list[Cheatsheet]:
        with self._session() as db:
            rows = db.execute(
                "SELECT version, content, created, note FROM cheatsheets WHERE namespace = ? "
                f"ORDER BY version {order} LIMIT ?",  # order: "" or "DESC", never user text
                (namespace, limit),
            ).fetchall()
        return [
            Cheatsheet(namespace=namespace, version=v, content=c, created=t, note=n)
            for v, c, t, n in rows
        ]

    def _latest(self, namespace: str) -> Cheatsheet | None:
        newest = self._versions(namespace, "DESC", 1)
        return newest[0] if newest else None

    async def latest(self, namespace: str) -> Cheatsheet | None:
        return await asyncio.to_thread(self._latest, namespace)

    def _put(self, namespace: str, content: str, expected: int, note: str) -> Cheatsheet:
        db = self._connect()
        try:
            db.execute("BEGIN IMMEDIATE")  # one writer at a time, across processes
            (actual,) = db.execute(
                "SELECT COALESCE(MAX(version), 0) FROM cheatsheets WHERE namespace = ?",
                (namespace,),
            ).fetchone()
            if actual != expected:
                db.execute("ROLLBACK")
                raise VersionConflict(namespace, expected, actual)
            c = _next(namespace, actual, content, note)
            db.execute(
                "INSERT INTO cheatsheets VALUES (?, ?, ?, ?, ?)",
                (namespace, c.version, content, c.created, note),
            )
            db.execute("COMMIT")
            return c
        finally:
            db.close()

    async def put(
        self, namespace: str, content: str, *, expected_version: int, note: str = ""
    ) -> Cheatsheet:
        return await asyncio.to_thread(self._put, namespace, content, expected_version, note)

    async def history(self, namespace: str) -> list[Cheatsheet]:
        return await asyncio.to_thread(self._versions, namespace)

    def _namespaces(self) -> list[str]:
        with self._session() as db:
            return [
                r[0] for r in db.execute("SELECT DISTINCT namespace FROM cheatsheets ORDER BY 1")
            ]

    async def namespaces(self) -> list[str]:
        return await asyncio.to_thread(self._namespaces)

    async def aclose(self) -> None:
        return None


# -- Redis ---------------------------------------------------------------------------------

# KEYS[1] = the namespace's list of versions; ARGV = expected version, the JSON to append
_CAS = """
local n = redis.call('LLEN', KEYS[1])
if n ~= tonumber(ARGV[1]) then return -1 - n end
redis.call('RPUSH', KEYS[1], ARGV[2])
redis.call('SADD', KEYS[2], ARGV[3])
return n + 1
"""


class RedisStore:
    """Shared by processes and hosts (``redis.asyncio``); versions are a Redis list and
    compare-and-set is one server-side script, so writers never interleave."""

    def __init__(
        self, url: str = "redis://127.0.0.1:6379/0", *, prefix: str = "ponder:memory"
    ) -> None:
        try:
            import redis.asyncio as aioredis
        except ImportError:
            raise ConfigurationError(
                "the Redis memory store needs the redis package: pip install 'ponder[redis]'"
            ) from None
        self.url = url
        self.prefix = prefix
        self._client = aioredis.from_url(url, decode_responses=True)
        self._cas = self._client.register_script(_CAS)

    def _key(self, namespace: str) -> str:
        return f"{self.prefix}:ns:{namespace}"

    async def _call(self, coro: Awaitable[Any]) -> Any:
        from redis.exceptions import ConnectionError as RedisConnectionError
        from redis.exceptions import TimeoutError as RedisTimeout

        try:
            return await coro
        except (RedisConnectionError, RedisTimeout, OSError) as e:
            raise ConfigurationError(
                f"cannot reach Redis at {self.url}: {e}. Start redis-server there, or use the "
                "default SQLite store"
            ) from None

    @staticmethod
    def _load(namespace: str, version: int, raw: str) -> Cheatsheet:
        d = json.loads(raw)
        return Cheatsheet(namespace=namespace, version=version, **d)

    async def latest(self, namespace: str) -> Cheatsheet | None:
        key = self._key(namespace)
        pipe = self._client.pipeline(transaction=True)  # length and last item together
        pipe.llen(key)
        pipe.lindex(key, -1)
        n, raw = await self._call(pipe.execute())
        if raw is None:
            return None
        return self._load(namespace, int(n), raw)

    async def put(
        self, namespace: str, content: str, *, expected_version: int, note: str = ""
    ) -> Cheatsheet:
        created = time.time()
        body = json.dumps({"content": content, "created": created, "note": note})
        got = int(
            await self._call(
                self._cas(
                    keys=[self._key(namespace), f"{self.prefix}:namespaces"],
                    args=[expected_version, body, namespace],
                )
            )
        )
        if got < 0:
            raise VersionConflict(namespace, expected_version, -1 - got)
        return Cheatsheet(
            namespace=namespace, version=got, content=content, created=created, note=note
        )

    async def history(self, namespace: str) -> list[Cheatsheet]:
        raws = await self._call(self._client.lrange(self._key(namespace), 0, -1))
        return [self._load(namespace, i + 1, r) for i, r in enumerate(raws)]

    async def namespaces(self) -> list[str]:
        return sorted(await self._call(self._client.smembers(f"{self.prefix}:namespaces")))

    async def aclose(self) -> None:
        await self._client.aclose()


def open_store(url: str | Path | None = None) -> MemoryStore:
    """A store from a string: ``memory`` (in-process), ``redis://host:port/db`` (also
    ``rediss://``, ``unix://``), or a SQLite file path (default: ``memory.sqlite`` next to
    the response cache)."""
    from ponder.settings import default_cache_path

    if url is None:
        return SQLiteStore(default_cache_path().with_name("memory.sqlite"))
    text = str(url)
    if text == "memory":
        return InMemoryStore()
    if text.startswith(("redis://", "rediss://", "unix://")):
        return RedisStore(text)
    return SQLiteStore(text)
