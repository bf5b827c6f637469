"""Memory: versioned cheatsheets in a store behind one Protocol (docs/memory.md).

>>> from ponder.memory import SQLiteStore, update
>>> store = SQLiteStore("memory.sqlite")                           # doctest: +SKIP
>>> await update(store, "game24", lambda old: add_strategy(old))   # doctest: +SKIP
"""

from ponder.memory._cheatsheet import (
    CheatsheetConfig,
    CheatsheetResult,
    DynamicCheatsheet,
    Experience,
    ExperienceLog,
    Prepared,
    Variant,
    parse_cheatsheet,
)
from ponder.memory._retrieval import BM25Retriever, EmbeddingRetriever, Retriever
from ponder.memory._store import (
    Cheatsheet,
    InMemoryStore,
    MemoryStore,
    RedisStore,
    SQLiteStore,
    VersionConflict,
    export_namespace,
    import_namespace,
    open_store,
    rollback,
    update,
)
from ponder.memory._tools import cheatsheet_tool, load_corpus, search_tool

__all__ = [
    "BM25Retriever",
    "Cheatsheet",
    "CheatsheetConfig",
    "CheatsheetResult",
    "DynamicCheatsheet",
    "EmbeddingRetriever",
    "Experience",
    "ExperienceLog",
    "InMemoryStore",
    "MemoryStore",
    "Prepared",
    "RedisStore",
    "Retriever",
    "SQLiteStore",
    "Variant",
    "VersionConflict",
    "cheatsheet_tool",
    "export_namespace",
    "import_namespace",
    "load_corpus",
    "open_store",
    "parse_cheatsheet",
    "rollback",
    "search_tool",
    "update",
]
