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

Prompts and completions are recorded only with ``capture_content=True`` (or
``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true``). ``ponder serve`` continues a
caller's trace from its W3C ``traceparent`` header (:func:`extract`). Install with
``pip install 'ponder[tracing]'``; docs/observability.md shows the viewers' setup.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ponder.errors import ConfigurationError

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.trace import Span, Tracer

__all__ = [
    "attached",
    "capture_content",
    "configure",
    "enabled",
    "extract",
    "shutdown",
    "span",
]

_ENV = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
_CAPTURE_ENV = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"


class _State:
    tracer: Tracer | None = None
    provider: TracerProvider | None = None
    capture: bool = False
    checked_env: bool = False


_S = _State()


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
    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    processor = BatchSpanProcessor(exporter) if batch else SimpleSpanProcessor(exporter)
    provider.add_span_processor(processor)
    _S.provider = provider
    _S.tracer = provider.get_tracer("ponder")
    if capture_content is None:
        capture_content = os.environ.get(_CAPTURE_ENV, "").lower() in ("1", "true", "yes")
    _S.capture = capture_content
    _S.checked_env = True
    return provider


def shutdown() -> None:
    """Flush and stop tracing (spans after this are not recorded)."""
    provider, _S.provider, _S.tracer = _S.provider, None, None
    if provider is not None:
        provider.force_flush()
        provider.shutdown()


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


def _value(v: Any) -> Any:
    if isinstance(v, str | bool | int | float):
        return v
    if isinstance(v, Sequence) and all(isinstance(x, str | bool | int | float) for x in v):
        return list(v)
    return json.dumps(v, default=str)[:4000]


def attributes(values: Mapping[str, Any]) -> dict[str, Any]:
    """OpenTelemetry attribute values (None dropped; other objects as JSON)."""
    return {k: _value(v) for k, v in values.items() if v is not None}


@contextlib.contextmanager
def span(name: str, values: Mapping[str, Any] | None = None) -> Iterator[Span | None]:
    """A span around the block, child of the current one; None (and no cost) when tracing
    is off. An exception is recorded on the span and re-raised."""
    if not enabled() or _S.tracer is None:
        yield None
        return
    with _S.tracer.start_as_current_span(name, attributes=attributes(values or {})) as s:
        yield s


def start(name: str, values: Mapping[str, Any] | None = None) -> Span | None:
    """A span that is not current (for generators: make it current around each step with
    :func:`attached`); end it with ``span.end()``."""
    if not enabled() or _S.tracer is None:
        return None
    return _S.tracer.start_span(name, attributes=attributes(values or {}))


@contextlib.contextmanager
def attached(parent: Span | Context | None) -> Iterator[None]:
    """Make ``parent`` (a span, or a context from :func:`extract`) current for the block."""
    if parent is None:
        yield
        return
    from opentelemetry import context as otel_context
    from opentelemetry import trace

    ctx = parent if isinstance(parent, dict) else trace.set_span_in_context(parent)
    token = otel_context.attach(ctx)
    try:
        yield
    finally:
        otel_context.detach(token)


def extract(headers: Mapping[str, str]) -> Context | None:
    """The caller's trace context from W3C ``traceparent``/``tracestate`` headers, or None
    (no header, or tracing off)."""
    if not enabled() or "traceparent" not in {k.lower() for k in headers}:
        return None
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    carrier = {k.lower(): v for k, v in headers.items()}
    return TraceContextTextMapPropagator().extract(carrier)


def set_attributes(s: Span | None, values: Mapping[str, Any]) -> None:
    """Set ``values`` on ``s`` (a no-op for None)."""
    if s is not None:
        s.set_attributes(attributes(values))


def event(name: str, values: Mapping[str, Any]) -> None:
    """An event on the current span (a retry and its cause), if tracing is on."""
    if _S.tracer is None:
        return
    from opentelemetry import trace

    trace.get_current_span().add_event(name, attributes(values))
