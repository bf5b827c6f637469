"""Reasoning components over a typed candidate pool (see docs/agents.md).

>>> from ponder.agents import Generate, Pool, Vote
>>> pool = await Generate(model)(Pool(query="What is 17 * 23?"))  # doctest: +SKIP
>>> pool = await Vote()(pool)                                        # doctest: +SKIP
>>> pool.final                                                       # doctest: +SKIP
"""

from typing import Any

import lazy_loader

# Names load on first use (PEP 562, from __init__.pyi): `ponder validate` and
# `import ponder.agents` pay only for what they touch (benchmarks/cli_start.py).
_load, __dir__, __all__ = lazy_loader.attach_stub(__name__, __file__)


def __getattr__(name: str) -> Any:
    if name == "COMPONENTS":  # the registry as users read it: every built-in registered
        from ponder.agents._base import load_components

        return load_components()
    return _load(name)
