"""Memory as tools a model can call: Dynamic Cheatsheet look-up and BM25 search over a
corpus the user gives (docs/agents.md)."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path

from ponder._internal.jsonl import read_jsonl
from ponder.errors import ConfigurationError
from ponder.memory._retrieval import BM25Retriever
from ponder.memory._store import MemoryStore
from ponder.tools import Tool, register_tool

__all__ = ["cheatsheet_tool", "load_corpus", "search_tool"]


def _sections(text: str) -> list[str]:
    """A cheatsheet's parts: its headed sections, or its paragraphs."""
    parts = re.split(r"\n(?=#{1,6} |<memory_item>)|\n\s*\n", text)
    return [p.strip() for p in parts if p.strip()]


def cheatsheet_tool(store: MemoryStore, namespace: str, *, name: str = "cheatsheet") -> Tool:
    """``cheatsheet(topic)``: the latest cheatsheet of ``namespace``, or with a ``topic``
    its five sections that match it best (BM25)."""
    retriever = BM25Retriever()

    async def cheatsheet(topic: str = "") -> str:
        """Read the curated cheatsheet of strategies, insights and code that solved
        problems like this one before.

        Args:
            topic: a few words on what you need; empty for the whole cheatsheet
        """
        sheet = await store.latest(namespace)
        if sheet is None or not sheet.content.strip():
            return "The cheatsheet is empty: nothing has been learned for this yet."
        if not topic.strip():
            return sheet.content
        parts = _sections(sheet.content)
        best = retriever.search(topic, parts, 5)
        if not best:
            return f"No section of the cheatsheet (version {sheet.version}) mentions that."
        return "\n\n".join(parts[i] for i in best)

    return Tool(cheatsheet, name=name, timeout=10.0)


def load_corpus(path: str | Path) -> list[str]:
    """Documents from a file: JSON Lines (each line a string or an object with a ``text``
    field), a JSON list, or plain text with documents separated by blank lines; or from
    a directory (each ``.txt``/``.md`` file one document)."""
    p = Path(path)
    if p.is_dir():
        files = sorted(f for f in p.rglob("*") if f.suffix in (".txt", ".md") and f.is_file())
        return [f.read_text(encoding="utf-8") for f in files]
    if not p.is_file():
        raise ConfigurationError(f"search corpus {p} does not exist")
    text = p.read_text(encoding="utf-8")
    if p.suffix in (".jsonl", ".ndjson"):
        docs = []
        for n, item in read_jsonl(p, "the search corpus"):
            doc = item.get("text") if isinstance(item, dict) else item
            if not isinstance(doc, str):
                raise ConfigurationError(f"{p}:{n}: expected a string or an object with 'text'")
            docs.append(doc)
        return docs
    if p.suffix == ".json":
        items = json.loads(text)
        if not isinstance(items, list):
            raise ConfigurationError(f"{p}: expected a JSON list of documents")
        return [i["text"] if isinstance(i, dict) else str(i) for i in items]
    return [d.strip() for d in re.split(r"\n\s*\n", text) if d.strip()]


def search_tool(corpus: Sequence[str] | str | Path, *, k: int = 3, name: str = "search") -> Tool:
    """``search(query)``: the ``k`` documents of ``corpus`` (a list of texts, or a path
    for :func:`load_corpus`) that BM25 ranks best for the query."""
    docs = list(corpus) if not isinstance(corpus, str | Path) else load_corpus(corpus)
    if not docs:
        raise ConfigurationError("the search tool's corpus is empty")
    retriever = BM25Retriever()
    default_k = k

    def search(query: str, k: int = default_k) -> str:
        """Search the reference documents and return the passages that match best.

        Args:
            query: keywords to look for
            k: how many passages to return (1 to 10)
        """
        hits = retriever.search(query, docs, max(1, min(k, 10)))
        if not hits:
            return "Nothing in the documents matches that; try other keywords."
        return "\n\n".join(f"[{r + 1}] {docs[i]}" for r, i in enumerate(hits))

    return Tool(search, name=name, timeout=30.0)


def _cheatsheet_from_config(
    namespace: str, store: str | None = None, name: str = "cheatsheet"
) -> Tool:
    from ponder.memory._store import open_store

    return cheatsheet_tool(open_store(store), namespace, name=name)


register_tool("search", search_tool)
register_tool("cheatsheet", _cheatsheet_from_config)
