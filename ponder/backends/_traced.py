"""A ``generate`` call as an OpenTelemetry span with the GenAI attributes (only when
tracing is on: :mod:`ponder.tracing`)."""

from __future__ import annotations

from typing import Any

from ponder import tracing
from ponder.backends._parts import ModelCore
from ponder.types import Completion, GenerateParams, Message

__all__ = ["traced_generate"]


async def traced_generate(
    model: ModelCore, messages: list[Message], params: GenerateParams | None, **kw: Any
) -> Completion:
    """``model.generate`` inside a ``chat MODEL`` span (``kw``: ``use_cache`` and
    ``overrides``, passed on to ``model._generate``)."""
    p = model._params(params, kw["overrides"])
    static = model.__dict__.get("_span_static")
    if static is None:  # what every call of this model shares, built once
        static = model.__dict__["_span_static"] = {
            "openinference.span.kind": "LLM",  # Phoenix's and Arize's span kinds
            "gen_ai.operation.name": "chat",
            "gen_ai.system": model.ref.provider,
            "gen_ai.request.model": model.ref.name,
            "ponder.model": model.id,
            "ponder.slot_offset": model.offset or None,
            "server.address": ",".join(e.base_url for e in model.pool.endpoints),
        }
    request: dict[str, Any] = {
        **static,
        "gen_ai.request.temperature": p.temperature,
        "gen_ai.request.top_p": p.top_p,
        "gen_ai.request.max_tokens": p.max_tokens,
        "gen_ai.request.seed": p.seed,
        "gen_ai.request.choice.count": p.n,
    }
    if tracing.capture_content():
        request["gen_ai.prompt"] = [m.model_dump() for m in messages]
    with tracing.span(f"chat {model.ref.name}", request) as s:
        # the caller's params and overrides, not ``p``: their resolution is memoised
        c = await model._generate(messages, params, **kw)
        done: dict[str, Any] = {
            "gen_ai.usage.input_tokens": c.usage.prompt_tokens,
            "gen_ai.usage.output_tokens": c.usage.completion_tokens,
            "gen_ai.response.finish_reasons": [ch.finish_reason for ch in c.choices],
            "ponder.cache.hits": sum(ch.cached for ch in c.choices),
            "ponder.cache.saved_cost": c.saved_cost,
            "ponder.cache.cached_tokens": c.cached_usage.total_tokens,
            "ponder.requests": c.requests,
            "ponder.cost": c.cost,
        }
        if tracing.capture_content():
            done["gen_ai.completion"] = list(c.texts)
        tracing.set_attributes(s, done)
        return c
