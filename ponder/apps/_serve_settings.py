"""One settings object for the front ends: ``ponder serve``, the web page and Slack."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

__all__ = ["ServeSettings"]


def _split(v: object) -> object:
    return [x.strip() for x in v.split(",") if x.strip()] if isinstance(v, str) else v


class ServeSettings(BaseSettings):
    """Configuration of ``ponder serve`` (environment variables ``PONDER_SERVE_*``).

    With no ``api_keys`` the API is open (fine on loopback; the server warns otherwise).
    Lists come from the environment comma-separated: ``PONDER_SERVE_API_KEYS=k1,k2``.
    """

    model_config = SettingsConfigDict(env_prefix="PONDER_SERVE_", extra="forbid")

    api_keys: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list, description="Bearer tokens clients must send."
    )
    requests_per_minute: int = Field(600, ge=1, description="Per API key (or per client IP).")
    token_budget: int | None = Field(
        None, ge=1, description="Tokens each API key may spend (None: no limit)."
    )
    max_body_bytes: int = Field(1_000_000, ge=1024, description="Larger requests get 413.")
    max_json_depth: int = Field(
        32, ge=4, le=512, description="Deepest nesting of a JSON body; deeper ones get 400."
    )
    trusted_proxies: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Addresses of reverse proxies whose X-Forwarded-For is believed (none: "
        "the header is ignored, and clients are who they connect from).",
    )
    allow_open_remote: bool = Field(
        False,
        description="With no api_keys, also answer clients that are not on loopback (off: "
        "an open server answers only this machine).",
    )
    allowed_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["localhost", "127.0.0.1", "::1"],
        description="With no api_keys, the Host names (and Origin hosts) an open server "
        "answers: a web page on another site that rebinds its DNS name to 127.0.0.1 sends "
        "its own name and is refused. '*' allows any.",
    )
    max_concurrent_runs: int | None = Field(
        None,
        ge=1,
        description="Runs at once; more wait. Default: what the workflows' endpoints can "
        "serve (their request slots, summed once per endpoint, 8-1024).",
    )
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Origins allowed by CORS (none: CORS off)."
    )
    redis_url: str | None = Field(
        None, description="Share rate limits, budgets and Slack retry marks between servers."
    )
    runs_kept: int = Field(1000, ge=1, description="Finished runs whose events stay readable.")
    graceful_shutdown_seconds: float = Field(30.0, ge=0)
    slack_bot_token: SecretStr | None = None
    slack_signing_secret: SecretStr | None = Field(
        None, description="HTTP events mode at /slack/events (requests are verified with it)."
    )
    slack_app_token: SecretStr | None = Field(
        None,
        description="An app-level token (xapp-...): Socket Mode, events over a WebSocket the "
        "server opens to Slack (no public URL needed). Works with or without HTTP mode.",
    )
    slack_api_url: str = Field(
        "https://slack.com/api/", description="Slack Web API base URL (tests point it at a fake)."
    )
    slack_update_seconds: float = Field(
        1.0, ge=0, description="Least time between progress updates of a Slack reply."
    )

    @field_validator("api_keys", "cors_origins", "trusted_proxies", "allowed_hosts", mode="before")
    @classmethod
    def _comma_separated(cls, v: object) -> object:
        return _split(v)

    def keys(self) -> set[str]:
        return {k.get_secret_value() for k in self.api_keys}
