"""Streamed calls: one completion piece by piece, with the policies of any model call.

A stream's attempt (a slot, the request, and its chunks up to the first piece of text)
goes through the model's one retry path; once a piece has been shown it is not retried.
Budgets are reserved before it starts and settled with the usage the server reports
(which some servers send after the finish reason), and the finished text is cached.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from typing import Any

from ponder.backends._base import WireRequest
from ponder.backends._parts import ModelCore, Prompt
from ponder.backends._pool import Endpoint, _Lease
from ponder.errors import ConfigurationError, PonderError
from ponder.types import (
    Choice,
    Completion,
    FinishReason,
    GenerateParams,
    Message,
    StreamChunk,
    ToolCall,
    Usage,
    as_messages,
)

__all__ = ["generate_streamed", "release", "stream"]


def release(held: Sequence[tuple[Any, Any]]) -> None:
    """Give back budget reservations of a request that failed."""
    for b, r in held:
        b.release(r)


@dataclasses.dataclass(slots=True)
class _Opened:
    """A stream whose first piece has arrived: its slot, endpoint and remaining chunks."""

    lease: _Lease
    ep: Endpoint
    rest: AsyncIterator[StreamChunk]
    head: list[StreamChunk]

    async def chunks(self, model: ModelCore) -> AsyncGenerator[StreamChunk, None]:
        for chunk in self.head:
            yield chunk
        try:
            async for chunk in self.rest:
                yield chunk
        except PonderError as e:
            model._failed(self.ep, e)
            raise

    async def close(self) -> None:
        try:
            close = getattr(self.rest, "aclose", None)
            if close is not None:
                await close()
        finally:
            await self.lease.__aexit__(None, None, None)


async def generate_streamed(
    model: ModelCore,
    prompt: Prompt,
    on_text: Callable[[str], object],
    params: GenerateParams | None,
    overrides: dict[str, Any],
) -> Completion:
    """One completion (``n`` must be 1), as :meth:`generate` returns it, whose text also
    reaches ``on_text`` piece by piece as the server generates it (a live answer). A
    cached answer arrives whole, at once; retries happen only before the first piece."""
    messages = as_messages(prompt)
    p = model._params(params, overrides)
    if p.n != 1:
        raise ConfigurationError("generate_streamed() returns one choice; n must be 1")
    json_tools = bool(p.tools) and model.quirks.tools == "json"
    if json_tools or (
        model.cache is not None and 0 in await model._cache_get(model._key(messages, p), 1)
    ):
        # cached, or a constrained JSON reply (a call or an answer: read whole)
        c = await model.generate(messages, p)  # accounts the cached usage as generate does
        on_text(c.text)
        return c
    parts: list[str] = []
    finish: FinishReason = "stop"
    usage = Usage()
    calls: tuple[ToolCall, ...] = ()
    async for chunk in stream(model, messages, p, True, {}):
        if chunk.text:
            parts.append(chunk.text)
            on_text(chunk.text)
        if chunk.finish_reason is not None:
            finish = chunk.finish_reason
        if chunk.usage is not None:
            usage = chunk.usage
        calls = calls + chunk.tool_calls
    cost = model._price.cost(usage) if model._price is not None else 0.0
    choice = Choice(0, "".join(parts), finish, usage=usage, tool_calls=calls)
    return Completion(model=model.id, choices=(choice,), usage=usage, cost=cost, requests=1)


async def stream(
    model: ModelCore,
    prompt: Prompt,
    params: GenerateParams | None,
    use_cache: bool,
    overrides: dict[str, Any],
) -> AsyncGenerator[StreamChunk, None]:
    """Stream one completion as :class:`StreamChunk` pieces.

    Retries happen only before the first piece arrives. The finished text is cached; a
    cached answer is replayed as one piece.
    """
    messages = as_messages(prompt)
    p = model._params(params, overrides)
    if p.n != 1:
        raise ConfigurationError("stream() returns one choice; use generate() for n > 1")
    key = model._key(messages, p) if (use_cache and model.cache is not None) else None
    if key is not None:
        hit = await model._cache_get(key, 1)
        if 0 in hit:
            model.meter.cached_samples += 1
            h = hit[0]
            if h.usage is not None:
                saved = model._price.cost(h.usage) if model._price is not None else 0.0
                model.meter.record_cached(h.usage, saved)
            yield StreamChunk(0, h.text, h.finish_reason, usage=None)
            return
    tokens, held = await model._reserve(messages, p, 1)
    parts: list[str] = []
    calls: tuple[ToolCall, ...] = ()
    finish: Any = None
    usage = Usage()
    try:
        # retried like any request, up to its first piece (_open_stream); not after
        opened = await model.retry.call(
            functools.partial(_open, model, messages, p, tokens),
            on_retry=model._count_retry,
        )
        try:
            # the closing chunk is held until the usage (which some servers send after
            # it) can ride on it: the last piece has both the finish reason and the usage
            last: StreamChunk | None = None
            async for chunk in opened.chunks(model):
                if chunk.usage is not None:
                    usage = chunk.usage
                if chunk.finish_reason is not None:
                    finish = chunk.finish_reason
                calls += chunk.tool_calls
                if chunk.text or chunk.finish_reason:
                    parts.append(chunk.text)
                    if last is not None:
                        yield last
                        last = None
                    if chunk.finish_reason is None:
                        yield chunk
                    else:
                        last = chunk
            if last is not None:
                yield dataclasses.replace(last, usage=last.usage or usage)
            model._served(opened.ep, tokens, usage)
        finally:
            await opened.close()
    except BaseException:
        release(held)
        raise
    model._settle(held, usage, None)
    await model._cache_put(
        key, [Choice(0, "".join(parts), finish or "stop", usage=usage, tool_calls=calls)]
    )


async def _open(
    model: ModelCore, messages: Sequence[Message], p: GenerateParams, tokens: int
) -> _Opened:
    """One attempt at a stream: a slot, the request, and its chunks up to the first
    piece of text or finish reason (an error until then is retried like any other)."""
    lease = model._lease(tokens)
    ep = await lease.__aenter__()
    try:
        model._admit(ep, None)
        it = aiter(model.wire.stream(ep, WireRequest(model.ref.name, messages, p)))
        head: list[StreamChunk] = []
        try:
            async for chunk in it:
                head.append(chunk)
                if chunk.text or chunk.finish_reason is not None:
                    break
        except PonderError as e:
            model._failed(ep, e)
            raise
    except BaseException:
        await lease.__aexit__(None, None, None)
        raise
    return _Opened(lease, ep, it, head)
