"""What a :class:`~ponder.backends.Model` is made of, chosen from its provider and the
settings: its wire, the default model when none is named, and the response cache."""

from __future__ import annotations

import logging

from ponder.backends._base import Wire
from ponder.backends._cache import ResponseCache, SQLiteCache
from ponder.backends._providers import PROVIDERS, Provider, Quirks, provider_key
from ponder.backends._redis_cache import RedisCache
from ponder.errors import ConfigurationError
from ponder.settings import Settings

__all__ = ["embedded_default", "make_wire", "settings_cache"]

log = logging.getLogger("ponder")


def make_wire(provider: Provider, quirks: Quirks, settings: Settings) -> Wire:
    if provider.protocol == "local":
        from ponder.backends._local import LocalConfig, LocalWire

        return LocalWire(
            LocalConfig(
                n_ctx=settings.local_n_ctx,
                n_threads=settings.local_threads,
                max_sequences=settings.local_max_sequences,
                kv_cells=settings.local_kv_cells,
                probe=settings.local_probe,
                cpu_variant=settings.local_cpu_variant,
            )
        )
    if provider.protocol in ("anthropic", "bedrock"):
        from ponder.backends._anthropic import AnthropicWire

        return AnthropicWire(key_hint=provider.api_key_env, bedrock=provider.protocol == "bedrock")
    from ponder.backends._openai import OpenAIWire

    return OpenAIWire(
        quirks,
        key_hint=provider.api_key_env,
        connect_timeout=settings.connect_timeout,
        first_byte_timeout=settings.first_byte_timeout,
        headers_timeout=settings.headers_timeout,
    )


_announced = False


def embedded_default(settings: Settings) -> str:
    """``local:smollm2`` when nothing is configured; said once per process."""
    global _announced
    if any(provider_key(p, settings) for p in PROVIDERS.values() if p.key_required):
        raise ConfigurationError(
            "no model given and no default: pass a model reference such as "
            "'openai:gpt-4o-mini', or set PONDER_DEFAULT_MODEL"
        )
    if not _announced:
        _announced = True
        log.warning(
            "no model configured and no API key: using the embedded local model "
            "local:smollm2 (SmolLM2-135M-Instruct on the CPU, a smoke-test-grade model). "
            "Set PONDER_DEFAULT_MODEL or pass a model, e.g. 'vllm:MODEL@http://host:8000/v1'"
        )
    return "local:smollm2"


def settings_cache(settings: Settings) -> ResponseCache | None:
    """The cache the settings ask for: none, Redis (``cache_url``) or SQLite."""
    if not settings.cache:
        return None
    if settings.cache_url:
        return RedisCache(settings.cache_url, ttl=settings.cache_ttl)
    return SQLiteCache(settings.cache_path)
