"""What ``ponder serve`` keeps and sends of a run: its record of events (followed live or
read after it ended), a stream that stops when the client leaves, the shapes the page
and the API read (a workflow's layout, the vote and candidates behind an answer), and a
tool turn's calls as a chat completion."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from ponder.agents import Pool
from ponder.apps._api import ChatRequest, usage_dict
from ponder.graphs import Event
from ponder.workflows import ToolTurn, Workflow

__all__ = [
    "FastJSON",
    "RunRecord",
    "answer_evidence",
    "event_dict",
    "tool_calls_response",
    "until_disconnect",
    "workflow_layout",
]

log = logging.getLogger("ponder.serve")


class RunRecord:
    """A run's events (kept after it ends, for ``/v1/runs/{id}/events``)."""

    def __init__(self, run_id: str, owner: str, model: str) -> None:
        self.id, self.owner, self.model = run_id, owner, model
        self.events: list[dict[str, Any]] = []
        self.done = False
        self._waiters: list[asyncio.Future[None]] = []  # followers waiting for news

    def _wake(self) -> None:
        if self._waiters:
            waiters, self._waiters = self._waiters, []
            for w in waiters:
                if not w.done():
                    w.set_result(None)

    def add(self, event: dict[str, Any]) -> None:
        # a plain append: a run nobody follows pays no lock per event
        self.events.append(event)
        self._wake()

    def finish(self) -> None:
        self.done = True
        self._wake()

    async def follow(self) -> AsyncIterator[dict[str, Any]]:
        """Every event so far, then the new ones until the run ends."""
        i = 0
        while True:
            if i < len(self.events):
                fresh = self.events[i:]
                i += len(fresh)
                for e in fresh:
                    yield e
                continue
            if self.done:
                return
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            await waiter


async def until_disconnect(request: Request, items: AsyncIterator[Any]) -> AsyncIterator[Any]:
    """``items``, but stop (cancelling the producer, hence the run's model calls) as soon as
    the client disconnects, even while the run is between events."""
    queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()

    async def produce() -> None:
        try:
            async with aclosing(items):  # type: ignore[type-var]
                async for item in items:
                    queue.put_nowait(("item", item))
        except Exception as e:
            queue.put_nowait(("error", e))
        finally:
            queue.put_nowait(("end", None))

    async def watch() -> None:
        while True:
            message = await request.receive()
            if message["type"] == "http.disconnect":
                log.info("client disconnected; cancelling its run")
                run.cancel()
                return

    run = asyncio.create_task(produce())
    watcher = asyncio.create_task(watch())
    try:
        while True:
            kind, value = await queue.get()
            if kind == "end":
                return
            if kind == "error":
                raise value
            yield value
    finally:
        watcher.cancel()
        run.cancel()
        await asyncio.gather(run, watcher, return_exceptions=True)


class FastJSON(JSONResponse):
    """JSON rendered by orjson (a chat completion's body in a few microseconds)."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, default=str)


def event_dict(e: Event) -> dict[str, Any]:
    return {"kind": e.kind, "node": e.node, "iteration": e.iteration, "data": e.data}


def workflow_layout(wf: Workflow) -> dict[str, Any]:
    """A workflow's nodes (each with its components), edges and entry, for the page."""
    spec = wf.spec
    nodes = spec.node_map()
    edges = []
    for e in spec.edge_list():
        edges.append({"from": e.source, "to": e.to, "when": e.when})
        if e.otherwise is not None:
            edges.append({"from": e.source, "to": e.otherwise, "when": f"not ({e.when})"})
    return {
        "nodes": {n: [c.component for c in node.components] for n, node in nodes.items()},
        "edges": edges,
        "entry": spec.entry or next(iter(nodes), None),
    }


def answer_evidence(pool: Pool) -> dict[str, Any]:
    """The final answer's vote (its tally) and the candidates that gave that answer."""
    from ponder.agents import normalize_answer

    out: dict[str, Any] = {}
    v = pool.vote
    if v is not None:
        out["vote"] = {"answer": v.answer, "tally": v.tally, "support": v.support,
                       "counted": v.counted, "abstained": v.abstained}  # fmt: skip
    key = v.key if v is not None else normalize_answer(pool.final)
    if key is not None:
        same = [c for c in pool.candidates if c.answer is not None
                and normalize_answer(c.answer) == key]  # fmt: skip
        # a vote over code or a custom kind keys answers its own way: then equal answers
        same = same or [c for c in pool.candidates if c.answer == pool.final]
        out["behind"] = [
            {
                "id": c.id,
                "answer": c.answer,
                "model": c.provenance.model,
                "scores": c.scores,
                "verdicts": c.verdicts,
                "text": c.text[:2000],
            }
            for c in same[:20]
        ]
    return out


def tool_calls_response(req: ChatRequest, turn: ToolTurn, rec: RunRecord) -> Response:
    """A tool turn's calls as a chat completion in OpenAI's shape (streamed as deltas when
    the request asks), recorded as the run ``rec``."""
    rec.add({"kind": "tool_calls", "node": None, "iteration": None, "data": {
        "calls": [c.model_dump() for c in turn.calls], "support": turn.support,
        "samples": turn.samples, "tokens": turn.spend.total_tokens,
        "cost": turn.spend.cost}})  # fmt: skip
    rec.finish()
    created = int(time.time())
    calls = [
        {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
        for c in turn.calls
    ]
    ponder = {"run_id": rec.id, "support": turn.support, "samples": turn.samples,
              "cost": turn.spend.cost}  # fmt: skip
    if not req.stream:
        body = {
            "id": rec.id,
            "object": "chat.completion",
            "created": created,
            "model": req.model,
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": None, "tool_calls": calls},
                "finish_reason": "tool_calls",
            }],
            "usage": usage_dict(turn.spend),
            "ponder": ponder,
        }  # fmt: skip
        return FastJSON(body, headers={"X-Ponder-Run-Id": rec.id})
    usage_wanted = bool((req.stream_options or {}).get("include_usage"))

    def chunk(choices: list[dict[str, Any]], **extra: Any) -> str:
        body = {"id": rec.id, "object": "chat.completion.chunk", "created": created,
                "model": req.model, "choices": choices, **extra}  # fmt: skip
        return f"data: {json.dumps(body)}\n\n"

    async def events() -> AsyncIterator[str]:
        yield chunk([{"index": 0, "delta": {"role": "assistant", "content": None},
                      "finish_reason": None}], ponder={"run_id": rec.id})  # fmt: skip
        for i, c in enumerate(calls):
            yield chunk([{"index": 0, "delta": {"tool_calls": [{"index": i, **c}]},
                          "finish_reason": None}])  # fmt: skip
        yield chunk([{"index": 0, "delta": {}, "finish_reason": "tool_calls"}], ponder=ponder)
        if usage_wanted:
            yield chunk([], usage=usage_dict(turn.spend))
        yield "data: [DONE]\n\n"

    return StreamingResponse(
        events(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Ponder-Run-Id": rec.id},
    )
