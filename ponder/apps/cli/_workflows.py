"""``ponder schema``, ``validate``, ``run`` and ``import-archon``: workflow files."""

from __future__ import annotations

import contextlib
import json
import time
from typing import TYPE_CHECKING, Annotated, Any

import typer
import typer.main

import ponder
from ponder._internal import loop as _loop
from ponder._internal.jsonl import read_jsonl
from ponder.apps.cli._app import (
    EXIT_RUN_FAILED,
    ModelOption,
    _console,
    _read_json_object,
    app,
)

if TYPE_CHECKING:
    pass


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
    for n, item in read_jsonl(questions, "the questions file"):
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
