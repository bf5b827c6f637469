"""Synchronous parts of the model layer: retry waits, the sync facade."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ponder import Model, RateLimitError, RetryPolicy, ServerError, Settings
from ponder.testing import StandinConfig, StandinServer


def test_retry_wait_is_at_least_retry_after_and_bounded() -> None:
    import random

    policy = RetryPolicy(initial=0.1, maximum=1.0)
    rng = random.Random(0)
    assert policy.wait_for(1, RateLimitError("x", retry_after=3.0), rng) == 3.0
    waits = [policy.wait_for(a, ServerError("x"), rng) for a in range(1, 10)]
    assert all(0.05 <= w <= 1.0 for w in waits)
    assert waits[-1] >= 0.5  # grew exponentially up to the cap


def test_sync_facade(standin_thread: StandinServer, settings: Settings) -> None:
    m = Model(f"vllm:x@{standin_thread.base_url}", settings=settings)
    assert m.generate_sync("hi", max_tokens=3).text
    assert m.generate_sync("hi", max_tokens=3).choices[0].cached


@pytest.fixture
def standin_thread() -> Iterator[StandinServer]:
    server = StandinServer(StandinConfig(time_scale=0.01))
    with server.in_thread():
        yield server


async def test_generate_sync_works_inside_a_running_event_loop(
    standin_thread: StandinServer, settings: Settings
) -> None:
    """As in a Jupyter cell, which runs inside a loop: the blocking call runs on a fresh
    loop in a worker thread, and the model is usable again afterwards, awaited or not."""
    import asyncio

    asyncio.get_running_loop()  # we are inside one
    m = Model(f"vllm:x@{standin_thread.base_url}", settings=settings)
    first = m.generate_sync("Problem 0: go", max_tokens=5, seed=3)
    assert first.text
    again = await m.generate("Problem 0: go", max_tokens=5, seed=3)
    assert again.text == first.text
    assert again.choices[0].cached
    await m.aclose()
