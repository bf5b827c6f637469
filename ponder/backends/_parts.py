"""What the modules around :class:`~ponder.backends.Model` need of it, as a protocol.

Streams (``_streaming``), score calls (``_score``), traced calls (``_traced``) and tool
calls as JSON (``_tool_json``) each hold one job of the model; they take the model as a
:class:`ModelCore` so that none of them imports ``_model`` (no import cycle, even for
type checking: tests/test_layers.py).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from ponder.types import Choice, Completion, GenerateParams, Message, Usage

if TYPE_CHECKING:
    from ponder.backends._base import Wire, WireRequest
    from ponder.backends._cache import ResponseCache
    from ponder.backends._modelref import ModelRef
    from ponder.backends._policies import Price, Reservation, RetryPolicy, UsageMeter
    from ponder.backends._pool import Endpoint, EndpointPool, _Lease
    from ponder.backends._providers import Quirks
    from ponder.backends._scope import BudgetLike
    from ponder.errors import PonderError

__all__ = ["Held", "ModelCore", "Prompt", "Tally"]

R = TypeVar("R")
#: a wire's request method (``complete`` or ``score``) as :meth:`Model._call` sends it
Send = Callable[..., Awaitable[tuple[R, Usage]]]
Prompt = str | Message | Sequence[Message | dict[str, Any]]
Held = Sequence[tuple["BudgetLike", "Reservation"]]


class Tally:
    """Requests and cost of one ``generate`` call (concurrent calls share the meter)."""

    __slots__ = ("cost", "requests")

    def __init__(self) -> None:
        self.requests = 0
        self.cost = 0.0


class ModelCore(Protocol):
    """A model's identity, policies and one-request path (ponder.Model has them all)."""

    id: str
    ref: ModelRef
    quirks: Quirks
    wire: Wire
    cache: ResponseCache | None
    meter: UsageMeter
    retry: RetryPolicy
    offset: int
    pool: EndpointPool
    _price: Price | None

    def _params(
        self, params: GenerateParams | None, overrides: dict[str, Any]
    ) -> GenerateParams: ...
    def _key(self, messages: Sequence[Message], p: GenerateParams) -> str: ...
    async def _cache_get(self, key: str | None, n: int) -> dict[int, Choice]: ...
    async def _cache_put(self, key: str | None, choices: list[Choice]) -> None: ...
    def _count_retry(self, exc: BaseException) -> None: ...
    async def _reserve(
        self, messages: Sequence[Message], params: GenerateParams, n: int
    ) -> tuple[int, Held]: ...
    def _settle(self, held: Held, usage: Usage, tally: Tally | None) -> None: ...
    def _admit(self, ep: Endpoint, tally: Tally | None) -> None: ...
    def _failed(self, ep: Endpoint, e: PonderError) -> None: ...
    def _served(self, ep: Endpoint, tokens: int, usage: Usage) -> None: ...
    def _lease(self, tokens: int) -> _Lease: ...
    async def _call(
        self, bound: WireRequest, tally: Tally | None, send: Send[R], *args: Any
    ) -> tuple[R, Usage]: ...
    async def _generate(
        self, prompt: Prompt, params: GenerateParams | None, *, use_cache: bool, overrides: Any
    ) -> Completion: ...
    async def generate(
        self,
        prompt: Prompt,
        params: GenerateParams | None = None,
        *,
        use_cache: bool = True,
        output: Any = None,
        repair: int = 1,
        **overrides: Any,
    ) -> Completion: ...
