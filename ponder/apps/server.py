"""``ponder serve``: each workflow as an OpenAI-compatible model, the run's events as a
stream, a web chat page, and (when configured) the Slack app, in one Starlette app.

    ponder serve --workflows examples/workflows --port 8080
    client = openai.OpenAI(base_url="http://127.0.0.1:8080/v1", api_key="k1")
    client.chat.completions.create(model="adaptive-self-consistency", messages=[...])

See docs/serve.md.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from contextlib import aclosing, asynccontextmanager
from importlib import resources
from pathlib import Path
from typing import Any

import orjson
from pydantic import ValidationError
from sse_starlette.sse import EventSourceResponse
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from ponder import tracing
from ponder._redact import register_secret
from ponder.agents import Pool, Spend
from ponder.apps._api import (
    ApiError,
    ChatRequest,
    _depth,
    _first_error,
    openapi_schema,
    usage_dict,
)
from ponder.apps._callers import Callers, client_id
from ponder.apps._limits import Limits
from ponder.apps._runs import (
    FastJSON,
    RunRecord,
    answer_evidence,
    event_dict,
    tool_calls_response,
    until_disconnect,
    workflow_layout,
)
from ponder.apps._serve_settings import ServeSettings
from ponder.apps._service import answer_texts, load_workflows
from ponder.backends import Budget
from ponder.engine import RedisBudget
from ponder.errors import ConfigurationError, ParseError, PonderError
from ponder.graphs import GraphResult
from ponder.types import Message, ToolSpec
from ponder.workflows import ToolTurn, Workflow, tool_turn, typed_answer

__all__ = [
    "ChatRequest",
    "PonderServer",
    "RunRecord",
    "answer_texts",
    "load_workflows",
    "openapi_schema",
]

log = logging.getLogger("ponder.serve")


_WEB = Path(str(resources.files("ponder.apps") / "web"))
_PAGE_CSP = (
    "default-src 'none'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "font-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'"
)


# -- the server ----------------------------------------------------------------------------


class PonderServer:
    """The Starlette app (``.app``) over named workflows."""

    def __init__(
        self, workflows: Mapping[str, Workflow], settings: ServeSettings | None = None
    ) -> None:
        if not workflows:
            from ponder.errors import ConfigurationError

            raise ConfigurationError("ponder serve needs at least one workflow")
        self.workflows = dict(workflows)
        self.settings = settings or ServeSettings()
        self.limits = Limits(self.settings)
        self.runs: OrderedDict[str, RunRecord] = OrderedDict()
        self._runs_at_once: asyncio.Semaphore | None = None  # made in the serving loop
        self.callers = Callers(self.settings)
        for secret in (
            *self.callers.keys,
            *(
                t.get_secret_value() if t is not None else None
                for t in (self.settings.slack_bot_token, self.settings.slack_signing_secret,
                          self.settings.slack_app_token)
            ),
        ):  # fmt: skip
            register_secret(secret)  # never in an error body, event, log or span
        self.slack: Any = None
        routes = [
            Route("/", self.page),
            Route("/health", self.health),
            Route("/v1/models", self.models),
            Route("/v1/chat/completions", self.chat, methods=["POST"]),
            Route("/v1/runs/{run_id}/events", self.run_events),
            Route("/openapi.json", self.openapi),
            # the page's Markdown, LaTeX and code-highlighting libraries, shipped in the
            # package (VERSIONS.json beside them): no CDN
            Mount("/vendor", StaticFiles(directory=str(_WEB / "vendor")), name="vendor"),
        ]
        st = self.settings
        if st.slack_bot_token and (st.slack_signing_secret or st.slack_app_token):
            from ponder.apps.slack import SlackBot

            self.slack = SlackBot(self)
            if st.slack_signing_secret:
                routes.append(Route("/slack/events", self.slack.handle, methods=["POST"]))
        middleware = []
        if self.settings.cors_origins:
            middleware.append(
                Middleware(
                    CORSMiddleware,
                    allow_origins=self.settings.cors_origins,
                    allow_methods=["GET", "POST"],
                    allow_headers=["Authorization", "Content-Type"],
                )
            )
        self.app = Starlette(
            routes=routes,
            middleware=middleware,
            lifespan=self._lifespan,
            exception_handlers={ApiError: self._api_error},
        )

    @asynccontextmanager
    async def _lifespan(self, _app: Starlette) -> AsyncIterator[None]:
        if not self.callers.keys:
            who = (
                "everyone (PONDER_SERVE_ALLOW_OPEN_REMOTE)"
                if self.settings.allow_open_remote
                else "clients on this machine only"
            )
            log.warning(
                "ponder serve: no API keys set (PONDER_SERVE_API_KEYS); the API is open to %s",
                who,
            )
        if self.slack is not None and self.settings.slack_app_token:
            await self.slack.connect_socket_mode()
        yield
        if self.slack is not None:
            # stop taking events, let answers in progress finish (their model calls are
            # cached as they complete), then cancel what is left
            await self.slack.aclose(grace=self.settings.graceful_shutdown_seconds)
        await self.limits.aclose()

    def _admission(self) -> asyncio.Semaphore:
        """Runs at once: ``max_concurrent_runs``, or by default what the workflows'
        endpoints can serve (ponder.eval.admission: their slots, 8-1024)."""
        if self._runs_at_once is None:
            n = self.settings.max_concurrent_runs
            if n is None:
                from ponder.eval import admission

                n = admission(*self.workflows.values())
            self._runs_at_once = asyncio.Semaphore(n)
        return self._runs_at_once

    @staticmethod
    async def _api_error(_request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiError)
        return exc.response()

    # -- plumbing --

    client_id = staticmethod(client_id)

    @asynccontextmanager
    async def running(self, host: str = "127.0.0.1") -> AsyncIterator[str]:
        """This server under uvicorn on a free port of ``host``, inside the running event
        loop (tests, notebooks, examples): yields its base URL, stops it on exit.

        >>> async with server.running() as base:          # doctest: +SKIP
        ...     client = openai.AsyncOpenAI(base_url=f"{base}/v1", api_key="k")
        """
        import socket

        import uvicorn

        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        sock.bind((host, 0))
        port = sock.getsockname()[1]
        config = uvicorn.Config(self.app, log_level="warning", lifespan="on",
                                **self.uvicorn_options())  # fmt: skip
        server = uvicorn.Server(config)
        task = asyncio.create_task(server.serve(sockets=[sock]))
        try:
            while not server.started:  # uvicorn exposes a flag, not an event
                if task.done():
                    task.result()  # it failed to start: raise why
                    raise ConfigurationError("the server stopped before it started")
                await asyncio.sleep(0.01)
            yield f"http://{host if ':' not in host else f'[{host}]'}:{port}"
        finally:
            server.should_exit = True
            await task
            sock.close()

    def uvicorn_options(self) -> dict[str, Any]:
        """How uvicorn must run this app: X-Forwarded-For believed only from the configured
        proxies (uvicorn's default believes any loopback peer, which would let a local
        client pick the address its rate limit counts)."""
        proxies = self.settings.trusted_proxies
        if not proxies:
            return {"proxy_headers": False}
        return {"proxy_headers": True, "forwarded_allow_ips": ",".join(proxies)}

    async def _body(self, request: Request) -> Any:
        ctype = request.headers.get("content-type", "")
        if ctype.split(";", 1)[0].strip().lower() != "application/json":
            # a browser sends text/plain cross-origin without asking (no CORS preflight)
            raise ApiError(
                415,
                f"send the body as Content-Type: application/json (got {ctype or 'none'!r})",
                code="unsupported_media_type",
            )
        limit = self.settings.max_body_bytes
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            raise ApiError(413, f"request body over {limit} bytes", code="request_too_large")
        raw = bytearray()
        async for chunk in request.stream():
            raw += chunk
            if len(raw) > limit:
                raise ApiError(413, f"request body over {limit} bytes", code="request_too_large")
        try:
            body = orjson.loads(raw)  # C parser; nesting past 1024 is an error, not a crash
        except orjson.JSONDecodeError as e:
            raise ApiError(400, f"the body is not valid JSON: {e}", code="invalid_json") from e
        depth = _depth(body)
        if depth > self.settings.max_json_depth:
            raise ApiError(
                400,
                f"the body is nested {depth} levels deep; at most "
                f"{self.settings.max_json_depth} are accepted",
                code="invalid_json",
            )
        return body

    def _record(self, owner: str, model: str) -> RunRecord:
        rec = RunRecord(f"run-{uuid.uuid4().hex[:16]}", owner, model)
        self.runs[rec.id] = rec
        while len(self.runs) > self.settings.runs_kept:
            self.runs.popitem(last=False)
        return rec

    @property
    def redis(self) -> Any | None:
        """The Redis client the limits use (shared with the Slack app), or None."""
        return self.limits._redis

    async def execute(
        self, workflow: str, pool: Pool, owner: str, trace: Any = None, live: bool = False
    ) -> AsyncGenerator[tuple[RunRecord, dict[str, Any], GraphResult[Pool] | None], None]:
        """Run ``workflow`` on ``pool``: yields (record, event, result on the last event).
        Used by every front end; the run's model calls are cancelled if the consumer
        stops iterating (e.g. a client disconnects). ``trace`` is the caller's trace
        context (:func:`ponder.tracing.extract` of its ``traceparent``): the run's spans
        continue that trace. ``live``: the answer's text comes as ``token`` events while
        the last step writes it (:meth:`Workflow.aevents`)."""
        rec = self._record(owner, workflow)
        try:
            async with self._admission():
                key_budget = self.limits.budget(owner)
                pairs = self.workflows[workflow].aevents(
                    pool, budgets=(key_budget,) if key_budget is not None else (), live=live
                )
                async with aclosing(pairs):
                    while True:
                        with tracing.attached(trace):  # the run's span starts in here
                            try:
                                event, result = await anext(pairs)
                            except StopAsyncIteration:
                                break
                        d = event_dict(event)
                        if result is not None:
                            d["data"] = {**d["data"], "final": result.output.final}
                            d["data"]["tokens"] = result.output.spend.total_tokens
                            d["data"]["cost"] = result.output.spend.cost
                            d["data"]["cached_tokens"] = result.output.spend.cached_tokens
                            d["data"]["saved_cost"] = result.output.spend.saved_cost
                            d["data"].update(answer_evidence(result.output))
                        rec.add(d)
                        yield rec, d, result
        finally:
            rec.finish()

    # -- routes --

    async def openapi(self, _request: Request) -> Response:
        return JSONResponse(openapi_schema(self.workflows))

    async def health(self, _request: Request) -> Response:
        return JSONResponse({"status": "ok", "workflows": sorted(self.workflows)})

    async def page(self, _request: Request) -> Response:
        html = (_WEB / "index.html").read_text()
        # model output is rendered as Markdown: scripts and styles only from this server
        # (inline ones are the page's own), and no image or request to anywhere else, so a
        # hostile answer cannot load a tracking image or send the conversation away
        return HTMLResponse(html, headers={"Content-Security-Policy": _PAGE_CSP})

    async def models(self, request: Request) -> Response:
        self.callers.identify(request)
        data = [
            {
                "id": name,
                "object": "model",
                "created": 0,
                "owned_by": "ponder",
                # the pipeline's layout, for the chat page's graph (clients ignore it)
                "ponder": workflow_layout(self.workflows[name]),
            }
            for name in sorted(self.workflows)
        ]
        return JSONResponse({"object": "list", "data": data})

    async def run_events(self, request: Request) -> Response:
        who = self.callers.identify(request)
        rec = self.runs.get(request.path_params["run_id"])
        if rec is None or (self.callers.keys and rec.owner != who):
            raise ApiError(404, "no such run (runs are kept for a while)", code="run_not_found")

        async def stream() -> AsyncIterator[dict[str, str]]:
            async for e in rec.follow():
                yield {"event": e["kind"], "data": json.dumps(e, default=str)}
            yield {"event": "end", "data": "{}"}

        return EventSourceResponse(stream(), ping=15)

    async def chat(self, request: Request) -> Response:
        who = self.callers.identify(request)
        await self.limits.hit(who)
        body = await self._body(request)
        if not isinstance(body, dict):
            raise ApiError(400, "the body must be a JSON object", code="invalid_body")
        try:
            req = ChatRequest.model_validate(body)
            refused = req.unsupported()
            if refused is not None:  # refused, never silently ignored
                field, why = refused
                raise ApiError(400, f"unsupported field {field}: {why}", code="unsupported_field")
            tools, choice, parallel = req.client_tools()
            toolish = bool(tools) or req.tool_turns()
            messages = req.to_messages() if toolish else []
            pool = req.to_pool()
        except ValidationError as e:
            raise ApiError(
                422, f"invalid request: {_first_error(e)}", code="invalid_request"
            ) from e
        except ValueError as e:
            raise ApiError(422, f"invalid request: {e}", code="invalid_request") from e
        if req.model not in self.workflows:
            known = ", ".join(sorted(self.workflows))
            raise ApiError(
                404,
                f"no workflow named {req.model!r}; GET /v1/models lists them ({known})",
                code="model_not_found",
            )
        if toolish and req.n != 1:
            raise ApiError(400, "unsupported field n: a tool conversation has one candidate per "
                           "turn; leave n out", code="unsupported_field")  # fmt: skip
        await self.limits.check_budget(who)
        turn = ToolTurn(())
        if tools and choice != "none":
            turn = await self._tool_turn(req, messages, tools, choice, parallel, who)
            if turn.calls:
                return self._tool_calls(req, turn, who)
        if req.stream:
            return self._stream(request, req, pool, who, turn.spend)
        created = int(time.time())
        result: GraphResult[Pool] | None = None
        record: RunRecord | None = None
        try:
            async for rec, _e, res in until_disconnect(
                request, self.execute(req.model, pool, who, tracing.extract(request.headers))
            ):
                record, result = rec, res or result
        except Exception as e:
            log.exception("run of %s failed", req.model)
            raise ApiError(
                500, f"the workflow failed: {type(e).__name__}: {e}", type_="server_error"
            ) from e
        assert result is not None
        assert record is not None
        return FastJSON(
            await self._completion(req, result, record, who, created, turn.spend),
            headers={"X-Ponder-Run-Id": record.id},
        )

    def _key_budgets(self, who: str) -> tuple[Budget | RedisBudget, ...]:
        b = self.limits.budget(who)
        return (b,) if b is not None else ()

    async def _tool_turn(
        self,
        req: ChatRequest,
        messages: list[Message],
        tools: tuple[ToolSpec, ...],
        choice: str | None,
        parallel: bool | None,
        who: str,
    ) -> ToolTurn:
        """The workflow's lead step samples this turn with the client's tools."""
        try:
            async with self._admission():
                return await tool_turn(
                    self.workflows[req.model],
                    messages,
                    tools,
                    choice,
                    parallel_tool_calls=parallel,
                    budgets=self._key_budgets(who),
                )
        except ParseError as e:
            raise ApiError(502, str(e), type_="server_error", code="no_tool_call") from e
        except PonderError as e:
            if await self.limits.exhausted(who):
                raise self.limits._quota_error() from e
            log.warning("tool turn of %s failed: %s", req.model, e)
            raise ApiError(
                502, f"the tool turn failed: {type(e).__name__}: {e}", type_="server_error"
            ) from e

    def _tool_calls(self, req: ChatRequest, turn: ToolTurn, who: str) -> Response:
        """The turn's tool calls, in OpenAI's shape (streamed as deltas when asked)."""
        return tool_calls_response(req, turn, self._record(who, req.model))

    async def _formatted(
        self, req: ChatRequest, pool: Pool, texts: list[str], who: str
    ) -> tuple[list[str], Spend]:
        """``texts`` written as the JSON the client's ``response_format`` asks for."""
        wanted, schema = req.answer_format()
        if not wanted:
            return texts, Spend()
        wf = self.workflows[req.model]
        try:
            async with asyncio.TaskGroup() as tg:
                tasks = [
                    tg.create_task(
                        typed_answer(wf, pool.query, t, schema, budgets=self._key_budgets(who))
                    )
                    for t in texts
                ]
        except* PonderError as eg:
            e = eg.exceptions[0]
            raise ApiError(
                502, f"the answer could not be written in the requested format: {e}",
                type_="server_error", code="invalid_output",
            ) from e  # fmt: skip
        done = [t.result() for t in tasks]
        spend = Spend()
        for _, s in done:
            spend = spend + s
        return [text for text, _ in done], spend

    async def _completion(
        self,
        req: ChatRequest,
        result: GraphResult[Pool],
        rec: RunRecord,
        who: str,
        created: int,
        before: Spend | None = None,
    ) -> dict[str, Any]:
        out = result.output
        texts = answer_texts(out, req.n)
        if not texts:
            if await self.limits.exhausted(who):
                raise self.limits._quota_error()
            why = "; ".join(f"{k}: {v}" for k, v in result.failures.items()) or "no answer"
            raise ApiError(
                502, f"the workflow produced no answer ({why}); run {rec.id}", type_="server_error"
            )
        texts, formatting = await self._formatted(req, out, texts, who)
        spend = out.spend + formatting + (before or Spend())
        return {
            "id": rec.id,
            "object": "chat.completion",
            "created": created,
            "model": req.model,
            "choices": [
                {
                    "index": i,
                    "message": {"role": "assistant", "content": t},
                    "finish_reason": "stop",
                }
                for i, t in enumerate(texts)
            ],
            "usage": usage_dict(spend),
            "ponder": {
                "run_id": rec.id,
                "final": out.final,
                "cost": spend.cost,
                "saved_cost": spend.saved_cost,
            },
        }

    def _stream(
        self, request: Request, req: ChatRequest, pool: Pool, who: str, before: Spend
    ) -> Response:
        created = int(time.time())
        usage_wanted = bool((req.stream_options or {}).get("include_usage"))
        typed = req.answer_format()[0]  # the JSON is written after the run: nothing live

        def chunk(rid: str, choices: list[dict[str, Any]], **extra: Any) -> str:
            body = {
                "id": rid,
                "object": "chat.completion.chunk",
                "created": created,
                "model": req.model,
                "choices": choices,
                **extra,
            }
            return f"data: {json.dumps(body, default=str)}\n\n"

        async def events() -> AsyncIterator[str]:
            result: GraphResult[Pool] | None = None
            rid = ""
            streamed = False
            try:
                run = self.execute(
                    req.model,
                    pool,
                    who,
                    tracing.extract(request.headers),
                    live=req.n == 1 and not typed,
                )
                async for rec, e, res in until_disconnect(request, run):
                    if e["kind"] == "token":  # the answer, as the last step writes it
                        streamed = True
                        yield chunk(
                            rid,
                            [{"index": 0, "delta": {"content": e["data"]["text"]},
                              "finish_reason": None}],
                        )  # fmt: skip
                        continue
                    if not rid:
                        rid = rec.id
                        yield chunk(
                            rid,
                            [
                                {
                                    "index": i,
                                    "delta": {"role": "assistant", "content": ""},
                                    "finish_reason": None,
                                }
                                for i in range(req.n)
                            ],
                            ponder={"run_id": rid},
                        )
                    yield chunk(rid, [], ponder={"event": e})
                    result = res or result
            except Exception as e:  # the run crashed: tell this client, keep serving
                log.exception("run of %s failed", req.model)
                err = {
                    "message": f"the workflow failed: {type(e).__name__}: {e}",
                    "type": "server_error",
                }
                yield f"data: {json.dumps({'error': err})}\n\n"
                return
            assert result is not None
            out = result.output
            texts = answer_texts(out, req.n)
            if not texts:
                why = "; ".join(f"{k}: {v}" for k, v in result.failures.items()) or "no answer"
                err = {
                    "message": f"the workflow produced no answer ({why})",
                    "type": "server_error",
                }
                yield f"data: {json.dumps({'error': err})}\n\n"
                return
            try:
                texts, formatting = await self._formatted(req, out, texts, who)
            except ApiError as e:
                yield f"data: {json.dumps({'error': {'message': e.message, 'type': e.type}})}\n\n"
                return
            spend = out.spend + formatting + before
            for i, text in enumerate(texts):
                if streamed and i == 0:
                    continue  # already sent, as it was written
                for k in range(0, len(text), 24):
                    piece = text[k : k + 24]
                    yield chunk(
                        rid, [{"index": i, "delta": {"content": piece}, "finish_reason": None}]
                    )
            yield chunk(
                rid,
                [{"index": i, "delta": {}, "finish_reason": "stop"} for i in range(len(texts))],
                ponder={"final": out.final, "cost": spend.cost},
            )
            if usage_wanted:
                yield chunk(rid, [], usage=usage_dict(spend))
            yield "data: [DONE]\n\n"

        return StreamingResponse(
            events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
        )
