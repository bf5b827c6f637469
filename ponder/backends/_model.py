"""``Model``: one model behind one interface, with every policy applied once.

A Model = a wire protocol (OpenAI-compatible or Anthropic) + a provider (where, which key)
+ quirks (does it take ``n``? prefill?), wrapped in the cross-cutting policies: endpoint
pool with per-endpoint concurrency limits, retries, response cache, usage/cost accounting
and run budgets.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import functools
from collections.abc import AsyncGenerator, Callable, Coroutine, Sequence
from typing import Any, TypeVar

from pydantic import BaseModel

from ponder import tracing
from ponder._internal import guard
from ponder._internal.loop import run_blocking
from ponder._redact import register_secret
from ponder.backends._base import Wire, WireRequest, check_params
from ponder.backends._cache import ResponseCache, request_key, share_usage
from ponder.backends._modelref import ModelRef
from ponder.backends._parts import Prompt, Send, Tally
from ponder.backends._policies import (
    Budget,
    PriceTable,
    Reservation,
    RetryPolicy,
    UsageMeter,
    estimate_prompt,
)
from ponder.backends._pool import Endpoint, EndpointPool, Endpoints, _Lease
from ponder.backends._providers import Quirks, get_provider, provider_key
from ponder.backends._redis_cache import AsyncResponseCache, RedisCache
from ponder.backends._scope import SCOPE, BudgetLike
from ponder.backends._streaming import generate_streamed, release, stream
from ponder.backends._traced import traced_generate
from ponder.backends._wiring import embedded_default, make_wire, settings_cache
from ponder.errors import (
    BudgetExceeded,
    ConfigurationError,
    MissingAPIKeyError,
    ParseError,
    PonderError,
    RateLimitError,
)
from ponder.settings import Settings
from ponder.types import (
    Choice,
    Completion,
    GenerateParams,
    Message,
    StreamChunk,
    Usage,
    as_messages,
)

__all__ = ["SLOT_STRIDE", "Model", "Prompt"]

SLOT_STRIDE = 100_000
"""Seeds (and cache entries) of workflow slot ``k`` of one model start at ``k x`` this."""

T = TypeVar("T")
R = TypeVar("R")
TModel = TypeVar("TModel", bound=BaseModel)


class Model:
    """A model you can ``await model.generate(prompt, n=8, temperature=0.7)`` on.

    Args:
        ref: ``"provider:model[@url,...]"`` or a :class:`ModelRef`; defaults to
            ``settings.default_model``, and with neither that nor an API key configured,
            to the embedded ``local:smollm2`` (logged once).
        settings: resolved configuration (default: ``Settings()`` from the environment).
        cache: ``True`` for the settings' cache (Redis when ``cache_url`` is set, else
            SQLite at ``cache_path``), ``False`` for none, or a cache.
        budget: a :class:`Budget` shared by every model of a run.
        retry: the retry policy (default from settings).
        prices: the price table used for cost accounting.
        defaults: sampling parameters applied to every call unless overridden.
        quirks: override the provider's quirks for this model.
        wire: a custom wire protocol (tests, new protocols).
        endpoints: where the model finds its endpoints (one per server and limits, each
            with its HTTP connections): an :class:`~ponder.engine.Engine` passes its own,
            so every model of a server shares them. By default the model has its own,
            closed with it.
    """

    def __init__(
        self,
        ref: str | ModelRef | None = None,
        *,
        settings: Settings | None = None,
        cache: ResponseCache | bool = True,
        budget: Budget | None = None,
        retry: RetryPolicy | None = None,
        prices: PriceTable | None = None,
        defaults: GenerateParams | None = None,
        quirks: Quirks | None = None,
        wire: Wire | None = None,
        endpoints: Endpoints | None = None,
    ) -> None:
        self.settings = settings if settings is not None else Settings.load()
        if ref is None:
            ref = self.settings.default_model or embedded_default(self.settings)
        self.ref = ModelRef.parse(ref)
        self.provider = get_provider(self.ref.provider)
        self.quirks = quirks if quirks is not None else self.provider.quirks
        self.id = f"{self.ref.provider}:{self.ref.name}"
        self.offset = 0  # this slot's first sample index (see for_slot)

        key: str | None = None
        if self.ref.api_key is not None:
            key = self.ref.api_key.get_secret_value()
        else:
            key = provider_key(self.provider, self.settings)
        if key is None and self.provider.key_required and wire is None:
            raise MissingAPIKeyError(self.provider.name, self.provider.api_key_env or "API key")
        register_secret(key)  # never in an error, event, log or span from here on

        urls = self.ref.base_urls or ((self.provider.base_url,) if self.provider.base_url else ())
        if not urls:
            raise ConfigurationError(
                f"model {self.ref}: provider {self.provider.name!r} has no default URL; "
                f"give one, e.g. '{self.id}@http://127.0.0.1:8000/v1'"
            )
        limit = self.ref.max_concurrency or self.settings.max_concurrency
        # a model made on its own owns its endpoints; an engine's models share the engine's
        self._own_endpoints = endpoints is None
        self.endpoints = endpoints if endpoints is not None else Endpoints()
        self.pool = EndpointPool(
            [
                self.endpoints.get(
                    u,
                    key,
                    limit,
                    schedule=self.settings.schedule,
                    requests_per_minute=self.ref.requests_per_minute,
                    tokens_per_minute=self.ref.tokens_per_minute,
                )
                for u in urls
            ],
            eject_after=self.settings.eject_after,
            cooldown=self.settings.eject_cooldown,
        )
        self.wire: Wire = (
            wire if wire is not None else make_wire(self.provider, self.quirks, self.settings)
        )

        self._own_cache = False
        self.cache: ResponseCache | None
        if cache is True:
            self.cache = settings_cache(self.settings)
            self._own_cache = self.cache is not None
        elif cache is False:
            self.cache = None
        else:
            self.cache = cache
        # decided once: a runtime-checkable Protocol's isinstance costs ~25 us per call
        self._acache = self.cache if isinstance(self.cache, AsyncResponseCache) else None
        self.budget = budget
        self.retry = retry or RetryPolicy(
            max_retries=self.settings.max_retries,
            initial=self.settings.retry_initial,
            maximum=self.settings.retry_max,
        )
        if prices is None and self.ref.price is not None:
            from ponder.backends._policies import Price

            prices = PriceTable({self.id: Price(*self.ref.price)})
        self._prices = prices or PriceTable()
        self._price = self._prices.price(self.id)
        self.defaults = defaults
        self.meter = UsageMeter()
        self._default_params: GenerateParams | None = None
        # memos of resolved params (1.20-1.24x per node without them) and of a plan's
        # request params (1.04-1.06x), measured by benchmarks/graph_overhead.py --memos
        self._resolved: dict[tuple[Any, ...], GenerateParams] = {}  # overrides -> params
        # id(params given) -> (those params, kept alive so the id stays theirs; resolved)
        self._resolved_params: dict[int, tuple[GenerateParams, GenerateParams]] = {}
        # (id(params), samples, seed) -> (those params, the copy a request of the plan sends)
        self._planned: dict[tuple[int, int, int | None], tuple[GenerateParams, GenerateParams]] = {}

    def __repr__(self) -> str:
        return f"Model({str(self.ref)!r})"

    # -- views ---------------------------------------------------------------------------

    @property
    def prices(self) -> PriceTable:
        """The price table of cost accounting (change it with :meth:`with_prices`)."""
        return self._prices

    def _view(self, **changes: Any) -> Model:
        # a view shares the endpoint pool, wire, cache, meter and memos; it is the same
        # model for every limit, with its own accounting or sample slot
        view = copy.copy(self)
        view.__dict__.update(changes)
        view.__dict__.pop("_span_static", None)  # it names the slot: the view builds its own
        view._own_cache = False
        return view

    def with_prices(self, prices: PriceTable) -> Model:
        """This model (same endpoints, limits, cache) priced by ``prices``."""
        return self._view(_prices=prices, _price=prices.price(self.id))

    def with_retry(self, retry: RetryPolicy) -> Model:
        """This model (same endpoints, limits, cache, accounting) retried by ``retry``."""
        return self._view(retry=retry)

    def for_slot(self, slot: int) -> Model:
        """This model as workflow slot ``slot`` sees it: the same endpoints and cache, but
        its samples are its own (seeds and cache entries start at ``slot x SLOT_STRIDE``),
        so two slots that ask one model the same thing get distinct samples, and a rerun
        gives each slot its own again. Slot 0 is the model itself."""
        if slot < 0:
            raise ConfigurationError(f"a slot is >= 0, got {slot}")
        return self if slot == 0 and self.offset == 0 else self._view(offset=slot * SLOT_STRIDE)

    def _budgets(self) -> tuple[BudgetLike, ...]:
        scope = SCOPE.get()
        if scope is None or not scope.budgets:
            return (self.budget,) if self.budget is not None else ()
        if self.budget is None:
            return scope.budgets
        return (self.budget, *scope.budgets)

    # -- parameters --------------------------------------------------------------------

    def _params(self, params: GenerateParams | None, overrides: dict[str, Any]) -> GenerateParams:
        memo: tuple[Any, ...] | None = None
        if params is not None and not overrides:
            # a caller that keeps its params object (a component's sampling settings)
            known = self._resolved_params.get(id(params))
            if known is not None and known[0] is params:
                return known[1]
        if params is None:
            if not overrides and self._default_params is not None:
                return self._default_params  # the hot path: validated once
            # the same overrides (a component's sampling settings) come back call after call
            memo = tuple(overrides.items())
            try:
                hit = self._resolved.get(memo)
            except TypeError:  # an unhashable value (a list of stops, a JSON schema)
                memo = hit = None
            if hit is not None:
                return hit
        base = params if params is not None else self.defaults
        if params is not None and self.defaults is not None:
            base = GenerateParams.build(self.defaults, **params.model_dump(exclude_unset=True))
        extra: dict[str, Any] = dict(overrides)
        if "timeout" not in extra and (base is None or base.timeout is None):
            extra["timeout"] = self.settings.request_timeout
        p = GenerateParams.build(base, **extra)
        check_params(self.provider.name, self.quirks, p)
        if params is None and not overrides:
            self._default_params = p
        elif memo is not None:
            if len(self._resolved) >= 256:
                self._resolved.clear()
            self._resolved[memo] = p
        elif params is not None and not overrides:
            if len(self._resolved_params) >= 256:
                self._resolved_params.clear()
            self._resolved_params[id(params)] = (params, p)
        return p

    # -- one HTTP request, with retries, limits, accounting ----------------------------

    def _count_retry(self, exc: BaseException) -> None:
        self.meter.retries += 1
        tracing.event("retry", {"ponder.retry.cause": type(exc).__name__,
                                "ponder.retry.message": str(exc)[:300]})  # fmt: skip

    def _worst(self, messages: Sequence[Message], params: GenerateParams, n: int) -> int:
        """The most tokens a request may use: prompt estimate + max_tokens x n."""
        per = params.max_tokens
        if per is None:
            budgets = self._budgets()
            per = max((b.estimate_tokens for b in budgets), default=1024)
        return estimate_prompt(messages) + per * n

    async def _reserve(
        self, messages: Sequence[Message], params: GenerateParams, n: int
    ) -> tuple[int, Sequence[tuple[BudgetLike, Reservation]]]:
        """A request's worst case in tokens (0 when no budget or token rate needs it) and
        its budget reservations, made before it is sent so that concurrent calls see them."""
        budgets = self._budgets()
        if not budgets and self.pool.endpoints[0].rate.tpm is None:
            return 0, ()
        tokens = self._worst(messages, params, n)
        held: list[tuple[BudgetLike, Reservation]] = []
        if budgets:
            worst_cost = self._price.cost(Usage(tokens, 0)) if self._price is not None else 0.0
            try:
                for b in budgets:
                    held.append((b, await b.reserve(tokens, worst_cost)))
            except BaseException:
                release(held)
                raise
        return tokens, held

    def _settle(
        self, held: Sequence[tuple[BudgetLike, Reservation]], usage: Usage, tally: Tally | None
    ) -> None:
        cost = self._price.cost(usage) if self._price is not None else 0.0
        self.meter.record(usage, cost)
        if tally is not None:
            tally.cost += cost
        for b, r in held:
            b.settle(r, usage, cost)

    def _admit(self, ep: Endpoint, tally: Tally | None) -> None:
        """A request is about to reach ``ep``: the network guard, then the counters."""
        if not ep.is_loopback and not guard.remote_allowed():
            raise guard.refuse(ep.base_url)
        self.meter.requests += 1
        if tally is not None:
            tally.requests += 1

    def _failed(self, ep: Endpoint, e: PonderError) -> None:
        if e.retryable:
            self.pool.report(ep, False)
        if isinstance(e, RateLimitError):
            # the server said stop: every request to this endpoint waits, in every run
            ep.rate.pause(e.retry_after if e.retry_after is not None else self.retry.initial)

    def _served(self, ep: Endpoint, tokens: int, usage: Usage) -> None:
        self.pool.report(ep, True)
        if ep.rate.tpm is not None:
            ep.rate.settle(tokens, usage.total_tokens)

    def _lease(self, tokens: int) -> _Lease:
        scope = SCOPE.get()
        if scope is None:
            return self.pool.acquire(0.0, tokens)
        # the run's service so far orders it among waiters (las: least first; ncf: most);
        # it is counted when given, not asked for
        lease = self.pool.acquire(scope.attained, tokens)
        scope.attained += 1
        return lease

    async def _attempt(
        self,
        tokens: int,
        tally: Tally | None,
        send: Send[R],
        *args: Any,
    ) -> tuple[R, Usage]:
        """One attempt of one request: ``send(endpoint, *args)`` (a wire's ``complete``
        or ``score``) on a slot of an endpoint, its outcome reported."""
        async with self._lease(tokens) as ep:
            self._admit(ep, tally)
            try:
                out = await send(ep, *args)
            except PonderError as e:
                self._failed(ep, e)
                raise
            self._served(ep, tokens, out[1])
            return out

    async def _call(
        self, bound: WireRequest, tally: Tally | None, send: Send[R], *args: Any
    ) -> tuple[R, Usage]:
        """One request (``send(endpoint, *args)``) with every policy: reserved on the
        budgets before it is sent (``bound``'s messages, params and n bound its worst
        case), retried, settled. Plain calls and score calls come through here, streams
        through the same pieces (:meth:`stream`)."""
        _, messages, params, n = bound
        tokens, held = await self._reserve(messages, params, n)
        try:
            # the first attempt is a plain await (no closure, no retry machinery per request)
            try:
                out = await self._attempt(tokens, tally, send, *args)
            except PonderError as e:
                if not e.retryable:
                    raise
                out = await self.retry.retry_after(
                    e,
                    functools.partial(self._attempt, tokens, tally, send, *args),
                    on_retry=self._count_retry,
                )
        except BaseException:
            release(held)
            raise
        self._settle(held, out[1], tally)
        return out

    async def _request(
        self,
        messages: Sequence[Message],
        params: GenerateParams,
        n: int,
        tally: Tally | None = None,
    ) -> tuple[list[Choice], Usage]:
        request = WireRequest(self.ref.name, messages, params, n)
        choices, usage = await self._call(request, tally, self.wire.complete, request)
        if len(choices) < n:
            raise ParseError(
                f"{self.id} returned {len(choices)} choices for n={n}; if this server ignores "
                "n, pass quirks=Quirks(supports_n=False) (or use a provider preset that does)"
            )
        return choices, usage

    def _plan(
        self, missing: list[int], p: GenerateParams
    ) -> list[tuple[list[int], GenerateParams]]:
        """Split the missing sample indexes into requests: n per request where supported."""
        if self.quirks.supports_n:
            size = self.quirks.max_n
            groups = [missing[i : i + size] for i in range(0, len(missing), size)]
        else:
            groups = [[i] for i in missing]
        plan = []
        for g in groups:
            update: dict[str, Any] = {}
            if len(g) != p.n:
                update["n"] = len(g)
            if p.seed is not None and g[0] + self.offset != 0:
                update["seed"] = p.seed + self.offset + g[0]
            if not update:
                plan.append((g, p))
                continue
            # a slot asks with the same params and offsets call after call: copy once
            memo = (id(p), len(g), update.get("seed"))
            known = self._planned.get(memo)
            if known is None or known[0] is not p:
                if len(self._planned) >= 1024:
                    self._planned.clear()
                known = self._planned[memo] = (p, p.model_copy(update=update))
            plan.append((g, known[1]))
        return plan

    async def _fetch(
        self,
        key: str | None,
        messages: Sequence[Message],
        params: GenerateParams,
        indexes: list[int],
        got: dict[int, Choice],
        tally: Tally,
    ) -> Usage:
        """Request the samples at ``indexes``, cache them and add them to ``got``."""
        choices, usage = await self._request(messages, params, len(indexes), tally)
        if [c.index for c in choices[: len(indexes)]] != indexes:
            choices = [
                dataclasses.replace(c, index=i) for i, c in zip(indexes, choices, strict=False)
            ]
        elif len(choices) > len(indexes):
            choices = choices[: len(indexes)]
        choices = share_usage(choices, usage)
        if key is not None:
            await self._cache_put(key, choices)
        for c in choices:
            got[c.index] = c
        return usage

    # -- public API --------------------------------------------------------------------

    async def generate(
        self,
        prompt: Prompt,
        params: GenerateParams | None = None,
        *,
        use_cache: bool = True,
        output: type[BaseModel] | None = None,
        repair: int = 1,
        **overrides: Any,
    ) -> Completion:
        """Sample ``n`` completions of ``prompt``.

        ``overrides`` are :class:`GenerateParams` fields (``n``, ``temperature``,
        ``max_tokens``, ``stop``, ``seed``, ``logprobs``, ``prefill``, ``json_schema``,
        ``tools``, ...). With ``output=MyModel`` (a pydantic model) each choice's
        ``parsed`` is a validated ``MyModel``: the provider's structured-output mode is
        used where there is one, the schema is put in the prompt elsewhere, and a reply
        that does not validate gets up to ``repair`` repair turns (still invalid:
        ``parsed`` is None; :meth:`parse` raises instead).
        Samples already in the response cache are not requested again. If some requests of
        a fan-out fail, the ones that succeeded are cached before the error is raised, so a
        rerun only pays for what is missing. With tracing on, the call is a ``chat MODEL``
        span with GenAI attributes (ponder.tracing).
        """
        if output is not None:
            from ponder.backends._typed import generate_typed

            if params is not None:
                overrides = {**params.model_dump(exclude_unset=True), **overrides}
            return await generate_typed(
                self, as_messages(prompt), output, overrides, repair=repair, use_cache=use_cache
            )
        if not tracing.enabled():
            return await self._generate(prompt, params, use_cache=use_cache, overrides=overrides)
        messages = as_messages(prompt)
        return await traced_generate(
            self, messages, params, use_cache=use_cache, overrides=overrides
        )

    async def _generate(
        self,
        prompt: Prompt,
        params: GenerateParams | None,
        *,
        use_cache: bool,
        overrides: dict[str, Any],
    ) -> Completion:
        messages = as_messages(prompt)
        p = self._params(params, overrides)
        if p.tools and self.quirks.tools == "json":
            from ponder.backends._tool_json import generate_json_tools

            return await generate_json_tools(self, messages, p, use_cache)
        key = self._key(messages, p) if (use_cache and self.cache is not None) else None
        got = await self._cache_get(key, p.n)
        cached_usage = Usage()
        saved = 0.0
        if got:
            self.meter.cached_samples += len(got)
            for c in got.values():
                if c.usage is not None:
                    cached_usage = cached_usage + c.usage
            if self._price is not None:
                saved = self._price.cost(cached_usage)
            self.meter.record_cached(cached_usage, saved)
        missing = [i for i in range(p.n) if i not in got]
        usage = Usage()
        tally = Tally()  # this call's own requests and cost, whatever runs beside it
        if missing:
            plan = self._plan(missing, p)
            if len(plan) == 1:
                usage = await self._fetch(key, messages, plan[0][1], plan[0][0], got, tally)
            else:
                errors: list[PonderError] = []

                async def guarded(indexes: list[int], bp: GenerateParams) -> None:
                    nonlocal usage
                    try:
                        u = await self._fetch(key, messages, bp, indexes, got, tally)
                        usage = usage + u  # after the await: no lost update
                    except PonderError as e:  # keep siblings running; their work is cached
                        errors.append(e)

                async with asyncio.TaskGroup() as tg:
                    for indexes, bp in plan:
                        tg.create_task(guarded(indexes, bp))
                if errors:
                    first = errors[0]
                    budgets = self._budgets()
                    if isinstance(first, BudgetExceeded) and budgets:
                        first.spent = budgets[0].spent.snapshot()  # after siblings finished
                    raise first
        return Completion(
            model=self.id,
            choices=tuple(got[i] for i in range(p.n)),
            usage=usage,
            cost=tally.cost,
            requests=tally.requests,
            cached_usage=cached_usage,
            saved_cost=saved,
        )

    def generate_streamed(
        self,
        prompt: Prompt,
        on_text: Callable[[str], object],
        params: GenerateParams | None = None,
        **overrides: Any,
    ) -> Coroutine[Any, Any, Completion]:
        """One completion (``n`` must be 1), as :meth:`generate` returns it, whose text also
        reaches ``on_text`` piece by piece as the server generates it (a live answer). A
        cached answer arrives whole, at once; retries happen only before the first piece."""
        return generate_streamed(self, prompt, on_text, params, overrides)

    async def parse(
        self, prompt: Prompt, output: type[TModel], *, repair: int = 1, **overrides: Any
    ) -> TModel:
        """One validated ``output`` object for ``prompt`` (see ``generate(output=...)``);
        raises :class:`ParseError` saying what is wrong when the reply, repairs included,
        does not validate."""
        c = await self.generate(prompt, output=output, repair=repair, **{**overrides, "n": 1})
        value = c.choices[0].parsed
        if not isinstance(value, output):
            from ponder.backends._typed import validate_output

            _, why = validate_output(output, c.choices[0].text)
            raise ParseError(
                f"{self.id} gave no valid {output.__name__} after {repair} repair turn(s): "
                f"{why}; its last reply began {c.choices[0].text[:200]!r}"
            )
        return value

    async def score(
        self,
        query: str,
        texts: Sequence[str],
        *,
        request_timeout: float | None = None,
        use_cache: bool = True,
    ) -> list[float]:
        """A reward (or cross-encoder) model's score of each of ``texts`` for ``query``,
        in their order, through vLLM's score API. Like :meth:`generate`, it takes a slot of
        the endpoint, reserves on budgets, is retried, cached and traced (``score MODEL``).
        ``request_timeout`` (seconds) defaults to the settings' request timeout."""
        from ponder.backends._score import score

        if request_timeout is None:
            request_timeout = self.settings.request_timeout
        return await score(self, query, texts, request_timeout=request_timeout, use_cache=use_cache)

    def _key(self, messages: Sequence[Message], p: GenerateParams) -> str:
        key = request_key(self.id, messages, p)
        return key if self.offset == 0 else f"{key}#{self.offset}"

    def stream(
        self,
        prompt: Prompt,
        params: GenerateParams | None = None,
        *,
        use_cache: bool = True,
        **overrides: Any,
    ) -> AsyncGenerator[StreamChunk, None]:
        """Stream one completion as :class:`StreamChunk` pieces.

        Retries happen only before the first piece arrives. The finished text is cached; a
        cached answer is replayed as one piece.
        """
        return stream(self, prompt, params, use_cache, overrides)

    # -- sync facade and lifecycle -----------------------------------------------------

    def _sync(self, coro: Coroutine[Any, Any, T]) -> T:
        async def main() -> T:
            try:
                return await coro
            finally:  # this loop's connections end with it
                await self.wire.aclose()
                for ep in self.pool.endpoints:
                    await ep.aclose()

        return run_blocking(main)

    def generate_sync(
        self, prompt: Prompt, params: GenerateParams | None = None, **overrides: Any
    ) -> Completion:
        """Blocking ``generate`` for scripts and notebooks: inside a running event loop (a
        Jupyter cell) it runs on a fresh loop in a worker thread and blocks until done."""
        return self._sync(self.generate(prompt, params, **overrides))

    async def _cache_get(self, key: str | None, n: int) -> dict[int, Choice]:
        if key is None or self.cache is None:
            return {}
        if self._acache is not None:
            return await self._acache.aget_many(key, n)
        return self.cache.get_many(key, n)

    async def _cache_put(self, key: str | None, choices: list[Choice]) -> None:
        if key is None or self.cache is None:
            return
        if self._acache is not None:
            await self._acache.aput_many(key, choices)
        else:
            self.cache.put_many(key, choices)

    async def aclose(self) -> None:
        """Close HTTP sessions (of its endpoints, if this model made them; and the cache,
        if this model opened it)."""
        await self.wire.aclose()
        if self._own_endpoints:
            await self.endpoints.aclose()
        if self._own_cache and self.cache is not None:
            if isinstance(self.cache, RedisCache):
                await self.cache.aclose()
            else:
                self.cache.close()
            self.cache = self._acache = None

    async def __aenter__(self) -> Model:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
