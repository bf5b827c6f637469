"""Ponder: inference-time reasoning with stacked LLM pipelines and massive async fan-out.

The names users import live here; everything else is in public subpackages
(``ponder.backends``, ``ponder.testing``) or private modules.
"""

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
