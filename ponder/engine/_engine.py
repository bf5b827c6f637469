"""The engine: what a process shares between its runs.

An :class:`Engine` reads :class:`~ponder.settings.Settings` once and owns the models,
keyed by reference and settings, with their endpoint pools (concurrency limits,
pipeline-aware scheduling, replica health, rate limits and back-off learned from the
servers) and the response caches (one SQLite file handle and writer per path, one Redis
client per URL). Runs borrow its models; they never build them, so a limit set for an
endpoint holds across every run in the process.

Each event loop has a default engine (:func:`default_engine`), closed when the loop
shuts down (``asyncio.run`` and pytest-asyncio do this); tests and embedders make their
own with ``async with Engine(settings) as engine``.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import weakref
from collections.abc import AsyncGenerator, Callable, Hashable, Sequence
from typing import Any, TypeVar

from ponder.backends import (
    Model,
    ModelRef,
    Price,
    PriceTable,
    RedisCache,
    ResponseCache,
    SQLiteCache,
)
from ponder.backends._pool import Endpoints
from ponder.backends._scope import SCOPE, BudgetLike, RequestScope
from ponder.errors import ConfigurationError
from ponder.settings import Settings

__all__ = ["Engine", "Run", "default_engine", "engine_for"]

T = TypeVar("T")


# one SQLite cache (connection + writer thread) per file and one Redis cache per URL,
# for the whole process: every engine that names the same file shares them
_CACHES: dict[tuple[str, str, float | None], ResponseCache] = {}
_CACHES_LOCK = threading.Lock()


def _shared_cache(settings: Settings) -> ResponseCache | None:
    if not settings.cache:
        return None
    if settings.cache_url:
        key = ("redis", settings.cache_url, settings.cache_ttl)
    else:
        key = ("sqlite", str(settings.cache_path.expanduser().resolve()), None)
    with _CACHES_LOCK:
        cache = _CACHES.get(key)
        if cache is None or getattr(cache, "_closed", False):
            cache = (
                RedisCache(key[1], ttl=settings.cache_ttl)
                if key[0] == "redis"
                else SQLiteCache(key[1])
            )
            _CACHES[key] = cache
        return cache


class Run(RequestScope):
    """One run's own state: its budgets and the service it has had from endpoints, and
    where its answer goes as it is written (``live``; None: nowhere). It is the scope the
    model layer reads (:class:`~ponder.backends.RequestScope`).

    ``async with engine.run(budget=...)`` (or ``with``) makes every model call of the
    block, in every task it starts, reserve on these budgets and count as this run for
    scheduling."""

    __slots__ = ("_tokens",)

    def __init__(
        self,
        budgets: Sequence[BudgetLike | None] = (),
        *,
        name: str = "",
        live: Callable[[str], object] | None = None,
    ) -> None:
        super().__init__([b for b in budgets if b is not None], name=name, live=live)
        self._tokens: list[Any] = []

    @property
    def requests(self) -> int:
        """Requests this run has dispatched so far."""
        return self.attained

    def __enter__(self) -> Run:
        self._tokens.append(SCOPE.set(self))
        return self

    def __exit__(self, *exc: object) -> None:
        token = self._tokens.pop()
        # an async generator resumed by another task exits in a copy of the context it
        # entered in: the copy is dropped with its value, so there is nothing to reset
        with contextlib.suppress(ValueError):
            SCOPE.reset(token)

    async def __aenter__(self) -> Run:
        return self.__enter__()

    async def __aexit__(self, *exc: object) -> None:
        self.__exit__()


class Engine:
    """Shared models, endpoint limits and caches for every run of a process.

    ``engine.model("vllm:M@http://host:8000/v1")`` returns the one Model of that reference
    (and concurrency limit); asking again returns the same endpoints, so 64 concurrent
    runs against an endpoint limited to 32 never have more than 32 requests in flight.
    Models served by one URL with the same key and limits share that endpoint (its slots,
    queue, health, rate limits and HTTP connections), whatever model name they ask for:
    the engine builds each endpoint once and gives every model it makes its endpoints.
    Prices are per use: ``engine.model(ref, price=(2.0, 8.0))`` is a priced view of the
    same model.
    """

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings if settings is not None else Settings.load()
        self._models: dict[tuple[Any, ...], Model] = {}
        self._endpoints = Endpoints()  # one per server and limits, each with its sessions
        self._resources: dict[Hashable, Any] = {}
        self._closed = False

    def __repr__(self) -> str:
        return f"Engine(models={len(self._models)})"

    @property
    def cache(self) -> ResponseCache | None:
        """The response cache the settings ask for (shared by every model here)."""
        return _shared_cache(self.settings)

    def model(
        self,
        ref: str | ModelRef | None = None,
        *,
        max_concurrency: int | None = None,
        price: tuple[float, float] | Price | None = None,
    ) -> Model:
        """The engine's model for ``ref`` (built once), optionally priced for this use."""
        if self._closed:
            raise ConfigurationError("this engine is closed; make a new Engine")
        if ref is None:
            ref = self.settings.default_model
        r = ModelRef.parse(ref) if ref is not None else None
        if r is not None and max_concurrency is not None:
            r = r.model_copy(update={"max_concurrency": max_concurrency})
        key = (
            (None,)
            if r is None
            else (
                str(r),
                r.max_concurrency,
                r.requests_per_minute,
                r.tokens_per_minute,
                r.api_key.get_secret_value() if r.api_key is not None else None,
            )
        )
        m = self._models.get(key)
        if m is None:
            cache = self.cache
            m = Model(
                r,
                settings=self.settings,
                cache=cache if cache is not None else False,
                endpoints=self._endpoints,
            )
            self._models[key] = m
        if price is not None:
            p = price if isinstance(price, Price) else Price(*price)
            m = m.with_prices(PriceTable({m.id: p}))
        return m

    def resource(self, key: Hashable, make: Callable[[], T]) -> T:
        """A resource that components share through this engine (a memory store, say):
        made by ``make()`` the first time ``key`` is asked for, the same object after
        that, closed with the engine (its ``aclose()`` or ``close()``)."""
        if self._closed:
            raise ConfigurationError("this engine is closed; make a new Engine")
        if key not in self._resources:
            self._resources[key] = make()
        found: T = self._resources[key]
        return found

    @property
    def models(self) -> list[Model]:
        """Every model built so far."""
        return list(self._models.values())

    def run(
        self,
        *budgets: BudgetLike | None,
        name: str = "",
        live: Callable[[str], object] | None = None,
    ) -> Run:
        """A run's scope: ``async with engine.run(budget): ...``; ``live`` receives the
        text of the step that writes the run's answer, as it is written."""
        return Run([b for b in budgets if b is not None], name=name, live=live)

    async def aclose(self) -> None:
        """Close the endpoints' HTTP sessions and the models' wires (the shared caches
        stay for other engines)."""
        self._closed = True
        models, self._models = list(self._models.values()), {}
        for m in models:
            await m.wire.aclose()
        await self._endpoints.aclose()
        resources, self._resources = list(self._resources.values()), {}
        for r in resources:
            close = getattr(r, "aclose", None)
            if close is not None:
                await close()
            elif callable(getattr(r, "close", None)):
                r.close()
        cache = _CACHES.get(("redis", self.settings.cache_url or "", self.settings.cache_ttl))
        if isinstance(cache, RedisCache):
            await cache.aclose()

    async def __aenter__(self) -> Engine:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


# -- the default engine of each event loop -------------------------------------------------

_DEFAULT: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, Engine]] = (
    weakref.WeakKeyDictionary()
)
_CLOSERS: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop, tuple[AsyncGenerator[None, None], asyncio.Task[None]]
] = weakref.WeakKeyDictionary()


async def _closer(engines: dict[str, Engine]) -> AsyncGenerator[None, None]:
    # an async generator left suspended: the loop's shutdown_asyncgens() (run by
    # asyncio.run and pytest-asyncio) closes it, and so the loop's engines
    try:
        yield
    finally:
        for e in list(engines.values()):
            await e.aclose()
        engines.clear()


def engine_for(settings: Settings | None = None) -> Engine:
    """The running loop's engine for ``settings`` (the default settings when None): made
    on first use, closed when the loop shuts down."""
    loop = asyncio.get_running_loop()
    engines = _DEFAULT.get(loop)
    if engines is None:
        engines = _DEFAULT[loop] = {}
        closer = _closer(engines)
        start: Any = anext(closer)
        _CLOSERS[loop] = (closer, loop.create_task(start))
    key = "" if settings is None else _settings_key(settings)
    engine = engines.get(key)
    if engine is None or engine._closed:
        engine = engines[key] = Engine(settings)
    return engine


def _settings_key(settings: Settings) -> str:
    # no memo: an engine is looked up once per workflow and loop, not per request
    return settings.model_dump_json()


def default_engine() -> Engine:
    """The running loop's default engine (settings read once, from the environment)."""
    return engine_for(None)
