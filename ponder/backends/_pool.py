"""Endpoint pools: replicas of one model, least-outstanding routing, ejection and recovery."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from ponder.errors import ConfigurationError

__all__ = ["Endpoint", "EndpointPool"]

_LOOPBACK = ("localhost", "::1")


@dataclass(eq=False)
class Endpoint:
    """One base URL with its own concurrency limit and health record."""

    base_url: str
    api_key: str | None = None
    max_concurrency: int = 256
    outstanding: int = 0
    consecutive_failures: int = 0
    ejections: int = 0
    ejected_until: float = 0.0
    served: int = 0
    _slots: asyncio.Semaphore = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.max_concurrency < 1:
            raise ConfigurationError(f"max_concurrency must be >= 1, got {self.max_concurrency}")
        self._slots = asyncio.Semaphore(self.max_concurrency)
        parts = urlsplit(self.base_url)
        host = parts.hostname or ""
        self.is_loopback = parts.scheme == "local" or host.startswith("127.") or host in _LOOPBACK

    @property
    def in_flight(self) -> int:
        """Requests holding a slot now (outstanding minus those waiting for one)."""
        return self.max_concurrency - self._slots._value


class _Lease:
    """One slot on one endpoint (a plain class: cheaper per request than a generator)."""

    __slots__ = ("_ep", "_pool")

    def __init__(self, pool: EndpointPool) -> None:
        self._pool = pool
        self._ep: Endpoint | None = None

    async def __aenter__(self) -> Endpoint:
        ep = self._pool.pick()
        ep.outstanding += 1
        try:
            await ep._slots.acquire()
        except BaseException:
            ep.outstanding -= 1
            raise
        self._ep = ep
        return ep

    async def __aexit__(self, *exc: object) -> None:
        ep = self._ep
        if ep is not None:
            self._ep = None
            ep._slots.release()
            ep.outstanding -= 1


class EndpointPool:
    """Routes each request to the healthy endpoint with the fewest outstanding requests.

    After ``eject_after`` consecutive failures an endpoint is ejected for ``cooldown``
    seconds (doubling at each further ejection, up to 16x); when the time is up it gets
    traffic again and one success restores it fully. If every endpoint is ejected, the
    one due back first is used rather than failing outright.
    """

    def __init__(
        self,
        endpoints: Sequence[Endpoint],
        *,
        eject_after: int = 3,
        cooldown: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not endpoints:
            raise ConfigurationError("an endpoint pool needs at least one endpoint")
        self.endpoints = list(endpoints)
        self.eject_after = eject_after
        self.cooldown = cooldown
        self._clock = clock

    def pick(self) -> Endpoint:
        eps = self.endpoints
        if len(eps) == 1:
            return eps[0]
        now = self._clock()
        healthy = [e for e in eps if e.ejected_until <= now]
        if not healthy:
            return min(eps, key=lambda e: e.ejected_until)
        return min(healthy, key=lambda e: e.outstanding / e.max_concurrency)

    def acquire(self) -> _Lease:
        """``async with pool.acquire() as ep``: hold one concurrency slot on the chosen
        endpoint for the body of the block."""
        return _Lease(self)

    def report(self, ep: Endpoint, ok: bool) -> None:
        """Record the outcome of a request that reached (or failed to reach) ``ep``."""
        if ok:
            ep.served += 1
            if ep.consecutive_failures or ep.ejections:
                ep.consecutive_failures = 0
                ep.ejections = 0
            return
        ep.consecutive_failures += 1
        if ep.consecutive_failures >= self.eject_after and len(self.endpoints) > 1:
            ep.ejections += 1
            ep.consecutive_failures = 0
            ep.ejected_until = self._clock() + self.cooldown * min(16, 2 ** (ep.ejections - 1))
