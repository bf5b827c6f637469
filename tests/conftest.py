"""Shared fixtures: the network guard (autouse) and stand-in servers on loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio

from ponder import Settings
from ponder.testing import StandinConfig, StandinServer, block_remote_models


@pytest.fixture(autouse=True)
def _no_remote_models(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """Every test: no real LLM call can leave the machine; no user cache is touched."""
    for var in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "TOGETHER_API_KEY", "VLLM_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    with block_remote_models():
        yield


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings.load(cache_path=tmp_path / "cache.sqlite", retry_initial=0.01, retry_max=0.05)


FAST = StandinConfig(time_scale=0.01)


@pytest_asyncio.fixture
async def standin() -> AsyncIterator[StandinServer]:
    async with StandinServer(FAST) as server:
        yield server
