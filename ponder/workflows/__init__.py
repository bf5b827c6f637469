"""Workflows: a pydantic spec, loaded from YAML/JSON or built in Python, compiled to a graph.

>>> from ponder.workflows import load_workflow
>>> wf = load_workflow("stack.yaml")                 # doctest: +SKIP
>>> result = wf.run("What is 17 * 23?")              # doctest: +SKIP
>>> result.output.final                              # doctest: +SKIP
"""

import lazy_loader

# Names load on first use (PEP 562, from __init__.pyi): `ponder validate` and
# `import ponder.workflows` pay only for what they touch (benchmarks/cli_start.py).
__getattr__, __dir__, __all__ = lazy_loader.attach_stub(__name__, __file__)
