"""Scores from a reward or cross-encoder model: one number per text for a query.

A score call is a model call like any other: it takes a slot of the model's endpoint
(its concurrency and rate limits), reserves on the run's budgets and the model's, is
retried by the model's retry policy, answered from the response cache when it was made
before, traced as a ``score MODEL`` span, and refused by the network guard where remote
calls are. The wire is vLLM's score API (``vllm serve MODEL --task score``), which the
OpenAI-compatible wire speaks (:meth:`ponder.backends.OpenAIWire.score`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Sequence
from typing import NamedTuple, Protocol, runtime_checkable

import orjson

from ponder import tracing
from ponder.backends._base import WireRequest
from ponder.backends._parts import ModelCore
from ponder.backends._pool import Endpoint
from ponder.errors import ConfigurationError
from ponder.types import Choice, GenerateParams, Message, Usage

__all__ = ["ScoreRequest", "ScoreWire", "score"]

# what a score request may use, for budgets: its prompt (the texts) and no generated token
_PARAMS = GenerateParams(max_tokens=1)


class ScoreRequest(NamedTuple):
    """One score request: ``model``'s score of each of ``texts`` for ``query``."""

    model: str  # the model's name on the server
    query: str
    texts: Sequence[str]
    timeout: float | None = None  # seconds for the whole request


@runtime_checkable
class ScoreWire(Protocol):
    """A wire that can ask a server for scores (the OpenAI-compatible wire can)."""

    def score(
        self, endpoint: Endpoint, request: ScoreRequest
    ) -> Awaitable[tuple[list[float], Usage]]: ...


def _key(model: ModelCore, query: str, texts: Sequence[str]) -> str:
    h = hashlib.sha256(b"score\0" + model.id.encode() + b"\0")
    h.update(orjson.dumps([query, list(texts)]))
    return h.hexdigest()


async def score(
    model: ModelCore,
    query: str,
    texts: Sequence[str],
    *,
    request_timeout: float | None = None,
    use_cache: bool = True,
) -> list[float]:
    """``model``'s score of each of ``texts`` for ``query`` (see :meth:`Model.score`)."""
    wire = model.wire
    if not isinstance(wire, ScoreWire):
        raise ConfigurationError(
            f"{model.id}: the {model.ref.provider!r} wire has no score API; a reward model "
            "is served by vLLM (vllm serve MODEL --task score) and named as "
            "'vllm:MODEL@http://host:port/v1'"
        )
    if not texts:
        return []
    key = _key(model, query, texts) if use_cache and model.cache is not None else None
    if key is not None:
        hit = await model._cache_get(key, 1)
        if 0 in hit:
            model.meter.cached_samples += 1
            cached: list[float] = orjson.loads(hit[0].text)
            return cached
    attrs = {
        "openinference.span.kind": "RERANKER",
        "gen_ai.operation.name": "score",
        "gen_ai.system": model.ref.provider,
        "gen_ai.request.model": model.ref.name,
        "ponder.model": model.id,
        "ponder.score.count": len(texts),
    }
    with tracing.span(f"score {model.ref.name}", attrs) as span:
        prompt = [Message(role="user", content=t) for t in (query, *texts)]  # for budgets
        request = ScoreRequest(model.ref.name, query, texts, request_timeout)
        bound = WireRequest(model.ref.name, prompt, _PARAMS)  # what budgets reserve for
        scores, usage = await model._call(bound, None, wire.score, request)
        tracing.set_attributes(span, {"gen_ai.usage.input_tokens": usage.prompt_tokens})
    await model._cache_put(key, [Choice(0, orjson.dumps(scores).decode(), "stop", usage=usage)])
    return scores
