"""What the model layer needs to know about the run a request belongs to.

The engine (``ponder.engine``) opens a :class:`RequestScope` for each run and sets it in
a context variable for the run's tasks; a model reads it on every request: the budgets
to reserve on and the run's attained service, by which a pipeline-aware endpoint
schedules waiting requests. The model layer never imports the engine.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

from ponder.backends._policies import Reservation, UsageMeter
from ponder.types import Usage

__all__ = ["SCOPE", "BudgetLike", "RequestScope", "current_scope"]


@runtime_checkable
class BudgetLike(Protocol):
    """What the model layer needs of a budget (:class:`~ponder.backends.Budget` in
    memory; ``ponder.engine.RedisBudget`` shared by processes)."""

    estimate_tokens: int
    spent: UsageMeter

    async def reserve(self, tokens: int, cost: float = 0.0) -> Reservation: ...

    def settle(self, r: Reservation, usage: Usage, cost: float) -> None: ...

    def release(self, r: Reservation) -> None: ...


class RequestScope:
    """One run's view from the model layer: its budgets and the service it has had, and
    where its live answer goes (``live``: read by the workflow runner, not by models)."""

    __slots__ = ("attained", "budgets", "live", "name")

    def __init__(
        self,
        budgets: Sequence[BudgetLike] = (),
        *,
        name: str = "",
        live: Callable[[str], object] | None = None,
    ) -> None:
        self.budgets = tuple(budgets)
        self.name = name
        self.live = live
        self.attained = 0  # requests dispatched so far (least-attained-service priority)


SCOPE: contextvars.ContextVar[RequestScope | None] = contextvars.ContextVar(
    "ponder_request_scope", default=None
)


def current_scope() -> RequestScope | None:
    """The scope of the run this task belongs to (None outside any run)."""
    return SCOPE.get()
