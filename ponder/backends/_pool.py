"""Endpoint pools: replicas of one model, least-outstanding routing, ejection and recovery."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

from ponder.errors import ConfigurationError

if TYPE_CHECKING:
    import aiohttp

__all__ = ["Endpoint", "EndpointPool", "Endpoints", "RateLimiter", "Schedule", "Slots"]

Schedule = Literal["fifo", "las", "ncf"]
"""How an endpoint orders requests waiting for a slot: ``fifo`` (arrival order), ``las``
(least attained service, as in Autellix: the run that has had the fewest requests
dispatched goes first, which protects short runs behind long ones when run sizes are
unknown) or ``ncf`` (nearest completion first: the run that has had the most goes first,
so runs of similar size finish one after another instead of all at the end). Measured in
benchmarks/batch.py; ties go by arrival."""

_seq = itertools.count()


class Slots:
    """A counting semaphore whose waiters are served in priority order (lowest first,
    then arrival). Not bound to an event loop: its futures are made by the loop that
    waits, so one engine's endpoints serve every loop that uses them in turn."""

    __slots__ = ("_waiters", "in_use", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_use = 0
        self._waiters: list[tuple[float, int, asyncio.Future[None]]] = []

    @property
    def waiting(self) -> int:
        return sum(1 for _, _, f in self._waiters if not f.done())

    async def acquire(self, priority: float = 0.0) -> None:
        if self.in_use < self.limit and not self._waiters:
            self.in_use += 1
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (priority, next(_seq), fut))
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.release()  # the slot was handed over as we were cancelled: pass it on
            raise

    def release(self) -> None:
        while self._waiters:
            _, _, fut = heapq.heappop(self._waiters)
            if not fut.done():
                fut.set_result(None)  # the slot passes to this waiter: in_use unchanged
                return
        self.in_use -= 1


class RateLimiter:
    """Requests and tokens per minute for one endpoint: token buckets refilled
    continuously (a minute's allowance at most), plus a pause learned from the server
    (``Retry-After`` of a 429, ``x-ratelimit-*`` headers) that holds every request."""

    def __init__(
        self,
        requests_per_minute: int | None = None,
        tokens_per_minute: int | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rpm = requests_per_minute
        self.tpm = tokens_per_minute
        self._clock = clock
        now = clock()
        self._req = float(requests_per_minute or 0)
        self._tok = float(tokens_per_minute or 0)
        self._at = now
        self.paused_until = 0.0
        self.pauses = 0

    @property
    def active(self) -> bool:
        return self.rpm is not None or self.tpm is not None or self.paused_until > 0

    def _refill(self, now: float) -> None:
        dt = now - self._at
        self._at = now
        if self.rpm is not None:
            self._req = min(float(self.rpm), self._req + dt * self.rpm / 60)
        if self.tpm is not None:
            self._tok = min(float(self.tpm), self._tok + dt * self.tpm / 60)

    def delay(self, tokens: int = 0) -> float:
        """Seconds to wait before a request of ``tokens`` may go (0: take it now)."""
        now = self._clock()
        self._refill(now)
        wait = max(0.0, self.paused_until - now)
        if self.rpm is not None and self._req < 1:
            wait = max(wait, (1 - self._req) * 60 / self.rpm)
        if self.tpm is not None and tokens:
            need = min(tokens, self.tpm)  # a request larger than a minute waits for a full one
            if self._tok < need:
                wait = max(wait, (need - self._tok) * 60 / self.tpm)
        if wait == 0:
            if self.rpm is not None:
                self._req -= 1
            if self.tpm is not None:
                self._tok -= min(tokens, self.tpm)
        return wait

    async def wait(self, tokens: int = 0) -> None:
        while True:
            d = self.delay(tokens)
            if d <= 0:
                return
            await asyncio.sleep(d)

    def settle(self, reserved: int, used: int) -> None:
        """Give back tokens taken for a request that used fewer."""
        if self.tpm is not None and reserved > used:
            self._tok = min(float(self.tpm), self._tok + (reserved - used))

    def pause(self, seconds: float) -> None:
        """Hold every request for ``seconds`` (the server said so)."""
        until = self._clock() + max(0.0, seconds)
        if until > self.paused_until:
            self.paused_until = until
            self.pauses += 1

    def learn(self, headers: Mapping[str, str]) -> None:
        """Pause when the server's ``x-ratelimit-remaining-*`` says nothing is left, until
        its ``x-ratelimit-reset-*``."""
        for kind in ("requests", "tokens"):
            left = headers.get(f"x-ratelimit-remaining-{kind}")
            if left is None or left.strip() not in ("0", "0.0"):
                continue
            reset = _duration(headers.get(f"x-ratelimit-reset-{kind}", ""))
            if reset is not None:
                self.pause(reset)


def _duration(text: str) -> float | None:
    """``"6m0s"``, ``"1.5s"``, ``"250ms"`` or plain seconds -> seconds."""
    t = text.strip()
    if not t:
        return None
    try:
        return float(t)
    except ValueError:
        pass
    total = 0.0
    num = ""
    i = 0
    while i < len(t):
        ch = t[i]
        if ch.isdigit() or ch == ".":
            num += ch
            i += 1
            continue
        unit = "ms" if t.startswith("ms", i) else ch
        i += len(unit)
        if not num:
            return None
        scale = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}.get(unit)
        if scale is None:
            return None
        total += float(num) * scale
        num = ""
    if num:
        total += float(num)
    return total


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
    schedule: Schedule = "fifo"
    rate: RateLimiter = field(default_factory=RateLimiter, repr=False)
    _slots: Slots = field(init=False, repr=False)
    # one HTTP session (connection pool) per event loop, shared by every model it serves
    _http: dict[asyncio.AbstractEventLoop, Any] = field(
        init=False, repr=False, default_factory=dict
    )

    def __post_init__(self) -> None:
        if self.max_concurrency < 1:
            raise ConfigurationError(f"max_concurrency must be >= 1, got {self.max_concurrency}")
        if self.schedule not in ("fifo", "las", "ncf"):
            raise ConfigurationError(
                f"schedule must be 'fifo', 'las' or 'ncf', got {self.schedule!r}"
            )
        self._slots = Slots(self.max_concurrency)
        parts = urlsplit(self.base_url)
        host = parts.hostname or ""
        self.is_loopback = parts.scheme == "local" or host.startswith("127.") or host in _LOOPBACK

    def http_session(self) -> aiohttp.ClientSession:
        """This endpoint's HTTP session on the running event loop (made on first use):
        the models it serves share its connections."""
        loop = asyncio.get_running_loop()
        session = self._http.get(loop)
        if session is None or session.closed:
            import aiohttp

            session = self._http[loop] = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(
                    limit=0, ttl_dns_cache=300, enable_cleanup_closed=True
                ),  # the endpoint's slots limit its connections
                timeout=aiohttp.ClientTimeout(total=None),
                auto_decompress=True,
            )
        return session

    async def aclose(self) -> None:
        """Close this endpoint's HTTP session on the running loop (and forget those of
        loops that are gone: their connections went with them)."""
        loop = asyncio.get_running_loop()
        for other in [lp for lp in self._http if lp is not loop and lp.is_closed()]:
            del self._http[other]
        session = self._http.pop(loop, None)
        if session is not None and not session.closed:
            with suppress(RuntimeError):
                await session.close()

    @property
    def in_flight(self) -> int:
        """Requests holding a slot now (outstanding minus those waiting for one)."""
        return self._slots.in_use

    @property
    def waiting(self) -> int:
        """Requests waiting for a slot."""
        return self._slots.waiting


class _Lease:
    """One slot on one endpoint (a plain class: cheaper per request than a generator)."""

    __slots__ = ("_ep", "_pool", "_priority", "_tokens")

    def __init__(self, pool: EndpointPool, priority: float, tokens: int) -> None:
        self._pool = pool
        self._ep: Endpoint | None = None
        self._priority = priority
        self._tokens = tokens

    async def __aenter__(self) -> Endpoint:
        ep = self._pool.pick()
        ep.outstanding += 1
        try:
            if ep.rate.active:
                await ep.rate.wait(self._tokens)
            s = ep.schedule
            await ep._slots.acquire(
                0.0 if s == "fifo" else (self._priority if s == "las" else -self._priority)
            )
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


class Endpoints:
    """The endpoints of one owner (an engine, or a model made on its own), one per server
    URL, API key, limits and schedule: models served by one server share its slots,
    waiting queue, health, rate limits and HTTP connections."""

    def __init__(self) -> None:
        self._by_key: dict[tuple[Any, ...], Endpoint] = {}

    def get(
        self,
        base_url: str,
        api_key: str | None,
        max_concurrency: int,
        *,
        schedule: Schedule = "fifo",
        requests_per_minute: int | None = None,
        tokens_per_minute: int | None = None,
    ) -> Endpoint:
        """The endpoint of this server and limits (made on first use)."""
        key = (base_url, api_key, max_concurrency, schedule, requests_per_minute,
               tokens_per_minute)  # fmt: skip
        ep = self._by_key.get(key)
        if ep is None:
            ep = self._by_key[key] = Endpoint(
                base_url,
                api_key,
                max_concurrency,
                schedule=schedule,
                rate=RateLimiter(requests_per_minute, tokens_per_minute),
            )
        return ep

    def __iter__(self) -> Iterator[Endpoint]:
        return iter(list(self._by_key.values()))

    def __len__(self) -> int:
        return len(self._by_key)

    async def aclose(self) -> None:
        """Close every endpoint's HTTP session on the running loop."""
        for ep in self:
            await ep.aclose()


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

    def acquire(self, priority: float = 0.0, tokens: int = 0) -> _Lease:
        """``async with pool.acquire() as ep``: hold one concurrency slot on the chosen
        endpoint for the body of the block. ``priority`` orders waiters on an endpoint
        scheduled ``las`` (lower first); ``tokens`` is what the request may use, for a
        tokens-per-minute limit."""
        return _Lease(self, priority, tokens)

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
