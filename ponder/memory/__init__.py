"""Memory: versioned cheatsheets in a store behind one Protocol (docs/memory.md).

>>> from ponder.memory import SQLiteStore, update
>>> store = SQLiteStore("memory.sqlite")                           # doctest: +SKIP
>>> await update(store, "game24", lambda old: add_strategy(old))   # doctest: +SKIP
"""

from ponder.memory._cheatsheet import (
    CheatsheetConfig,
    CheatsheetResult,
    DynamicCheatsheet,
    parse_cheatsheet,
)
from ponder.memory._store import (
    Cheatsheet,
    InMemoryStore,
    MemoryStore,
    RedisStore,
    SQLiteStore,
    VersionConflict,
    export_namespace,
    import_namespace,
    rollback,
    update,
)

__all__ = [
    "Cheatsheet",
    "CheatsheetConfig",
    "CheatsheetResult",
    "DynamicCheatsheet",
    "InMemoryStore",
    "MemoryStore",
    "RedisStore",
    "SQLiteStore",
    "VersionConflict",
    "export_namespace",
    "import_namespace",
    "parse_cheatsheet",
    "rollback",
    "update",
]
