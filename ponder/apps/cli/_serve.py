"""``ponder serve``, ``mcp``, ``standin`` and ``demo``: long-running servers and the
quickstart job."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
import typer.main

import ponder
from ponder._internal import loop as _loop
from ponder.apps.cli._app import (
    _console,
    app,
)

if TYPE_CHECKING:
    from ponder.apps.server import PonderServer


@app.command()
def serve(
    workflows: Annotated[
        str, typer.Option("--workflows", help="A directory of workflow files (or one file).")
    ],
    port: Annotated[int, typer.Option(help="Port.")] = 8080,
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
) -> None:
    """Serve workflows as OpenAI-compatible models, with the web chat page at / and the
    Slack app at /slack/events (settings: PONDER_SERVE_* variables, docs/serve.md)."""
    try:
        import uvicorn
    except ImportError:
        raise ponder.ConfigurationError(
            "ponder serve needs the web extra: pip install 'ponder[web]' ('ponder[slack]' "
            "for the Slack app)"
        ) from None

    server = _served(workflows)
    _check_port(host, port, "ponder serve")
    print(f"ponder serve: {', '.join(sorted(server.workflows))} on http://{host}:{port}/",
          flush=True)  # fmt: skip
    uvicorn.run(
        server.app,
        host=host,
        port=port,
        log_level="warning",
        timeout_graceful_shutdown=int(server.settings.graceful_shutdown_seconds),
        **server.uvicorn_options(),
    )


def _served(workflows: str) -> PonderServer:
    """The server of ``ponder serve`` and ``ponder mcp``: a folder's (or one file's)
    workflows, with the PONDER_SERVE_* settings (keys, limits, budgets)."""
    from ponder.apps._serve_settings import ServeSettings
    from ponder.apps.server import PonderServer, load_workflows
    from ponder.workflows import load_workflow

    path = Path(workflows)
    if path.is_dir():
        found = load_workflows(path)
    else:
        wf = load_workflow(path)
        found = {wf.spec.name or path.stem: wf}
    return PonderServer(found, ServeSettings())


@app.command("mcp")
def mcp_command(
    workflows: Annotated[
        str, typer.Option("--workflows", help="A directory of workflow files (or one file).")
    ],
    port: Annotated[
        int | None, typer.Option(help="Serve streamable HTTP on this port (default: stdio).")
    ] = None,
    host: Annotated[str, typer.Option(help="Interface to bind (with --port).")] = "127.0.0.1",
) -> None:
    """Serve workflows as MCP tools: over stdio (for Claude Desktop, IDE agents), or over
    streamable HTTP at /mcp with --port, with ponder serve's keys, limits and budgets."""
    try:
        import uvicorn

        from ponder.apps.mcp_server import build_mcp, mcp_http_app
    except ImportError as e:
        raise ponder.ConfigurationError(
            f"ponder mcp needs the mcp and web extras: pip install 'ponder[mcp,web]' ({e})"
        ) from None
    server = _served(workflows)
    if port is None:
        logging.basicConfig(stream=sys.stderr, level=logging.WARNING)  # stdout is the protocol
        build_mcp(server).run("stdio")
        return
    _check_port(host, port, "ponder mcp")
    print(f"ponder mcp: {', '.join(sorted(server.workflows))} on http://{host}:{port}/mcp",
          flush=True)  # fmt: skip
    uvicorn.run(
        mcp_http_app(server, host),
        host=host,
        port=port,
        log_level="warning",
        timeout_graceful_shutdown=int(server.settings.graceful_shutdown_seconds),
        **server.uvicorn_options(),
    )


def _check_port(host: str, port: int, what: str) -> None:
    """A one-line error, before anything is printed, when ``host:port`` cannot be bound."""
    import errno
    import socket

    if port == 0:
        return
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as e:
        raise ponder.ConfigurationError(f"{what}: cannot resolve --host {host!r}: {e}") from None
    family, kind, proto, _, addr = infos[0]
    with socket.socket(family, kind, proto) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers bind
        try:
            s.bind(addr)
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                raise ponder.ConfigurationError(
                    f"{what}: port {port} on {host} is already in use; stop what listens "
                    "there or pick another with --port"
                ) from None
            raise ponder.ConfigurationError(
                f"{what}: cannot listen on {host}:{port}: {e.strerror or e}"
            ) from None


@app.command()
def standin(
    port: Annotated[int, typer.Option(help="Port (0 picks a free one).")] = 8000,
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    slots: Annotated[int, typer.Option(help="Concurrent sequences.")] = 64,
    queue_limit: Annotated[int, typer.Option(help="Queue bound before 429.")] = 4096,
    ttft_base: Annotated[float, typer.Option(help="TTFT constant (s).")] = 0.05,
    ttft_per_token: Annotated[float, typer.Option(help="TTFT per prompt token (s).")] = 0.0002,
    per_token: Annotated[float, typer.Option(help="Seconds per generated token.")] = 0.01,
    output_tokens: Annotated[int, typer.Option(help="Length of non-oracle answers.")] = 32,
    time_scale: Annotated[float, typer.Option(help="Multiply every time by this.")] = 1.0,
    seed: Annotated[int, typer.Option(help="Seed of samples and faults.")] = 0,
    fault_429: Annotated[float, typer.Option(help="Fraction of injected 429s.")] = 0.0,
    fault_500: Annotated[float, typer.Option(help="Fraction of injected 500s.")] = 0.0,
    fault_reset: Annotated[float, typer.Option(help="Fraction of reset connections.")] = 0.0,
    fault_cut_stream: Annotated[float, typer.Option(help="Fraction of cut streams.")] = 0.0,
    fault_slow: Annotated[float, typer.Option(help="Fraction of slow outliers.")] = 0.0,
    config: Annotated[str | None, typer.Option(help="JSON StandinConfig (overrides).")] = None,
) -> None:
    """Run the local stand-in inference server (OpenAI + Anthropic APIs, oracle answers)."""
    from ponder.testing.server import StandinConfig, StandinServer

    values = {
        "slots": slots,
        "queue_limit": queue_limit,
        "ttft_base": ttft_base,
        "ttft_per_token": ttft_per_token,
        "per_token": per_token,
        "output_tokens": output_tokens,
        "time_scale": time_scale,
        "seed": seed,
        "fault_429": fault_429,
        "fault_500": fault_500,
        "fault_reset": fault_reset,
        "fault_cut_stream": fault_cut_stream,
        "fault_slow": fault_slow,
    }
    if config:
        try:
            overrides = json.loads(config)
        except ValueError as e:
            raise ponder.ConfigurationError(
                f"--config is not valid JSON ({e}); pass an object such as "
                '\'{"slots": 8, "oracle": {"default_accuracy": 0.7}}\''
            ) from None
        if not isinstance(overrides, dict):
            raise ponder.ConfigurationError("--config must be a JSON object")
        values.update(overrides)
    try:
        cfg = StandinConfig.model_validate(values)
    except ValueError as e:
        raise ponder.ConfigurationError(f"invalid stand-in configuration: {e}") from None

    _check_port(host, port, "ponder standin")

    async def serve() -> None:
        server = StandinServer(cfg, host=host, port=port)
        try:
            await server.start()
        except OSError as e:
            raise ponder.ConfigurationError(f"ponder standin cannot listen on {host}:{port}: "
                                            f"{e.strerror or e}") from None  # fmt: skip
        print(f"ponder stand-in listening on {server.base_url}", flush=True)
        try:
            await asyncio.Event().wait()
        finally:
            await server.stop()

    with contextlib.suppress(KeyboardInterrupt):
        _loop.run(serve())


@app.command()
def demo(
    model: Annotated[
        str | None,
        typer.Option(help="Model reference; default: the embedded local model (local:smollm2)."),
    ] = None,
    standin: Annotated[
        bool, typer.Option("--standin", help="Use the stand-in server's oracle model instead.")
    ] = False,
    samples: Annotated[int, typer.Option("-n", help="Samples per question.")] = 5,
    questions: Annotated[int, typer.Option(help="How many bundled questions (stand-in).")] = 8,
    max_tokens: Annotated[int, typer.Option(help="Longest answer in tokens.")] = 48,
    seed: Annotated[int, typer.Option(help="Seed.")] = 0,
) -> None:
    """Sample N answers per bundled question, vote, then fuse them into a final answer."""
    from ponder.apps._demo import bundled_questions, oracle_questions, render, run_demo
    from ponder.testing.server import StandinConfig, StandinServer

    con = _console()

    async def go(ref: str, qs: list[Any]) -> list[Any]:
        from ponder.engine import engine_for

        m = engine_for(ponder.Settings.load(cache=False)).model(ref)
        rows = await run_demo(m, qs, samples=samples, seed=seed, max_tokens=max_tokens, console=con)
        con.print(
            f"[dim]{m.id}: {m.meter.requests} requests, "
            f"{m.meter.usage.prompt_tokens} prompt + "
            f"{m.meter.usage.completion_tokens} generated tokens[/dim]"
        )
        return rows

    if standin:
        cfg = StandinConfig(time_scale=0.05, per_token=0.01)
        with StandinServer(cfg).in_thread() as server:
            con.print(f"[dim]stand-in oracle model at {server.base_url}[/dim]")
            rows = _loop.run(go(f"vllm:weak@{server.base_url}", oracle_questions(questions)))
    else:
        ref = model or "local:smollm2"
        if model is None:
            con.print(
                "[dim]running on the embedded local model local:smollm2 "
                "(SmolLM2-135M-Instruct on the CPU; pass --model to use a real one)[/dim]"
            )
        qs = bundled_questions() if model is None else oracle_questions(questions)
        rows = _loop.run(go(ref, qs))
    render(rows, samples, con)
