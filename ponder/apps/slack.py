"""The Slack app: answers mentions and direct messages in threads, on slack-bolt (async):
HTTP events mode at ``/slack/events`` of ``ponder serve``, Socket Mode, or both.

* A first reply ("Thinking…") is posted at once, then updated as the run progresses and
  replaced by the answer.
* Each Slack thread is a conversation: earlier turns go with the question.
* Slack re-sends an event it thinks was missed (``X-Slack-Retry-Num``); each ``event_id``
  runs once (remembered in memory, or in Redis when ``redis_url`` is set, so several
  servers agree).
* ``/ponder list`` shows the workflows, ``/ponder use NAME`` picks one for the channel.
* Request signatures are verified by Bolt (forged or stale: 401, nothing runs).

Configure with ``PONDER_SERVE_SLACK_BOT_TOKEN`` and ``PONDER_SERVE_SLACK_SIGNING_SECRET``
(HTTP mode) and/or ``PONDER_SERVE_SLACK_APP_TOKEN`` (Socket Mode: the server opens a
WebSocket to Slack, no public URL needed); see docs/serve.md. ``slack_api_url`` points
the Web API client elsewhere (tests use a local fake, WebSocket included).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections import OrderedDict
from contextvars import ContextVar
from typing import Any

from slack_bolt.adapter.starlette.async_handler import AsyncSlackRequestHandler
from slack_bolt.app.async_app import AsyncApp
from slack_bolt.response import BoltResponse
from slack_sdk.web.async_client import AsyncWebClient
from starlette.requests import Request
from starlette.responses import Response

from ponder import tracing
from ponder.agents import Pool
from ponder.apps._service import RunService, answer_texts

__all__ = ["SlackBot"]

log = logging.getLogger("ponder.slack")
_MENTION = re.compile(r"<@[A-Z0-9]+>\s*")
_ORIGIN: ContextVar[tuple[Any, str | None]] = ContextVar("ponder_slack", default=(None, None))
"""The delivering request's trace context and the event id, for the listener's run."""


class SlackBot:
    """Slack front end over a run service's workflows (:class:`RunService`; the
    :class:`ponder.apps.server.PonderServer` is one)."""

    def __init__(self, server: RunService) -> None:
        s = server.settings
        assert s.slack_bot_token is not None
        assert s.slack_signing_secret is not None or s.slack_app_token is not None
        self.server = server
        self.client = AsyncWebClient(
            token=s.slack_bot_token.get_secret_value(), base_url=s.slack_api_url
        )
        secret = s.slack_signing_secret
        self.app = AsyncApp(
            signing_secret=secret.get_secret_value() if secret is not None else None,
            request_verification_enabled=secret is not None,
            client=self.client,
            process_before_response=False,
        )
        self.handler = AsyncSlackRequestHandler(self.app)
        self.socket: Any = None
        self.threads: OrderedDict[tuple[str, str], list[tuple[str, str]]] = OrderedDict()
        self.channel_workflow: dict[str, str] = {}
        self._seen: OrderedDict[str, float] = OrderedDict()
        self._tasks: set[asyncio.Task[None]] = set()
        self.app.middleware(self._once)
        self.app.event("app_mention")(self._on_mention)
        self.app.event("message")(self._on_message)
        self.app.command("/ponder")(self._on_command)

    async def handle(self, request: Request) -> Response:
        return await self.handler.handle(request)

    async def connect_socket_mode(self) -> None:
        """Open the Socket Mode connection (``slack_app_token``): Slack sends events over
        it and Bolt acknowledges each envelope; the same listeners answer them."""
        from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler

        token = self.server.settings.slack_app_token
        assert token is not None
        self.socket = AsyncSocketModeHandler(
            self.app, token.get_secret_value(), web_client=self.client
        )
        await self.socket.connect_async()
        log.info("slack: Socket Mode connected")

    async def aclose(self, grace: float = 0.0) -> None:
        """Stop taking events; give answers in progress ``grace`` seconds, cancel the rest."""
        if self.socket is not None:
            await self.socket.close_async()
            self.socket = None
        if grace > 0 and self._tasks:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.drain(), grace)
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def drain(self) -> None:
        """Wait for the answers in progress (tests, graceful shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    # -- retries --

    async def _first_time(self, event_id: str) -> bool:
        redis = self.server.redis
        if redis is not None:
            return bool(await redis.set(f"ponder:slack:event:{event_id}", "1", nx=True, ex=3600))
        if event_id in self._seen:
            return False
        self._seen[event_id] = time.time()
        while len(self._seen) > 10_000:
            self._seen.popitem(last=False)
        return True

    async def _once(self, body: dict[str, Any], request: Any, next: Any) -> BoltResponse | None:
        event_id = body.get("event_id")
        if isinstance(event_id, str) and not await self._first_time(event_id):
            log.info("slack: event %s already handled (a retry); not running it again", event_id)
            return BoltResponse(status=200, body="")
        # the listener (started from here, so in a copy of this context) traces its run as a
        # child of the delivering request's W3C trace context, when it carried one
        headers = {k: v[0] for k, v in (getattr(request, "headers", None) or {}).items() if v}
        _ORIGIN.set((tracing.extract(headers), event_id if isinstance(event_id, str) else None))
        await next()
        return None

    # -- listeners --

    async def _on_mention(self, event: dict[str, Any]) -> None:
        self._start(event)

    async def _on_message(self, event: dict[str, Any]) -> None:
        if event.get("channel_type") != "im" or event.get("bot_id") or event.get("subtype"):
            return
        self._start(event)

    async def _on_command(self, ack: Any, command: dict[str, Any]) -> None:
        words = (command.get("text") or "").split()
        names = sorted(self.server.workflows)
        channel = command.get("channel_id", "")
        if words[:1] == ["use"] and len(words) == 2:
            if words[1] not in self.server.workflows:
                await ack(f"No workflow named {words[1]!r}. Known: {', '.join(names)}")
                return
            self.channel_workflow[channel] = words[1]
            await ack(f"This channel now uses the workflow {words[1]}.")
            return
        current = self.channel_workflow.get(channel, names[0])
        await ack(
            f"Workflows: {', '.join(names)} (this channel: {current}). "
            "Pick one with `/ponder use NAME`."
        )

    def _start(self, event: dict[str, Any]) -> None:
        task = asyncio.create_task(self._answer(event, *_ORIGIN.get()))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _answer(
        self, event: dict[str, Any], trace: Any = None, event_id: str | None = None
    ) -> None:
        """Answer one message; with tracing on, the run is a child of a ``slack.event``
        span (team, channel, user, thread, event id) under the request's trace context."""
        span = None
        if tracing.enabled():
            with tracing.attached(trace):
                span = tracing.start(f"slack.event {event.get('type', 'message')}", {
                    "slack.event_id": event_id, "slack.team": event.get("team"),
                    "slack.channel": event.get("channel"), "slack.user": event.get("user"),
                    "slack.thread_ts": event.get("thread_ts") or event.get("ts")})  # fmt: skip
        try:
            await self._reply(event, span)
        except BaseException as e:
            if span is not None:
                span.record_exception(e)
            raise
        finally:
            if span is not None:
                span.end()

    async def _reply(self, event: dict[str, Any], span: Any) -> None:
        channel = str(event.get("channel", ""))
        thread = str(event.get("thread_ts") or event.get("ts") or "")
        question = _MENTION.sub("", str(event.get("text", ""))).strip()
        if not question:
            return
        workflow = self.channel_workflow.get(channel, sorted(self.server.workflows)[0])
        first = await self.client.chat_postMessage(
            channel=channel, thread_ts=thread, text=f"Thinking… ({workflow})"
        )
        ts = str(first["ts"])
        history = self.threads.setdefault((channel, thread), [])
        self.threads.move_to_end((channel, thread))
        while len(self.threads) > 5000:
            self.threads.popitem(last=False)
        query = question
        if history:
            lines = "\n".join(f"{who}: {text}" for who, text in history[-10:])
            query = f"Earlier in this conversation:\n{lines}\n\n{question}"
        owner = f"slack:{event.get('team', '')}:{event.get('user', '')}"
        last_update = 0.0
        final: Pool | None = None
        written = ""  # the live answer so far
        run = self.server.execute(workflow, Pool(query=query), owner, trace=span, live=True)
        try:
            async for _rec, e, res in run:
                if res is not None:
                    final = res.output
                elif e["kind"] == "token":  # the answer as it is written: edit the reply
                    written += e["data"]["text"]
                    now = time.monotonic()
                    if now - last_update >= self.server.settings.slack_update_seconds:
                        last_update = now
                        await self.client.chat_update(channel=channel, ts=ts, text=written)
                elif e["kind"] == "node_finished":
                    now = time.monotonic()
                    if now - last_update >= self.server.settings.slack_update_seconds:
                        last_update = now
                        d = e["data"]
                        await self.client.chat_update(
                            channel=channel,
                            ts=ts,
                            text=f"Thinking… {e['node']} done "
                            f"({d.get('candidates', 0)} candidates, {d.get('tokens', 0)} tokens)",
                        )
        except Exception as exc:
            log.exception("slack: run failed")
            await self.client.chat_update(
                channel=channel, ts=ts, text=f"Sorry, the workflow failed: {exc}"
            )
            return
        texts = answer_texts(final, 1) if final is not None else []
        answer = texts[0] if texts else "Sorry, the workflow produced no answer."
        await self.client.chat_update(channel=channel, ts=ts, text=answer)
        history += [("user", question), ("assistant", answer)]
