"""Workflow steps around a pipeline: ``memory_read`` before (puts the memory in the
system prompt of later ``generate`` steps) and ``memory_curate`` after (records the chosen
answer and, for DC-Cu, rewrites the cheatsheet). See docs/memory.md."""

from __future__ import annotations

from typing import ClassVar

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

__all__ = ["MemoryCurate", "MemoryRead", "MemoryStepConfig"]

_IN_PROCESS: dict[str, InMemoryStore] = {}


class MemoryStepConfig(CheatsheetConfig):
    """A :class:`CheatsheetConfig` plus where the memory lives."""

    store: str | None = Field(
        None,
        description="A SQLite file, redis://host:port/db, or memory[:name] (in-process); "
        "default: memory.sqlite next to the response cache.",
    )


def _open(url: str | None) -> tuple[MemoryStore, bool]:
    """The store and whether the caller must close it."""
    if url is not None and (url == "memory" or url.startswith("memory:")):
        return _IN_PROCESS.setdefault(url, InMemoryStore()), False
    return open_store(url), True


def _spend(calls: list[Completion]) -> Spend:
    return sum(
        (Spend.of(c.usage, c.cost, c.requests, c.cached_usage, c.saved_cost) for c in calls),
        Spend(),
    )


@register_component(config=MemoryStepConfig)
class MemoryRead:
    """Before: the variant's memory for this query becomes ``pool.system``."""

    name: ClassVar[str] = "memory_read"

    def __init__(self, model: Model, config: MemoryStepConfig | None = None) -> None:
        self.model = model
        self.config = config or MemoryStepConfig()

    async def __call__(self, pool: Pool) -> Pool:
        store, close = _open(self.config.store)
        try:
            dc = DynamicCheatsheet(self.model, store, self.config)
            prep = await dc.prepare(pool.query)
        finally:
            if close:
                await store.aclose()
        spend = Spend(prep.usage.prompt_tokens, prep.usage.completion_tokens, 0, prep.cost)
        note = f"memory {self.config.namespace} v{prep.used_version} ({self.config.variant})"
        if prep.retrieved:
            note += f", {len(prep.retrieved)} retrieved"
        updated = pool.model_copy(update={"system": prep.system, "spend": pool.spend + spend})
        return updated.noted(note + (f": {prep.note}" if prep.note else ""))


@register_component(config=MemoryStepConfig)
class MemoryCurate:
    """After: record the chosen answer (the candidate behind ``pool.final``, else the
    first candidate) and let the curator update the cheatsheet."""

    name: ClassVar[str] = "memory_curate"

    def __init__(self, model: Model, config: MemoryStepConfig | None = None) -> None:
        self.model = model
        self.config = config or MemoryStepConfig()

    async def __call__(self, pool: Pool) -> Pool:
        chosen = next((c for c in pool.candidates if pool.final and c.answer == pool.final), None)
        chosen = chosen or (pool.candidates[0] if pool.candidates else None)
        text = chosen.text if chosen else pool.final
        if not text:
            return pool.noted("memory: nothing to curate (no answer)")
        store, close = _open(self.config.store)
        calls: list[Completion] = []
        try:
            dc = DynamicCheatsheet(self.model, store, self.config)
            version, note = await dc.curate(pool.query, text, calls)
        finally:
            if close:
                await store.aclose()
        done = pool.model_copy(update={"spend": pool.spend + _spend(calls)})
        return done.noted(
            f"memory {self.config.namespace}: {note}" + (f" (v{version})" if version else "")
        )
