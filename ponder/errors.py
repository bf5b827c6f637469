"""Ponder's one exception tree.

Every error Ponder raises derives from :class:`PonderError`. Third-party exceptions
(aiohttp, the ``anthropic`` SDK, SQLite, ...) are translated where they enter Ponder,
so callers only ever need to catch these classes. Each message says what went wrong,
where, and what to do about it.

::

    PonderError
    ├── ConfigurationError          bad settings, model strings, parameters
    │   └── MissingAPIKeyError      the provider needs a key that is not set
    ├── AuthenticationError         401/403 from the server
    ├── BackendError                the model server failed the request
    │   ├── BadRequestError         4xx other than 401/403/408/429: not retried
    │   ├── TransportError          connection refused/reset: retried
    │   ├── ServerError             5xx: retried
    │   ├── RateLimitError          429: retried after ``retry_after``
    │   └── RequestTimeout          no answer within the timeout: retried
    ├── BudgetExceeded              a run budget (tokens, dollars, requests) is spent
    ├── ParseError                  unparseable server response or model output
    └── ToolExecutionError          a tool (e.g. the code sandbox) failed
"""

from __future__ import annotations

__all__ = [
    "AuthenticationError",
    "BackendError",
    "BadRequestError",
    "BudgetExceeded",
    "ConfigurationError",
    "MissingAPIKeyError",
    "ParseError",
    "PonderError",
    "RateLimitError",
    "RequestTimeout",
    "ServerError",
    "ToolExecutionError",
    "TransportError",
]


class PonderError(Exception):
    """Base class of every error raised by Ponder. Its text never holds an API key Ponder
    knows (see :mod:`ponder._redact`)."""

    #: Whether repeating the same request may succeed (used by the retry policy).
    retryable: bool = False
    #: At most this many retries of this kind of failure, whatever the policy allows
    #: (None: the policy's own bound).
    retry_limit: int | None = None

    def __str__(self) -> str:
        from ponder._redact import redact

        return redact(super().__str__())


class ConfigurationError(PonderError, ValueError):
    """Settings, a model reference or request parameters are invalid."""


class MissingAPIKeyError(ConfigurationError):
    """A provider needs an API key and none was found."""

    def __init__(self, provider: str, env_var: str) -> None:
        self.provider = provider
        self.env_var = env_var
        super().__init__(
            f"provider {provider!r} needs an API key: set the environment variable "
            f"{env_var} (or pass api_key=... to the model)"
        )


class AuthenticationError(PonderError):
    """The server rejected the credentials (HTTP 401 or 403). Never retried."""


class BackendError(PonderError):
    """The model server could not serve a request.

    ``status`` is the HTTP status when there was one, ``endpoint`` the base URL.
    """

    def __init__(self, message: str, *, status: int | None = None, endpoint: str = "") -> None:
        self.status = status
        self.endpoint = endpoint
        super().__init__(message)


class BadRequestError(BackendError):
    """The server refused the request as invalid (HTTP 4xx). Never retried."""


class TransportError(BackendError):
    """The connection failed (refused, reset, closed mid-response)."""

    retryable = True


class ServerError(BackendError):
    """The server failed (HTTP 5xx)."""

    retryable = True


class RateLimitError(BackendError):
    """The server is rate limiting (HTTP 429); ``retry_after`` is its hint in seconds."""

    retryable = True

    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None = None,
        status: int | None = 429,
        endpoint: str = "",
    ) -> None:
        self.retry_after = retry_after
        super().__init__(message, status=status, endpoint=endpoint)


class RequestTimeout(BackendError):
    """No complete answer arrived within the request timeout. Retried once: a server
    that trickles its answer must not hold a call for the timeout times every retry."""

    retryable = True
    retry_limit = 1


class BudgetExceeded(PonderError):
    """A run budget is exhausted. ``spent`` says what was used when it stopped."""

    def __init__(self, message: str, *, spent: dict[str, float]) -> None:
        self.spent = spent
        super().__init__(message)


class ParseError(PonderError, ValueError):
    """A server response or a model's output could not be parsed."""


class ToolExecutionError(PonderError):
    """A tool failed to run (not: the tool ran and the code under test failed)."""
