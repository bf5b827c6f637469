"""The engine: one per process (per event loop), owning what runs share.

>>> from ponder.engine import Engine
>>> async with Engine() as engine:  # doctest: +SKIP
...     model = engine.model("vllm:Qwen/Qwen2.5-7B-Instruct@http://127.0.0.1:8000/v1")
...     async with engine.run(Budget(max_tokens=10_000)):
...         await model.generate("2+2?")

See docs/architecture.md ("Who owns what").
"""

from ponder.engine._engine import Engine, Run, default_engine, engine_for
from ponder.engine._redis_budget import RedisBudget

__all__ = ["Engine", "RedisBudget", "Run", "default_engine", "engine_for"]
