"""The stand-in server's simulation: its configuration and statistics, the batch slots
and bounded queue, the requests it parses, the time a request takes, the faults it
injects, and the samples the oracle gives (:mod:`ponder.testing.server` serves them)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import re
from collections import deque
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from ponder.testing.oracle import OracleConfig, ProblemBank, respond, schema_reply, tool_reply

__all__ = ["StandinConfig", "StandinCore", "StandinStats", "count_tokens"]

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


@dataclass
class _Request:
    """The parts of a request the simulation needs, from either API."""

    model: str
    system: str
    user: str
    prefill: str
    n: int
    max_tokens: int | None
    stop: list[str]
    seed: int | None
    logprobs: bool = False
    tools: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> JSON Schema
    tool_choice: str | None = None
    results: list[str] = field(default_factory=list)  # tool results since the last user turn
    schema: dict[str, Any] | None = None  # response_format's schema ({} = any JSON)
    prompt_tokens: int = field(init=False)

    def __post_init__(self) -> None:
        self.prompt_tokens = sum(map(count_tokens, (self.system, self.user, self.prefill)))


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


_STATUS: dict[int, type[web.HTTPException]] = {
    400: web.HTTPBadRequest,
    401: web.HTTPUnauthorized,
    429: web.HTTPTooManyRequests,
    500: web.HTTPInternalServerError,
}


class StandinCore:
    """The simulation every route of the stand-in shares (its HTTP side is
    :class:`ponder.testing.StandinServer`)."""

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
