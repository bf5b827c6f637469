"""Providers: where a model is served and how to authenticate, plus per-family quirks.

Adding a provider is one :class:`Provider` value passed to :func:`register_provider`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Literal

from ponder.errors import ConfigurationError

if TYPE_CHECKING:
    from ponder.settings import Settings

__all__ = ["PROVIDERS", "Provider", "Quirks", "get_provider", "provider_key", "register_provider"]

PrefillMode = Literal["none", "continue_final_message", "trailing_assistant", "native"]


@dataclass(frozen=True, slots=True)
class Quirks:
    """What a server (or model family) accepts.

    ``supports_n``: returns several choices for one request (vLLM shares the prompt's KV cache).
    ``prefill``: how to continue a partial assistant answer:
    ``continue_final_message`` (vLLM/SGLang flag), ``trailing_assistant`` (a last assistant
    message is continued), ``native`` (Anthropic), ``none`` (refused with a clear error).
    """

    supports_n: bool = True
    max_n: int = 128
    prefill: PrefillMode = "none"
    supports_logprobs: bool = True
    supports_seed: bool = True
    supports_json_schema: bool = True
    #: how a JSON Schema is sent: OpenAI's ``json_schema`` response format, or llama.cpp's
    #: ``{"type": "json_object", "schema": ...}`` (llama-cpp-python's server answers the
    #: former with HTTP 500; llama.cpp's llama-server takes both)
    response_format: Literal["json_schema", "json_object"] = "json_schema"
    #: how tools are offered: the API's own (``native``), or described in the prompt with
    #: the reply constrained to a call or an answer (``json``: backends/_tool_json.py)
    tools: Literal["native", "json"] = "native"
    #: check once per server, before the first prefill, that it is llama.cpp's
    #: llama-server (``GET /props``), which continues a trailing assistant message;
    #: llama-cpp-python's server (no /props) would start a new turn instead
    prefill_probe: bool = False


@dataclass(frozen=True, slots=True)
class Provider:
    """A place that serves models.

    ``api_key_env`` is the environment variable users set for the key (read through
    :meth:`ponder.Settings.env_key`, also as ``PONDER_<variable>``); the built-ins also
    name the :class:`ponder.Settings` field holding it (``api_key_setting``), so a key
    can be passed as a setting. ``key_required`` says whether a request without a key is
    refused before it is sent. One ``register_provider(Provider(...))`` adds a keyed
    provider; nothing else changes.
    """

    name: str
    protocol: Literal["openai", "anthropic", "bedrock", "local"]
    base_url: str | None
    api_key_setting: str | None = None
    api_key_env: str | None = None
    key_required: bool = False
    quirks: Quirks = field(default_factory=Quirks)
    description: str = ""

    @classmethod
    def keyed(
        cls,
        name: str,
        base_url: str,
        *,
        protocol: Literal["openai", "anthropic"] = "openai",
        quirks: Quirks | None = None,
        description: str = "",
    ) -> Provider:
        """A hosted provider that refuses a request without a key: the key is the
        ``<name>_api_key`` setting where :class:`ponder.Settings` has one, else the
        environment variable ``<NAME>_API_KEY`` (or ``PONDER_<NAME>_API_KEY``)."""
        return cls(
            name, protocol, base_url, f"{name}_api_key", f"{name.upper()}_API_KEY",
            key_required=True, quirks=quirks or Quirks(), description=description,
        )  # fmt: skip


#: Bedrock's runtime endpoint in the default region; AWS_REGION picks another
BEDROCK_URL = "https://bedrock-runtime.us-east-1.amazonaws.com"

# the Messages API, direct or on Bedrock: one choice per request, native prefill
_ANTHROPIC_QUIRKS = Quirks(
    supports_n=False,
    prefill="native",
    supports_logprobs=False,
    supports_seed=False,
    supports_json_schema=False,
)
# one choice per request and no logprobs (Ollama, Gemini, Groq)
_ONE_CHOICE = Quirks(supports_n=False, supports_logprobs=False)
_VLLM_QUIRKS = Quirks(supports_n=True, max_n=1024, prefill="continue_final_message")

PROVIDERS: dict[str, Provider] = {}


def provider_key(provider: Provider, settings: Settings) -> str | None:
    """The API key ``settings`` hold for ``provider``: its Settings field, else its
    environment variable; None when neither is set."""
    if provider.api_key_setting:
        key = settings.api_key(provider.api_key_setting)
        if key is not None:
            return key
    return settings.env_key(provider.api_key_env) if provider.api_key_env else None


def register_provider(provider: Provider, *, replace_existing: bool = False) -> Provider:
    """Make ``provider`` addressable as ``"<name>:<model>"``."""
    if provider.name in PROVIDERS and not replace_existing:
        raise ConfigurationError(
            f"provider {provider.name!r} is already registered; pass replace_existing=True"
        )
    if not provider.name.isidentifier():
        raise ConfigurationError(f"provider name {provider.name!r} must be an identifier")
    PROVIDERS[provider.name] = provider
    return provider


def get_provider(name: str) -> Provider:
    try:
        return PROVIDERS[name]
    except KeyError:
        known = ", ".join(sorted(PROVIDERS))
        raise ConfigurationError(
            f"unknown provider {name!r}; known providers: {known} "
            "(register your own with ponder.backends.register_provider)"
        ) from None


for _p in (
    Provider.keyed("openai", "https://api.openai.com/v1", description="OpenAI's API"),
    Provider(
        "vllm",
        "openai",
        "http://127.0.0.1:8000/v1",
        "vllm_api_key",
        "VLLM_API_KEY",
        quirks=_VLLM_QUIRKS,
        description="a vLLM server (OpenAI-compatible)",
    ),
    Provider(
        "sglang",
        "openai",
        "http://127.0.0.1:30000/v1",
        quirks=_VLLM_QUIRKS,
        description="an SGLang server (OpenAI-compatible)",
    ),
    Provider(
        "llamacpp",
        "openai",
        "http://127.0.0.1:8080/v1",
        quirks=Quirks(
            supports_n=False,
            prefill="trailing_assistant",
            response_format="json_object",
            prefill_probe=True,
        ),
        description="llama.cpp's llama-server (one choice per request; a schema goes as "
        "json_object, which llama-cpp-python's server also takes)",
    ),
    Provider(
        "llama_cpp_python",
        "openai",
        "http://127.0.0.1:8000/v1",
        quirks=Quirks(
            supports_n=False,
            prefill="none",
            response_format="json_object",
            tools="json",
        ),
        description="llama-cpp-python's server (one choice per request; a trailing assistant "
        "message starts a new turn, so no prefill; its tools API is ignored without a "
        "function-calling chat format, so tools go as constrained JSON)",
    ),
    Provider(
        "ollama",
        "openai",
        "http://127.0.0.1:11434/v1",
        quirks=_ONE_CHOICE,
        description="an Ollama server",
    ),
    Provider.keyed(
        "together",
        "https://api.together.xyz/v1",
        quirks=Quirks(supports_n=True, max_n=128),
        description="Together AI",
    ),
    Provider.keyed(
        "gemini",
        "https://generativelanguage.googleapis.com/v1beta/openai",
        quirks=_ONE_CHOICE,
        description="Google Gemini through its OpenAI-compatible endpoint",
    ),
    Provider.keyed(
        "groq",
        "https://api.groq.com/openai/v1",
        quirks=_ONE_CHOICE,
        description="Groq (OpenAI-compatible; one choice per request)",
    ),
    Provider.keyed(
        "anthropic",
        "https://api.anthropic.com",
        protocol="anthropic",
        quirks=_ANTHROPIC_QUIRKS,
        description="Anthropic's Messages API",
    ),
    Provider(
        "bedrock",
        "bedrock",
        BEDROCK_URL,
        quirks=_ANTHROPIC_QUIRKS,
        description="Anthropic models on AWS Bedrock (ponder[bedrock]; AWS credentials and "
        "AWS_REGION as boto3 reads them)",
    ),
    Provider(
        "local",
        "local",
        "local://embedded",
        quirks=Quirks(
            supports_n=True,
            max_n=64,
            prefill="trailing_assistant",
            supports_logprobs=False,
            supports_json_schema=True,
        ),
        description="a GGUF model run in-process by llama-cpp-python (the embedded default)",
    ),
):
    register_provider(_p)


def with_quirks(provider: Provider, **changes: object) -> Provider:
    """A copy of ``provider`` whose quirks differ by ``changes``."""
    return replace(provider, quirks=replace(provider.quirks, **changes))  # type: ignore[arg-type]
