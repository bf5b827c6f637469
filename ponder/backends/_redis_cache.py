"""A response cache shared through Redis: several server processes, eval workers on Ray
or machines of a cluster pay once for the same sample.

Each request key is one Redis hash (``ponder:cache:<key>``) whose fields are sample
indexes, so asking for 8 samples after 5 fetches 5 and pays for 3, as with SQLite. The
model layer uses the async methods (``redis.asyncio``, one client per event loop); the
sync ones serve scripts and the :class:`~ponder.backends.ResponseCache` protocol.

A Redis that cannot be reached never fails a generation: a look-up counts as a miss and
a write is skipped, each logged once with what to check; samples are still returned.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

from ponder.backends._cache import _dump_choice, _load_choice
from ponder.errors import ConfigurationError
from ponder.types import Choice

__all__ = ["AsyncResponseCache", "RedisCache"]

log = logging.getLogger("ponder.cache")


@runtime_checkable
class AsyncResponseCache(Protocol):
    """A cache the model layer awaits (network stores); same contract as ResponseCache."""

    async def aget_many(self, key: str, n: int) -> dict[int, Choice]: ...

    async def aput_many(self, key: str, choices: Sequence[Choice]) -> None: ...


class RedisCache:
    """Completed samples in Redis, shared by every process pointed at ``url``.

    ``ttl``: seconds an entry lives (None: forever; set Redis' ``maxmemory-policy`` to
    evict instead if memory is bounded). Select it with ``PONDER_CACHE_URL=redis://...``.
    """

    def __init__(
        self, url: str, *, ttl: float | None = None, prefix: str = "ponder:cache:"
    ) -> None:
        try:
            import redis
        except ImportError as e:
            raise ConfigurationError(
                "a Redis response cache needs the redis package: pip install 'ponder[redis]'"
            ) from e
        if not url.startswith(("redis://", "rediss://", "unix://")):
            raise ConfigurationError(
                f"cache URL {url!r} is not a Redis URL: use redis://HOST:PORT/DB"
            )
        self.url, self.ttl, self.prefix = url, ttl, prefix
        self._redis_errors: tuple[type[BaseException], ...] = (redis.RedisError, OSError)
        self._sync = redis.Redis.from_url(url, decode_responses=True)
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = (
            weakref.WeakKeyDictionary()
        )
        self._warned = False

    def _client(self) -> Any:
        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None:
            import redis.asyncio as aioredis

            client = aioredis.Redis.from_url(self.url, decode_responses=True)
            self._clients[loop] = client
        return client

    def _fail(self, what: str, e: BaseException) -> None:
        if not self._warned:
            self._warned = True
            log.warning(
                "response cache at %s: %s failed (%s); continuing without it. Check that "
                "Redis is running and reachable, or unset PONDER_CACHE_URL",
                self.url,
                what,
                e,
            )

    def _rows(self, raw: Sequence[Any]) -> dict[int, Choice]:
        return {i: _load_choice(i, r) for i, r in enumerate(raw) if r is not None}

    def _mapping(self, choices: Sequence[Choice]) -> dict[Any, Any]:
        return {str(c.index): _dump_choice(c) for c in choices}

    async def aget_many(self, key: str, n: int) -> dict[int, Choice]:
        try:
            raw = await self._client().hmget(self.prefix + key, [str(i) for i in range(n)])
        except self._redis_errors as e:
            self._fail("a look-up", e)
            return {}
        return self._rows(raw)

    async def aput_many(self, key: str, choices: Sequence[Choice]) -> None:
        if not choices:
            return
        try:
            async with self._client().pipeline(transaction=False) as pipe:
                pipe.hset(self.prefix + key, mapping=self._mapping(choices))
                if self.ttl is not None:
                    pipe.expire(self.prefix + key, int(self.ttl))
                await pipe.execute()
        except self._redis_errors as e:
            self._fail("a write", e)

    def get_many(self, key: str, n: int) -> dict[int, Choice]:
        try:
            raw = self._sync.hmget(self.prefix + key, [str(i) for i in range(n)])
        except self._redis_errors as e:
            self._fail("a look-up", e)
            return {}
        return self._rows(raw)

    def put_many(self, key: str, choices: Sequence[Choice]) -> None:
        if not choices:
            return
        try:
            with self._sync.pipeline(transaction=False) as pipe:
                pipe.hset(self.prefix + key, mapping=self._mapping(choices))
                if self.ttl is not None:
                    pipe.expire(self.prefix + key, int(self.ttl))
                pipe.execute()
        except self._redis_errors as e:
            self._fail("a write", e)

    async def aclose(self) -> None:
        """Close this loop's connection (the model layer calls it on ``aclose``)."""
        loop = asyncio.get_running_loop()
        client = self._clients.pop(loop, None)
        if client is not None:
            await client.aclose()
        self.close()

    def close(self) -> None:
        self._sync.close()
