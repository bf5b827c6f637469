"""Ponder: inference-time reasoning with stacked LLM pipelines and massive async fan-out.

The names users import live here; everything else is in public subpackages
(``ponder.backends``, ``ponder.testing``) or private modules.
"""

from typing import TYPE_CHECKING, Any

from ponder.errors import (
    AuthenticationError,
    BackendError,
    BadRequestError,
    BudgetExceeded,
    ConfigurationError,
    MissingAPIKeyError,
    ParseError,
    PonderError,
    RateLimitError,
    RequestTimeout,
    ServerError,
    ToolExecutionError,
    TransportError,
)

if TYPE_CHECKING:
    from ponder.backends import (
        Budget,
        MemoryCache,
        Model,
        ModelRef,
        Price,
        PriceTable,
        Provider,
        Quirks,
        RetryPolicy,
        SQLiteCache,
        register_provider,
    )
    from ponder.settings import Settings
    from ponder.types import (
        Choice,
        Completion,
        GenerateParams,
        Message,
        StreamChunk,
        TokenLogprob,
        Usage,
    )

# The rest loads on first use (PEP 562): `ponder --help` and `ponder validate` do not pay
# for the model layer's imports (benchmarks/cli_start.py).
_LAZY = {
    **dict.fromkeys(
        ("Budget", "MemoryCache", "Model", "ModelRef", "Price", "PriceTable", "Provider",
         "Quirks", "RetryPolicy", "SQLiteCache", "register_provider"),
        "ponder.backends",
    ),
    "Settings": "ponder.settings",
    **dict.fromkeys(
        ("Choice", "Completion", "GenerateParams", "Message", "StreamChunk", "TokenLogprob",
         "Usage"),
        "ponder.types",
    ),
}  # fmt: skip


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'ponder' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # once: later look-ups are plain attributes
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__version__ = "0.1.0"

__all__ = [
    "AuthenticationError",
    "BackendError",
    "BadRequestError",
    "Budget",
    "BudgetExceeded",
    "Choice",
    "Completion",
    "ConfigurationError",
    "GenerateParams",
    "MemoryCache",
    "Message",
    "MissingAPIKeyError",
    "Model",
    "ModelRef",
    "ParseError",
    "PonderError",
    "Price",
    "PriceTable",
    "Provider",
    "Quirks",
    "RateLimitError",
    "RequestTimeout",
    "RetryPolicy",
    "SQLiteCache",
    "ServerError",
    "Settings",
    "StreamChunk",
    "TokenLogprob",
    "ToolExecutionError",
    "TransportError",
    "Usage",
    "__version__",
    "register_provider",
]
