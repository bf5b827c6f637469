"""Fake models for deterministic tests: scripted outputs or a function of the request."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from ponder._internal import guard
from ponder.backends._base import WireRequest
from ponder.backends._cache import ResponseCache
from ponder.backends._model import Model
from ponder.backends._policies import Budget, PriceTable, RetryPolicy
from ponder.backends._pool import Endpoint
from ponder.backends._providers import PROVIDERS, Provider, Quirks, register_provider
from ponder.errors import ConfigurationError
from ponder.settings import Settings
from ponder.types import Choice, GenerateParams, Message, StreamChunk, ToolCall, Usage

__all__ = ["FakeCall", "FakeModel", "block_remote_models"]

#: What a fake answers: a text, a tool call (or several) for that turn, or an exception
#: raised as that request's fault (e.g. ``RateLimitError(...)``: the retries still apply).
Reply = str | ToolCall | Sequence[ToolCall] | BaseException

#: the fake's own provider id (it used to borrow ``vllm``): native n, prefill and tools
FAKE_PROVIDER = "fake"
if FAKE_PROVIDER not in PROVIDERS:
    register_provider(Provider(
        FAKE_PROVIDER, "openai", "http://127.0.0.1:9/v1",
        quirks=Quirks(supports_n=True, prefill="native"),
        description="ponder.testing.FakeModel: scripted replies, no network",
    ))  # fmt: skip

#: ``fn(messages, params, sample_index) -> reply`` for a function-driven fake.
Responder = Callable[[Sequence[Message], GenerateParams, int], Reply]


@dataclass(frozen=True, slots=True)
class FakeCall:
    """One request the fake received."""

    messages: tuple[Message, ...]
    params: GenerateParams
    n: int


class _FakeWire:
    def __init__(self, respond: Responder, delay: float) -> None:
        self.respond = respond
        self.delay = delay
        self.calls: list[FakeCall] = []
        self._sample = 0

    async def complete(
        self, endpoint: Endpoint, request: WireRequest
    ) -> tuple[list[Choice], Usage]:
        _, messages, params, n = request
        self.calls.append(FakeCall(tuple(messages), params, n))
        if self.delay:
            await asyncio.sleep(self.delay)
        choices = []
        completion_tokens = 0
        for i in range(n):
            out = self.respond(messages, params, self._sample)
            self._sample += 1
            if isinstance(out, BaseException):
                raise out
            if not isinstance(out, str):  # a tool call (or several): that turn's answer
                calls = (out,) if isinstance(out, ToolCall) else tuple(out)
                completion_tokens += sum(len(c.arguments.split()) + 1 for c in calls)
                choices.append(Choice(i, "", "tool_calls", tool_calls=calls))
                continue
            text = out
            if params.prefill is not None:
                text = params.prefill + text
            if params.max_tokens is not None:
                words = text.split(" ")
                if len(words) > params.max_tokens:
                    choices.append(Choice(i, " ".join(words[: params.max_tokens]), "length"))
                    completion_tokens += params.max_tokens
                    continue
            completion_tokens += len(text.split())
            choices.append(Choice(i, text, "stop"))
        prompt_tokens = sum(len(m.content.split()) for m in messages)
        return choices, Usage(prompt_tokens, completion_tokens)

    async def stream(self, endpoint: Endpoint, request: WireRequest) -> AsyncIterator[StreamChunk]:
        (choice,), usage = await self.complete(endpoint, request)
        if choice.text:
            words = choice.text.split(" ")
            for j, w in enumerate(words):
                yield StreamChunk(0, w if j == 0 else " " + w)
        yield StreamChunk(0, "", choice.finish_reason, usage, choice.tool_calls)

    async def aclose(self) -> None:
        return None


class FakeModel(Model):
    """A :class:`ponder.Model` that answers locally, with every policy still applied.

    ``outputs`` is a list of replies returned in order, or a function
    ``fn(messages, params, sample_index) -> reply``; a reply is a text, a
    :class:`ponder.types.ToolCall` (or a list of them: parallel calls) for a turn that
    calls tools, or an exception the request raises (a scripted fault: ``RateLimitError``
    and ``ServerError`` are retried as from a real server). With ``cycle=True`` (the
    default) a list starts again at its end; with ``cycle=False`` a request past its end
    raises, and :meth:`assert_complete` checks that every scripted reply was used.
    Token counts are whitespace words. ``calls`` records what was requested, so tests can
    assert on prompts and ``n``.

    >>> m = FakeModel(["4"])
    >>> m.generate_sync("2+2?").text
    '4'
    """

    def __init__(
        self,
        outputs: Sequence[Reply] | Responder,
        *,
        name: str = "fake",
        supports_n: bool = True,
        delay: float = 0.0,
        cache: ResponseCache | bool = False,
        budget: Budget | None = None,
        retry: RetryPolicy | None = None,
        prices: PriceTable | None = None,
        defaults: GenerateParams | None = None,
        cycle: bool = True,
    ) -> None:
        self._script: list[Reply] | None = None
        if callable(outputs):
            respond: Responder = outputs
        else:
            script = self._script = list(outputs)
            if not script:
                raise ConfigurationError("FakeModel needs at least one output")

            def respond(_m: Sequence[Message], _p: GenerateParams, i: int) -> Reply:
                if i >= len(script) and not cycle:
                    raise ConfigurationError(
                        f"FakeModel {name!r} was asked for reply {i + 1}, but its script "
                        f"has {len(script)}; add replies, or pass cycle=True"
                    )
                return script[i % len(script)]

        self._fake = _FakeWire(respond, delay)
        super().__init__(
            f"{FAKE_PROVIDER}:{name}@http://127.0.0.1:9/v1",
            settings=Settings.load(cache=False),
            cache=cache,
            budget=budget,
            retry=retry,
            prices=prices,
            defaults=defaults,
            quirks=Quirks(supports_n=supports_n, prefill="native"),
            wire=self._fake,
        )

    @property
    def calls(self) -> list[FakeCall]:
        return self._fake.calls

    @property
    def replies_used(self) -> int:
        """Replies (samples) handed out so far."""
        return self._fake._sample

    def assert_complete(self) -> None:
        """Raise AssertionError unless every reply of the script was used (a test whose
        code made fewer model calls than it scripted learns so)."""
        if self._script is None:
            return
        used, scripted = self._fake._sample, len(self._script)
        if used < scripted:
            raise AssertionError(
                f"FakeModel used {used} of its {scripted} scripted replies; the next unused "
                f"one is {self._script[used]!r}"
            )


@contextmanager
def block_remote_models() -> Iterator[None]:
    """Within this block, any model request to a non-loopback host raises
    :class:`ponder.errors.ConfigurationError` before it is sent. Use it (or the
    ``ponder_block_remote`` fixture pattern) around every test session."""
    previous = guard.set_remote_allowed(False)
    try:
        yield
    finally:
        guard.set_remote_allowed(previous)
