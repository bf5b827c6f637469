"""Ponder's settings: one immutable object, resolved once from arguments, environment, defaults.

Every field can be set with an environment variable ``PONDER_<FIELD>`` (for example
``PONDER_MAX_CONCURRENCY=64``). API keys also accept the providers' usual variable names
(``OPENAI_API_KEY``, ``ANTHROPIC_API_KEY``, ``TOGETHER_API_KEY``, ``VLLM_API_KEY``,
``GEMINI_API_KEY``, ``GROQ_API_KEY``); a provider you register names its own variable
(``Provider(api_key_env="ACME_API_KEY")``) and :meth:`Settings.env_key` reads it.
Model calls, caches, retries and budgets read only a :class:`Settings` passed down. The
other places that read the environment, each for a standard variable of its own domain:

* ``ponder.tracing``: the OpenTelemetry ``OTEL_*`` variables and
  ``PONDER_TRACE_CONTENT``;
* ``ponder._internal.loop``: ``PONDER_LOOP`` (the event loop, chosen before any
  settings exist);
* ``ponder._internal.env``: ``${VAR}`` in a workflow's model references and in
  ``reward_rank``'s ``url``, where the user wrote one (``reward_rank``'s
  ``api_key_env`` is read through :meth:`Settings.env_key`);
* Bedrock: ``AWS_REGION``/``AWS_DEFAULT_REGION``; fixtures: ``XDG_DATA_HOME``;
* ``ponder eval --ray``: hands the driver's ``PONDER_*`` to its workers (the only
  place that writes them, in the worker); embedding retrieval sets
  ``HF_HUB_OFFLINE``/``TRANSFORMERS_OFFLINE`` (no hub is reachable); an MCP stdio
  server gets the environment plus its ``env``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from ponder.errors import ConfigurationError

__all__ = ["Settings", "default_cache_path"]


def default_cache_path() -> Path:
    """``$XDG_CACHE_HOME/ponder/responses.sqlite`` (``~/.cache/ponder/...`` by default)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "ponder" / "responses.sqlite"


def _key(name: str) -> Any:
    return Field(None, validation_alias=AliasChoices(f"PONDER_{name}", name))


class Settings(BaseSettings):
    """Resolved configuration. Build it with ``Settings()`` (reads the environment) or
    ``Settings(max_concurrency=32, ...)`` (arguments win over the environment)."""

    model_config = SettingsConfigDict(
        env_prefix="PONDER_", frozen=True, extra="forbid", populate_by_name=True
    )

    default_model: str | None = Field(
        None, description="Model reference used when none is given (see docs/backends.md)."
    )
    cache: bool = Field(True, description="Use the persistent response cache.")
    cache_path: Path = Field(default_factory=default_cache_path)
    cache_url: str | None = Field(
        None,
        description="Share the response cache through Redis (redis://HOST:PORT/DB) "
        "instead of the SQLite file at cache_path: server processes and Ray workers pay "
        "once for the same sample.",
    )
    cache_ttl: float | None = Field(
        None, gt=0, description="Seconds a Redis cache entry lives (None: forever)."
    )
    max_concurrency: int = Field(256, ge=1, description="In-flight requests per endpoint.")
    schedule: Literal["fifo", "las", "ncf"] = Field(
        "las",
        description="Order of requests waiting for an endpoint slot: 'fifo' (arrival), "
        "'las' (least attained service: the run that has had the fewest requests goes "
        "first) or 'ncf' (nearest completion first: the run that has had the most goes "
        "first). See benchmarks/batch.py.",
    )
    max_retries: int = Field(4, ge=0, le=50, description="Retries after the first attempt.")
    retry_initial: float = Field(0.5, gt=0, description="First backoff in seconds.")
    retry_max: float = Field(30.0, gt=0, description="Longest backoff in seconds.")
    request_timeout: float = Field(600.0, gt=0, description="Seconds for one HTTP attempt.")
    connect_timeout: float = Field(10.0, gt=0, description="Seconds to open a connection.")
    first_byte_timeout: float = Field(
        50.0,
        gt=0,
        description="Seconds a server may take before it sends anything, or stall between "
        "bytes: past it the endpoint counts as hung and the call fails (not retried). Raise "
        "it for very long non-streamed answers.",
    )
    headers_timeout: float = Field(
        60.0,
        gt=0,
        description="Seconds a server may take to send its complete response headers, "
        "however it trickles them; past it the call fails (not retried).",
    )
    eject_after: int = Field(3, ge=1, description="Consecutive failures that eject a replica.")
    eject_cooldown: float = Field(10.0, gt=0, description="Seconds an ejected replica rests.")
    local_n_ctx: int = Field(
        4096, ge=64, description="Context window of each sequence of a local GGUF model."
    )
    local_max_sequences: int = Field(
        16,
        ge=1,
        le=256,
        description="Sequences a local GGUF model decodes together in one batch (samples of "
        "one prompt and concurrent requests).",
    )
    local_kv_cells: int = Field(
        0,
        ge=0,
        description="KV cache cells a local GGUF model's sequences share (0: 4 x "
        "local_n_ctx). A request starts when its prompt plus max_tokens per sample fit.",
    )
    local_probe: bool = Field(
        True,
        description="Before loading llama.cpp in-process, run it once in a child process "
        "(per library build, CPU and model file) so that a library built for another CPU is "
        "a clear error rather than a crash.",
    )
    local_threads: int = Field(0, ge=0, description="CPU threads of local models (0: all).")
    local_cpu_variant: Literal["auto", "base", "icelake", "skylakex"] = Field(
        "auto",
        description="Which build of llama.cpp's CPU kernels to run: auto (the best this CPU "
        "supports among those ./dev built), base (the wheel's own, AVX2), icelake or skylakex "
        "(AVX-512). One per process.",
    )

    openai_api_key: SecretStr | None = _key("OPENAI_API_KEY")
    anthropic_api_key: SecretStr | None = _key("ANTHROPIC_API_KEY")
    together_api_key: SecretStr | None = _key("TOGETHER_API_KEY")
    vllm_api_key: SecretStr | None = _key("VLLM_API_KEY")
    gemini_api_key: SecretStr | None = _key("GEMINI_API_KEY")
    groq_api_key: SecretStr | None = _key("GROQ_API_KEY")

    @classmethod
    def load(cls, **overrides: Any) -> Settings:
        """Like ``Settings(**overrides)`` but raises :class:`ConfigurationError` on bad values."""
        try:
            return cls(**overrides)
        except ValidationError as e:
            err = e.errors()[0]
            where = ".".join(str(p) for p in err["loc"])
            raise ConfigurationError(
                f"invalid setting {where}={err.get('input')!r}: {err['msg']} "
                f"(argument or environment variable PONDER_{where.upper()})"
            ) from None

    def has_api_key(self) -> bool:
        """Whether any remote provider's API key is configured."""
        return any(
            getattr(self, name) is not None
            for name in (
                "openai_api_key",
                "anthropic_api_key",
                "together_api_key",
                "gemini_api_key",
                "groq_api_key",
            )
        )

    def env_key(self, variable: str) -> str | None:
        """An API key from the environment variable ``PONDER_<variable>`` or ``variable``,
        read now: the key of a provider registered with its own ``api_key_env`` and no
        field here (``ponder.backends.register_provider``)."""
        for name in (f"PONDER_{variable}", variable):
            value = os.environ.get(name)
            if value:
                return value
        return None

    def api_key(self, field: str) -> str | None:
        """The secret value of the API-key field ``field`` (e.g. ``"openai_api_key"``)."""
        value = getattr(self, field, None)
        return value.get_secret_value() if isinstance(value, SecretStr) else None
