"""A token and dollar budget shared by processes through Redis (serve's per-key budgets).

Same contract as :class:`ponder.backends.Budget`: a request reserves its worst case
before it is sent, settles with what it used and gives the rest back; it is admitted
while spent + reserved is below the limit, waits while reservations in flight hold the
rest, and fails with :class:`BudgetExceeded` once the settled spend reaches the limit.
The check-and-reserve is one Lua script, so servers sharing one Redis never admit more
than the budget plus what the last admitted request reserved. Reservations carry an
expiry, so one left behind by a crashed process frees itself.
"""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from dataclasses import KW_ONLY, dataclass, field
from typing import Any

from ponder.backends._policies import Reservation, UsageMeter
from ponder.errors import BudgetExceeded, ConfigurationError
from ponder.types import Usage

__all__ = ["RedisBudget"]

_RESERVE = """
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[4])
local spent = tonumber(redis.call('GET', KEYS[1]) or '0')
local limit = tonumber(ARGV[1])
if spent >= limit then return {-1, spent} end
local held = 0
for _, m in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
  held = held + tonumber(string.match(m, ':(%d+)$'))
end
if spent + held >= limit then return {0, spent} end
redis.call('ZADD', KEYS[2], ARGV[5], ARGV[3] .. ':' .. ARGV[2])
return {1, spent}
"""

_ids = itertools.count()


@dataclass(eq=False, repr=False)
class RedisBudget:
    """``max_tokens`` for one owner (``name``), shared through Redis by every process that
    uses the same ``name`` on the same server."""

    client: Any
    name: str
    _: KW_ONLY
    max_tokens: int
    estimate_tokens: int = 1024
    hold_seconds: float = 900.0
    poll: float = 0.05
    spent: UsageMeter = field(init=False, default_factory=UsageMeter)  # this process's share
    _members: dict[int, str] = field(init=False, default_factory=dict)
    _tasks: set[asyncio.Task[None]] = field(init=False, default_factory=set)
    _prefix: str = field(init=False, default_factory=lambda: uuid.uuid4().hex[:12])

    def __post_init__(self) -> None:
        if self.max_tokens < 0:
            raise ConfigurationError(f"budget max_tokens must be >= 0, got {self.max_tokens}")
        self._spent_key = f"ponder:budget:{self.name}:spent"
        self._held_key = f"ponder:budget:{self.name}:held"
        self._script = self.client.register_script(_RESERVE)

    async def total_spent(self) -> int:
        """Tokens settled by every process."""
        return int(await self.client.get(self._spent_key) or 0)

    async def exhausted(self) -> str | None:
        spent = await self.total_spent()
        return f"max_tokens={self.max_tokens}" if spent >= self.max_tokens else None

    async def reserve(self, tokens: int, cost: float = 0.0) -> Reservation:
        member = f"{self._prefix}-{next(_ids)}"
        while True:
            now = time.time()
            status, spent = await self._script(
                keys=[self._spent_key, self._held_key],
                args=[self.max_tokens, max(0, int(tokens)), member, now, now + self.hold_seconds],
            )
            if int(status) == 1:
                r = Reservation(tokens, 0.0)
                self._members[id(r)] = f"{member}:{max(0, int(tokens))}"
                return r
            if int(status) == -1:
                raise BudgetExceeded(
                    f"budget {self.name!r} exhausted (max_tokens={self.max_tokens}): "
                    f"{int(spent)} tokens spent by every server sharing it. Completed "
                    "samples are in the response cache; raise the budget to continue.",
                    spent={"total_tokens": int(spent)},
                )
            await asyncio.sleep(self.poll)  # reservations in flight hold the rest

    def _later(self, used: int, r: Reservation) -> None:
        member = self._members.pop(id(r), None)
        if member is None or r.done:
            return
        r.done = True

        async def write() -> None:
            async with self.client.pipeline(transaction=True) as p:
                p.zrem(self._held_key, member)
                if used:
                    p.incrby(self._spent_key, used)
                await p.execute()

        task = asyncio.get_running_loop().create_task(write())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def settle(self, r: Reservation, usage: Usage, cost: float) -> None:
        if not r.done:
            self.spent.requests += 1
            self.spent.record(usage, cost)
        self._later(usage.total_tokens, r)

    def release(self, r: Reservation) -> None:
        self._later(0, r)

    async def flush(self) -> None:
        """Wait until every settlement has reached Redis."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
