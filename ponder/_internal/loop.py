"""The event loop Ponder's own entry points run on: uvloop where installed, else asyncio's.

uvloop (libuv) cuts the per-request CPU of both the stand-in server and an HTTP client by
a fifth to a quarter on the same machine (``benchmarks/fanout.py``). ``PONDER_LOOP=asyncio``
keeps the standard loop (debugging, profilers that expect it).
"""

from __future__ import annotations

import asyncio
import gc
import os
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

__all__ = ["freeze_imports", "loop_factory", "new_event_loop", "run", "run_blocking"]

T = TypeVar("T")


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop constructor, or ``None`` (asyncio's default) when it is unavailable
    or ``PONDER_LOOP=asyncio`` is set."""
    choice = os.environ.get("PONDER_LOOP", "auto").strip().lower()
    if choice == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            from ponder.errors import ConfigurationError

            raise ConfigurationError(
                "PONDER_LOOP=uvloop but uvloop is not installed: pip install uvloop"
            ) from None
        return None
    return uvloop.new_event_loop


def new_event_loop() -> asyncio.AbstractEventLoop:
    """A new loop from :func:`loop_factory` (for loops run in a thread)."""
    factory = loop_factory()
    return factory() if factory is not None else asyncio.new_event_loop()


_frozen = False


def freeze_imports() -> None:
    """Move the objects made so far (modules, classes, pydantic schemas) out of the
    garbage collector's view, once per process: a full collection during a fan-out then
    scans only the run's own objects (a pause of ~50 ms becomes a few ms)."""
    global _frozen
    if not _frozen:
        _frozen = True
        gc.freeze()


def run(coro: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run`` for a command-line entry point: on the loop :func:`loop_factory`
    picks, after :func:`freeze_imports`."""
    freeze_imports()
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(coro)


def run_blocking(make: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run the coroutine ``make()`` to its end from synchronous code: with
    ``asyncio.run`` when no loop runs in this thread, else (a notebook, whose cell runs
    inside a loop) on a fresh loop in a worker thread, blocking this one until it is done.
    ``make`` is called on the thread that runs it, so its objects bind to that loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(make())
    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="ponder-sync") as pool:
        return pool.submit(lambda: asyncio.run(make())).result()
