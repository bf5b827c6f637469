"""Per-client limits of ``ponder serve``: requests per minute and token budgets, in
memory or shared by every server process through Redis."""

from __future__ import annotations

import time
from typing import Any

from ponder.apps._api import ApiError
from ponder.apps._serve_settings import ServeSettings
from ponder.backends import Budget
from ponder.engine import RedisBudget

__all__ = ["Limits"]


# -- limits --------------------------------------------------------------------------------


class Limits:
    """Requests per minute and token budgets per client, in memory or shared via Redis."""

    def __init__(self, settings: ServeSettings) -> None:
        self.settings = settings
        self._counts: dict[str, int] = {}
        self._budgets: dict[str, Budget | RedisBudget] = {}
        self._redis: Any = None
        if settings.redis_url:
            import redis.asyncio as aioredis

            self._redis = aioredis.from_url(settings.redis_url, decode_responses=True)

    async def hit(self, who: str) -> None:
        window = int(time.time() // 60)
        key = f"ponder:rl:{who}:{window}"
        if self._redis is not None:
            count = int(await self._redis.incr(key))
            if count == 1:
                await self._redis.expire(key, 120)
        else:
            if len(self._counts) > 10_000:
                self._counts = {k: v for k, v in self._counts.items() if k.endswith(f":{window}")}
            count = self._counts[key] = self._counts.get(key, 0) + 1
        if count > self.settings.requests_per_minute:
            wait = str(60 - int(time.time()) % 60)
            raise ApiError(
                429,
                f"rate limit: {self.settings.requests_per_minute} requests per minute; "
                f"retry after {wait} s",
                type_="rate_limit_error",
                code="rate_limit_exceeded",
                headers={"Retry-After": wait},
            )

    def budget(self, who: str) -> Budget | RedisBudget | None:
        """The client's token budget, shared by all its concurrent requests (and, through
        Redis, by every server process): each model call of its runs reserves on it before
        it is sent, so concurrent requests cannot overshoot it by more than one call's
        reservation."""
        limit = self.settings.token_budget
        if limit is None:
            return None
        b = self._budgets.get(who)
        if b is None:
            if self._redis is not None:
                b = RedisBudget(self._redis, f"serve:{who}", max_tokens=limit)
            else:
                b = Budget(max_tokens=limit)
            self._budgets[who] = b
        return b

    async def spent(self, who: str) -> int:
        b = self.budget(who)
        if b is None:
            return 0
        if isinstance(b, RedisBudget):
            return await b.total_spent()
        return b.spent.usage.total_tokens

    async def exhausted(self, who: str) -> bool:
        b = self.budget(who)
        if b is None:
            return False
        if isinstance(b, RedisBudget):
            return await b.exhausted() is not None
        return b.exhausted() is not None

    def _quota_error(self) -> ApiError:
        return ApiError(
            429,
            f"token budget of {self.settings.token_budget} used up for this API key; ask for "
            "a larger PONDER_SERVE_TOKEN_BUDGET",
            type_="insufficient_quota",
            code="insufficient_quota",
        )

    async def check_budget(self, who: str) -> None:
        if await self.exhausted(who):
            raise self._quota_error()

    async def aclose(self) -> None:
        for b in self._budgets.values():
            if isinstance(b, RedisBudget):
                await b.flush()
        if self._redis is not None:
            await self._redis.aclose()
