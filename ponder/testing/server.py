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
import hashlib
import json
import random
import re
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from ponder._internal.loop import new_event_loop
from ponder.testing.oracle import (
    OracleConfig,
    ProblemBank,
    respond,
    reward_scores,
    schema_reply,
    tool_reply,
)

__all__ = ["StandinConfig", "StandinServer", "StandinStats", "count_tokens"]

_TOKEN = re.compile(r"\s*\S+")
_FILLER = [
    "alpha",
    "beta",
    "gamma",
    "delta",
    "epsilon",
    "zeta",
    "eta",
    "theta",
    "iota",
    "kappa",
    "lambda",
    "mu",
    "nu",
    "xi",
    "omicron",
    "pi",
    "rho",
    "sigma",
    "tau",
    "upsilon",
    "phi",
    "chi",
    "psi",
    "omega",
]


def count_tokens(text: str) -> int:
    """The stand-in's tokenizer: a token is a run of non-space with its leading space."""
    return len(_TOKEN.findall(text))


class StandinConfig(BaseModel):
    """Timing, capacity, faults and oracle of the stand-in server.

    Times are seconds and are multiplied by ``time_scale`` (0.01 makes tests fast)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    slots: int = Field(64, ge=1, description="Concurrent sequences (a request with n=k holds k).")
    queue_limit: int = Field(4096, ge=0, description="Queued requests beyond which 429 is sent.")
    retry_after: float = Field(1.0, ge=0, description="Retry-After sent with a 429 (seconds).")
    ttft_base: float = Field(0.05, ge=0, description="TTFT = ttft_base + ttft_per_token x prompt.")
    ttft_per_token: float = Field(0.0002, ge=0)
    per_token: float = Field(0.01, ge=0, description="Seconds per generated token.")
    output_tokens: int = Field(32, ge=1, description="Length of answers to unknown prompts.")
    time_scale: float = Field(1.0, ge=0)
    seed: int = 0
    models: tuple[str, ...] = ("standin", "strong", "weak")
    api_key: str | None = Field(None, description="If set, requests need this bearer key.")
    fault_429: float = Field(0.0, ge=0, le=1)
    fault_500: float = Field(0.0, ge=0, le=1)
    fault_reset: float = Field(0.0, ge=0, le=1, description="Close the connection, no answer.")
    fault_cut_stream: float = Field(0.0, ge=0, le=1, description="Cut a stream half-way.")
    fault_slow: float = Field(0.0, ge=0, le=1, description="Slow outliers (long tail).")
    slow_factor: float = Field(10.0, ge=1)
    oracle: OracleConfig = Field(default_factory=OracleConfig)


@dataclass
class StandinStats:
    """Counters served at ``GET /stats``."""

    requests: int = 0
    completed: int = 0
    samples: int = 0
    prompt_tokens: int = 0
    prompt_tokens_reused: int = 0
    generated_tokens: int = 0
    max_queue_depth: int = 0
    max_concurrency: int = 0
    in_flight: int = 0
    cancelled: int = 0
    faults: dict[str, int] = field(default_factory=dict)
    status_counts: dict[str, int] = field(default_factory=dict)

    @property
    def faults_sent(self) -> int:
        return sum(self.faults.values())


class _QueueFull(Exception):
    pass


class _Slots:
    """FIFO allocation of ``capacity`` slots; a request takes ``k`` at once."""

    def __init__(self, capacity: int, queue_limit: int, stats: StandinStats) -> None:
        self.capacity = capacity
        self.free = capacity
        self.queue_limit = queue_limit
        self.waiters: deque[tuple[int, asyncio.Future[None]]] = deque()
        self.stats = stats

    async def acquire(self, k: int) -> None:
        if not self.waiters and self.free >= k:
            self.free -= k
        else:
            if len(self.waiters) >= self.queue_limit:
                raise _QueueFull
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self.waiters.append((k, fut))
            self.stats.max_queue_depth = max(self.stats.max_queue_depth, len(self.waiters))
            try:
                await fut
            except asyncio.CancelledError:
                if fut.done() and not fut.cancelled():
                    self.release(k)
                else:
                    with suppress(ValueError):
                        self.waiters.remove((k, fut))
                raise
        used = self.capacity - self.free
        self.stats.max_concurrency = max(self.stats.max_concurrency, used)

    def release(self, k: int) -> None:
        self.free += k
        while self.waiters and self.waiters[0][0] <= self.free:
            need, fut = self.waiters.popleft()
            if fut.cancelled():
                continue
            self.free -= need
            fut.set_result(None)


def _seeded(*parts: object) -> random.Random:
    h = hashlib.blake2b(json.dumps(parts, sort_keys=True, default=str).encode(), digest_size=8)
    return random.Random(int.from_bytes(h.digest(), "big"))


@dataclass
class _Sample:
    tokens: list[str]
    finish: str
    logprobs: list[float]
    call: tuple[str, str] | None = None  # a tool call: (tool name, arguments JSON)


class _Request:
    """The parts of a request the simulation needs, from either API."""

    def __init__(
        self,
        model: str,
        system: str,
        user: str,
        prefill: str,
        n: int,
        max_tokens: int | None,
        stop: list[str],
        seed: int | None,
    ) -> None:
        self.model = model
        self.system = system
        self.user = user
        self.prefill = prefill
        self.n = n
        self.max_tokens = max_tokens
        self.stop = stop
        self.seed = seed
        self.logprobs = False
        self.prompt_tokens = count_tokens(system) + count_tokens(user) + count_tokens(prefill)
        self.tools: dict[str, dict[str, Any]] = {}  # offered tools: name -> JSON Schema
        self.tool_choice: str | None = None
        self.results: list[str] = []  # tool results since the last user turn
        self.schema: dict[str, Any] | None = None  # response_format's schema ({} = any JSON)


class _BadRequest(Exception):
    pass


def _block_text(content: Any) -> str:
    if isinstance(content, list):
        return "".join(b.get("text", "") for b in content if isinstance(b, dict))
    return str(content or "")


def _anthropic_tools(body: dict[str, Any]) -> tuple[dict[str, dict[str, Any]], str | None]:
    """The Messages API's tools (name -> input schema) and tool choice, as the OpenAI
    form's: ``any`` is ``required``, ``{"type": "tool", "name": N}`` is ``N``."""
    raw = body.get("tools") or []
    if not isinstance(raw, list):
        raise _BadRequest("tools: must be a list")
    tools: dict[str, dict[str, Any]] = {}
    for t in raw:
        if not isinstance(t, dict) or not t.get("name") or "input_schema" not in t:
            raise _BadRequest("tools: each tool needs 'name' and 'input_schema'")
        tools[str(t["name"])] = t["input_schema"] or {}
    choice = body.get("tool_choice") or {}
    kind = choice.get("type") if isinstance(choice, dict) else None
    name = {"any": "required", "none": "none", "auto": None}.get(kind or "auto")
    if kind == "tool":
        name = choice.get("name")
        if name not in tools:
            raise _BadRequest(f"tool_choice: {name!r} is not among the tools")
    return tools, name


def _openai_tools(body: dict[str, Any]) -> tuple[dict[str, dict[str, Any]], str | None]:
    """The offered tools (name -> parameters schema) and the tool choice of a request."""
    raw = body.get("tools") or []
    if not isinstance(raw, list):
        raise _BadRequest("'tools' must be a list")
    tools: dict[str, dict[str, Any]] = {}
    for t in raw:
        fn = t.get("function") if isinstance(t, dict) else None
        if t.get("type") != "function" or not isinstance(fn, dict) or not fn.get("name"):
            raise _BadRequest("each tool must be {'type': 'function', 'function': {'name', ...}}")
        tools[str(fn["name"])] = fn.get("parameters") or {}
    choice = body.get("tool_choice")
    if isinstance(choice, dict):
        choice = (choice.get("function") or {}).get("name")
    if choice is not None and not isinstance(choice, str):
        raise _BadRequest("'tool_choice' must be a string or {'type': 'function', ...}")
    if choice not in (None, "auto", "none", "required") and choice not in tools:
        raise _BadRequest(f"tool_choice names {choice!r}, which is not among the tools")
    return tools, choice


def _int(body: dict[str, Any], key: str, default: int | None, low: int = 1) -> int | None:
    v = body.get(key, default)
    if v is None:
        return None
    if not isinstance(v, int) or isinstance(v, bool) or v < low:
        raise _BadRequest(f"'{key}' must be an integer >= {low}, got {v!r}")
    return v


class StandinServer:
    """The stand-in server, run on the current event loop (``async with``) or in a
    background thread (:meth:`in_thread`)."""

    def __init__(
        self, config: StandinConfig | None = None, *, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.config = config or StandinConfig()
        self.host = host
        self.port = port
        self.stats = StandinStats()
        self.bank = ProblemBank(self.config.oracle.bank_seed, self.config.oracle.distractors)
        self._slots = _Slots(self.config.slots, self.config.queue_limit, self.stats)
        self._fault_rng = random.Random(self.config.seed)
        self._sample_rng = random.Random(self.config.seed + 1)
        self._runner: web.AppRunner | None = None
        self._ids = 0

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

    # -- simulation --------------------------------------------------------------------

    def _seconds(self, seconds: float) -> float:
        return seconds * self.config.time_scale

    def _fault(self) -> str | None:
        c = self.config
        r = self._fault_rng.random()
        for name, rate in (
            ("429", c.fault_429),
            ("500", c.fault_500),
            ("reset", c.fault_reset),
            ("cut_stream", c.fault_cut_stream),
            ("slow", c.fault_slow),
        ):
            if r < rate:
                return name
            r -= rate
        return None

    def _count_fault(self, name: str) -> None:
        self.stats.faults[name] = self.stats.faults.get(name, 0) + 1

    def _sample(self, req: _Request, j: int, rng: random.Random) -> _Sample:
        if req.schema is not None:  # a formatter: the answer it was given, as the schema's JSON
            return _Sample(_TOKEN.findall(schema_reply(req.user, req.schema)), "stop", [])
        if req.tools or req.results:
            turn = tool_reply(self.bank, req.user, req.tools, req.results, req.tool_choice)
            if turn is not None and turn[1] is not None:
                name, args = turn[1]
                return _Sample(_TOKEN.findall(args), "tool_calls", [], (name, args))
            if turn is not None:
                return _Sample(_TOKEN.findall(turn[0]), "stop", [])
        answer = respond(
            self.config.oracle, self.bank, req.model, req.system, req.user, rng, req.prefill
        )
        if answer is not None:
            text, correct = answer
            tokens = _TOKEN.findall(text)
        else:
            correct = None
            words = rng.choices(_FILLER, k=self.config.output_tokens)
            tokens = [" " + w for w in words]
            if tokens:
                tokens[0] = words[0]
        finish = "stop"
        if req.max_tokens is not None and len(tokens) > req.max_tokens:
            tokens, finish = tokens[: req.max_tokens], "length"
        if req.stop:
            text = "".join(tokens)
            cut = min((i for i in (text.find(s) for s in req.stop) if i >= 0), default=-1)
            if cut >= 0:
                tokens, finish = _TOKEN.findall(text[:cut]), "stop"
        spread = 0.25 if correct in (True, None) else 0.9
        # drawn last, and only when asked for: the text does not depend on them
        logprobs = [-spread * rng.random() for _ in tokens] if req.logprobs else []
        return _Sample(tokens, finish, logprobs)

    def _samples(self, req: _Request) -> list[_Sample]:
        out = []
        for j in range(req.n):
            if req.seed is not None:
                # sample j of a request with seed s is the sample of seed s + j: n=k in one
                # request gives what k requests with seeds s..s+k-1 give
                rng = _seeded(self.config.seed, req.model, req.system, req.user, req.seed + j)
            else:
                rng = random.Random(self._sample_rng.getrandbits(64))
            out.append(self._sample(req, j, rng))
        return out

    def _duration(self, req: _Request, samples: list[_Sample], slow: bool) -> tuple[float, float]:
        c = self.config
        ttft = c.ttft_base + c.ttft_per_token * req.prompt_tokens
        per_token = c.per_token * (c.slow_factor if slow else 1.0)
        return self._seconds(ttft), self._seconds(per_token)

    async def _admit(self, request: web.Request, req: _Request, stream: bool) -> str | None:
        """Faults and queue admission; returns the fault that still applies later."""
        fault = self._fault()
        if fault in ("429", "500", "reset"):
            self._count_fault(fault)
            if fault == "reset":
                if request.transport is not None:
                    request.transport.close()
                raise asyncio.CancelledError
            if fault == "429":
                raise self._error(429, "rate limited (injected fault)", retry=True)
            raise self._error(500, "internal error (injected fault)")
        if fault == "cut_stream" and not stream:
            fault = None
        try:
            await self._slots.acquire(min(req.n, self.config.slots))
        except _QueueFull:
            self._count_fault("queue_full")
            raise self._error(429, "queue full: the server is overloaded", retry=True) from None
        return fault

    def _error(self, status: int, message: str, *, retry: bool = False) -> web.HTTPException:
        self.stats.status_counts[str(status)] = self.stats.status_counts.get(str(status), 0) + 1
        headers = {"Retry-After": f"{self.config.retry_after:g}"} if retry else None
        body = json.dumps({"error": {"message": message, "type": "standin", "code": status}})
        cls = _STATUS.get(status, web.HTTPBadRequest)
        return cls(text=body, content_type="application/json", headers=headers)

    def _auth(self, request: web.Request) -> None:
        key = self.config.api_key
        if key is None:
            return
        given = request.headers.get("Authorization", "")
        given = given.removeprefix("Bearer ").strip() or request.headers.get("x-api-key", "")
        if given != key:
            raise self._error(401, "invalid API key")

    async def _body(self, request: web.Request) -> dict[str, Any]:
        self._auth(request)
        try:
            body = await request.json()
        except (ValueError, UnicodeDecodeError):
            raise self._error(400, "the request body is not valid JSON") from None
        if not isinstance(body, dict):
            raise self._error(400, "the request body must be a JSON object")
        return body

    async def _run(
        self,
        request: web.Request,
        req: _Request,
        stream: bool,
        write: Any,
    ) -> tuple[list[_Sample], Any]:
        """Admit, hold slots for the simulated time, and return the samples."""
        self.stats.requests += 1
        try:
            fault = await self._admit(request, req, stream)
        except asyncio.CancelledError:
            self.stats.cancelled += 1
            raise
        k = min(req.n, self.config.slots)
        self.stats.in_flight += 1
        try:
            samples = self._samples(req)
            self.stats.prompt_tokens += req.prompt_tokens
            self.stats.prompt_tokens_reused += req.prompt_tokens * (req.n - 1)
            self.stats.samples += req.n
            ttft, per_token = self._duration(req, samples, fault == "slow")
            if fault == "slow":
                self._count_fault("slow")
            result = await write(samples, ttft, per_token, fault == "cut_stream")
            self.stats.generated_tokens += sum(len(s.tokens) for s in samples)
            self.stats.completed += 1
            return samples, result
        except asyncio.CancelledError:
            self.stats.cancelled += 1
            raise
        finally:
            self.stats.in_flight -= 1
            self._slots.release(k)

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

    def _usage(self, req: _Request, samples: list[_Sample]) -> dict[str, int]:
        gen = sum(len(s.tokens) for s in samples)
        return {
            "prompt_tokens": req.prompt_tokens,
            "completion_tokens": gen,
            "total_tokens": req.prompt_tokens + gen,
        }

    def _chunk(
        self,
        rid: str,
        created: int,
        req: _Request,
        i: int,
        text: str,
        finish: str | None,
        chat: bool,
        tool_calls: list[dict[str, Any]] | None = None,
    ) -> bytes:
        choice: dict[str, Any] = {"index": i, "finish_reason": finish}
        if chat:
            choice["delta"] = {"content": text} if text else {}
            if tool_calls:
                choice["delta"]["tool_calls"] = tool_calls
        else:
            choice["text"] = text
        data = {
            "id": rid,
            "object": "chat.completion.chunk",
            "created": created,
            "model": req.model,
            "choices": [choice],
        }
        return b"data: " + json.dumps(data).encode() + b"\n\n"

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


_STATUS: dict[int, type[web.HTTPException]] = {
    400: web.HTTPBadRequest,
    401: web.HTTPUnauthorized,
    429: web.HTTPTooManyRequests,
    500: web.HTTPInternalServerError,
}


def _bound_port(site: web.TCPSite) -> int:
    """The port the OS picked for a site started on port 0."""
    server: Any = site._server
    return int(server.sockets[0].getsockname()[1])
