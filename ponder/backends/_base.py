"""The wire-protocol interface every backend implements, and shared HTTP error mapping."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, NamedTuple, Protocol

from ponder.backends._pool import Endpoint
from ponder.backends._providers import Quirks
from ponder.errors import (
    AuthenticationError,
    BackendError,
    BadRequestError,
    ConfigurationError,
    RateLimitError,
    RequestTimeout,
    ServerError,
)
from ponder.types import Choice, GenerateParams, Message, StreamChunk, Usage

__all__ = ["Wire", "WireRequest", "error_for_status", "parse_retry_after"]


class WireRequest(NamedTuple):
    """What one request asks of a model, whichever endpoint serves it (a tuple: a wire
    unpacks it as ``model, messages, params, n = request``)."""

    model: str  # the model's name on the server
    messages: Sequence[Message]
    params: GenerateParams
    n: int = 1  # choices asked for (a stream has one)


class Wire(Protocol):
    """Speaks one wire protocol to one endpoint. No retries, caching or limits here:
    those policies are applied once, by :class:`ponder.Model`, for every wire."""

    async def complete(
        self, endpoint: Endpoint, request: WireRequest
    ) -> tuple[list[Choice], Usage]:
        """One request for ``request.n`` choices; raises :class:`ponder.errors.PonderError`."""
        ...

    def stream(self, endpoint: Endpoint, request: WireRequest) -> AsyncIterator[StreamChunk]:
        """One streamed request for one choice."""
        ...

    async def aclose(self) -> None: ...


def check_params(provider: str, quirks: Quirks, params: GenerateParams) -> None:
    """Refuse options the provider cannot honour, before anything is sent."""
    if params.prefill is not None and quirks.prefill == "none":
        raise ConfigurationError(
            f"provider {provider!r} cannot continue a partial answer (prefill); use vllm, "
            "sglang, llamacpp or anthropic, or put the partial answer in the prompt"
        )
    if params.logprobs and not quirks.supports_logprobs:
        raise ConfigurationError(f"provider {provider!r} does not return logprobs")
    if params.json_schema is not None and not quirks.supports_json_schema:
        raise ConfigurationError(
            f"provider {provider!r} does not support a JSON-schema response format; "
            "ask for JSON in the prompt and parse it instead"
        )


def parse_retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds from ``retry-after-ms`` or ``Retry-After`` (delta-seconds form)."""
    ms = headers.get("retry-after-ms")
    if ms is not None:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is not None:
        try:
            return max(0.0, float(value))
        except ValueError:
            return None
    return None


def _server_message(body: bytes) -> str:
    try:
        data: Any = json.loads(body)
    except ValueError:
        return body[:300].decode(errors="replace").strip()
    if isinstance(data, dict):
        err = data.get("error", data)
        if isinstance(err, dict):
            return str(err.get("message") or err.get("detail") or err)[:500]
        return str(err)[:500]
    return str(data)[:500]


#: what a 5xx says when it is really a refused request (pydantic's "1 validation error",
#: FastAPI's "Input should be ..."): such errors are not retried
_REFUSAL = re.compile(r"\d+ validation errors?\b|\bInput should be\b|\bField required\b")


def error_for_status(
    status: int,
    body: bytes,
    headers: Mapping[str, str],
    *,
    endpoint: str,
    key_hint: str | None,
) -> BackendError | AuthenticationError:
    """Translate a non-2xx HTTP answer into the matching Ponder error."""
    msg = _server_message(body)
    where = f"{endpoint} answered HTTP {status}"
    if status in (401, 403):
        fix = f"check the API key ({key_hint})" if key_hint else "check the API key"
        return AuthenticationError(f"{where}: {msg}. The credentials were refused: {fix}")
    if status == 429:
        retry_after = parse_retry_after(headers)
        return RateLimitError(
            f"{where} (rate limited): {msg}",
            retry_after=retry_after,
            endpoint=endpoint,
        )
    if status == 408:
        return RequestTimeout(f"{where} (request timeout): {msg}", status=status, endpoint=endpoint)
    if status >= 500 and _REFUSAL.search(msg):
        # a server that reports its own request validation as a 500 (llama-cpp-python's,
        # for a field it does not know): the same request would fail the same way
        return BadRequestError(
            f"{where}, but the error is the request's: {msg[:500]}. It is not retried; "
            "change the request or the provider's quirks (docs/backends.md)",
            status=status,
            endpoint=endpoint,
        )
    if status >= 500:
        return ServerError(f"{where}: {msg}", status=status, endpoint=endpoint)
    return BadRequestError(
        f"{where}: {msg}. The request was refused as invalid; it is not retried",
        status=status,
        endpoint=endpoint,
    )
