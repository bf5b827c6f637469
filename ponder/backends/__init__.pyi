# The package's names for type checkers; at run time __init__.py loads each on first
# use (lazy_loader reads this file), so importing the package costs nothing up front.

from ._base import Wire
from ._cache import MemoryCache, ResponseCache, SQLiteCache, request_key
from ._model import Model, Prompt
from ._modelref import ModelRef
from ._policies import Budget, Price, PriceTable, RetryPolicy, UsageMeter
from ._pool import Endpoint, EndpointPool, Endpoints
from ._providers import (
    PROVIDERS,
    Provider,
    Quirks,
    get_provider,
    provider_key,
    register_provider,
    with_quirks,
)
from ._redis_cache import AsyncResponseCache, RedisCache

__all__ = [
    "PROVIDERS",
    "AsyncResponseCache",
    "Budget",
    "Endpoint",
    "EndpointPool",
    "Endpoints",
    "MemoryCache",
    "Model",
    "ModelRef",
    "Price",
    "PriceTable",
    "Prompt",
    "Provider",
    "Quirks",
    "RedisCache",
    "ResponseCache",
    "RetryPolicy",
    "SQLiteCache",
    "UsageMeter",
    "Wire",
    "get_provider",
    "provider_key",
    "register_provider",
    "request_key",
    "with_quirks",
]
