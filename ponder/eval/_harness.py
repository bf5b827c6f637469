"""``ponder eval``: run a workflow over a dataset, concurrently and resumably.

Results stream to a JSONL file, one line per item as it finishes; a rerun with the same
file skips every item already there, so an interrupted eval loses nothing and runs no
item twice. Each line keeps the final answer, whether it is right, every candidate's
answer and correctness (for coverage and vote curves), tokens, cost and latency; a
scorer that crashes marks its item (``error``) instead of stopping the run.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import statistics
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from ponder.eval._datasets import AsyncScorer, Dataset, Item
from ponder.eval._judge import LLMJudge

__all__ = [
    "EvalSummary",
    "coverage_curve",
    "evaluate",
    "evaluate_ray",
    "pass_at_k",
    "plot_accuracy_vs_cost",
    "read_results",
    "run_item",
    "summarize",
    "wilson",
]


def wilson(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a proportion (95% by default)."""
    if n == 0:
        return 0.0, 0.0
    p = successes / n
    d = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / d
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return max(0.0, centre - half), min(1.0, centre + half)


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k (Chen et al., 2021): 1 - C(n-c, k) / C(n, k)."""
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def coverage_curve(rows: Sequence[dict[str, Any]]) -> dict[int, dict[str, float]]:
    """For k = 1, 2, 4, ... up to the fewest candidates of any item: coverage (unbiased
    pass@k: some sample of k is right) and vote@k (the plurality of the first k)."""
    sizes = [len(r["candidates"]) for r in rows if r.get("candidates")]
    if not sizes:
        return {}
    top = min(sizes)
    out: dict[int, dict[str, float]] = {}
    k = 1
    while k <= top:
        cov, vot = [], []
        for r in rows:
            cands = r.get("candidates") or []
            if not cands:
                continue
            right = [bool(c["correct"]) for c in cands]
            cov.append(pass_at_k(len(right), sum(right), k))
            first = cands[:k]
            counts = Counter(c["answer"] for c in first if c["answer"] is not None)
            if counts:
                best = max(counts.values())
                winner = next(
                    c for c in first if c["answer"] is not None and counts[c["answer"]] == best
                )
                vot.append(float(winner["correct"]))
            else:
                vot.append(0.0)
        out[k] = {"coverage": statistics.fmean(cov), "vote": statistics.fmean(vot)}
        k *= 2
    return out


class EvalSummary(BaseModel):
    """What an eval found."""

    model_config = ConfigDict(frozen=True)

    workflow: str
    dataset: str
    items: int
    correct: int
    errors: int
    accuracy: float
    ci95: tuple[float, float]
    tokens_per_item: float
    cost_per_item: float
    cached_tokens_per_item: float = 0.0
    saved_cost_per_item: float = 0.0
    latency_p50: float
    latency_p90: float
    latency_p99: float
    curve: dict[int, dict[str, float]]


def _pct(xs: list[float], q: float) -> float:
    if not xs:
        return 0.0
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))]


def summarize(rows: Sequence[dict[str, Any]], workflow: str = "", dataset: str = "") -> EvalSummary:
    """The summary of result rows (from :func:`evaluate` or its JSONL file)."""
    n = len(rows)
    correct = sum(bool(r.get("correct")) for r in rows)
    lat = [float(r.get("latency", 0.0)) for r in rows]
    return EvalSummary(
        workflow=workflow or (rows[0].get("workflow", "") if rows else ""),
        dataset=dataset or (rows[0].get("dataset", "") if rows else ""),
        items=n,
        correct=correct,
        errors=sum(1 for r in rows if r.get("error")),
        accuracy=correct / n if n else 0.0,
        ci95=wilson(correct, n),
        tokens_per_item=statistics.fmean([r.get("tokens", 0) for r in rows]) if rows else 0.0,
        cost_per_item=statistics.fmean([r.get("cost", 0.0) for r in rows]) if rows else 0.0,
        cached_tokens_per_item=(
            statistics.fmean([r.get("cached_tokens", 0) for r in rows]) if rows else 0.0
        ),
        saved_cost_per_item=(
            statistics.fmean([r.get("saved_cost", 0.0) for r in rows]) if rows else 0.0
        ),
        latency_p50=_pct(lat, 0.5),
        latency_p90=_pct(lat, 0.9),
        latency_p99=_pct(lat, 0.99),
        curve=coverage_curve(rows),
    )


def read_results(path: Path) -> list[dict[str, Any]]:
    """The rows of a results file (a torn last line, from a crash, is ignored)."""
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            continue
    return rows


async def run_item(workflow: Any, dataset: Dataset, item: Item, wf_name: str) -> dict[str, Any]:
    """One item's result row (the same code for local and Ray runs)."""

    async def score(answer: str | None, text: str) -> tuple[bool, str | None]:
        try:
            if isinstance(dataset.scorer, AsyncScorer):
                return bool(await dataset.scorer.ascore(item, answer, text)), None
            return bool(await asyncio.to_thread(dataset.scorer, item, answer, text)), None
        except Exception as e:  # a scorer crash marks the item, the eval goes on
            return False, f"scorer failed: {type(e).__name__}: {e}"

    t0 = time.perf_counter()
    error: str | None = None
    try:
        result = await workflow.arun(item.question)
        pool = result.output
        failures = result.failures
    except Exception as e:
        pool, failures = None, {}
        error = f"run failed: {type(e).__name__}: {e}"
    row: dict[str, Any] = {
        "id": item.id,
        "workflow": wf_name,
        "dataset": dataset.name,
        "latency": time.perf_counter() - t0,
    }
    if pool is None:
        row.update(
            final=None,
            correct=False,
            candidates=[],
            tokens=0,
            cost=0.0,
            cached_tokens=0,
            saved_cost=0.0,
        )
    else:
        chosen = next(
            (c for c in pool.candidates if pool.final is not None and c.answer == pool.final),
            pool.candidates[0] if pool.candidates else None,
        )
        text = chosen.text if chosen else (pool.final or "")
        ok, err = await score(pool.final, text)
        error = error or err or ("; ".join(failures.values()) if failures else None)
        cands = []
        for c in pool.candidates[:64]:
            c_ok, _ = await score(c.answer, c.text)
            cands.append({"answer": c.answer, "correct": c_ok})
        row.update(
            final=pool.final,
            correct=ok,
            candidates=cands,
            tokens=pool.spend.total_tokens,
            cost=pool.spend.cost,
            cached_tokens=pool.spend.cached_tokens,
            saved_cost=pool.spend.saved_cost,
        )
    if error:
        row["error"] = error
    return row


def _append(path: Path, row: dict[str, Any]) -> None:
    with path.open("a") as f:
        f.write(json.dumps(row) + "\n")


#: items in flight when the workflow's endpoints are unknown (a plain callable)
DEFAULT_ITEMS = 8
#: at most this many items in flight (each holds its pool and events in memory)
MAX_ITEMS = 1024


def admission(*workflows: Any) -> int:
    """Runs (or items) in flight for ``workflows``: the request slots of their models'
    endpoints (each distinct endpoint's ``max_concurrency``, counted once), between 8 and
    1024. Each run then waits for a slot at the endpoint, in the order the runs started;
    more runs would only queue, fewer would leave slots idle (200 stand-in items took
    75.9 s at a fixed 8 in flight and 29.6 s at 64). Call it inside the event loop that
    runs them (the models come from its engine)."""
    slots: dict[str, int] = {}
    for workflow in workflows:
        models = getattr(workflow, "models", None)
        if not callable(models):
            continue
        for m in models().values():
            for e in m.pool.endpoints:
                slots[e.base_url] = max(slots.get(e.base_url, 0), e.max_concurrency)
    if not slots:
        return DEFAULT_ITEMS
    return max(DEFAULT_ITEMS, min(MAX_ITEMS, sum(slots.values())))


async def evaluate(
    workflow: Any,
    dataset: Dataset,
    out: str | Path,
    *,
    name: str = "",
    concurrency: int | None = None,
    on_item: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Run ``workflow`` (a :class:`~ponder.workflows.Workflow`) on every item not yet in
    ``out``; append one JSON line per item; return all rows (old and new).

    ``concurrency`` bounds the items in flight; by default (None) the endpoints decide:
    as many items as the workflow's endpoints have request slots (:func:`admission`),
    so the endpoints stay busy while their own limits keep the requests in check."""
    if concurrency is None:
        concurrency = admission(workflow)
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = await asyncio.to_thread(read_results, path)
    done = {r["id"] for r in rows}
    todo = [it for it in dataset.items if it.id not in done]
    lock = asyncio.Lock()
    slots = asyncio.Semaphore(concurrency)
    wf_name = name or getattr(getattr(workflow, "spec", None), "name", "") or "workflow"

    async def one(item: Item) -> None:
        async with slots:
            row = await run_item(workflow, dataset, item, wf_name)
            async with lock:
                _append(path, row)
                rows.append(row)
            if on_item is not None:
                on_item(row)

    await asyncio.gather(*(one(it) for it in todo))
    return rows


def evaluate_ray(
    spec: dict[str, Any],
    dataset_spec: str,
    out: str | Path,
    *,
    address: str | None = None,
    name: str = "",
    batch: int = 4,
    judge: str | None = None,
    on_item: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Like :func:`evaluate`, with the items as Ray tasks (``address``: a cluster, or
    None for a local Ray instance). Workers rebuild the workflow from ``spec`` and the
    dataset from ``dataset_spec``; results stream to ``out`` as tasks finish, resumably.
    Per-item results equal a local run's (same seeds, same code: :func:`run_item`).

    Workers get the driver's ``PONDER_*`` environment, so ``PONDER_CACHE_URL=redis://...``
    gives every worker the same response cache (no sample is paid twice across the
    cluster); without it each worker node uses its own SQLite cache file. ``judge``: a
    model reference for :class:`~ponder.eval.LLMJudge` scoring in the workers."""
    try:
        import ray
    except ImportError as e:
        from ponder.errors import ConfigurationError

        raise ConfigurationError("ponder eval --ray needs Ray: pip install 'ponder[ray]'") from e
    from ponder.eval._datasets import load_dataset

    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = read_results(path)
    done = {r["id"] for r in rows}
    dataset = load_dataset(dataset_spec)
    todo = [it.id for it in dataset.items if it.id not in done]
    wf_name = name or spec.get("name") or "workflow"
    started = not ray.is_initialized()
    if started:
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    try:
        task = ray.remote(_ray_items)
        chunks = [todo[i : i + batch] for i in range(0, len(todo), batch)]
        env = {k: v for k, v in os.environ.items() if k.startswith("PONDER_")}
        pending = [task.remote(spec, dataset_spec, chunk, wf_name, env, judge) for chunk in chunks]
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            for row in ray.get(ready[0]):
                _append(path, row)
                rows.append(row)
                if on_item is not None:
                    on_item(row)
    finally:
        if started:
            ray.shutdown()
    return rows


def _ray_items(
    spec: dict[str, Any],
    dataset_spec: str,
    ids: list[str],
    wf_name: str,
    env: dict[str, str],
    judge: str | None = None,
) -> list[dict[str, Any]]:
    """A Ray task: run the workflow on some items of the dataset, configured by the
    driver's ``PONDER_*`` environment (workers are reused: stale keys are removed)."""
    for k in [k for k in os.environ if k.startswith("PONDER_") and k not in env]:
        del os.environ[k]
    os.environ.update(env)
    from ponder.eval._datasets import load_dataset
    from ponder.workflows import Workflow, WorkflowSpec

    dataset = load_dataset(dataset_spec)
    judged = LLMJudge(judge, dataset.scorer) if judge else None
    if judged is not None:
        dataset = replace(dataset, scorer=judged)
    items = {it.id: it for it in dataset.items}
    workflow = Workflow(WorkflowSpec.model_validate(spec))

    async def go() -> list[dict[str, Any]]:
        try:
            return list(
                await asyncio.gather(*(run_item(workflow, dataset, items[i], wf_name) for i in ids))
            )
        finally:
            if judged is not None:
                await judged.aclose()

    return asyncio.run(go())


def plot_accuracy_vs_cost(summaries: Sequence[EvalSummary], path: str | Path) -> Path:
    """Accuracy (with its 95% interval) against tokens per item, one point per workflow."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    several = len({s.dataset for s in summaries}) > 1
    for s in summaries:
        lo, hi = s.ci95
        x = max(s.tokens_per_item, 1.0)
        ax.errorbar(x, s.accuracy, yerr=[[s.accuracy - lo], [hi - s.accuracy]], fmt="o", capsize=3)
        label = f"{s.workflow} on {s.dataset}" if several else s.workflow
        ax.annotate(label, (x, s.accuracy), fontsize=7, xytext=(4, 4), textcoords="offset points")
    ax.set_xscale("log")
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel("tokens per item (log)")
    ax.set_ylabel("accuracy")
    ax.set_title(", ".join(sorted({s.dataset for s in summaries})), fontsize=8)
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
