"""The model layer: one async interface over OpenAI-compatible and Anthropic servers.

>>> from ponder.backends import Model
>>> model = Model("vllm:Qwen/Qwen2.5-7B-Instruct@http://127.0.0.1:8000/v1")  # doctest: +SKIP
>>> completion = await model.generate("What is 2+2?", n=8, temperature=0.8)  # doctest: +SKIP

See docs/backends.md for model strings, providers, policies and adding a provider.
"""

from ponder.backends._base import Wire
from ponder.backends._cache import MemoryCache, ResponseCache, SQLiteCache, request_key
from ponder.backends._model import Model, Prompt
from ponder.backends._modelref import ModelRef
from ponder.backends._policies import Budget, Price, PriceTable, RetryPolicy, UsageMeter
from ponder.backends._pool import Endpoint, EndpointPool
from ponder.backends._providers import (
    PROVIDERS,
    Provider,
    Quirks,
    get_provider,
    register_provider,
    with_quirks,
)
from ponder.backends._redis_cache import AsyncResponseCache, RedisCache

__all__ = [
    "PROVIDERS",
    "AsyncResponseCache",
    "Budget",
    "Endpoint",
    "EndpointPool",
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
    "register_provider",
    "request_key",
    "with_quirks",
]
