"""Cross-cutting policies applied once for every backend: retries, budgets, prices, usage."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from pydantic import BaseModel, ConfigDict, Field
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception

from ponder.errors import BudgetExceeded, ConfigurationError, PonderError, RateLimitError
from ponder.types import Message, Usage

__all__ = [
    "Budget",
    "Price",
    "PriceTable",
    "Reservation",
    "RetryPolicy",
    "UsageMeter",
    "estimate_prompt",
]

T = TypeVar("T")


def _is_retryable(exc: BaseException) -> bool:
    return isinstance(exc, PonderError) and exc.retryable


class RetryPolicy(BaseModel):
    """Bounded retries with jittered exponential backoff.

    Only errors marked retryable are retried (rate limits, 5xx, resets, timeouts); a 400 or
    401 fails at once. A 429's ``Retry-After`` is honoured: the wait is at least that long.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_retries: int = Field(4, ge=0, le=50)
    initial: float = Field(0.5, gt=0)
    maximum: float = Field(30.0, gt=0)
    jitter: float = Field(0.5, ge=0, le=1, description="Fraction of each wait drawn at random.")
    seed: int | None = Field(None, description="Seed of the jitter (deterministic waits).")

    def wait_for(self, attempt: int, exc: BaseException | None, rng: random.Random) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        base = min(self.maximum, self.initial * 2 ** (attempt - 1))
        wait: float = base * (1 - self.jitter) + base * self.jitter * rng.random()
        if isinstance(exc, RateLimitError) and exc.retry_after is not None:
            wait = max(wait, min(exc.retry_after, self.maximum * 4))
        return wait

    async def call(
        self,
        fn: Callable[[], Awaitable[T]],
        *,
        on_retry: Callable[[BaseException], None] | None = None,
    ) -> T:
        """Run ``fn`` until it succeeds, fails with a non-retryable error, or attempts run out.

        The first attempt runs directly (building tenacity's machinery costs ~150 µs, a
        large share of a request at high fan-out); retries go through tenacity.
        """
        try:
            return await fn()
        except PonderError as e:
            if not e.retryable or self.max_retries == 0:
                raise
            first: BaseException = e
        return await self.retry_after(first, fn, on_retry=on_retry)

    async def retry_after(
        self,
        first: BaseException,
        fn: Callable[[], Awaitable[T]],
        *,
        on_retry: Callable[[BaseException], None] | None = None,
    ) -> T:
        """Retry ``fn`` whose first attempt (made by the caller) failed with ``first``."""
        if not _is_retryable(first) or self.max_retries == 0:
            raise first
        rng = random.Random(self.seed)
        if on_retry is not None:
            on_retry(first)
        await asyncio.sleep(self.wait_for(1, first, rng))

        def wait(state: RetryCallState) -> float:
            exc = state.outcome.exception() if state.outcome else None
            if on_retry is not None and exc is not None:
                on_retry(exc)
            return self.wait_for(state.attempt_number + 1, exc, rng)

        def stop(state: RetryCallState) -> bool:
            exc = state.outcome.exception() if state.outcome else None
            limit = exc.retry_limit if isinstance(exc, PonderError) else None
            return state.attempt_number >= min(self.max_retries, limit or self.max_retries)

        if first.retry_limit == 0:  # type: ignore[attr-defined]
            raise first
        retrying = AsyncRetrying(
            stop=stop,
            wait=wait,
            retry=retry_if_exception(_is_retryable),
            reraise=True,
        )
        return await retrying(fn)


@dataclass(frozen=True, slots=True)
class Price:
    """US dollars per million tokens."""

    input: float
    output: float
    cache_read: float | None = None
    cache_write: float | None = None

    def cost(self, usage: Usage) -> float:
        read = self.cache_read if self.cache_read is not None else self.input
        write = self.cache_write if self.cache_write is not None else self.input
        return (
            usage.prompt_tokens * self.input
            + usage.completion_tokens * self.output
            + usage.cache_read_tokens * read
            + usage.cache_write_tokens * write
        ) / 1e6


_DEFAULT_PRICES: dict[str, Price] = {
    "openai:gpt-4o-mini": Price(0.15, 0.60, 0.075),
    "openai:gpt-4o": Price(2.50, 10.00, 1.25),
    "openai:gpt-4.1-mini": Price(0.40, 1.60, 0.10),
    "openai:gpt-4.1": Price(2.00, 8.00, 0.50),
    "openai:o4-mini": Price(1.10, 4.40, 0.275),
    "anthropic:claude-sonnet-4": Price(3.00, 15.00, 0.30, 3.75),
    "anthropic:claude-opus-4": Price(15.00, 75.00, 1.50, 18.75),
    "anthropic:claude-haiku-4": Price(1.00, 5.00, 0.10, 1.25),
    "anthropic:claude-3-5-haiku": Price(0.80, 4.00, 0.08, 1.00),
}


class PriceTable:
    """Prices looked up by ``provider:model`` with the longest matching prefix.

    Models with no entry (local servers, vLLM) cost nothing. Override or extend with
    ``PriceTable({"openai:my-finetune": Price(1.0, 2.0)})``.
    """

    def __init__(self, prices: Mapping[str, Price] | None = None, *, defaults: bool = True):
        self._prices = dict(_DEFAULT_PRICES) if defaults else {}
        self._prices.update(prices or {})
        self._keys = sorted(self._prices, key=len, reverse=True)

    def price(self, model: str) -> Price | None:
        for key in self._keys:
            if model.startswith(key):
                return self._prices[key]
        return None

    def cost(self, model: str, usage: Usage) -> float:
        p = self.price(model)
        return p.cost(usage) if p is not None else 0.0


@dataclass(slots=True)
class UsageMeter:
    """Running totals of what was spent (requests, tokens, dollars, retries, cache hits)."""

    requests: int = 0
    retries: int = 0
    cached_samples: int = 0
    usage: Usage = field(default_factory=Usage)
    cost: float = 0.0
    cached_usage: Usage = field(default_factory=Usage)
    saved_cost: float = 0.0

    def record(self, usage: Usage, cost: float) -> None:
        self.usage = self.usage + usage
        self.cost += cost

    def record_cached(self, usage: Usage, saved: float) -> None:
        """Tokens served from the response cache and what they would have cost."""
        self.cached_usage = self.cached_usage + usage
        self.saved_cost += saved

    def snapshot(self) -> dict[str, float]:
        return {
            "requests": self.requests,
            "prompt_tokens": self.usage.prompt_tokens,
            "completion_tokens": self.usage.completion_tokens,
            "total_tokens": self.usage.total_tokens,
            "cost_usd": round(self.cost, 6),
            "retries": self.retries,
            "cached_samples": self.cached_samples,
            "cached_tokens": self.cached_usage.total_tokens,
            "saved_cost_usd": round(self.saved_cost, 6),
        }


class Reservation:
    """What one request holds on a budget until it settles (its worst case)."""

    __slots__ = ("cost", "done", "tokens")

    def __init__(self, tokens: int, cost: float) -> None:
        self.tokens = tokens
        self.cost = cost
        self.done = False


class Budget:
    """Limits for a run, shared by every model call made under it.

    A request **reserves** its worst case before it is sent (``max_tokens x n`` plus an
    estimate of the prompt, or ``estimate_tokens`` per sample where ``max_tokens`` is
    unset), **settles** with the real usage when it returns and releases the rest. A
    request is admitted while what was spent plus what is reserved is below every limit;
    when it is not, but reservations in flight may still give budget back, the request
    waits for them; once the settled spend reaches a limit every further request fails
    with :class:`BudgetExceeded`. So concurrent calls can overshoot a limit by at most
    what the one admitted last had reserved beyond it (and by more only when a reply is
    longer than its reservation, which happens only with ``max_tokens`` unset).
    ``max_requests`` counts logical requests and is never exceeded.
    """

    def __init__(
        self,
        *,
        max_tokens: int | None = None,
        max_cost: float | None = None,
        max_requests: int | None = None,
        estimate_tokens: int = 1024,
    ) -> None:
        for name, value in (
            ("max_tokens", max_tokens),
            ("max_cost", max_cost),
            ("max_requests", max_requests),
        ):
            if value is not None and value < 0:
                raise ConfigurationError(f"budget {name} must be >= 0, got {value}")
        if estimate_tokens < 1:
            raise ConfigurationError(f"budget estimate_tokens must be >= 1, got {estimate_tokens}")
        self.max_tokens = max_tokens
        self.max_cost = max_cost
        self.max_requests = max_requests
        self.estimate_tokens = estimate_tokens
        self.spent = UsageMeter()
        self.reserved_tokens = 0
        self.reserved_cost = 0.0
        self.in_flight = 0
        self._waiters: list[asyncio.Future[None]] = []

    def _limit(self, tokens: int, cost: float, requests: int) -> str | None:
        if self.max_requests is not None and requests >= self.max_requests:
            return f"max_requests={self.max_requests}"
        if self.max_tokens is not None and tokens >= self.max_tokens:
            return f"max_tokens={self.max_tokens}"
        if self.max_cost is not None and cost >= self.max_cost:
            return f"max_cost=${self.max_cost:g}"
        return None

    def exhausted(self) -> str | None:
        """The limit the settled spend has reached, or None."""
        s = self.spent
        return self._limit(s.usage.total_tokens, s.cost, s.requests)

    def _error(self, limit: str) -> BudgetExceeded:
        s = self.spent
        return BudgetExceeded(
            f"run budget exhausted ({limit}): spent {s.requests} requests, "
            f"{s.usage.total_tokens} tokens, ${s.cost:.4f}. Completed samples are in the "
            "response cache; raise the budget and rerun to continue without paying twice.",
            spent=s.snapshot(),
        )

    async def reserve(self, tokens: int, cost: float = 0.0) -> Reservation:
        """Hold ``tokens`` and ``cost`` for one request about to be sent; waits while
        reservations in flight hold what is left, raises :class:`BudgetExceeded` once the
        settled spend reaches a limit."""
        while True:
            s = self.spent
            done = self.exhausted()
            if done is not None:
                raise self._error(done)
            held = self._limit(
                s.usage.total_tokens + self.reserved_tokens,
                s.cost + self.reserved_cost,
                s.requests + self.in_flight,
            )
            if held is None:
                self.reserved_tokens += tokens
                self.reserved_cost += cost
                self.in_flight += 1
                return Reservation(tokens, cost)
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            finally:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)

    def _free(self, r: Reservation) -> None:
        if r.done:
            return
        r.done = True
        self.reserved_tokens -= r.tokens
        self.reserved_cost -= r.cost
        self.in_flight -= 1
        waiters, self._waiters = self._waiters, []
        for w in waiters:
            if not w.done():
                w.set_result(None)

    def settle(self, r: Reservation, usage: Usage, cost: float) -> None:
        """Book what the request really used and give the rest of its reservation back."""
        if not r.done:
            self.spent.requests += 1
            self.spent.record(usage, cost)
        self._free(r)

    def release(self, r: Reservation) -> None:
        """Give a reservation back unused (the request failed before it was billed)."""
        self._free(r)

    def record(self, usage: Usage, cost: float) -> None:
        """Book usage that had no reservation (it counts, and may overshoot)."""
        self.spent.requests += 1
        self.spent.record(usage, cost)


def estimate_prompt(messages: Sequence[Message]) -> int:
    """A generous prompt-token estimate for budget reservations (3 characters a token)."""
    return sum(len(m.content) for m in messages) // 3 + 8 * len(messages)
