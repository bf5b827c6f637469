"""`ponder standin` in its own process for the benchmarks (its CPU is not the client's)."""

from __future__ import annotations

import asyncio
import os
import re
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import aiohttp


@contextmanager
def standin_process(*args: str) -> Iterator[str]:
    """Start `ponder standin --port 0 ARGS...`; yield its base URL; stop it afterwards."""
    cmd = [sys.executable, "-m", "ponder.apps", "standin", "--port", "0", *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        m = re.search(r"(http://\S+)", line)
        if not m:
            raise RuntimeError(f"stand-in did not start: {line!r}")
        yield m.group(1)
    finally:
        proc.terminate()
        proc.wait(10)


async def wait_healthy(session: aiohttp.ClientSession, url: str, tries: int = 400) -> None:
    """Wait until ``GET url`` answers 200 (a server process that is still starting)."""
    for _ in range(tries):
        try:
            async with session.get(url) as r:
                if r.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.05)
    raise RuntimeError(f"{url} did not come up")


@asynccontextmanager
async def serve_process(wf_dir: Path, **env: str) -> AsyncIterator[tuple[str, int]]:
    """`ponder serve --workflows WF_DIR` in its own process (response cache off, ``env``
    added); yields its base URL and pid once it answers /health; stops it afterwards."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ponder", "serve", "--workflows", str(wf_dir),
        "--port", str(port), env={**os.environ, "PONDER_CACHE": "false", **env},
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as c:
            await wait_healthy(c, f"{base}/health")
        yield base, proc.pid
    finally:
        proc.terminate()
        await proc.wait()
