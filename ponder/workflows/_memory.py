"""Workflow steps around a pipeline: ``memory_read`` before (puts the memory in the
system prompt of later ``generate`` steps) and ``memory_curate`` after (records the chosen
answer and, for DC-Cu, rewrites the cheatsheet). See docs/memory.md."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import Field

from ponder.agents import Pool, Spend, register_component
from ponder.backends import Model
from ponder.memory import (
    CheatsheetConfig,
    DynamicCheatsheet,
    InMemoryStore,
    MemoryStore,
    open_store,
)
from ponder.types import Completion

if TYPE_CHECKING:
    from ponder.engine import Engine

__all__ = ["MemoryCurate", "MemoryRead", "MemoryStepConfig"]


class MemoryStepConfig(CheatsheetConfig):
    """A :class:`CheatsheetConfig` plus where the memory lives."""

    store: str | None = Field(
        None,
        description="A SQLite file, redis://host:port/db, or memory[:name] (in-process); "
        "default: memory.sqlite next to the response cache.",
    )


def _make_store(url: str | None) -> MemoryStore:
    if url is not None and (url == "memory" or url.startswith("memory:")):
        return InMemoryStore()
    return open_store(url)


def _engine_store(engine: Engine, url: str | None) -> MemoryStore:
    """The engine's store for ``url``: opened once, shared by every step and run of the
    engine that names it (a ``memory:NAME`` store lives as long as the engine), closed
    with the engine."""
    return engine.resource(("memory-store", url), lambda: _make_store(url))


class _StoreUser:
    """A memory step: its model, config and store: the engine's (a workflow's steps), or,
    for a step made by hand without one, the config's store opened for each call and
    closed after it."""

    def __init__(
        self,
        model: Model,
        config: MemoryStepConfig | None = None,
        *,
        store: MemoryStore | None = None,
    ) -> None:
        self.model = model
        self.config = config or MemoryStepConfig()
        self.store = store

    @contextlib.asynccontextmanager
    async def _store(self) -> AsyncIterator[MemoryStore]:
        if self.store is not None:
            yield self.store
            return
        store = _make_store(self.config.store)
        try:
            yield store
        finally:
            await store.aclose()


def _read_step(config: Any, models: list[Model], prm: Model | None, engine: Engine) -> Any:
    return MemoryRead(models[0], config, store=_engine_store(engine, config.store))


def _curate_step(config: Any, models: list[Model], prm: Model | None, engine: Engine) -> Any:
    return MemoryCurate(models[0], config, store=_engine_store(engine, config.store))


def _spend(calls: list[Completion]) -> Spend:
    return sum(
        (Spend.of(c.usage, c.cost, c.requests, c.cached_usage, c.saved_cost) for c in calls),
        Spend(),
    )


@register_component(config=MemoryStepConfig, build=_read_step, with_engine=True)
class MemoryRead(_StoreUser):
    """Before: the variant's memory for this query becomes ``pool.system``.

    ``store`` is the memory store to use (a workflow's engine gives its own, opened once);
    without one, the config's ``store`` is opened for each call."""

    name: ClassVar[str] = "memory_read"

    async def __call__(self, pool: Pool) -> Pool:
        async with self._store() as store:
            dc = DynamicCheatsheet(self.model, store, self.config)
            prep = await dc.prepare(pool.query)
        spend = Spend(prep.usage.prompt_tokens, prep.usage.completion_tokens, 0, prep.cost)
        note = f"memory {self.config.namespace} v{prep.used_version} ({self.config.variant})"
        if prep.retrieved:
            note += f", {len(prep.retrieved)} retrieved"
        updated = pool.model_copy(update={"system": prep.system, "spend": pool.spend + spend})
        return updated.noted(note + (f": {prep.note}" if prep.note else ""))


@register_component(config=MemoryStepConfig, build=_curate_step, with_engine=True)
class MemoryCurate(_StoreUser):
    """After: record the chosen answer (the candidate behind ``pool.final``, else the
    first candidate) and let the curator update the cheatsheet (``store`` as for
    :class:`MemoryRead`)."""

    name: ClassVar[str] = "memory_curate"

    async def __call__(self, pool: Pool) -> Pool:
        chosen = next((c for c in pool.candidates if pool.final and c.answer == pool.final), None)
        chosen = chosen or (pool.candidates[0] if pool.candidates else None)
        text = chosen.text if chosen else pool.final
        if not text:
            return pool.noted("memory: nothing to curate (no answer)")
        calls: list[Completion] = []
        async with self._store() as store:
            dc = DynamicCheatsheet(self.model, store, self.config)
            version, note = await dc.curate(pool.query, text, calls)
        done = pool.model_copy(update={"spend": pool.spend + _spend(calls)})
        return done.noted(
            f"memory {self.config.namespace}: {note}" + (f" (v{version})" if version else "")
        )
