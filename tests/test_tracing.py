"""OpenTelemetry traces: off by default; when on, a run is a span tree (run -> node ->
component -> model call) with GenAI attributes and Ponder's own; spans reach a real
OTLP/HTTP receiver; ``ponder serve`` continues a caller's ``traceparent``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import httpx
import pytest
import pytest_asyncio
from aiohttp import web
from conftest import Route
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from ponder import Settings, tracing
from ponder.testing import StandinConfig, StandinServer
from ponder.testing.oracle import OracleConfig, ProblemBank
from ponder.workflows import BudgetSpec, Workflow, WorkflowSpec

ORACLE = OracleConfig(accuracy={"strong": 0.8})
BANK = ProblemBank(ORACLE.bank_seed, ORACLE.distractors)
Q = BANK.problem(0).question


@pytest_asyncio.fixture
async def standin() -> AsyncIterator[StandinServer]:
    async with StandinServer(StandinConfig(time_scale=0, oracle=ORACLE)) as s:
        yield s


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    tracing.configure(exporter, batch=False)
    yield exporter
    tracing.shutdown()


def stack(url: str) -> WorkflowSpec:
    return WorkflowSpec.model_validate(
        {
            "name": "traced",
            "models": {"m": f"vllm:strong@{url}"},
            "layers": [
                [{"generate": {"model": "m", "n": 3}}, {"generate": {"model": "m", "n": 2}}],
                {"fuse": {"model": "m"}},
                "vote",
            ],
        }
    )


def by_name(found: tuple[ReadableSpan, ...], prefix: str) -> list[ReadableSpan]:
    return [s for s in found if s.name.startswith(prefix)]


def parent_of(s: ReadableSpan, found: tuple[ReadableSpan, ...]) -> ReadableSpan | None:
    if s.parent is None:
        return None
    return next((p for p in found if p.context.span_id == s.parent.span_id), None)


def test_tracing_is_off_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    tracing.shutdown()
    for v in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        monkeypatch.delenv(v, raising=False)
    monkeypatch.setattr(tracing._S, "checked_env", False)
    assert not tracing.enabled()
    with tracing.span("x") as s:
        assert s is None


async def test_a_run_is_a_span_tree_with_genai_and_ponder_attributes(
    standin: StandinServer, spans: InMemorySpanExporter
) -> None:
    spec = stack(standin.base_url).model_copy(
        update={"budget": BudgetSpec(max_tokens=100_000, max_requests=50)}
    )
    wf = Workflow(spec, settings=Settings.load(cache=False))
    result = await wf.arun(Q)
    found = spans.get_finished_spans()
    (run,) = by_name(found, "ponder.run")
    assert run.name == "ponder.run traced"
    assert run.parent is None
    assert run.attributes is not None
    assert run.attributes["ponder.final"] == result.output.final
    assert run.attributes["ponder.tokens"] == result.output.spend.total_tokens
    # what the run's budget has left when it ends
    spend = result.output.spend
    assert run.attributes["ponder.budget.tokens_left"] == 100_000 - spend.total_tokens
    assert run.attributes["ponder.budget.requests_left"] == 50 - spend.requests
    nodes = by_name(found, "ponder.node")
    assert [n.name for n in sorted(nodes, key=lambda s: s.start_time or 0)] == [
        "ponder.node layer1", "ponder.node layer2", "ponder.node layer3",
    ]  # fmt: skip
    assert all(parent_of(n, found) is run for n in nodes)
    comps = by_name(found, "ponder.component")
    assert len(comps) == 2  # the two generators of layer 1 (one-component nodes: no child)
    assert {c.attributes["ponder.slot"] for c in comps if c.attributes} == {"layer1.0", "layer1.1"}
    assert all(parent_of(c, found) in nodes for c in comps)
    layer2 = next(n for n in nodes if n.name.endswith("layer2"))
    assert layer2.attributes is not None
    assert layer2.attributes["ponder.component"] == "fuse"
    calls = by_name(found, "chat ")
    assert len(calls) == 3  # two generate calls and one fuse call
    first = calls[0].attributes
    assert first is not None
    assert first["gen_ai.system"] == "vllm"
    assert first["gen_ai.request.model"] == "strong"
    assert first["gen_ai.operation.name"] == "chat"
    assert int(first["gen_ai.usage.input_tokens"]) > 0  # type: ignore[arg-type]
    assert int(first["gen_ai.usage.output_tokens"]) > 0  # type: ignore[arg-type]
    assert "gen_ai.prompt" not in first  # content is not captured by default
    assert all(parent_of(c, found) in [*comps, layer2] for c in calls)
    vote = next(n for n in nodes if n.name.endswith("layer3"))
    assert vote.attributes is not None
    assert vote.attributes["ponder.component"] == "vote"
    assert vote.attributes["ponder.final"] == result.output.final
    layer1 = next(n for n in nodes if n.name.endswith("layer1"))
    assert layer1.attributes is not None
    assert layer1.attributes["ponder.candidates"] == 5
    assert {s.context.trace_id for s in found} == {run.context.trace_id}


async def test_a_rerun_shows_its_cache_hits_and_content_only_when_asked(
    standin: StandinServer, tmp_path: Any
) -> None:
    exporter = InMemorySpanExporter()
    tracing.configure(exporter, batch=False, capture_content=True)
    try:
        settings = Settings.load(cache_path=tmp_path / "c.sqlite")
        wf = Workflow(stack(standin.base_url), settings=settings)
        await wf.arun(Q)
        exporter.clear()
        await wf.arun(Q)
        calls = by_name(exporter.get_finished_spans(), "chat ")
        attrs = [c.attributes for c in calls if c.attributes]
        assert all(a["ponder.cache.hits"] == a["gen_ai.request.choice.count"] for a in attrs)
        assert all(a["ponder.requests"] == 0 for a in attrs)
        assert all(int(a["ponder.cache.cached_tokens"]) > 0 for a in attrs)  # type: ignore[arg-type]
        assert "Problem 0" in str(attrs[0]["gen_ai.prompt"])
        assert attrs[0]["gen_ai.completion"]
    finally:
        tracing.shutdown()


async def test_retries_are_span_events_with_their_cause(spans: InMemorySpanExporter) -> None:
    from ponder import Model, ServerError

    cfg = StandinConfig(time_scale=0, fault_500=1.0)
    async with StandinServer(cfg) as s:
        settings = Settings.load(cache=False, retry_initial=0.001, retry_max=0.002)
        async with Model(f"vllm:strong@{s.base_url}", settings=settings) as m:
            with pytest.raises(ServerError):
                await m.generate(Q)
            retried = m.meter.retries
    (call,) = by_name(spans.get_finished_spans(), "chat ")
    retries = [e for e in call.events if e.name == "retry"]
    assert retried >= 1
    assert len(retries) == retried
    assert retries[0].attributes is not None
    assert retries[0].attributes["ponder.retry.cause"] == "ServerError"
    assert not call.status.is_ok  # the error is recorded on the span


@pytest_asyncio.fixture
async def receiver(
    loopback_server: Callable[[list[Route]], Awaitable[str]],
) -> tuple[str, list[bytes]]:
    """A real OTLP/HTTP endpoint on loopback that keeps what it receives."""
    got: list[bytes] = []

    async def traces(request: web.Request) -> web.Response:
        assert request.headers["Content-Type"] == "application/x-protobuf"
        got.append(await request.read())
        return web.Response(status=200, body=b"", content_type="application/x-protobuf")

    base = await loopback_server([("POST", "/v1/traces", traces)])
    return f"{base}/v1/traces", got


async def test_spans_reach_a_real_otlp_http_receiver(
    standin: StandinServer, receiver: tuple[str, list[bytes]]
) -> None:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    url, got = receiver
    provider = tracing.configure(endpoint=url)
    try:
        await Workflow(stack(standin.base_url), settings=Settings.load(cache=False)).arun(Q)
        await asyncio.to_thread(provider.force_flush)
    finally:
        await asyncio.to_thread(tracing.shutdown)
    names = []
    service = set()
    for body in got:
        req = ExportTraceServiceRequest()
        req.ParseFromString(body)
        for rs in req.resource_spans:
            service |= {a.value.string_value for a in rs.resource.attributes
                        if a.key == "service.name"}  # fmt: skip
            for ss in rs.scope_spans:
                names += [s.name for s in ss.spans]
    assert service == {"ponder"}
    assert "ponder.run traced" in names
    assert names.count("chat strong") == 3
    assert sum(n.startswith("ponder.node") for n in names) == 3


async def test_serve_continues_the_callers_trace(
    standin: StandinServer, spans: InMemorySpanExporter
) -> None:
    from ponder.apps.server import PonderServer

    wf = Workflow(stack(standin.base_url), settings=Settings.load(cache=False))
    server = PonderServer({"traced": wf})
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    header = f"00-{trace_id}-00f067aa0ba902b7-01"
    transport = httpx.ASGITransport(app=server.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
        r = await client.post(
            "/v1/chat/completions",
            json={"model": "traced", "messages": [{"role": "user", "content": Q}]},
            headers={"traceparent": header},
        )
    assert r.status_code == 200, r.text
    (run,) = by_name(spans.get_finished_spans(), "ponder.run")
    assert format(run.context.trace_id, "032x") == trace_id
    assert run.parent is not None
    assert format(run.parent.span_id, "016x") == "00f067aa0ba902b7"


async def test_an_agents_tool_calls_are_spans(spans: InMemorySpanExporter) -> None:
    from ponder.agents import run_agent
    from ponder.testing import FakeModel
    from ponder.tools import calculator_tool
    from ponder.types import ToolCall

    model = FakeModel([ToolCall(id="c1", name="calculator", arguments='{"expression": "6*7"}'),
                       "\\boxed{42}"])  # fmt: skip
    with tracing.span("agent") as root:
        run = await run_agent(model, "6*7?", [calculator_tool()])
    assert run.text == "\\boxed{42}"
    assert root is not None
    found = spans.get_finished_spans()
    (tool_span,) = by_name(found, "execute_tool ")
    attrs = dict(tool_span.attributes or {})
    assert attrs["gen_ai.tool.name"] == "calculator"
    assert attrs["gen_ai.tool.call.id"] == "c1"
    assert attrs["ponder.tool.error"] is False
    assert "ponder.tool.arguments" not in attrs  # content is not captured by default
    assert len(by_name(found, "chat ")) == 2
    assert tool_span.parent is not None
    assert tool_span.parent.span_id == root.context.span_id


async def test_a_slot_view_made_after_a_traced_call_reports_its_own_slot(
    standin: StandinServer, spans: InMemorySpanExporter
) -> None:
    """A view copies the base model's memos; the span attributes that name the slot must
    not come along (a view made after the base's first traced call reported slot 0)."""
    from ponder import Model
    from ponder.backends._model import SLOT_STRIDE

    async with Model(f"vllm:strong@{standin.base_url}", cache=False) as base:
        await base.generate(Q, max_tokens=4)
        await base.for_slot(2).generate(Q, max_tokens=4)
    calls = by_name(spans.get_finished_spans(), "chat ")
    offsets = [c.attributes.get("ponder.slot_offset") if c.attributes else None for c in calls]
    assert offsets == [None, 2 * SLOT_STRIDE]
