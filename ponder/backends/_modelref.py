"""Model references: one grammar for short strings, one typed object.

Grammar (documented in docs/backends.md)::

    ref       := provider ":" model [ "@" endpoint { "," endpoint } ]
    provider  := a registered provider name (openai, anthropic, vllm, sglang, llamacpp, ...)
    model     := the model name the server knows (may contain "/" and ":")
    endpoint  := an http(s) base URL; several = replicas of the same model

Examples: ``openai:gpt-4o-mini``, ``anthropic:claude-sonnet-4-5``,
``vllm:Qwen/Qwen2.5-7B-Instruct@http://10.0.0.5:8000/v1``,
``vllm:meta-llama/Llama-3.1-8B@http://a:8000/v1,http://b:8000/v1``.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator

from ponder.backends._providers import get_provider
from ponder.errors import ConfigurationError

__all__ = ["ModelRef"]


def _check_url(url: str, ref: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigurationError(
            f"model reference {ref!r}: endpoint {url!r} is not an http(s) URL "
            "(expected e.g. http://127.0.0.1:8000/v1)"
        )
    return url.rstrip("/")


def _looks_like_endpoint(text: str) -> bool:
    """Whether what follows an '@' names where the model is (a URL, a host, host:port),
    rather than being part of the name (a version tag such as ``@20240620``)."""
    t = text.strip()
    return "://" in t or ":" in t or "/" in t or "." in t or "," in t or t == "localhost"


class ModelRef(BaseModel):
    """A model at a provider, optionally at explicit endpoints (replicas)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    provider: str
    name: str = Field(min_length=1)
    base_urls: tuple[str, ...] = ()
    api_key: SecretStr | None = None
    max_concurrency: int | None = Field(None, ge=1, description="Per endpoint.")
    requests_per_minute: int | None = Field(None, ge=1, description="Per endpoint.")
    tokens_per_minute: int | None = Field(None, ge=1, description="Per endpoint.")
    price: tuple[float, float] | None = Field(
        None, description="US dollars per million input and output tokens (cost accounting)."
    )

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, data: Any) -> Any:
        if isinstance(data, str):
            return cls._split(data)
        return data

    @model_validator(mode="after")
    def _validate(self) -> ModelRef:
        get_provider(self.provider)
        object.__setattr__(
            self, "base_urls", tuple(_check_url(u, str(self)) for u in self.base_urls)
        )
        return self

    @staticmethod
    def _split(text: str) -> dict[str, Any]:
        s = text.strip()
        provider, sep, rest = s.partition(":")
        if not sep or not provider or not rest:
            raise ConfigurationError(
                f"malformed model reference {text!r}: expected 'provider:model' "
                "(e.g. 'openai:gpt-4o-mini' or 'vllm:MODEL@http://host:8000/v1')"
            )
        name, urls = rest, ""
        scheme = re.search(r"@(?=[A-Za-z][A-Za-z0-9+.-]*://)", rest)  # the first '@URL'
        at = scheme.start() if scheme is not None else rest.rfind("@")
        if at >= 0 and _looks_like_endpoint(rest[at + 1 :]):
            name, urls = rest[:at], rest[at + 1 :]
            for u in urls.split(","):
                u = u.strip()
                if u and urlsplit(u).scheme not in ("http", "https"):
                    raise ConfigurationError(
                        f"model reference {text!r}: endpoint {u!r} is not an http(s) URL. "
                        "The grammar is provider:model[@URL[,URL...]] with URLs such as "
                        "http://127.0.0.1:8000/v1 (docs/backends.md)"
                    )
        if not name:
            raise ConfigurationError(f"malformed model reference {text!r}: the model name is empty")
        base_urls = tuple(u.strip() for u in urls.split(",") if u.strip()) if urls else ()
        return {"provider": provider.strip(), "name": name, "base_urls": base_urls}

    @classmethod
    def parse(cls, ref: str | ModelRef) -> ModelRef:
        """Parse a model string; raises :class:`ConfigurationError` with the grammar on error."""
        if isinstance(ref, ModelRef):
            return ref
        try:
            return cls.model_validate(ref)
        except ValidationError as e:
            err = e.errors()[0]
            original = err.get("ctx", {}).get("error")
            if isinstance(original, ConfigurationError):
                raise original from None
            where = ".".join(str(p) for p in err["loc"]) or "reference"
            raise ConfigurationError(
                f"malformed model reference {ref!r}: {where}: {err['msg']}"
            ) from None

    def __str__(self) -> str:
        s = f"{self.provider}:{self.name}"
        return s + ("@" + ",".join(self.base_urls) if self.base_urls else "")
