"""Dynamic Cheatsheet, cumulative variant (DC-Cu): answer with the cheatsheet, then let a
curator rewrite it, keeping what proved useful.

The cheatsheet lives in a :class:`MemoryStore` namespace, so it persists across sessions,
is shared by concurrent workers (updates are compare-and-set, see :func:`update`) and
every version can be inspected and rolled back (``ponder memory``).
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from ponder.backends import Model
from ponder.memory._store import Cheatsheet, MemoryStore, update
from ponder.types import Message

__all__ = ["CheatsheetConfig", "CheatsheetResult", "DynamicCheatsheet", "parse_cheatsheet"]

GENERATOR_TEMPLATE = (
    "Solve the problem. A cheatsheet of strategies, insights and code from earlier problems "
    "follows; use what applies. Think step by step, then give the final answer as "
    "\\boxed{{ANSWER}}.\n\n<cheatsheet>\n{cheatsheet}\n</cheatsheet>"
)
CURATOR_TEMPLATE = (
    "You curate a cheatsheet of reusable strategies, insights and code for future problems. "
    "Given the current cheatsheet, a problem and the answer just given, write the improved "
    "cheatsheet: keep entries that help, add what this problem taught, merge duplicates, "
    "drop what is wrong or specific to one problem. Stay under {max_chars} characters. "
    "Reply with the whole cheatsheet between <cheatsheet> and </cheatsheet>."
)
_BLOCK = re.compile(r"<cheatsheet>\s*(.*?)\s*</cheatsheet>", re.DOTALL | re.IGNORECASE)


def parse_cheatsheet(text: str) -> str | None:
    """The content of the last ``<cheatsheet>...</cheatsheet>`` block, or None."""
    found = _BLOCK.findall(text)
    return found[-1].strip() if found else None


class CheatsheetConfig(BaseModel):
    """How the cheatsheet is used and curated."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    namespace: str = "default"
    variant: Literal["cumulative", "none"] = Field(
        "cumulative", description="cumulative: DC-Cu; none: the no-memory baseline."
    )
    max_chars: int = Field(4000, ge=200, description="Size budget of the cheatsheet.")
    generator_template: str = GENERATOR_TEMPLATE
    curator_template: str = CURATOR_TEMPLATE
    temperature: float = 0.0
    max_tokens: int | None = None
    seed: int = 0


class CheatsheetResult(BaseModel):
    """An answer, the cheatsheet it used, and what curation did."""

    model_config = ConfigDict(frozen=True)

    answer_text: str
    used_version: int
    curated_version: int | None
    curation_note: str


class DynamicCheatsheet:
    """``await dc.answer(question)``: answer with the namespace's cheatsheet, then curate.

    A curator reply without a ``<cheatsheet>`` block keeps the previous version (the
    reason is returned and nothing is written); a cheatsheet over ``max_chars`` is sent
    back once for compaction, and if still too long the previous version is kept; it is
    never cut mid-entry.
    """

    def __init__(
        self,
        model: Model,
        store: MemoryStore,
        config: CheatsheetConfig | None = None,
        *,
        curator: Model | None = None,
    ) -> None:
        self.model = model
        self.curator = curator or model
        self.store = store
        self.config = config or CheatsheetConfig()

    async def answer(self, question: str) -> CheatsheetResult:
        cfg = self.config
        current = await self.store.latest(cfg.namespace) if cfg.variant != "none" else None
        sheet = current.content if current else "(empty)"
        system = cfg.generator_template.format(cheatsheet=sheet)
        out = await self.model.generate(
            [Message.system(system), Message.user(question)],
            temperature=cfg.temperature,
            max_tokens=cfg.max_tokens,
            seed=cfg.seed,
        )
        used = current.version if current else 0
        if cfg.variant == "none":
            return CheatsheetResult(
                answer_text=out.text,
                used_version=0,
                curated_version=None,
                curation_note="no memory",
            )
        notes: list[str] = []

        async def curate(latest: Cheatsheet | None) -> str | None:
            notes.clear()
            return await self._curate(latest, question, out.text, notes)

        written = await update(
            self.store, cfg.namespace, curate, note=f"curated after: {question[:80]}"
        )
        changed = written is not None and written.version > used and not notes
        return CheatsheetResult(
            answer_text=out.text,
            used_version=used,
            curated_version=written.version if changed and written else None,
            curation_note="; ".join(notes) if notes else "updated",
        )

    async def _curate(
        self, latest: Cheatsheet | None, question: str, answer: str, notes: list[str]
    ) -> str | None:
        cfg = self.config
        old = latest.content if latest else "(empty)"
        prompt = (
            f"<cheatsheet>\n{old}\n</cheatsheet>\n\nProblem: {question}\n\n"
            f"Answer given:\n{answer}\n\nWrite the improved cheatsheet."
        )
        system = cfg.curator_template.format(max_chars=cfg.max_chars)
        reply = await self.curator.generate(
            [Message.system(system), Message.user(prompt)],
            temperature=cfg.temperature,
            seed=cfg.seed,
        )
        new = parse_cheatsheet(reply.text)
        if new is None:
            notes.append("the curator's reply had no <cheatsheet> block; kept the previous version")
            return None
        if len(new) > cfg.max_chars:
            reply = await self.curator.generate(
                [
                    Message.system(system),
                    Message.user(
                        f"This cheatsheet is {len(new)} characters, over the budget of "
                        f"{cfg.max_chars}. Compact it (merge and drop the least useful "
                        f"entries), keeping whole entries.\n\n<cheatsheet>\n{new}\n</cheatsheet>"
                    ),
                ],
                temperature=cfg.temperature,
                seed=cfg.seed,
            )
            compact = parse_cheatsheet(reply.text)
            if compact is None or len(compact) > cfg.max_chars:
                notes.append(
                    f"the cheatsheet stayed over {cfg.max_chars} characters after compaction; "
                    "kept the previous version"
                )
                return None
            new = compact
        return new
