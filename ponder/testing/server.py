"""A local stand-in inference server that behaves like vLLM under load.

It speaks the OpenAI Chat Completions and Completions APIs (streaming included) and
Anthropic's Messages API, models batch slots, a bounded FIFO queue, time to first token
growing with the prompt, per-token latency, ``n`` samples sharing one prefill, seeded
fault injection, and answers from :mod:`ponder.testing.oracle` with known correctness.

Start it with ``ponder standin --port 8000`` or from Python::

    async with StandinServer(StandinConfig(slots=64)) as server:
        model = Model(f"vllm:strong@{server.base_url}")

Routes: ``POST /v1/chat/completions``, ``POST /v1/completions``, ``POST /v1/messages``,
``GET /v1/models``, ``GET /health``, ``GET /stats``, ``POST /stats/reset``.

It is built on ``aiohttp.web`` (not Starlette) and runs on uvloop when that is installed
(``ponder standin`` and ``in_thread``), because it must never be the bottleneck of the
fan-out benchmark: thousands of concurrent connections on one core, about 0.2 ms of CPU
per request.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from typing import Any

from aiohttp import web

from ponder._internal.loop import new_event_loop
from ponder.testing._standin_core import (
    StandinConfig,
    StandinCore,
    StandinStats,
    _anthropic_tools,
    _BadRequest,
    _block_text,
    _int,
    _openai_tools,
    _Request,
    _Sample,
    count_tokens,
)
from ponder.testing.oracle import (
    reward_scores,
)

__all__ = ["StandinConfig", "StandinServer", "StandinStats", "count_tokens"]


class StandinServer(StandinCore):
    """The stand-in server, run on the current event loop (``async with``) or in a
    background thread (:meth:`in_thread`)."""

    # -- lifecycle ---------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/completions", self._completions)
        app.router.add_post("/v1/messages", self._messages)
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/v1/score", self._score)
        app.router.add_get("/health", self._health)
        app.router.add_get("/stats", self._stats)
        app.router.add_post("/stats/reset", self._reset)
        return app

    async def start(self) -> None:
        self._runner = web.AppRunner(
            self.app(), handler_cancellation=True, access_log=None, shutdown_timeout=0.5
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, backlog=8192)
        await site.start()
        if self.port == 0:
            self.port = _bound_port(site)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> StandinServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def base_url(self) -> str:
        """The OpenAI-style base URL, ``http://host:port/v1``."""
        return f"http://{self.host}:{self.port}/v1"

    @property
    def root_url(self) -> str:
        """The Anthropic-style base URL, ``http://host:port``."""
        return f"http://{self.host}:{self.port}"

    def reset_stats(self) -> None:
        self.stats = StandinStats()
        self._slots.stats = self.stats

    @contextmanager
    def in_thread(self) -> Iterator[StandinServer]:
        """Run the server on its own event loop in a daemon thread for the block."""
        loop = new_event_loop()
        ready = threading.Event()
        stopped: asyncio.Event | None = None

        async def main() -> None:
            nonlocal stopped
            stopped = asyncio.Event()
            await self.start()
            ready.set()
            await stopped.wait()
            await self.stop()

        t = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
        t.start()
        ready.wait(10)
        try:
            yield self
        finally:
            if stopped is not None:
                loop.call_soon_threadsafe(stopped.set)
            t.join(10)
            loop.close()

    # -- OpenAI ------------------------------------------------------------------------

    def _openai_request(self, body: dict[str, Any], chat: bool) -> _Request:
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise _BadRequest("'model' is required")
        prefill = ""
        if chat:
            msgs = body.get("messages")
            if not isinstance(msgs, list) or not msgs:
                raise _BadRequest("'messages' must be a non-empty list")
            system: list[str] = []
            user: list[str] = []
            results: list[str] = []
            for m in msgs:
                if not isinstance(m, dict):
                    raise _BadRequest("each message must be an object")
                role, content = m.get("role"), m.get("content")
                if role == "tool":  # a tool's result, answering an earlier call
                    if not isinstance(content, str) or not m.get("tool_call_id"):
                        raise _BadRequest("a tool message needs 'tool_call_id' and 'content'")
                    results.append(content)
                    continue
                if role == "assistant" and m.get("tool_calls") and content is None:
                    continue  # a turn that only called tools
                if not isinstance(content, str):
                    raise _BadRequest("each message needs a string 'content'")
                if role == "user":
                    results = []
                (system if role == "system" else user).append(content)
            if msgs[-1].get("role") == "assistant":
                prefill = user.pop()
            sys_text, user_text = "\n".join(system), "\n".join(user)
        else:
            prompt = body.get("prompt")
            if not isinstance(prompt, str):
                raise _BadRequest("'prompt' must be a string")
            sys_text, user_text = "", prompt
        stop = body.get("stop") or []
        if isinstance(stop, str):
            stop = [stop]
        seed = body.get("seed")
        if seed is not None and not isinstance(seed, int):
            raise _BadRequest("'seed' must be an integer")
        t = body.get("temperature")
        if t is not None and (not isinstance(t, int | float) or not 0 <= t <= 2):
            raise _BadRequest(f"'temperature' must be between 0 and 2, got {t!r}")
        req = _Request(
            model,
            sys_text,
            user_text,
            prefill,
            _int(body, "n", 1) or 1,
            _int(body, "max_tokens", None),
            [s for s in stop if isinstance(s, str)],
            seed,
        )
        if chat:
            req.results = results
            req.tools, req.tool_choice = _openai_tools(body)
        fmt = body.get("response_format")
        if isinstance(fmt, dict) and fmt.get("type") in ("json_object", "json_schema"):
            js = fmt.get("json_schema") if fmt["type"] == "json_schema" else None
            schema = (js or {}).get("schema") if isinstance(js, dict) else fmt.get("schema")
            req.schema = schema if isinstance(schema, dict) else {"type": "object"}
        return req

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        return await self._openai(request, chat=True)

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        return await self._openai(request, chat=False)

    async def _openai(self, request: web.Request, chat: bool) -> web.StreamResponse:
        body = await self._body(request)
        try:
            req = self._openai_request(body, chat)
        except _BadRequest as e:
            raise self._error(400, str(e)) from None
        want_lp = req.logprobs = bool(body.get("logprobs"))
        top = body.get("top_logprobs") or 0
        self._ids += 1
        rid = f"cmpl-{self._ids}"
        created = int(time.time())
        if body.get("stream"):
            resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})

            async def write_stream(
                samples: list[_Sample], ttft: float, per_token: float, cut: bool
            ) -> None:
                await resp.prepare(request)
                await asyncio.sleep(ttft)
                longest = max(len(s.tokens) for s in samples)
                # send about every 20 ms of unscaled model time (vLLM streams per token)
                step = (
                    max(1, int(0.02 / self.config.per_token)) if self.config.per_token else longest
                )
                stop_at = longest // 2 if cut else None
                for start in range(0, longest, step):
                    if stop_at is not None and start >= stop_at:
                        self._count_fault("cut_stream")
                        if request.transport is not None:
                            request.transport.close()
                        raise asyncio.CancelledError
                    await asyncio.sleep(per_token * min(step, longest - start))
                    for i, s in enumerate(samples):
                        piece = "".join(s.tokens[start : start + step])
                        if piece and s.call is not None:  # the call's arguments, in pieces
                            fn: dict[str, str] = {"arguments": piece}
                            delta: dict[str, Any] = {"index": 0, "function": fn}
                            if start == 0:  # the first piece names the call
                                fn["name"] = s.call[0]
                                delta.update(id=f"call_{rid}_{i}", type="function")
                            await resp.write(
                                self._chunk(rid, created, req, i, "", None, chat, [delta])
                            )
                        elif piece:
                            await resp.write(self._chunk(rid, created, req, i, piece, None, chat))
                for i, s in enumerate(samples):
                    await resp.write(self._chunk(rid, created, req, i, "", s.finish, chat))
                if (body.get("stream_options") or {}).get("include_usage"):
                    usage = self._usage(req, samples)
                    data = {
                        "id": rid,
                        "object": "chat.completion.chunk",
                        "created": created,
                        "model": req.model,
                        "choices": [],
                        "usage": usage,
                    }
                    await resp.write(b"data: " + json.dumps(data).encode() + b"\n\n")
                await resp.write(b"data: [DONE]\n\n")

            await self._run(request, req, True, write_stream)
            await resp.write_eof()
            return resp

        async def wait(samples: list[_Sample], ttft: float, per_token: float, cut: bool) -> None:
            await asyncio.sleep(ttft + per_token * max(len(s.tokens) for s in samples))

        samples, _ = await self._run(request, req, False, wait)
        choices = []
        for i, s in enumerate(samples):
            text = "".join(s.tokens)
            c: dict[str, Any] = {"index": i, "finish_reason": s.finish}
            if chat and s.call is not None:
                c["message"] = {"role": "assistant", "content": None, "tool_calls": [{
                    "id": f"call_{rid}_{i}", "type": "function",
                    "function": {"name": s.call[0], "arguments": s.call[1]}}]}  # fmt: skip
            elif chat:
                c["message"] = {"role": "assistant", "content": text}
            else:
                c["text"] = text
            if want_lp:
                c["logprobs"] = {
                    "content": [
                        {
                            "token": t,
                            "logprob": lp,
                            "bytes": None,
                            "top_logprobs": [{"token": t, "logprob": lp}][:top]
                            + [
                                {"token": f" alt{a}", "logprob": lp - 1.0 - a, "bytes": None}
                                for a in range(max(0, top - 1))
                            ],
                        }
                        for t, lp in zip(s.tokens, s.logprobs, strict=True)
                    ]
                }
            choices.append(c)
        data = {
            "id": rid,
            "object": "chat.completion" if chat else "text_completion",
            "created": created,
            "model": req.model,
            "choices": choices,
            "usage": self._usage(req, samples),
        }
        return web.Response(body=json.dumps(data).encode(), content_type="application/json")

    # -- Anthropic ---------------------------------------------------------------------

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        body = await self._body(request)
        try:
            model = body.get("model")
            if not isinstance(model, str) or not model:
                raise _BadRequest("model: Field required")
            msgs = body.get("messages")
            if not isinstance(msgs, list) or not msgs:
                raise _BadRequest("messages: must be a non-empty list")
            max_tokens = _int(body, "max_tokens", None)
            if max_tokens is None:
                raise _BadRequest("max_tokens: Field required")
            system = body.get("system") or ""
            if isinstance(system, list):
                system = "".join(b.get("text", "") for b in system if isinstance(b, dict))
            user, prefill = [], ""
            results: list[str] = []
            for m in msgs:
                content = m.get("content") if isinstance(m, dict) else None
                if isinstance(content, list):
                    blocks = [b for b in content if isinstance(b, dict)]
                    found = [_block_text(b.get("content")) for b in blocks
                             if b.get("type") == "tool_result"]  # fmt: skip
                    if found:  # a user turn of tool results
                        results += found
                        continue
                    if m.get("role") == "assistant" and any(
                        b.get("type") == "tool_use" for b in blocks
                    ):
                        continue  # a turn that called tools
                    content = "".join(b.get("text", "") for b in blocks)
                if not isinstance(content, str):
                    raise _BadRequest("messages: each message needs content")
                if m.get("role") == "user":
                    results = []
                user.append(content)
            if msgs[-1].get("role") == "assistant":
                prefill = user.pop()
            req = _Request(
                model,
                system,
                "\n".join(user),
                prefill,
                1,
                max_tokens,
                list(body.get("stop_sequences") or []),
                None,
            )
            req.results = results
            req.tools, req.tool_choice = _anthropic_tools(body)
        except _BadRequest as e:
            raise self._error(400, str(e)) from None
        self._ids += 1
        mid = f"msg_{self._ids:08d}"

        def stop_reason(s: _Sample) -> str:
            if s.call is not None:
                return "tool_use"
            return "max_tokens" if s.finish == "length" else "end_turn"

        def content_of(s: _Sample) -> list[dict[str, Any]]:
            if s.call is not None:
                return [{"type": "tool_use", "id": f"toolu_{mid}", "name": s.call[0],
                         "input": json.loads(s.call[1])}]  # fmt: skip
            return [{"type": "text", "text": "".join(s.tokens)}]

        if body.get("stream"):
            resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})

            async def event(name: str, data: dict[str, Any]) -> None:
                await resp.write(f"event: {name}\ndata: {json.dumps(data)}\n\n".encode())

            async def write_stream(
                samples: list[_Sample], ttft: float, per_token: float, cut: bool
            ) -> None:
                s = samples[0]
                await resp.prepare(request)
                await asyncio.sleep(ttft)
                await event(
                    "message_start",
                    {
                        "type": "message_start",
                        "message": {
                            "id": mid,
                            "type": "message",
                            "role": "assistant",
                            "model": req.model,
                            "content": [],
                            "stop_reason": None,
                            "stop_sequence": None,
                            "usage": {"input_tokens": req.prompt_tokens, "output_tokens": 0},
                        },
                    },
                )
                block: dict[str, Any] = {"type": "text", "text": ""}
                if s.call is not None:
                    block = {"type": "tool_use", "id": f"toolu_{mid}", "name": s.call[0],
                             "input": {}}  # fmt: skip
                await event(
                    "content_block_start",
                    {"type": "content_block_start", "index": 0, "content_block": block},
                )
                for t in s.tokens:
                    await asyncio.sleep(per_token)
                    delta = (
                        {"type": "input_json_delta", "partial_json": t}
                        if s.call is not None
                        else {"type": "text_delta", "text": t}
                    )
                    await event(
                        "content_block_delta",
                        {"type": "content_block_delta", "index": 0, "delta": delta},
                    )
                await event("content_block_stop", {"type": "content_block_stop", "index": 0})
                await event(
                    "message_delta",
                    {
                        "type": "message_delta",
                        "delta": {"stop_reason": stop_reason(s), "stop_sequence": None},
                        "usage": {"output_tokens": len(s.tokens)},
                    },
                )
                await event("message_stop", {"type": "message_stop"})

            await self._run(request, req, True, write_stream)
            await resp.write_eof()
            return resp

        async def wait(samples: list[_Sample], ttft: float, per_token: float, cut: bool) -> None:
            await asyncio.sleep(ttft + per_token * len(samples[0].tokens))

        (s,), _ = await self._run(request, req, False, wait)
        data = {
            "id": mid,
            "type": "message",
            "role": "assistant",
            "model": req.model,
            "content": content_of(s),
            "stop_reason": stop_reason(s),
            "stop_sequence": None,
            "usage": {
                "input_tokens": req.prompt_tokens,
                "output_tokens": len(s.tokens),
                "cache_read_input_tokens": 0,
                "cache_creation_input_tokens": 0,
            },
        }
        return web.json_response(data)

    # -- reward model ----------------------------------------------------------------

    async def _score(self, request: web.Request) -> web.Response:
        """vLLM's score API, as a reward model serves it: one score per ``text_2``."""
        self._auth(request)
        try:
            body = await request.json()
            query = body["text_1"]
            texts = body["text_2"]
            texts = [texts] if isinstance(texts, str) else list(texts)
            if not isinstance(query, str) or not all(isinstance(t, str) for t in texts):
                raise TypeError("text_1 and text_2 must be strings")
        except (ValueError, KeyError, TypeError) as e:
            return web.json_response(
                {"error": {"message": f"bad score request: {e}", "type": "invalid_request"}},
                status=400,
            )
        self.stats.requests += 1
        scores = reward_scores(self.bank, query, texts)
        return web.json_response(
            {
                "id": f"score-{self._ids}",
                "object": "list",
                "model": body.get("model", ""),
                "data": [{"index": i, "object": "score", "score": s} for i, s in enumerate(scores)],
                "usage": {"prompt_tokens": sum(len(t) // 4 + 1 for t in texts)},
            }
        )

    # -- misc --------------------------------------------------------------------------

    async def _models(self, request: web.Request) -> web.Response:
        self._auth(request)
        return web.json_response(
            {
                "object": "list",
                "data": [
                    {"id": m, "object": "model", "created": 0, "owned_by": "ponder-standin"}
                    for m in self.config.models
                ],
            }
        )

    async def _health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def _stats(self, request: web.Request) -> web.Response:
        data = asdict(self.stats)
        data["faults_sent"] = self.stats.faults_sent
        return web.json_response(data)

    async def _reset(self, request: web.Request) -> web.Response:
        self.reset_stats()
        return web.json_response({"status": "reset"})


def _bound_port(site: web.TCPSite) -> int:
    """The port the OS picked for a site started on port 0."""
    server: Any = site._server
    return int(server.sockets[0].getsockname()[1])
