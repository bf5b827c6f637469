"""Shared fixtures: the network guard (autouse) and stand-in servers on loopback."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest
import pytest_asyncio
from aiohttp import web

from ponder import Settings
from ponder.agents import Candidate, Provenance
from ponder.testing import StandinConfig, StandinServer, block_remote_models


@pytest.fixture(autouse=True)
def _no_remote_models(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """Every test: no real LLM call can leave the machine; no user cache is touched."""
    for var in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "TOGETHER_API_KEY", "VLLM_API_KEY",
                "GEMINI_API_KEY", "GROQ_API_KEY"):  # fmt: skip
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    with block_remote_models():
        yield


def cand(answer: str | None, i: int = 0, **scores: float) -> Candidate:
    """A candidate whose text boxes ``answer`` (``None``: no answer), with ``scores``."""
    return Candidate(
        id=f"c{i}",
        text=f"... \\boxed{{{answer}}}" if answer else "no idea",
        answer=answer,
        scores=scores,
        provenance=Provenance(component="test", index=i),
    )


def processes_with(token: str) -> list[int]:
    """Host pids whose command line holds ``token`` (what a sandbox left behind)."""
    found = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if token.encode() in (d / "cmdline").read_bytes():
                    found.append(int(d.name))
            except OSError:
                continue
    return found


@pytest.fixture(scope="module")
def os_sandbox() -> None:
    """Tests of untrusted code need the OS sandbox: its absence fails them, loudly."""
    from ponder.tools import sandbox_unavailable_reason

    why = sandbox_unavailable_reason()
    if why is not None:
        pytest.fail(f"the OS sandbox must run on CI: {why} (./dev test installs bubblewrap)")


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings.load(cache_path=tmp_path / "cache.sqlite", retry_initial=0.01, retry_max=0.05)


FAST = StandinConfig(time_scale=0.01)


@pytest_asyncio.fixture
async def standin() -> AsyncIterator[StandinServer]:
    async with StandinServer(FAST) as server:
        yield server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real redis-server on a free loopback port (installed by .ci/run / ./dev test)."""
    exe = shutil.which("redis-server")
    if exe is None:
        pytest.fail("redis-server is not installed: apt-get install redis-server (./dev test does)")
    port = free_port()
    workdir = tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen(
        [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(workdir)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                break
        except OSError:
            time.sleep(0.05)
    else:
        proc.kill()
        pytest.fail("redis-server did not start")
    yield f"redis://127.0.0.1:{port}/0"
    proc.terminate()
    proc.wait(timeout=10)


ChatHandler = Callable[[web.Request], Awaitable[web.StreamResponse]]


Route = tuple[str, str, ChatHandler]  # method, path, handler


@pytest_asyncio.fixture
async def loopback_server() -> AsyncIterator[Callable[[list[Route]], Awaitable[str]]]:
    """Start a loopback aiohttp server with ``routes`` (a fake of some external API, or
    a server that misbehaves the way a test needs); returns ``http://127.0.0.1:PORT``.
    Stopped after the test."""
    runners: list[web.AppRunner] = []

    async def start(routes: list[Route]) -> str:
        app = web.Application()
        for method, path, handler in routes:
            app.router.add_route(method, path, handler)
        runner = web.AppRunner(app)
        await runner.setup()
        runners.append(runner)
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return f"http://127.0.0.1:{port}"

    yield start
    for r in runners:
        await r.cleanup()


@pytest_asyncio.fixture
async def chat_server(
    loopback_server: Callable[[list[Route]], Awaitable[str]],
) -> Callable[[ChatHandler], Awaitable[str]]:
    """A loopback server whose /v1/chat/completions is ``handler``; returns its base URL."""

    async def start(handler: ChatHandler) -> str:
        return await loopback_server([("POST", "/v1/chat/completions", handler)]) + "/v1"

    return start
