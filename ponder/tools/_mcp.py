"""Tools from Model Context Protocol servers (``pip install 'ponder[mcp]'``).

:class:`MCPServer` connects to one server, over stdio (a command it starts) or streamable
HTTP (a URL), lists its tools and makes each a :class:`ponder.tools.Tool`: the server's
JSON Schema is what the model sees and what arguments are checked against before the call;
a result the server marks as an error comes back to the model as an error result.

>>> async with MCPServer(command=["python", "units_server.py"]) as units:  # doctest: +SKIP
...     run = await run_agent(model, "How many metres is 3 km?", await units.tools())

The connection lives in a task of its own (the MCP SDK's transports must be closed by the
task that opened them), so one server serves every concurrent agent run. A server that
dies or restarts is reconnected on the next call, with bounded back-off; calls in flight
when it died fail with an error that says so. In YAML:
``tools: [{mcp: {command: [python, server.py]}}]`` or ``{mcp: {url: http://.../mcp}}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from ponder.errors import ConfigurationError, ToolExecutionError
from ponder.tools._tool import Tool, ToolOutput
from ponder.types import Attachment

__all__ = ["MCPServer"]


def _import_mcp() -> Any:
    try:
        import mcp
    except ImportError:
        raise ConfigurationError("MCP tools need the MCP SDK: pip install 'ponder[mcp]'") from None
    return mcp


def _cause(e: BaseException) -> BaseException:
    """The first leaf of an exception group (the SDK's task groups wrap the real cause,
    e.g. a ConnectError, in "unhandled errors in a TaskGroup")."""
    while isinstance(e, BaseExceptionGroup) and e.exceptions:
        e = e.exceptions[0]
    return e


def _connection_lost(e: BaseException) -> bool:
    """Whether ``e`` says the connection is gone (the server died or restarted), as
    opposed to an error the server sent."""
    import anyio

    cause = _cause(e)
    if isinstance(cause, anyio.ClosedResourceError | anyio.BrokenResourceError | anyio.EndOfStream):
        return True
    code = getattr(getattr(cause, "error", None), "code", None)
    return code == _CONNECTION_CLOSED or "Connection closed" in str(cause)


_CONNECTION_CLOSED = -32000  # the MCP SDK's error code for a closed connection


def _binary(kind: str, mime: str | None, data: str | None, uri: object = None) -> str:
    """A binary block as typed text a model can read: what it is and how big."""
    size = len(data or "") * 3 // 4  # base64
    where = f" {uri}" if uri else ""
    return f"[{kind}{where}: {mime or 'application/octet-stream'}, {size:,} bytes]"


def _output(result: Any) -> ToolOutput:
    """An MCP result as the text the model reads and its binary blocks, typed."""
    parts: list[str] = []
    attachments: list[Attachment] = []

    def binary(kind: Literal["image", "audio", "blob"], label: str, mime: str | None,
               data: str | None, uri: object = None) -> None:  # fmt: skip
        parts.append(_binary(label, mime, data, uri))
        attachments.append(Attachment(kind=kind, mime_type=mime or "application/octet-stream",
                                      data=data or "", uri=str(uri) if uri else None))  # fmt: skip

    for block in getattr(result, "content", None) or ():
        kind = getattr(block, "type", "")
        if kind == "text":
            parts.append(block.text)
        elif kind == "resource":
            res = block.resource
            text = getattr(res, "text", None)
            if isinstance(text, str):
                parts.append(text)
            else:  # a blob: never a Python repr of its base64
                binary("blob", "binary resource", getattr(res, "mime_type", None),
                       getattr(res, "blob", None), getattr(res, "uri", None))  # fmt: skip
        elif kind in ("image", "audio"):
            binary("image" if kind == "image" else "audio", kind,
                   getattr(block, "mime_type", None), getattr(block, "data", None))  # fmt: skip
        elif kind == "resource_link":
            parts.append(f"[resource link: {getattr(block, 'uri', '')}]")
        else:
            parts.append(f"[{kind} content]")
    if not parts and getattr(result, "structured_content", None) is not None:
        import json

        return ToolOutput(json.dumps(result.structured_content))
    return ToolOutput("\n".join(parts), tuple(attachments))


def _text(result: Any) -> str:
    return _output(result).text


class MCPServer:
    """One MCP server's tools. ``command`` starts a stdio server (with ``env`` and
    ``cwd``); ``url`` reaches a streamable-HTTP one (with ``headers``). ``prefix`` is put
    before each tool's name (``prefix_name``) to keep two servers' tools apart;
    ``timeout`` bounds one call and ``start_timeout`` a connection (seconds); after the
    server dies, a call reconnects with up to ``reconnects`` attempts (0.5, 1, 2 s apart)."""

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
        reconnects: int = 3,
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
        self.reconnects = reconnects
        self._closed = False
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
                self._closed = False
                await self._start()
        assert self._tools is not None
        return self._tools

    @property
    def connected(self) -> bool:
        return self._session is not None and self._task is not None and not self._task.done()

    async def _session_now(self) -> Any:
        """The live session, reconnecting (bounded back-off) if the server died."""
        if self.connected:
            return self._session
        if self._closed:
            raise ToolExecutionError(f"{self!r} is closed")
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            last: BaseException | None = None
            for attempt in range(self.reconnects + 1):
                if self.connected:
                    return self._session
                if attempt:
                    await asyncio.sleep(0.5 * 2 ** (attempt - 1))
                await self._halt()
                try:
                    await self._start()
                except ToolExecutionError as e:
                    last = e
            raise ToolExecutionError(
                f"{self!r} stopped and could not be reconnected after {self.reconnects} "
                f"attempts: {last}"
            )

    async def _start(self) -> None:
        _import_mcp()
        self._ready, self._stop, self._error = asyncio.Event(), asyncio.Event(), None
        self._task = asyncio.create_task(self._serve(), name=f"mcp {self!r}")
        try:
            await asyncio.wait_for(self._ready.wait(), self.start_timeout)
        except TimeoutError:
            await self._halt(grace=0)  # the timeout is the whole wait: no grace after it
            raise ToolExecutionError(
                f"{self!r} did not answer within {self.start_timeout:g} s"
            ) from None
        if self._error is not None:
            err, self._error = _cause(self._error), None
            await self._halt(grace=0)
            raise ToolExecutionError(f"cannot start {self!r}: {type(err).__name__}: {err}") from err

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

        async def call(**arguments: Any) -> ToolOutput:
            session = await self._session_now()
            try:
                result = await session.call_tool(name, arguments, read_timeout_seconds=self.timeout)
            except Exception as e:
                if self.connected and not _connection_lost(e):
                    raise  # the server answered with an error of the protocol: as it is
                await self._halt(grace=0)  # the next call reconnects
                raise ToolExecutionError(
                    f"{self!r} stopped during the call ({type(_cause(e)).__name__}: "
                    f"{_cause(e)}); it is reconnected on the next call"
                ) from None
            out = _output(result)
            if getattr(result, "is_error", False):
                raise ToolExecutionError(out.text or "the server reported an error")
            return out

        return Tool.from_schema(
            shown, t.description or "", schema, call, timeout=self.timeout + 5.0
        )

    async def aclose(self) -> None:
        """Disconnect (a stdio server's process ends); no reconnection after this."""
        self._closed = True
        self._tools = None
        await self._halt()

    async def _halt(self, grace: float = 10.0) -> None:
        """End the connection task: let it close its transports within ``grace``
        seconds, then cancel it."""
        if self._stop is not None:
            self._stop.set()
        self._session = None
        task, self._task = self._task, None
        if task is not None:
            try:
                if grace <= 0:
                    raise TimeoutError
                await asyncio.wait_for(asyncio.shield(task), grace)
            except (TimeoutError, Exception):
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
