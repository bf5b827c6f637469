"""Cross-cutting policies applied once for every backend: retries, budgets, prices, usage."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

from pydantic import BaseModel, ConfigDict, Field
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt

from ponder.errors import BudgetExceeded, ConfigurationError, PonderError, RateLimitError
from ponder.types import Usage

__all__ = ["Budget", "Price", "PriceTable", "RetryPolicy", "UsageMeter"]

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

        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.max_retries),
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

    def record(self, usage: Usage, cost: float) -> None:
        self.usage = self.usage + usage
        self.cost += cost

    def snapshot(self) -> dict[str, float]:
        return {
            "requests": self.requests,
            "prompt_tokens": self.usage.prompt_tokens,
            "completion_tokens": self.usage.completion_tokens,
            "total_tokens": self.usage.total_tokens,
            "cost_usd": round(self.cost, 6),
            "retries": self.retries,
            "cached_samples": self.cached_samples,
        }


class Budget:
    """Limits for a run, shared by every model that is given it.

    A request is refused with :class:`BudgetExceeded` once any limit is reached; requests
    already in flight complete and are counted, so token and dollar totals can overshoot
    by at most the requests in flight. ``max_requests`` is never exceeded.
    """

    def __init__(
        self,
        *,
        max_tokens: int | None = None,
        max_cost: float | None = None,
        max_requests: int | None = None,
    ) -> None:
        for name, value in (
            ("max_tokens", max_tokens),
            ("max_cost", max_cost),
            ("max_requests", max_requests),
        ):
            if value is not None and value < 0:
                raise ConfigurationError(f"budget {name} must be >= 0, got {value}")
        self.max_tokens = max_tokens
        self.max_cost = max_cost
        self.max_requests = max_requests
        self.spent = UsageMeter()

    def _exceeded(self) -> str | None:
        s = self.spent
        if self.max_requests is not None and s.requests >= self.max_requests:
            return f"max_requests={self.max_requests}"
        if self.max_tokens is not None and s.usage.total_tokens >= self.max_tokens:
            return f"max_tokens={self.max_tokens}"
        if self.max_cost is not None and s.cost >= self.max_cost:
            return f"max_cost=${self.max_cost:g}"
        return None

    def reserve_request(self) -> None:
        """Count one request about to be sent, or raise if a limit is reached."""
        limit = self._exceeded()
        if limit is not None:
            s = self.spent
            raise BudgetExceeded(
                f"run budget exhausted ({limit}): spent {s.requests} requests, "
                f"{s.usage.total_tokens} tokens, ${s.cost:.4f}. Completed samples are in the "
                "response cache; raise the budget and rerun to continue without paying twice.",
                spent=s.snapshot(),
            )
        self.spent.requests += 1

    def record(self, usage: Usage, cost: float) -> None:
        self.spent.record(usage, cost)
