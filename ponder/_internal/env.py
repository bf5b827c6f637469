"""``${VAR}`` and ``${VAR:-default}`` in a value a user wrote (a workflow's model URL, a
reward model's URL), read from the environment when the value is used."""

from __future__ import annotations

import os
import re

from ponder.errors import ConfigurationError

__all__ = ["expand_env"]

_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def expand_env(text: str) -> str:
    """``text`` with each ``${VAR}`` replaced by the variable's value and each
    ``${VAR:-default}`` by the value or ``default``. An unset variable without a default
    is a :class:`ConfigurationError` (a ``ValueError``) that names it."""

    def sub(m: re.Match[str]) -> str:
        value = os.environ.get(m.group(1))
        if value is None:
            if m.group(2) is None:
                raise ConfigurationError(
                    f"environment variable {m.group(1)} is not set (write ${{{m.group(1)}:-"
                    "default}} for a default)"
                )
            return m.group(2)
        return value

    return _ENV.sub(sub, text)
