"""Tools from Model Context Protocol servers (``pip install 'ponder[mcp]'``).

:class:`MCPServer` connects to one server, over stdio (a command it starts) or streamable
HTTP (a URL), lists its tools and makes each a :class:`ponder.tools.Tool`: the server's
JSON Schema is what the model sees and what arguments are checked against before the call;
a result the server marks as an error comes back to the model as an error result.

>>> async with MCPServer(command=["python", "units_server.py"]) as units:  # doctest: +SKIP
...     run = await run_agent(model, "How many metres is 3 km?", await units.tools())

The connection lives in a task of its own (the MCP SDK's transports must be closed by the
task that opened them), so one server serves every concurrent agent run. In YAML:
``tools: [{mcp: {command: [python, server.py]}}]`` or ``{mcp: {url: http://.../mcp}}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from ponder.errors import ConfigurationError, ToolExecutionError
from ponder.tools._tool import Tool

__all__ = ["MCPServer"]


def _import_mcp() -> Any:
    try:
        import mcp
    except ImportError:
        raise ConfigurationError("MCP tools need the MCP SDK: pip install 'ponder[mcp]'") from None
    return mcp


def _text(result: Any) -> str:
    parts = []
    for block in getattr(result, "content", None) or ():
        kind = getattr(block, "type", "")
        if kind == "text":
            parts.append(block.text)
        elif kind == "resource":
            parts.append(str(getattr(block.resource, "text", "") or block.resource))
        else:
            parts.append(f"[{kind} content]")
    if not parts and getattr(result, "structured_content", None) is not None:
        import json

        return json.dumps(result.structured_content)
    return "\n".join(parts)


class MCPServer:
    """One MCP server's tools. ``command`` starts a stdio server (with ``env`` and
    ``cwd``); ``url`` reaches a streamable-HTTP one (with ``headers``). ``prefix`` is put
    before each tool's name (``prefix_name``) to keep two servers' tools apart;
    ``timeout`` bounds one call (seconds)."""

    def __init__(
        self,
        command: Sequence[str] | None = None,
        *,
        url: str | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        headers: Mapping[str, str] | None = None,
        prefix: str | None = None,
        timeout: float = 60.0,
        start_timeout: float = 30.0,
    ) -> None:
        if (command is None) == (url is None):
            raise ConfigurationError("an MCP server needs either command=[...] or url=...")
        if command is not None and (isinstance(command, str) or not command):
            raise ConfigurationError("command is a list: the program and its arguments")
        self.command = list(command) if command is not None else None
        self.url = url
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self.headers = dict(headers or {})
        self.prefix = prefix
        self.timeout = timeout
        self.start_timeout = start_timeout
        self._session: Any = None
        self._tools: list[Tool] | None = None
        self._task: asyncio.Task[None] | None = None
        self._ready: asyncio.Event | None = None
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self._lock: asyncio.Lock | None = None

    def __repr__(self) -> str:
        where = " ".join(self.command) if self.command else self.url
        return f"MCPServer({where!r})"

    async def __aenter__(self) -> MCPServer:
        await self.tools()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def tools(self) -> list[Tool]:
        """The server's tools (connecting on first use)."""
        if self._tools is not None:
            return self._tools
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self._tools is None:
                await self._start()
        assert self._tools is not None
        return self._tools

    async def _start(self) -> None:
        _import_mcp()
        self._ready, self._stop, self._error = asyncio.Event(), asyncio.Event(), None
        self._task = asyncio.create_task(self._serve(), name=f"mcp {self!r}")
        try:
            await asyncio.wait_for(self._ready.wait(), self.start_timeout)
        except TimeoutError:
            await self.aclose()
            raise ToolExecutionError(
                f"{self!r} did not answer within {self.start_timeout:g} s"
            ) from None
        if self._error is not None:
            err, self._error = self._error, None
            await self.aclose()
            raise ToolExecutionError(f"cannot start {self!r}: {err}") from err

    async def _serve(self) -> None:
        from mcp import ClientSession

        assert self._ready is not None
        assert self._stop is not None
        try:
            async with contextlib.AsyncExitStack() as stack:
                if self.command is not None:
                    from mcp import StdioServerParameters
                    from mcp.client.stdio import stdio_client

                    params = StdioServerParameters(
                        command=self.command[0],
                        args=self.command[1:],
                        env={**os.environ, **self.env} if self.env is not None else None,
                        cwd=self.cwd,
                    )
                    read, write = await stack.enter_async_context(
                        stdio_client(params, errlog=sys.stderr)
                    )
                else:
                    from mcp.client import streamable_http
                    from mcp.client.streamable_http import streamable_http_client

                    client = None
                    if self.headers:  # the SDK's own HTTP client, with the headers added
                        make = getattr(streamable_http, "create_mcp_http_client")  # noqa: B009
                        client = await stack.enter_async_context(make(headers=self.headers))
                    streams = await stack.enter_async_context(
                        streamable_http_client(self.url or "", http_client=client)
                    )
                    read, write = streams[0], streams[1]
                session = await stack.enter_async_context(ClientSession(read, write))
                await session.initialize()
                listed = await session.list_tools()
                self._session = session
                self._tools = [self._tool(t) for t in listed.tools]
                self._ready.set()
                await self._stop.wait()
        except BaseException as e:  # reported to whoever waits for the start
            if not self._ready.is_set():
                self._error = e
                self._ready.set()
            if not isinstance(e, Exception):
                raise
        finally:
            self._session = None

    def _tool(self, t: Any) -> Tool:
        name = t.name
        shown = f"{self.prefix}_{name}" if self.prefix else name
        schema = dict(getattr(t, "input_schema", None) or {"type": "object", "properties": {}})

        async def call(**arguments: Any) -> str:
            session = self._session
            if session is None:
                raise ToolExecutionError(f"{self!r} is closed")
            result = await session.call_tool(name, arguments, read_timeout_seconds=self.timeout)
            text = _text(result)
            if getattr(result, "is_error", False):
                raise ToolExecutionError(text or "the server reported an error")
            return text

        return Tool.from_schema(
            shown, t.description or "", schema, call, timeout=self.timeout + 5.0
        )

    async def aclose(self) -> None:
        """Disconnect (a stdio server's process ends)."""
        self._tools = None
        if self._stop is not None:
            self._stop.set()
        task, self._task = self._task, None
        if task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(task), 10)
            except (TimeoutError, Exception):
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
