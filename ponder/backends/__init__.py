"""The model layer: one async interface over OpenAI-compatible and Anthropic servers.

>>> from ponder.backends import Model
>>> model = Model("vllm:Qwen/Qwen2.5-7B-Instruct@http://127.0.0.1:8000/v1")  # doctest: +SKIP
>>> completion = await model.generate("What is 2+2?", n=8, temperature=0.8)  # doctest: +SKIP

See docs/backends.md for model strings, providers, policies and adding a provider.
"""

import lazy_loader

# Names load on first use (PEP 562, from __init__.pyi): `ponder validate` and
# `import ponder.backends` pay only for what they touch (benchmarks/cli_start.py).
__getattr__, __dir__, __all__ = lazy_loader.attach_stub(__name__, __file__)
