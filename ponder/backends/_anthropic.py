"""Anthropic's Messages API, on the ``anthropic`` SDK (install ``ponder[anthropic]``); the
same on AWS Bedrock through the SDK's Bedrock client (``ponder[bedrock]``), which signs each
request with the AWS credentials boto3 finds (environment, profile, instance role).

System messages are split out into ``system``; a prefill is sent as a final assistant
message, which the API continues; ``n > 1`` is served by parallel requests (the Model
layer does that because the provider's quirks say ``supports_n=False``).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import importlib.util
import inspect
import json
import os
import re
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, Any

from ponder.backends._base import WireRequest, error_for_status
from ponder.backends._pool import Endpoint
from ponder.errors import ConfigurationError, ParseError, RequestTimeout, TransportError
from ponder.types import (
    Choice,
    FinishReason,
    GenerateParams,
    Message,
    StreamChunk,
    ToolCall,
    Usage,
)

if TYPE_CHECKING:
    import anthropic

__all__ = ["AnthropicWire"]

_FINISH: dict[str | None, FinishReason] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}

#: The Messages API requires max_tokens; this is used when the caller sets none.
DEFAULT_MAX_TOKENS = 4096


def _import_sdk() -> Any:
    try:
        import anthropic
    except ImportError:
        raise ConfigurationError(
            "the anthropic backend needs the anthropic SDK: pip install 'ponder[anthropic]'"
        ) from None
    return anthropic


def _bedrock_region(base_url: str) -> tuple[str, str | None]:
    """The AWS region and the base URL to give the Bedrock client: ``AWS_REGION`` (or
    ``AWS_DEFAULT_REGION``) moves the default endpoint to that region; another URL (a
    proxy, a VPC endpoint, a test server) is kept as given."""
    from ponder.backends._providers import BEDROCK_URL

    env = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if base_url.rstrip("/") == BEDROCK_URL:
        return env or "us-east-1", None
    m = re.match(r"https://bedrock-runtime[.-](?:fips\.)?([a-z0-9-]+)\.amazonaws\.com", base_url)
    return (m.group(1) if m else env or "us-east-1"), base_url


def _messages(messages: Sequence[Message]) -> list[dict[str, Any]]:
    """Chat messages as the Messages API wants them: an assistant turn's tool calls are
    ``tool_use`` blocks; tool results are ``tool_result`` blocks of one user turn (results
    that follow each other go into the same turn)."""
    out: list[dict[str, Any]] = []
    for m in messages:
        if m.role == "system":
            continue
        if m.role == "tool":
            block = {"type": "tool_result", "tool_use_id": m.tool_call_id, "content": m.content}
            last = out[-1] if out else None
            if last is not None and last["role"] == "user" and isinstance(last["content"], list):
                last["content"].append(block)
            else:
                out.append({"role": "user", "content": [block]})
        elif m.tool_calls:
            blocks: list[dict[str, Any]] = []
            if m.content:
                blocks.append({"type": "text", "text": m.content})
            for t in m.tool_calls:
                try:
                    args = json.loads(t.arguments or "{}")
                except ValueError:
                    args = {}
                blocks.append({"type": "tool_use", "id": t.id, "name": t.name,
                               "input": args if isinstance(args, dict) else {}})  # fmt: skip
            out.append({"role": "assistant", "content": blocks})
        else:
            out.append({"role": m.role, "content": m.content})
    return out


def _tool_uses(content: Any) -> tuple[ToolCall, ...]:
    return tuple(
        ToolCall(id=b.id, name=b.name, arguments=json.dumps(b.input))
        for b in content
        if getattr(b, "type", None) == "tool_use"
    )


class AnthropicWire:
    def __init__(self, *, key_hint: str | None = None, bedrock: bool = False) -> None:
        self.key_hint = key_hint
        self.bedrock = bedrock
        self._sdk = _import_sdk()
        if bedrock and importlib.util.find_spec("botocore") is None:  # it signs requests
            raise ConfigurationError(
                "the bedrock provider needs the anthropic SDK's Bedrock extra: "
                "pip install 'ponder[bedrock]'"
            )
        self._clients: dict[tuple[str, str | None], anthropic.AsyncAnthropic] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        # newer SDKs dropped sampling parameters from create()'s signature while the API
        # (and older models, on Bedrock too) still take them: send those in the body
        create = self._sdk.resources.AsyncMessages.create
        self._sdk_args = set(inspect.signature(create).parameters)

    def _client(self, ep: Endpoint) -> anthropic.AsyncAnthropic:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            self._clients.clear()
            self._loop = loop
        key = (ep.base_url, ep.api_key)
        client = self._clients.get(key)
        if client is None:
            # the SDK's own HTTP stack (httpx, or httpx2 in anthropic >= 2), sized to the
            # endpoint's concurrency limit instead of its default pool
            http = importlib.import_module(self._sdk.DefaultAsyncHttpxClient.__mro__[1].__module__)
            limits = http.Limits(max_connections=ep.max_concurrency, max_keepalive_connections=64)
            http_client = self._sdk.DefaultAsyncHttpxClient(limits=limits, timeout=None)
            if self.bedrock:
                region, base_url = _bedrock_region(ep.base_url)
                client = self._sdk.AsyncAnthropicBedrock(
                    aws_region=region,
                    base_url=base_url,
                    max_retries=0,
                    http_client=http_client,
                )
            else:
                client = self._sdk.AsyncAnthropic(
                    api_key=ep.api_key or "none",
                    base_url=ep.base_url,
                    max_retries=0,  # Ponder's retry policy applies, once
                    http_client=http_client,
                )
            self._clients[key] = client
        return client

    async def aclose(self) -> None:
        clients, self._clients = list(self._clients.values()), {}
        for c in clients:
            with contextlib.suppress(RuntimeError):
                await c.close()

    def request(
        self, model: str, messages: Sequence[Message], params: GenerateParams
    ) -> dict[str, Any]:
        system = "\n\n".join(m.content for m in messages if m.role == "system")
        msgs = _messages(messages)
        if params.prefill is not None:
            msgs.append({"role": "assistant", "content": params.prefill.rstrip()})
        kw: dict[str, Any] = {
            "model": model,
            "messages": msgs,
            "max_tokens": params.max_tokens or DEFAULT_MAX_TOKENS,
        }
        if system:
            kw["system"] = system
        body: dict[str, Any] = {}
        sampling: dict[str, Any] = {}
        if params.temperature is not None:
            sampling["temperature"] = min(params.temperature, 1.0)
        if params.top_p is not None:
            sampling["top_p"] = params.top_p
        for name, value in sampling.items():
            if name in self._sdk_args:
                kw[name] = value
            else:
                body[name] = value
        if params.stop:
            kw["stop_sequences"] = list(params.stop)
        if params.tools and params.tool_choice != "none":
            kw["tools"] = [
                {"name": t.name, "description": t.description, "input_schema": t.parameters}
                for t in params.tools
            ]
            choice: dict[str, Any] | None = None
            if params.tool_choice == "required":
                choice = {"type": "any"}
            elif params.tool_choice not in (None, "auto"):
                choice = {"type": "tool", "name": params.tool_choice}
            if params.parallel_tool_calls is False:
                choice = {"type": "auto", **(choice or {}), "disable_parallel_tool_use": True}
            if choice is not None:
                kw["tool_choice"] = choice
        if params.timeout is not None:
            kw["timeout"] = params.timeout
        body.update(params.extra)
        if body:
            kw["extra_body"] = body
        return kw

    def _translate(self, e: Exception, ep: Endpoint) -> Exception:
        sdk = self._sdk
        if isinstance(e, sdk.APITimeoutError):
            return RequestTimeout(f"{ep.base_url} did not answer in time", endpoint=ep.base_url)
        if isinstance(e, sdk.APIConnectionError):
            return TransportError(
                f"request to {ep.base_url} failed: {e}. Is the server reachable?",
                endpoint=ep.base_url,
            )
        if isinstance(e, sdk.APIStatusError):
            r = e.response
            return error_for_status(
                r.status_code, r.content, r.headers, endpoint=ep.base_url, key_hint=self.key_hint
            )
        return e

    async def complete(
        self, endpoint: Endpoint, request: WireRequest
    ) -> tuple[list[Choice], Usage]:
        model, messages, params, n = request
        client = self._client(endpoint)
        kw = self.request(model, messages, params)
        results = []
        for i in range(n):
            try:
                msg = await client.messages.create(**kw)
            except self._sdk.APIError as e:
                raise self._translate(e, endpoint) from None
            results.append((i, msg))
        choices: list[Choice] = []
        usage = Usage()
        for i, msg in results:
            try:
                text = "".join(b.text for b in msg.content if b.type == "text")
                calls = _tool_uses(msg.content)
                u = msg.usage
            except AttributeError as e:
                raise ParseError(f"{endpoint.base_url} sent an unexpected message: {e}") from None
            if params.prefill is not None:
                text = params.prefill.rstrip() + text
            choices.append(
                Choice(i, text, _FINISH.get(msg.stop_reason, "unknown"), tool_calls=calls)
            )
            usage = usage + Usage(
                u.input_tokens,
                u.output_tokens,
                u.cache_read_input_tokens or 0,
                u.cache_creation_input_tokens or 0,
            )
        return choices, usage

    async def stream(self, endpoint: Endpoint, request: WireRequest) -> AsyncIterator[StreamChunk]:
        model, messages, params, _ = request
        client = self._client(endpoint)
        kw = self.request(model, messages, params)
        try:
            async with client.messages.stream(**kw) as s:
                if params.prefill:
                    yield StreamChunk(0, params.prefill.rstrip())
                async for text in s.text_stream:
                    yield StreamChunk(0, text)
                msg = await s.get_final_message()
        except self._sdk.APIError as e:
            raise self._translate(e, endpoint) from None
        u = msg.usage
        yield StreamChunk(
            0,
            "",
            _FINISH.get(msg.stop_reason, "unknown"),
            Usage(
                u.input_tokens,
                u.output_tokens,
                u.cache_read_input_tokens or 0,
                u.cache_creation_input_tokens or 0,
            ),
            _tool_uses(msg.content),
        )
