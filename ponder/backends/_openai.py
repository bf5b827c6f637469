"""The OpenAI-compatible Chat Completions wire protocol (OpenAI, vLLM, SGLang, llama.cpp, ...).

The hot path is a lean aiohttp client: one session per event loop, pre-serialised
payloads, no per-request client objects. We measured the ``openai`` SDK's per-request
overhead at 2-3x the physical limit on 2 cores at high fan-out (see
``benchmarks/fanout.py``); the payloads and responses here follow the same API reference.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import KW_ONLY, dataclass, field
from typing import Any

import aiohttp
import orjson

from ponder.backends._base import WireRequest, error_for_status
from ponder.backends._pool import Endpoint
from ponder.backends._providers import Quirks
from ponder.backends._score import ScoreRequest
from ponder.errors import ConfigurationError, ParseError, RequestTimeout, TransportError
from ponder.types import (
    Choice,
    FinishReason,
    GenerateParams,
    Message,
    StreamChunk,
    TokenLogprob,
    ToolCall,
    Usage,
)

__all__ = ["OpenAIWire"]

_FINISH: dict[str | None, FinishReason] = {
    "stop": "stop",
    "length": "length",
    "content_filter": "content_filter",
    "tool_calls": "tool_calls",
    "abort": "error",
    "eos": "stop",
}


def _logprobs(raw: Any) -> tuple[TokenLogprob, ...] | None:
    if not raw or not isinstance(raw, dict) or raw.get("content") is None:
        return None
    return tuple(
        TokenLogprob(
            t["token"],
            float(t["logprob"]),
            tuple((a["token"], float(a["logprob"])) for a in t.get("top_logprobs") or ()),
        )
        for t in raw["content"]
    )


def _usage(raw: Any) -> Usage:
    if not isinstance(raw, dict):
        return Usage()
    details = raw.get("prompt_tokens_details") or {}
    return Usage(
        prompt_tokens=int(raw.get("prompt_tokens") or 0),
        completion_tokens=int(raw.get("completion_tokens") or 0),
        cache_read_tokens=int(details.get("cached_tokens") or 0),
    )


_RATE_HEADER = "x-ratelimit-remaining-requests"


def parse_scores(raw: bytes, count: int, url: str) -> tuple[list[float], Usage]:
    """The scores of vLLM's score API (``{"data": [{"index", "score"}, ...]}``), in order."""
    try:
        data: Any = orjson.loads(raw)
        out = [0.0] * count
        seen = set()
        for item in data["data"]:
            i = int(item["index"])
            out[i] = float(item["score"])
            seen.add(i)
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, IndexError) as e:
        raise ParseError(
            f"{url} answered something other than vLLM's score format "
            f"({type(e).__name__}): {raw[:200].decode(errors='replace')}"
        ) from None
    if len(seen) != count:
        raise ParseError(f"{url} scored {len(seen)} of {count} texts")
    return out, _usage(data.get("usage"))


class StalledError(RequestTimeout):
    """The server took the connection but sent nothing (or stopped sending) for the
    first-byte timeout: a hung endpoint. Not retried, so a hung server fails a call
    within that timeout instead of after every retry."""

    retryable = False


def _timeout_error(
    e: BaseException, url: str, endpoint: str, total: float | None, connect: float, read: float
) -> RequestTimeout:
    """One message per timeout that fired (connect, first byte, total), naming the setting
    that controls it."""
    if isinstance(e, aiohttp.ConnectionTimeoutError):
        return RequestTimeout(
            f"could not connect to {url} within {connect:g}s (PONDER_CONNECT_TIMEOUT); is "
            "the server up and reachable?",
            endpoint=endpoint,
        )
    if isinstance(e, aiohttp.SocketTimeoutError):
        return StalledError(
            f"{url} took the request but sent nothing for {read:g}s "
            "(PONDER_FIRST_BYTE_TIMEOUT): the server looks hung. Raise the setting for very "
            "long non-streamed answers, or check the server",
            endpoint=endpoint,
        )
    return RequestTimeout(
        f"{url} sent no complete answer within {total}s (PONDER_REQUEST_TIMEOUT, or "
        "timeout=...); check the server's load",
        endpoint=endpoint,
    )


def _strict_ok(schema: Any) -> bool:
    """Whether OpenAI's strict mode takes ``schema``: every object closed
    (``additionalProperties: false``) with all of its properties required. Sent strict
    otherwise, it is refused with HTTP 400; not strict, the schema still guides."""
    if isinstance(schema, dict):
        if schema.get("type") == "object" or "properties" in schema:
            props = schema.get("properties") or {}
            if schema.get("additionalProperties") is not False:
                return False
            if set(schema.get("required") or ()) != set(props):
                return False
        return all(_strict_ok(v) for v in schema.values())
    if isinstance(schema, list):
        return all(_strict_ok(v) for v in schema)
    return True


def _tool_message(m: Message) -> dict[str, Any]:
    """An assistant turn with tool calls, or a tool's result, in the Chat Completions form."""
    if m.role == "tool":
        return {"role": "tool", "tool_call_id": m.tool_call_id, "content": m.content}
    return {
        "role": m.role,
        "content": m.content or None,
        "tool_calls": [
            {"id": t.id, "type": "function", "function": {"name": t.name, "arguments": t.arguments}}
            for t in m.tool_calls
        ],
    }


def _tool_calls(raw: Any) -> tuple[ToolCall, ...]:
    if not raw:
        return ()
    out = []
    for i, t in enumerate(raw):
        fn = t.get("function") or {}
        args = fn.get("arguments")
        if not isinstance(args, str):  # a server that sends the object itself
            args = orjson.dumps(args if args is not None else {}).decode()
        out.append(ToolCall(id=str(t.get("id") or f"call_{i}"), name=str(fn.get("name") or ""),
                            arguments=args))  # fmt: skip
    return tuple(out)


class _CallPieces:
    """One streamed choice's tool calls, put together from their pieces: the first names
    the call, later ones add to its arguments' text (OpenAI, vLLM and SGLang all stream
    them so). Ollama gives every call of a parallel batch index 0: a new id at an index in
    use opens a call of its own."""

    def __init__(self) -> None:
        self.calls: list[dict[str, str]] = []
        self.at: dict[int, int] = {}  # the stream's index -> the call it now writes to

    def add(self, deltas: list[Any]) -> None:
        for d in deltas:
            raw = int(d.get("index", 0))
            k = self.at.get(raw)
            new_id = str(d.get("id") or "")
            if k is None or (new_id and self.calls[k]["id"] and self.calls[k]["id"] != new_id):
                self.calls.append({"id": "", "name": "", "args": ""})
                k = self.at[raw] = len(self.calls) - 1
            call = self.calls[k]
            if new_id:
                call["id"] = new_id
            fn = d.get("function") or {}
            call["name"] += str(fn.get("name") or "")
            call["args"] += str(fn.get("arguments") or "")

    def finish(self) -> tuple[ToolCall, ...]:
        return tuple(
            ToolCall(id=c["id"] or f"call_{i}", name=c["name"], arguments=c["args"] or "{}")
            for i, c in enumerate(self.calls)
        )


@dataclass(eq=False)
class OpenAIWire:
    """Chat Completions over HTTP. ``key_hint`` names where the key comes from (errors)."""

    quirks: Quirks
    _: KW_ONLY
    key_hint: str | None = None
    connect_timeout: float = 10.0
    first_byte_timeout: float = 50.0
    headers_timeout: float = 60.0
    # timeouts and headers made once per value: part of ~10 us less client CPU per
    # request in benchmarks/fanout.py --stress (commit f31eb8b)
    # (repr=False: the header cache holds Authorization headers, never printed)
    _timeouts: dict[float | None, aiohttp.ClientTimeout] = field(
        init=False, repr=False, default_factory=dict
    )
    _header_cache: dict[str | None, dict[str, str]] = field(
        init=False, repr=False, default_factory=dict
    )  # by API key
    _prefill_ok: dict[str, bool] = field(
        init=False, repr=False, default_factory=dict
    )  # by base URL (the prefill_probe quirk)

    def _timeout_error(
        self, e: BaseException, url: str, endpoint: str, total: float | None
    ) -> RequestTimeout:
        return _timeout_error(
            e, url, endpoint, total, self.connect_timeout, self.first_byte_timeout
        )

    async def _post(
        self, url: str, body: bytes, endpoint: Endpoint, limits: aiohttp.ClientTimeout
    ) -> aiohttp.ClientResponse:
        """POST and wait for the complete response headers, within ``headers_timeout``:
        a server that trickles its headers a byte at a time resets the per-read timer, not
        this deadline. Not retried (a hung server)."""
        deadline = asyncio.timeout(self.headers_timeout)
        try:
            async with deadline:
                return await endpoint.http_session().post(
                    url, data=body, headers=self._headers(endpoint), timeout=limits
                )
        except TimeoutError:
            if not deadline.expired():
                raise
            raise StalledError(
                f"{url} sent no complete response headers within {self.headers_timeout:g}s "
                "(PONDER_HEADERS_TIMEOUT): the server looks hung or is trickling bytes",
                endpoint=endpoint.base_url,
            ) from None

    def _timeout(self, total: float | None) -> aiohttp.ClientTimeout:
        # connect, first byte (and any stall between bytes), total: made once per total
        t = self._timeouts.get(total)
        if t is None:
            t = self._timeouts[total] = aiohttp.ClientTimeout(
                total=total or None,
                sock_connect=self.connect_timeout,
                sock_read=self.first_byte_timeout,
            )
        return t

    async def aclose(self) -> None:
        """Nothing of its own to close: HTTP sessions belong to the endpoints."""

    def payload(
        self, model: str, messages: Sequence[Message], params: GenerateParams, n: int
    ) -> dict[str, Any]:
        msgs: list[dict[str, Any]] = [
            {"role": m.role, "content": m.content}
            if not (m.tool_calls or m.tool_call_id)
            else _tool_message(m)
            for m in messages
        ]
        body: dict[str, Any] = {"model": model, "messages": msgs}
        if params.tools:
            body["tools"] = [
                {"type": "function", "function": {"name": t.name, "description": t.description,
                                                  "parameters": t.parameters}}
                for t in params.tools
            ]  # fmt: skip
            choice = params.tool_choice
            if choice in ("auto", "none", "required"):
                body["tool_choice"] = choice
            elif choice is not None:
                body["tool_choice"] = {"type": "function", "function": {"name": choice}}
            if params.parallel_tool_calls is not None:
                body["parallel_tool_calls"] = params.parallel_tool_calls
        if params.prefill is not None:
            msgs.append({"role": "assistant", "content": params.prefill})
            if self.quirks.prefill == "continue_final_message":
                body["continue_final_message"] = True
                body["add_generation_prompt"] = False
        if n != 1:
            body["n"] = n
        if params.temperature is not None:
            body["temperature"] = params.temperature
        if params.top_p is not None:
            body["top_p"] = params.top_p
        if params.max_tokens is not None:
            body["max_tokens"] = params.max_tokens
        if params.stop:
            body["stop"] = list(params.stop)
        if params.seed is not None and self.quirks.supports_seed:
            body["seed"] = params.seed
        if params.logprobs:
            body["logprobs"] = True
            if params.top_logprobs:
                body["top_logprobs"] = params.top_logprobs
        if params.json_schema is not None:
            if self.quirks.response_format == "json_object":
                body["response_format"] = {"type": "json_object", "schema": params.json_schema}
            else:
                body["response_format"] = {
                    "type": "json_schema",
                    "json_schema": {
                        "name": "output",
                        "schema": params.json_schema,
                        "strict": _strict_ok(params.json_schema),
                    },
                }
        body.update(params.extra)
        return body

    def _headers(self, ep: Endpoint) -> dict[str, str]:
        h = self._header_cache.get(ep.api_key)
        if h is None:
            h = {"Content-Type": "application/json"}
            if ep.api_key:
                h["Authorization"] = f"Bearer {ep.api_key}"
            self._header_cache[ep.api_key] = h
        return h

    async def _check_prefill(self, endpoint: Endpoint) -> None:
        """Refuse a prefill a server would not continue (the ``prefill_probe`` quirk):
        llama.cpp's llama-server answers ``GET /props``; llama-cpp-python's does not."""
        base = endpoint.base_url
        ok = self._prefill_ok.get(base)
        if ok is None:
            root = base.removesuffix("/").removesuffix("/v1")
            try:
                session = endpoint.http_session()
                async with session.get(root + "/props", timeout=self._timeout(10)) as r:
                    ok = r.status == 200
            except (aiohttp.ClientError, TimeoutError):
                ok = False
            self._prefill_ok[base] = ok
        if not ok:
            raise ConfigurationError(
                f"{base} does not continue a partial answer: it is not llama.cpp's "
                "llama-server (no /props), and a trailing assistant message would start a "
                "new turn. For llama-cpp-python's server use the llama_cpp_python: preset; "
                "for prefill use llama-server, vLLM, SGLang or the local: backend"
            )

    async def complete(
        self, endpoint: Endpoint, request: WireRequest
    ) -> tuple[list[Choice], Usage]:
        model, messages, params, n = request
        if params.prefill is not None and self.quirks.prefill_probe:
            await self._check_prefill(endpoint)
        body = orjson.dumps(self.payload(model, messages, params, n))
        url = endpoint.base_url + "/chat/completions"
        raw = await self._request(endpoint, url, body, params.timeout)
        return self._parse(raw, url, params.prefill)

    async def score(self, endpoint: Endpoint, request: ScoreRequest) -> tuple[list[float], Usage]:
        """vLLM's score API, which serves reward and cross-encoder models: one score per
        text for the query (``POST {url}/score {"model", "text_1", "text_2": [...]}``)."""
        model, query, texts, request_timeout = request
        url = endpoint.base_url + "/score"
        body = orjson.dumps({"model": model, "text_1": query, "text_2": list(texts)})
        raw = await self._request(endpoint, url, body, request_timeout)
        return parse_scores(raw, len(texts), url)

    async def _request(
        self, endpoint: Endpoint, url: str, body: bytes, total: float | None
    ) -> bytes:
        """POST ``body``; the answer's bytes, or the error its status or failure means."""
        try:
            async with await self._post(url, body, endpoint, self._timeout(total)) as resp:
                raw = await resp.read()
                if _RATE_HEADER in resp.headers:  # the server says how much is left
                    endpoint.rate.learn(resp.headers)
                if resp.status != 200:
                    raise error_for_status(
                        resp.status,
                        raw,
                        resp.headers,
                        endpoint=endpoint.base_url,
                        key_hint=self.key_hint,
                    )
        except TimeoutError as e:
            raise self._timeout_error(e, url, endpoint.base_url, total) from None
        except aiohttp.ClientError as e:
            raise TransportError(
                f"request to {url} failed: {type(e).__name__}: {e}. Is the server running "
                "and reachable?",
                endpoint=endpoint.base_url,
            ) from None
        return raw

    def _parse(self, raw: bytes, url: str, prefill: str | None) -> tuple[list[Choice], Usage]:
        try:
            data = orjson.loads(raw)
            choices: list[Choice] = []
            for c in data["choices"]:
                message = c["message"]
                text = message.get("content") or ""
                if prefill is not None and not text.startswith(prefill):
                    text = prefill + text
                calls = _tool_calls(message.get("tool_calls"))
                reason = _FINISH.get(c.get("finish_reason"), "unknown")
                choices.append(
                    Choice(
                        index=int(c.get("index", len(choices))),
                        text=text,
                        # some servers say "stop" for a turn that called tools
                        finish_reason="tool_calls" if calls and reason == "stop" else reason,
                        logprobs=_logprobs(c.get("logprobs")),
                        tool_calls=calls,
                    )
                )
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise ParseError(
                f"{url} answered 200 but the body is not a chat completion "
                f"({type(e).__name__}: {e}); body starts {raw[:200]!r}. Is the base URL "
                "an OpenAI-compatible /v1 endpoint?"
            ) from None
        choices.sort(key=lambda c: c.index)
        return choices, _usage(data.get("usage"))

    async def stream(self, endpoint: Endpoint, request: WireRequest) -> AsyncIterator[StreamChunk]:
        model, messages, params, _ = request
        if params.prefill is not None and self.quirks.prefill_probe:
            await self._check_prefill(endpoint)
        payload = self.payload(model, messages, params, 1)
        payload["stream"] = True
        payload["stream_options"] = {"include_usage": True}
        url = endpoint.base_url + "/chat/completions"
        timeout = self._timeout(params.timeout)
        finished = False
        partial: dict[int, _CallPieces] = {}  # by choice
        try:
            async with await self._post(url, orjson.dumps(payload), endpoint, timeout) as resp:
                if _RATE_HEADER in resp.headers:
                    endpoint.rate.learn(resp.headers)
                if resp.status != 200:
                    raise error_for_status(
                        resp.status,
                        await resp.read(),
                        resp.headers,
                        endpoint=endpoint.base_url,
                        key_hint=self.key_hint,
                    )
                if params.prefill:
                    yield StreamChunk(0, params.prefill)
                async for line in resp.content:
                    if not line.startswith(b"data:"):
                        continue
                    data = line[5:].strip()
                    if data == b"[DONE]":
                        finished = True
                        break
                    try:
                        event = orjson.loads(data)
                    except ValueError:
                        raise ParseError(
                            f"{url} sent a stream event that is not JSON: {data[:200]!r}"
                        ) from None
                    usage = _usage(event["usage"]) if event.get("usage") else None
                    for c in event.get("choices") or ():
                        d = c.get("delta") or {}
                        index = int(c.get("index", 0))
                        if d.get("tool_calls"):  # pieces of calls: put together per index
                            partial.setdefault(index, _CallPieces()).add(d["tool_calls"])
                        reason = c.get("finish_reason")
                        done = partial.pop(index, None) if reason else None
                        calls = done.finish() if done is not None else ()
                        finish = _FINISH.get(reason, "unknown") if reason else None
                        if calls and finish == "stop":
                            finish = "tool_calls"
                        yield StreamChunk(index, d.get("content") or "", finish, None, calls)
                    if usage is not None:
                        yield StreamChunk(0, "", None, usage)
        except TimeoutError as e:
            raise self._timeout_error(e, url, endpoint.base_url, params.timeout) from None
        except aiohttp.ClientError as e:
            raise TransportError(
                f"stream from {url} failed: {type(e).__name__}: {e}",
                endpoint=endpoint.base_url,
            ) from None
        if not finished:
            raise TransportError(
                f"stream from {url} ended before [DONE]: the connection was cut",
                endpoint=endpoint.base_url,
            )
