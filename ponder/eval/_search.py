"""``ponder search``: architecture search over layer stacks (Archon-style), with optuna.

A :class:`SearchSpace` names the models (with prices) and the choices: how many samples
the generator draws and from which model, which middle layer (none, critique, rank,
verify) and which final step (vote, or fuse by a model). Each optuna trial builds that
workflow, evaluates it on the dataset and reports two objectives, accuracy (maximise)
and cost per item (minimise). A trial is pruned after ``prune_after`` items when even the
upper end of its accuracy interval is below the accuracy an already finished trial
reached at no higher cost. The result: the Pareto front, the single-layer baselines
(generate + vote, for every model and sample count) and the best stack within the budget,
written as a workflow file that ``ponder run`` and ``ponder eval`` accept.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field

from ponder.errors import ConfigurationError
from ponder.eval._datasets import Dataset
from ponder.eval._harness import evaluate, summarize, wilson

__all__ = [
    "SearchResult",
    "SearchSpace",
    "Trial",
    "build_spec",
    "run_search",
    "search_dir",
    "search_key",
    "write_workflow",
]


Middle = Literal["none", "critique", "rank", "verify"]
Final = Literal["vote", "fuse"]
_MIDDLE: tuple[Middle, ...] = ("none", "critique", "rank", "verify")
_FINAL: tuple[Final, ...] = ("vote", "fuse")


class SearchSpace(BaseModel):
    """The choices the search may combine (a YAML file for ``ponder search``)."""

    model_config = ConfigDict(extra="forbid")

    models: dict[str, str] = Field(min_length=1, description="Name -> model string.")
    prices: dict[str, tuple[float, float]] = Field(
        default_factory=dict, description="Name -> $ per million input and output tokens."
    )
    samples: list[int] = Field(default_factory=lambda: [1, 3, 5, 8], min_length=1)
    middle: list[Middle] = Field(default_factory=lambda: list(_MIDDLE))
    final: list[Final] = Field(default_factory=lambda: list(_FINAL))


class Trial(BaseModel):
    """One evaluated stack."""

    model_config = ConfigDict(frozen=True)

    params: dict[str, Any]
    accuracy: float
    cost_per_item: float
    items: int
    pruned: bool = False
    spec: dict[str, Any]


class SearchResult(BaseModel):
    model_config = ConfigDict(frozen=True)

    trials: list[Trial]
    pareto: list[Trial]
    baselines: list[Trial]
    best: Trial | None


def build_spec(space: SearchSpace, params: dict[str, Any], name: str) -> dict[str, Any]:
    """The workflow (as a spec dict) for one choice of ``params``."""
    models = {
        m: ({"ref": ref, "price": list(space.prices[m])} if m in space.prices else ref)
        for m, ref in space.models.items()
    }
    layers: list[dict[str, Any]] = [
        {"generate": {"model": params["gen_model"], "n": params["samples"], "temperature": 0.8}}
    ]
    if params.get("middle", "none") != "none":
        layers.append({params["middle"]: {"model": params["judge_model"]}})
    if params["final"] == "fuse":
        layers.append({"fuse": {"model": params["judge_model"]}})
    else:
        weight = {"verify": "verifier", "rank": "rank"}.get(params.get("middle", ""))
        layers.append({"vote": {"weight": weight} if weight else {}})
    return {"name": name, "models": models, "layers": layers}


async def _score(
    spec: dict[str, Any], dataset: Dataset, out: Path, limit: int | None
) -> tuple[float, float, int]:
    from ponder import Settings
    from ponder.workflows import Workflow, WorkflowSpec

    wf = Workflow(WorkflowSpec.model_validate(spec), settings=Settings.load(cache=False))
    items = dataset.items[:limit] if limit else dataset.items
    # items in flight: what the stack's endpoints can serve (admission), as for ponder eval
    rows = await evaluate(wf, Dataset(dataset.name, items, dataset.scorer), out)
    s = summarize(rows)
    # what the stack costs, whether or not the cache already held some of its samples
    return s.accuracy, s.cost_per_item + s.saved_cost_per_item, s.items


def search_key(space: SearchSpace, dataset: Dataset, seed: int = 0) -> dict[str, Any]:
    """What identifies a search: its space, its dataset (name and items) and scorer, and
    its seed. Trials of one search are kept under a folder named by its hash."""
    items = hashlib.sha256()
    for it in dataset.items:
        items.update(json.dumps([it.id, it.question, it.answer], default=str).encode())
        items.update(b"\0")
    scorer = type(dataset.scorer)
    return {
        "space": space.model_dump(mode="json"),
        "dataset": dataset.name,
        "items": items.hexdigest(),
        "scorer": f"{scorer.__module__}.{scorer.__qualname__}",
        "seed": seed,
    }


def search_dir(workdir: str | Path, key: dict[str, Any]) -> Path:
    """The folder of the search ``key`` under ``workdir``: a new search never reads
    another's trials. A folder whose manifest names another search is refused."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    work = Path(workdir) / f"search-{digest}"
    manifest = work / "search.json"
    if manifest.exists():
        try:
            found = json.loads(manifest.read_text())
        except (OSError, ValueError) as e:
            raise ConfigurationError(
                f"{manifest}: unreadable search manifest ({e}); remove {work} to start over"
            ) from None
        if found != key:
            raise ConfigurationError(
                f"{work} holds the trials of a different search (space, dataset, scorer or "
                f"seed differ); it is not resumed. Use another --workdir, or remove {work}"
            )
    else:
        work.mkdir(parents=True, exist_ok=True)
        manifest.write_text(json.dumps(key, sort_keys=True, indent=1))
    return work


def run_search(
    space: SearchSpace,
    dataset: Dataset,
    workdir: str | Path,
    *,
    trials: int = 30,
    budget: float | None = None,
    prune_after: int = 20,
    seed: int = 0,
) -> SearchResult:
    """Search ``space`` on ``dataset``. Each trial's results are kept under
    ``workdir/search-<hash of space, dataset, scorer, seed>/``, so rerunning the same
    search resumes its trials (their cached rows) and a different one starts afresh."""
    try:
        import optuna
    except ImportError as e:
        raise ConfigurationError("ponder search needs optuna: pip install 'ponder[search]'") from e
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    work = search_dir(workdir, search_key(space, dataset, seed))
    names = list(space.models)
    done: list[Trial] = []

    def objective(trial: Any) -> tuple[float, float]:
        params = {
            "gen_model": trial.suggest_categorical("gen_model", names),
            "samples": trial.suggest_categorical("samples", space.samples),
            "middle": trial.suggest_categorical("middle", space.middle),
            "final": trial.suggest_categorical("final", space.final),
            "judge_model": trial.suggest_categorical("judge_model", names),
        }
        spec = build_spec(space, params, f"search-{trial.number}")
        out = work / f"trial-{trial.number}.jsonl"
        acc, cost, n = asyncio.run(_score(spec, dataset, out, prune_after))
        if n < len(dataset.items):
            _lo, hi = wilson(round(acc * n), n)
            if any(t.accuracy > hi and t.cost_per_item <= cost for t in done):
                done.append(Trial(params=params, accuracy=acc, cost_per_item=cost, items=n,
                                  pruned=True, spec=spec))  # fmt: skip
                raise optuna.TrialPruned
            acc, cost, n = asyncio.run(_score(spec, dataset, out, None))
        done.append(Trial(params=params, accuracy=acc, cost_per_item=cost, items=n, spec=spec))
        return acc, cost

    study = optuna.create_study(
        directions=["maximize", "minimize"], sampler=optuna.samplers.TPESampler(seed=seed)
    )
    study.optimize(objective, n_trials=trials)
    seen: set[str] = set()
    full = []
    for t in done:  # one row per distinct stack (optuna may propose one twice)
        key = repr(sorted(t.params.items()))
        if not t.pruned and key not in seen:
            seen.add(key)
            full.append(t)
    pareto = sorted(
        (
            t
            for t in full
            if not any(
                o.accuracy >= t.accuracy
                and o.cost_per_item <= t.cost_per_item
                and (o.accuracy > t.accuracy or o.cost_per_item < t.cost_per_item)
                for o in full
            )
        ),
        key=lambda t: t.cost_per_item,
    )
    baselines = []
    for m in names:
        for k in space.samples:
            params = {"gen_model": m, "samples": k, "middle": "none", "final": "vote",
                      "judge_model": m}  # fmt: skip
            spec = build_spec(space, params, f"baseline-{m}-{k}")
            acc, cost, n = asyncio.run(
                _score(spec, dataset, work / f"baseline-{m}-{k}.jsonl", None)
            )
            baselines.append(
                Trial(params=params, accuracy=acc, cost_per_item=cost, items=n, spec=spec)
            )
    within = [t for t in pareto if budget is None or t.cost_per_item <= budget]
    best = max(within, key=lambda t: (t.accuracy, -t.cost_per_item)) if within else None
    return SearchResult(trials=done, pareto=pareto, baselines=baselines, best=best)


def write_workflow(trial: Trial, path: str | Path, name: str = "searched") -> Path:
    """The trial's stack as a workflow YAML file."""
    spec = {**trial.spec, "name": name}
    out = Path(path)
    out.write_text(
        f"# found by ponder search: accuracy {trial.accuracy:.3f}, "
        f"${trial.cost_per_item:.6f} per item\n" + yaml.safe_dump(spec, sort_keys=False)
    )
    return out
