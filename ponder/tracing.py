"""OpenTelemetry traces of runs, nodes, components and model calls (off by default).

Tracing starts when :func:`configure` is called, or on first use when the standard
``OTEL_EXPORTER_OTLP_ENDPOINT`` / ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` variables are set
(spans then go over OTLP/HTTP to that collector: Phoenix, Langfuse, Logfire, Jaeger...).
Until then every hook is one flag test, so an untraced run pays nothing measurable.

Span tree of a workflow run::

    ponder.run <workflow>            ponder.workflow, ponder.thread, ponder.final, tokens, cost
      ponder.node <node>             ponder.node, ponder.visit, ponder.candidates
        ponder.component <name>      ponder.slot, ponder.candidate_ids, answers, scores, final
          chat <model>               GenAI semantic conventions (gen_ai.*), cache hits and
                                     saved cost, requests, retries (as events, with causes)

Spans are cheap: starting one takes fresh ids and makes it current (for Ponder's spans
and any OpenTelemetry instrumentation inside); its attributes are kept as given. When it
ends it is queued, and a background thread turns the queue into the SDK's span objects
for the provider's span processors in batches (as the SDK's batch processor exports), so
a run's thread pays a few microseconds a span instead of the SDK's ~25-40 us
(benchmarks/graph_overhead.py). Every span is recorded (no sampling).

Prompts and completions are recorded only with ``capture_content=True`` (or
``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true``). ``ponder serve`` continues a
caller's trace from its W3C ``traceparent`` header (:func:`extract`). Install with
``pip install 'ponder[tracing]'``; docs/observability.md shows the viewers' setup.
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import json
import os
import random
import threading
import time
import traceback
from collections.abc import Mapping, Sequence
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from ponder.errors import ConfigurationError

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.trace import SpanContext, Tracer

__all__ = [
    "Span",
    "attached",
    "capture_content",
    "configure",
    "enabled",
    "extract",
    "flush",
    "shutdown",
    "span",
]

_ENV = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
_CAPTURE_ENV = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"


class Span:
    """A span being recorded (what :func:`span` yields and :func:`start` returns).

    ``set_attributes`` and ``add_event`` add to it; ``end`` finishes it (once). Its
    OpenTelemetry ``SpanContext`` is ``context``."""

    __slots__ = ("attrs", "context", "end_ns", "error", "events", "name", "parent", "start_ns")

    def __init__(self, name: str, attrs: Mapping[str, Any] | None, parent: Any) -> None:
        self.name = name
        self.attrs: dict[str, Any] = dict(attrs) if attrs else {}
        self.parent: SpanContext | None = parent if parent is not None and parent.is_valid else None
        trace_id = self.parent.trace_id if self.parent is not None else random.getrandbits(128)
        self.context = _O.SpanContext(trace_id, random.getrandbits(64), False, _O.SAMPLED)
        self.events: list[tuple[str, int, Mapping[str, Any]]] = []
        self.error: BaseException | None = None
        self.start_ns = time.time_ns()
        self.end_ns: int | None = None

    def set_attributes(self, values: Mapping[str, Any]) -> None:
        self.attrs.update(values)

    def add_event(self, name: str, values: Mapping[str, Any] | None = None) -> None:
        self.events.append((name, time.time_ns(), values or {}))

    def record_exception(self, exc: BaseException) -> None:
        self.error = exc
        trace = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        self.add_event("exception", {"exception.type": type(exc).__name__,
                                     "exception.message": str(exc),
                                     "exception.stacktrace": trace})  # fmt: skip

    def end(self) -> None:
        if self.end_ns is None:
            self.end_ns = time.time_ns()
            exporter = _S.exporter
            if exporter is not None:
                exporter.put(self)


class _Exporter:
    """Turns ended :class:`Span` s into the SDK's span objects and hands them to the
    provider's span processors.

    With ``batch`` (the default), a span's end only queues it: a background thread
    converts the queue every ``delay`` seconds, or sooner when ``size`` spans wait, as the
    SDK's batch processor does for export. A run's own thread then pays a few microseconds
    a span; the conversion happens in bursts while it waits on the network.
    :func:`flush` converts what is queued at once. Without ``batch`` each span is
    converted as it ends (tests read their spans right away)."""

    def __init__(
        self, provider: TracerProvider, batch: bool, delay: float = 1.0, size: int = 512
    ) -> None:
        from opentelemetry.sdk.util.instrumentation import InstrumentationScope

        self.provider = provider
        self.processor = provider._active_span_processor  # every processor added to it
        self.scope = InstrumentationScope("ponder")
        self.batch, self.delay, self.size = batch, delay, size
        self.queue: collections.deque[Span] = collections.deque()
        self.lock = threading.Lock()  # one converter at a time: the processors see order
        self.wake = threading.Event()
        self.closed = False
        self.thread: threading.Thread | None = None
        if batch:
            self.thread = threading.Thread(target=self._loop, name="ponder-spans", daemon=True)
            self.thread.start()

    def put(self, item: Span) -> None:
        if not self.batch:
            self._export(item)
            return
        self.queue.append(item)
        if len(self.queue) >= self.size:
            self.wake.set()

    def drain(self) -> None:
        with self.lock:
            while True:
                try:
                    item = self.queue.popleft()
                except IndexError:
                    return
                self._export(item)

    def close(self) -> None:
        self.closed = True
        self.wake.set()
        if self.thread is not None:
            self.thread.join(10)
        self.drain()

    def _loop(self) -> None:
        while not self.closed:
            self.wake.wait(self.delay)
            self.wake.clear()
            self.drain()

    def _export(self, item: Span) -> None:
        from opentelemetry.sdk.trace import Event, ReadableSpan
        from opentelemetry.trace import Status, StatusCode

        global _UNSET
        if _UNSET is None:
            _UNSET = Status(StatusCode.UNSET)

        status = (
            Status(StatusCode.ERROR, f"{type(item.error).__name__}: {item.error}")
            if item.error is not None
            else _UNSET
        )
        with contextlib.suppress(Exception):  # an exporter's fault never reaches the run
            self.processor.on_end(
                ReadableSpan(
                    item.name,
                    context=item.context,
                    parent=item.parent,
                    resource=self.provider.resource,
                    attributes=attributes(item.attrs),
                    events=[Event(n, attributes(a), ts) for n, ts, a in item.events],
                    status=status,
                    start_time=item.start_ns,
                    end_time=item.end_ns,
                    instrumentation_scope=self.scope,
                )
            )


_UNSET: Any = None


class _OTel:
    """The OpenTelemetry modules the hot path uses, imported once by :func:`configure`."""

    trace: Any
    context: Any
    SpanContext: Any
    SAMPLED: Any

    def load(self) -> None:
        from opentelemetry import context, trace
        from opentelemetry.trace import SpanContext, TraceFlags

        self.trace, self.context = trace, context
        self.SpanContext, self.SAMPLED = SpanContext, TraceFlags(TraceFlags.SAMPLED)


_O = _OTel()


class _State:
    tracer: Tracer | None = None
    provider: TracerProvider | None = None
    exporter: _Exporter | None = None
    capture: bool = False
    checked_env: bool = False
    at_exit: bool = False


_S = _State()
_CURRENT: ContextVar[Span | None] = ContextVar("ponder_span", default=None)


def configure(
    exporter: SpanExporter | None = None,
    *,
    endpoint: str | None = None,
    capture_content: bool | None = None,
    service_name: str = "ponder",
    batch: bool = True,
) -> TracerProvider:
    """Start tracing: spans go to ``exporter`` (any OpenTelemetry ``SpanExporter``, e.g. an
    in-memory one in tests) or over OTLP/HTTP to ``endpoint`` (default: the
    ``OTEL_EXPORTER_OTLP_*`` variables, else ``http://localhost:4318/v1/traces``).
    ``batch=False`` exports each span as it ends (tests). Returns the tracer provider."""
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
    except ImportError:
        raise ConfigurationError(
            "tracing needs the OpenTelemetry SDK: pip install 'ponder[tracing]'"
        ) from None
    if exporter is None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter(endpoint=endpoint) if endpoint else OTLPSpanExporter()
    shutdown()
    _O.load()
    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    processor = BatchSpanProcessor(exporter) if batch else SimpleSpanProcessor(exporter)
    provider.add_span_processor(processor)
    _S.provider = provider
    _S.exporter = _Exporter(provider, batch)
    if not _S.at_exit:  # what is still queued is exported when the process ends
        atexit.register(shutdown)
        _S.at_exit = True
    _S.tracer = provider.get_tracer("ponder")
    if capture_content is None:
        capture_content = os.environ.get(_CAPTURE_ENV, "").lower() in ("1", "true", "yes")
    _S.capture = capture_content
    _S.checked_env = True
    return provider


def shutdown() -> None:
    """Flush and stop tracing (spans after this are not recorded)."""
    provider, _S.provider, _S.tracer = _S.provider, None, None
    exporter, _S.exporter = _S.exporter, None
    if exporter is not None:
        exporter.close()
    if provider is not None:
        provider.force_flush()
        provider.shutdown()


def flush() -> None:
    """Export every span ended so far (e.g. before reading an in-memory exporter)."""
    if _S.exporter is not None:
        _S.exporter.drain()
    if _S.provider is not None:
        _S.provider.force_flush()


def enabled() -> bool:
    """Whether spans are recorded (configured, or switched on by the environment)."""
    if _S.tracer is None and not _S.checked_env:
        _S.checked_env = True
        if any(os.environ.get(v) for v in _ENV):
            with contextlib.suppress(ConfigurationError):
                configure()
    return _S.tracer is not None


def capture_content() -> bool:
    """Whether prompts and completions go into spans (off by default: they may be
    private)."""
    return _S.capture and _S.tracer is not None


_SCALARS = frozenset((str, bool, int, float))


def _value(v: Any) -> Any:
    t = type(v)
    if t in _SCALARS or isinstance(v, str | bool | int | float):
        return v
    if (t is list or t is tuple or isinstance(v, Sequence)) and all(
        type(x) in _SCALARS or isinstance(x, str | bool | int | float) for x in v
    ):
        return list(v)
    return json.dumps(v, default=str)[:4000]


def attributes(values: Mapping[str, Any]) -> dict[str, Any]:
    """OpenTelemetry attribute values (None dropped; other objects as JSON)."""
    return {k: _value(v) for k, v in values.items() if v is not None}


def _parent() -> SpanContext:
    return _O.trace.get_current_span().get_span_context()  # type: ignore[no-any-return]


class _Scope:
    """``with`` a span current (class-based: a generator context manager costs more)."""

    __slots__ = ("ctx", "mine", "span", "token")

    def __init__(self, parent: Span | Context | None, span: Span | None = None) -> None:
        self.span = span
        if isinstance(parent, Span):
            self.ctx: Any = _O.trace.set_span_in_context(_O.trace.NonRecordingSpan(parent.context))
            self.mine: Any = parent
        else:
            self.ctx, self.mine = parent, None

    def __enter__(self) -> Span | None:
        if self.ctx is not None:
            self.token = _O.context.attach(self.ctx)
            if self.mine is not None:
                self.mine = _CURRENT.set(self.mine)
        return self.span

    def __exit__(self, kind: Any, exc: BaseException | None, tb: Any) -> None:
        if self.ctx is not None:
            _O.context.detach(self.token)
            if self.mine is not None:
                _CURRENT.reset(self.mine)
        s = self.span
        if s is not None:
            if exc is not None:
                s.record_exception(exc)
            s.end()


_OFF = contextlib.nullcontext(None)


def span(
    name: str, values: Mapping[str, Any] | None = None
) -> contextlib.AbstractContextManager[Span | None]:
    """A span around the block, child of the current one (Ponder's or any OpenTelemetry
    span) and current inside it; None (and no cost) when tracing is off. An exception is
    recorded on the span and re-raised."""
    if not enabled():
        return _OFF
    s = Span(name, values, _parent())
    return _Scope(s, s)


def start(name: str, values: Mapping[str, Any] | None = None) -> Span | None:
    """A span that is not current (for generators: make it current around each step with
    :func:`attached`); end it with ``span.end()``."""
    if not enabled():
        return None
    return Span(name, values, _parent())


def attached(parent: Span | Context | None) -> contextlib.AbstractContextManager[Any]:
    """Make ``parent`` (a span, or a context from :func:`extract`) current for the block."""
    if parent is None:
        return _OFF
    return _Scope(parent)


def extract(headers: Mapping[str, str]) -> Context | None:
    """The caller's trace context from W3C ``traceparent``/``tracestate`` headers, or None
    (no header, or tracing off)."""
    if not enabled() or "traceparent" not in {k.lower() for k in headers}:
        return None
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    carrier = {k.lower(): v for k, v in headers.items()}
    return TraceContextTextMapPropagator().extract(carrier)


def set_attributes(s: Span | None, values: Mapping[str, Any]) -> None:
    """Set ``values`` on ``s`` (a no-op for None); converted when the span is exported."""
    if s is not None:
        s.attrs.update(values)


def event(name: str, values: Mapping[str, Any]) -> None:
    """An event on Ponder's current span (a retry and its cause), if tracing is on."""
    if _S.tracer is None:
        return
    s = _CURRENT.get()
    if s is not None:
        s.add_event(name, values)
