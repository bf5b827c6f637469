"""`ponder standin` in its own process for the benchmarks (its CPU is not the client's)."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager


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
