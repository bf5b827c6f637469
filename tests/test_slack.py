"""The Slack app: signed HTTP events into ``ponder serve``, Slack's Web API replaced by a
local fake (a real HTTP server) that records every call."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlencode

import httpx
import pytest_asyncio
from aiohttp import WSMsgType, web
from slack_sdk.signature import SignatureVerifier
from test_serve import serving

from ponder import GenerateParams, Message
from ponder.apps._serve_settings import ServeSettings
from ponder.apps.server import PonderServer
from ponder.testing import FakeModel
from ponder.workflows import Workflow, WorkflowSpec

SECRET = "8f742231b10e8888abcd99yyyzzz85a5"


@dataclass
class FakeSlack:
    """Slack's Web API on loopback: answers auth.test, chat.postMessage, chat.update, and
    apps.connections.open, whose WebSocket (``/link``) plays Slack's Socket Mode side:
    ``hello``, then the envelopes a test pushes; acknowledgements are recorded."""

    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    url: str = ""
    _n: int = 0
    sockets: list[web.WebSocketResponse] = field(default_factory=list)
    acks: list[str] = field(default_factory=list)
    connected: asyncio.Event = field(default_factory=asyncio.Event)

    async def link(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self.sockets.append(ws)
        await ws.send_json({"type": "hello", "num_connections": 1})
        self.connected.set()
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                self.acks.append(json.loads(msg.data)["envelope_id"])
        return ws

    async def push(self, envelope_id: str, payload: str, retry: int = 0) -> None:
        await self.sockets[-1].send_json(
            {"envelope_id": envelope_id, "type": "events_api", "payload": json.loads(payload),
             "accepts_response_payload": False, "retry_attempt": retry,
             "retry_reason": "timeout" if retry else ""}
        )  # fmt: skip

    async def handle(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        raw = await request.text()
        if request.content_type == "application/json":
            args = json.loads(raw or "{}")
        else:
            args = {k: v[0] for k, v in parse_qs(raw).items()}
        self.calls.append((method, args))
        if method == "auth.test":
            return web.json_response(
                {"ok": True, "user_id": "UBOT", "bot_id": "BBOT", "team_id": "T1", "user": "ponder"}
            )
        if method == "chat.postMessage":
            self._n += 1
            return web.json_response({"ok": True, "channel": args["channel"], "ts": f"9.{self._n}"})
        if method == "apps.connections.open":
            assert request.headers["Authorization"] == "Bearer xapp-test"
            return web.json_response({"ok": True, "url": self.url.replace("http", "ws") + "link"})
        if method == "chat.update":
            return web.json_response({"ok": True, "channel": args["channel"], "ts": args["ts"]})
        return web.json_response({"ok": False, "error": "unknown_method"})

    def of(self, method: str) -> list[dict[str, Any]]:
        return [a for m, a in self.calls if m == method]


@pytest_asyncio.fixture
async def fake_slack() -> AsyncIterator[FakeSlack]:
    fake = FakeSlack()
    app = web.Application()
    app.router.add_post("/api/{method}", fake.handle)
    app.router.add_get("/api/link", fake.link)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    fake.url = f"http://127.0.0.1:{port}/api/"
    yield fake
    for ws in fake.sockets:
        await ws.close()
    await runner.cleanup()


def echo_model() -> FakeModel:
    def respond(messages: Sequence[Message], _p: GenerateParams, _i: int) -> str:
        q = messages[-1].content
        return f"I read: {q!r}. The answer is \\boxed{{{len(q)}}}."

    return FakeModel(respond)


def workflow(name: str, model: FakeModel) -> Workflow:
    spec = WorkflowSpec.model_validate(
        {
            "name": name,
            "models": {"m": "vllm:m@http://127.0.0.1:9/v1"},
            "layers": [{"generate": {"n": 1}}, {"vote": {}}],
        }
    )
    return Workflow(spec, models={"m": model})


@pytest_asyncio.fixture
async def slack_server(
    fake_slack: FakeSlack,
) -> AsyncIterator[tuple[str, PonderServer, FakeModel]]:
    model = echo_model()
    settings = ServeSettings(
        slack_bot_token="xoxb-test",
        slack_signing_secret=SECRET,
        slack_api_url=fake_slack.url,
        slack_update_seconds=0,
    )
    server = PonderServer(
        {"alpha": workflow("alpha", model), "beta": workflow("beta", model)}, settings
    )
    async with serving(server) as base:
        yield base, server, model


def signed(body: str, *, secret: str = SECRET, age: float = 0) -> dict[str, str]:
    ts = str(int(time.time() - age))
    sig = SignatureVerifier(secret).generate_signature(timestamp=ts, body=body)
    assert sig is not None
    return {"X-Slack-Request-Timestamp": ts, "X-Slack-Signature": sig}


def mention(text: str, *, event_id: str, ts: str, thread_ts: str | None = None) -> str:
    event: dict[str, Any] = {
        "type": "app_mention",
        "user": "U1",
        "text": f"<@UBOT> {text}",
        "ts": ts,
        "channel": "C1",
        "team": "T1",
    }
    if thread_ts:
        event["thread_ts"] = thread_ts
    return json.dumps(
        {
            "token": "t",
            "team_id": "T1",
            "api_app_id": "A1",
            "type": "event_callback",
            "event_id": event_id,
            "event_time": int(time.time()),
            "event": event,
            "authorizations": [{"team_id": "T1", "user_id": "UBOT", "is_bot": True}],
        }
    )


async def post(
    base: str,
    body: str,
    *,
    headers: dict[str, str] | None = None,
    extra: dict[str, str] | None = None,
) -> httpx.Response:
    """POST an event to the app, signed with the app's secret unless ``headers`` say how;
    ``extra`` headers are added."""
    headers = signed(body) if headers is None else headers
    async with httpx.AsyncClient() as c:
        return await c.post(
            f"{base}/slack/events",
            content=body,
            headers={"Content-Type": "application/json", **headers, **(extra or {})},
        )


async def test_a_mention_is_answered_in_its_thread_and_updated(
    slack_server: tuple[str, PonderServer, FakeModel], fake_slack: FakeSlack
) -> None:
    base, server, _ = slack_server
    body = mention("what is 2 + 2?", event_id="Ev1", ts="100.1")
    r = await post(base, body)
    assert r.status_code == 200
    assert server.slack is not None
    await server.slack.drain()
    (first,) = fake_slack.of("chat.postMessage")
    assert first["thread_ts"] == "100.1"
    assert first["text"].startswith("Thinking")
    updates = fake_slack.of("chat.update")
    assert all(u["ts"] == "9.1" for u in updates)
    assert any("done" in u["text"] for u in updates[:-1])  # progress while it runs
    assert "what is 2 + 2?" in updates[-1]["text"]
    assert "\\boxed{" in updates[-1]["text"]


async def test_a_retried_event_runs_once(
    slack_server: tuple[str, PonderServer, FakeModel], fake_slack: FakeSlack
) -> None:
    base, server, model = slack_server
    body = mention("once only", event_id="Ev2", ts="200.1")
    first = await post(base, body)
    retry = await post(
        base, body, extra={"X-Slack-Retry-Num": "1", "X-Slack-Retry-Reason": "http_timeout"}
    )
    assert server.slack is not None
    await server.slack.drain()
    assert (first.status_code, retry.status_code) == (200, 200)
    assert len(fake_slack.of("chat.postMessage")) == 1
    assert len(model.calls) == 1


async def test_forged_or_stale_signatures_are_refused_and_nothing_runs(
    slack_server: tuple[str, PonderServer, FakeModel], fake_slack: FakeSlack
) -> None:
    base, server, model = slack_server
    body = mention("evil", event_id="Ev3", ts="300.1")
    forged = await post(base, body, headers=signed(body, secret="not-the-secret"))
    stale = await post(base, body, headers=signed(body, age=600))
    unsigned = await post(base, body, headers={})
    assert server.slack is not None
    await server.slack.drain()
    assert [forged.status_code, stale.status_code, unsigned.status_code] == [401, 401, 401]
    assert fake_slack.of("chat.postMessage") == []
    assert model.calls == []


async def test_a_thread_is_a_conversation(
    slack_server: tuple[str, PonderServer, FakeModel], fake_slack: FakeSlack
) -> None:
    base, server, model = slack_server
    assert server.slack is not None
    one = mention("my name is Ada", event_id="Ev4", ts="400.1")
    await post(base, one)
    await server.slack.drain()
    two = mention("what is my name?", event_id="Ev5", ts="400.2", thread_ts="400.1")
    await post(base, two)
    await server.slack.drain()
    prompt = model.calls[-1].messages[-1].content
    assert "user: my name is Ada" in prompt
    assert prompt.endswith("what is my name?")
    assert [p["thread_ts"] for p in fake_slack.of("chat.postMessage")] == ["400.1", "400.1"]


async def test_slash_command_picks_the_channel_workflow(
    slack_server: tuple[str, PonderServer, FakeModel], fake_slack: FakeSlack
) -> None:
    base, server, _ = slack_server
    form = urlencode(
        {"command": "/ponder", "text": "use beta", "channel_id": "C1", "user_id": "U1",
         "team_id": "T1", "response_url": fake_slack.url + "respond", "trigger_id": "x"}
    )  # fmt: skip
    headers = {**signed(form), "Content-Type": "application/x-www-form-urlencoded"}
    async with httpx.AsyncClient() as c:
        r = await c.post(f"{base}/slack/events", content=form, headers=headers)
        bad_form = form.replace("use+beta", "use+gamma")
        bad = await c.post(
            f"{base}/slack/events",
            content=bad_form,
            headers={**signed(bad_form), "Content-Type": "application/x-www-form-urlencoded"},
        )
    assert r.status_code == 200
    assert "now uses the workflow beta" in r.text
    assert "No workflow named 'gamma'" in bad.text
    body = mention("hello", event_id="Ev6", ts="600.1")
    await post(base, body)
    assert server.slack is not None
    await server.slack.drain()
    assert fake_slack.of("chat.postMessage")[-1]["text"] == "Thinking… (beta)"


async def test_socket_mode_answers_events_from_the_websocket_and_acks_them(
    fake_slack: FakeSlack,
) -> None:
    model = echo_model()
    settings = ServeSettings(  # no signing secret, no /slack/events: Socket Mode only
        slack_bot_token="xoxb-test",
        slack_app_token="xapp-test",
        slack_api_url=fake_slack.url,
        slack_update_seconds=0,
    )
    server = PonderServer({"alpha": workflow("alpha", model)}, settings)
    async with serving(server) as base:
        await asyncio.wait_for(fake_slack.connected.wait(), 10)
        body = mention("over the socket", event_id="EvS1", ts="700.1")
        await fake_slack.push("env-1", body)
        await fake_slack.push("env-2", body, retry=1)  # Slack re-sends: acked, not rerun
        for _ in range(200):
            if len(fake_slack.acks) == 2 and server.slack is not None and not server.slack._tasks:
                break
            await asyncio.sleep(0.02)
        assert server.slack is not None
        await server.slack.drain()
        async with httpx.AsyncClient() as c:
            http = await c.post(f"{base}/slack/events", content=body, headers=signed(body))
    assert fake_slack.acks == ["env-1", "env-2"]
    assert len(model.calls) == 1
    (first,) = fake_slack.of("chat.postMessage")
    assert first["thread_ts"] == "700.1"
    assert "over the socket" in fake_slack.of("chat.update")[-1]["text"]
    assert http.status_code == 404  # HTTP mode is off without a signing secret
    assert fake_slack.sockets[-1].closed  # shutdown closed the connection


async def test_shutdown_lets_an_answer_in_progress_finish(fake_slack: FakeSlack) -> None:
    slow = FakeModel(lambda m, _p, _i: "The answer is \\boxed{4}.", delay=0.5)
    settings = ServeSettings(
        slack_bot_token="xoxb-test",
        slack_signing_secret=SECRET,
        slack_api_url=fake_slack.url,
        graceful_shutdown_seconds=10,
    )
    server = PonderServer({"alpha": workflow("alpha", slow)}, settings)
    async with serving(server) as base:
        body = mention("slow one", event_id="EvG1", ts="800.1")
        assert (await post(base, body)).status_code == 200
        for _ in range(200):  # the run has started: the first reply is posted
            if fake_slack.of("chat.postMessage"):
                break
            await asyncio.sleep(0.01)
    # the server stopped while the model was still thinking; the answer was delivered
    assert fake_slack.of("chat.update")[-1]["text"] == "The answer is \\boxed{4}."


async def test_a_live_answer_is_written_into_the_slack_reply_as_it_comes(
    fake_slack: FakeSlack,
) -> None:
    """A workflow whose last step writes one answer: the reply is edited with the text so
    far while the model writes, and the last edit is the whole answer."""
    spec = WorkflowSpec.model_validate(
        {
            "name": "single",
            "models": {"m": "vllm:m@http://127.0.0.1:9/v1"},
            "layers": [{"generate": {"n": 1}}],
        }
    )
    settings = ServeSettings(
        slack_bot_token="xoxb-test",
        slack_signing_secret=SECRET,
        slack_api_url=fake_slack.url,
        slack_update_seconds=0,
    )
    server = PonderServer({"single": Workflow(spec, models={"m": echo_model()})}, settings)
    async with serving(server) as base:
        body = mention("stream me", event_id="EvLive", ts="300.1")
        assert (await post(base, body)).status_code == 200
        assert server.slack is not None
        await server.slack.drain()
    texts = [u["text"] for u in fake_slack.of("chat.update")]
    answer = texts[-1]
    assert "\\boxed{" in answer
    partial = [t for t in texts[:-1] if t and answer.startswith(t) and t != answer]
    assert len(partial) >= 2  # the reply grew word by word


async def test_a_slack_event_is_traced_under_the_requests_trace_context(
    slack_server: tuple[str, PonderServer, FakeModel], fake_slack: FakeSlack
) -> None:
    """With tracing on, an event delivered with a W3C ``traceparent`` becomes a
    ``slack.event`` span in that trace (team, channel, user, event id), and the workflow's
    run span is its child."""
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from ponder import tracing

    exporter = InMemorySpanExporter()
    tracing.configure(exporter, batch=False)
    try:
        base, server, _ = slack_server
        body = mention("what is 3 + 3?", event_id="EvTrace", ts="300.1")
        trace_id = "0af7651916cd43dd8448eb211c80319c"
        parent = f"00-{trace_id}-b7ad6b7169203331-01"
        r = await post(base, body, extra={"traceparent": parent})
        assert r.status_code == 200
        assert server.slack is not None
        await server.slack.drain()
    finally:
        tracing.shutdown()
    found = exporter.get_finished_spans()
    (event,) = [s for s in found if s.name.startswith("slack.event")]
    assert event.name == "slack.event app_mention"
    assert format(event.context.trace_id, "032x") == trace_id
    assert event.parent is not None
    assert format(event.parent.span_id, "016x") == "b7ad6b7169203331"
    attrs = dict(event.attributes or {})
    assert attrs["slack.event_id"] == "EvTrace"
    assert (attrs["slack.team"], attrs["slack.channel"], attrs["slack.user"]) == ("T1", "C1", "U1")
    (run,) = [s for s in found if s.name.startswith("ponder.run")]
    assert run.parent is not None
    assert run.parent.span_id == event.context.span_id
    assert any(s.name.startswith("chat ") for s in found)
