"""``ponder eval``, ``eval-report`` and ``search``: datasets through a workflow."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
import typer.main
from rich.console import Console
from rich.table import Table

import ponder
from ponder._internal import loop as _loop
from ponder.apps.cli._app import (
    EXIT_RUN_FAILED,
    ModelOption,
    app,
)

if TYPE_CHECKING:
    pass


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
