"""Who is calling ``ponder serve`` (and its MCP endpoint): the holder of an API key, or,
when the server has no keys, a client on this machine that names an allowed Host."""

from __future__ import annotations

import ipaddress
import secrets
import uuid
from urllib.parse import urlsplit

from starlette.requests import Request

from ponder.apps._api import ApiError
from ponder.apps._serve_settings import ServeSettings

__all__ = ["Callers", "bearer", "client_id"]


def client_id(token: str) -> str:
    """How a key is named in limits, budgets and run records (never the key itself)."""
    return f"key:{token[:6]}…{uuid.uuid5(uuid.NAMESPACE_OID, token).hex[:8]}"


def bearer(auth: str) -> str:
    """The token of an ``Authorization: Bearer <token>`` header ('' when there is none)."""
    return auth[7:].strip() if auth.lower().startswith("bearer ") else ""


def _host_name(netloc: str) -> str:
    """``localhost`` from ``localhost:8000``; ``::1`` from ``[::1]:8000``."""
    netloc = netloc.strip().lower()
    if netloc.startswith("["):
        return netloc[1:].split("]", 1)[0]
    return netloc.rsplit(":", 1)[0] if netloc.count(":") == 1 else netloc


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host in ("localhost", "testclient")  # Starlette's TestClient


class Callers:
    """The server's API keys and the check every request passes (:meth:`identify`)."""

    def __init__(self, settings: ServeSettings) -> None:
        self.settings = settings
        self.keys = settings.keys()

    def identify(self, request: Request) -> str:
        """The caller's API key (checked), or its address when the API is open."""
        if not self.keys:
            if not self.settings.allow_open_remote:  # serving everyone: no name to guard
                self._check_host(request)
            host = request.client.host if request.client else ""
            if not self.settings.allow_open_remote and not _loopback(host):
                raise ApiError(
                    403,
                    "this server is open (no API keys) and so answers only clients on its "
                    "own machine; set PONDER_SERVE_API_KEYS, or PONDER_SERVE_ALLOW_OPEN_REMOTE="
                    "true to serve everyone without keys",
                    type_="permission_error",
                    code="open_server_loopback_only",
                )
            return f"ip:{host or '?'}"
        token = bearer(request.headers.get("authorization", ""))
        if token and not token.isascii():  # compare_digest takes ASCII text only
            raise ApiError(
                401, "invalid API key", type_="authentication_error", code="invalid_api_key"
            )
        if not token:
            raise ApiError(
                401,
                "missing API key: send 'Authorization: Bearer <key>'",
                type_="authentication_error",
                code="missing_api_key",
            )
        if not any(secrets.compare_digest(token, k) for k in self.keys):
            raise ApiError(
                401, "invalid API key", type_="authentication_error", code="invalid_api_key"
            )
        return client_id(token)

    def _check_host(self, request: Request) -> None:
        """Open mode: only the allowed Host names and Origins (DNS rebinding defence)."""
        allowed = self.settings.allowed_hosts
        if "*" in allowed:
            return
        names = {h.lower().strip("[]") for h in allowed}
        host = _host_name(request.headers.get("host", ""))
        origin = request.headers.get("origin")
        bad = None
        if host and host not in names and host != "testserver":
            bad = f"Host {host!r}"
        elif origin and origin != "null" and _host_name(urlsplit(origin).netloc) not in names:
            bad = f"Origin {origin!r}"
        if bad is not None:
            raise ApiError(
                403,
                f"this server is open (no API keys) and answers only {', '.join(allowed)}; "
                f"{bad} is not one of them. Add it to PONDER_SERVE_ALLOWED_HOSTS, or set "
                "PONDER_SERVE_API_KEYS",
                type_="permission_error",
                code="host_not_allowed",
            )
