"""Graph overhead: a 100-node pipeline on the fake model, Ponder vs hand-written LangGraph.

Every graph runs 100 nodes in a row, each one model call (a FakeModel answering at once,
through the full model layer). Ponder's is ``Pipeline(...).then("generate", ...)`` x 100
(typed pools, answer extraction, spend ledger, events). Two hand-written ``StateGraph`` s
over a ``TypedDict`` with reducers are the baselines: ``bare`` only appends each reply's
text; ``same work`` also does by hand what Ponder's node does for its user: extracts the
``\\boxed{}`` answer with a regex, keeps a record per sample (id, text, answer or why
there is none, model, step, seed, index, finish reason), the running token total and the
spend of each step (tokens, requests, cost), and records a failed step instead of ending
the run. Printed: time per node of each and Ponder's ratio to both (best of ``--repeats``
runs, interleaved, each starting from the same garbage-collector state), and what
OpenTelemetry tracing (ponder.tracing) costs per node, on and off.

Tracing on is measured twice: on the instant fake model (a node is ~0.06 ms), and on the
lightest real node, a 20-node chain whose every call goes over HTTP to the stand-in
server on loopback with every simulated delay at zero (``--time-scale 0``), tracing off
vs on, interleaved. Ended spans are converted for the exporter on a background thread
(ponder.tracing), so beside the wall time the process's CPU time is printed with that
conversion included (``tracing.flush()`` inside the measured window).

    python benchmarks/graph_overhead.py [--nodes 100] [--repeats 50] [--json]
    python benchmarks/graph_overhead.py --memos    # what each hot-path memo saves

``--memos`` measures Ponder's time per node with each memo of the hot path bypassed in
turn (and all of them at once), in one run: the prompt's messages and the sampling params
of a component (``ponder.agents._base``), the model's resolved params and its planned
request params (``Model._params``, ``Model._plan``). The code cites these figures where
it keeps a memo (and where it dropped one that did not matter).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import operator
import re
import sys
import time
import timeit
from pathlib import Path
from typing import Annotated, Any, TypedDict

from langgraph.graph import END, START, StateGraph
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from ponder import tracing
from ponder.agents import Pool
from ponder.errors import PonderError
from ponder.graphs import CompiledGraph
from ponder.settings import Settings
from ponder.testing import FakeModel
from ponder.workflows import Pipeline

sys.path.insert(0, str(Path(__file__).parent))
from _standin import standin_process

QUESTION = "What is 6 * 7?"


_BOXED = re.compile(r"\\boxed\{([^{}]*)\}")


def _merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    return {**a, **b}


class _S(TypedDict):
    question: str
    answers: Annotated[list[Any], operator.add]
    tokens: Annotated[int, operator.add]
    steps: Annotated[dict[str, Any], _merge]  # spend per step: tokens, requests, cost
    failures: Annotated[dict[str, str], _merge]


def hand_written(model: FakeModel, nodes: int, same_work: bool = False) -> Any:
    g: StateGraph[Any] = StateGraph(_S)

    def make(i: int) -> Any:
        async def bare(state: _S) -> dict[str, Any]:
            c = await model.generate(state["question"], seed=i)
            return {"answers": [c.text]}

        async def same(state: _S) -> dict[str, Any]:
            try:
                c = await model.generate(state["question"], seed=i)
            except PonderError as e:  # a failed step is recorded; the run goes on
                return {"failures": {f"n{i}": f"{type(e).__name__}: {e}"}}
            choice = c.choices[0]
            m = _BOXED.search(choice.text)
            used = c.usage.prompt_tokens + c.usage.completion_tokens
            record = {
                "id": f"n{i}:{c.model}:{choice.index}",
                "text": choice.text,
                "answer": m and m.group(1),
                "error": None if m else "no final answer found",
                "model": c.model,
                "step": i,
                "seed": i,
                "index": choice.index,
                "finish_reason": choice.finish_reason,
            }
            step = {"tokens": used, "requests": c.requests, "cost": c.cost}
            return {"answers": [record], "tokens": used, "steps": {f"n{i}": step}}

        return same if same_work else bare

    for i in range(nodes):
        g.add_node(f"n{i}", make(i))
        g.add_edge(START if i == 0 else f"n{i - 1}", f"n{i}")
    g.add_edge(f"n{nodes - 1}", END)
    return g.compile()


def _start() -> dict[str, Any]:
    return {"question": QUESTION, "answers": [], "tokens": 0, "steps": {}, "failures": {}}


async def measure(nodes: int, repeats: int) -> dict[str, Any]:
    model = FakeModel(["The answer is \\boxed{42}."])
    raw = hand_written(model, nodes)
    same = hand_written(model, nodes, same_work=True)
    pipe = Pipeline(models={"m": "vllm:fake@http://127.0.0.1:9/v1"})
    for _ in range(nodes):
        pipe.then("generate", model="m", n=1)
    wf = pipe.build(models={"m": model})
    await wf.arun(QUESTION)  # warm: first-run costs (compiling, caches) are not per node
    # the same compiled graph run through LangGraph (what graphs with branches, joins,
    # approvals or checkpoints use; a plain chain like this one skips it)
    assert wf._bound is not None
    c = wf._bound.graph
    on_langgraph = CompiledGraph(c.spec, c.graph, c.finals)
    start = Pool(query=QUESTION)
    await on_langgraph.arun(start)
    # the same garbage-collector state for every run: objects made at import are frozen
    # out of its view, and each run starts from an empty young generation, so a run pays
    # for the collections its own allocations cause and nothing left over from another
    gc.freeze()
    best_raw = best_same = best_ponder = best_lg = best_traced = float("inf")
    cpu_ponder = cpu_traced = float("inf")
    for _ in range(repeats):
        gc.collect()
        t = time.perf_counter()
        out = await raw.ainvoke(_start())
        best_raw = min(best_raw, time.perf_counter() - t)
        assert len(out["answers"]) == nodes
        gc.collect()
        t = time.perf_counter()
        out = await same.ainvoke(_start())
        best_same = min(best_same, time.perf_counter() - t)
        assert out["answers"][-1]["answer"] == "42"
        gc.collect()
        t, c = time.perf_counter(), time.process_time()
        result = await wf.arun(QUESTION)
        best_ponder = min(best_ponder, time.perf_counter() - t)
        cpu_ponder = min(cpu_ponder, time.process_time() - c)
        assert len(result.output.candidates) == nodes
        gc.collect()
        t = time.perf_counter()
        result = await on_langgraph.arun(start)
        best_lg = min(best_lg, time.perf_counter() - t)
        assert len(result.output.candidates) == nodes
        # tracing on: spans batched to an in-memory exporter (as to a collector, the
        # export itself runs on the SDK's background thread)
        exporter = InMemorySpanExporter()  # a shut-down exporter takes no more spans
        tracing.configure(exporter, batch=True)
        gc.collect()
        t, c = time.perf_counter(), time.process_time()
        result = await wf.arun(QUESTION)
        best_traced = min(best_traced, time.perf_counter() - t)
        tracing.flush()  # the spans' conversion, off the run's path, counted in CPU time
        cpu_traced = min(cpu_traced, time.process_time() - c)
        tracing.shutdown()
        assert len(exporter.get_finished_spans()) == 1 + 2 * nodes
    # tracing off: each node asks tracing.enabled() twice (node, model call); the cost of
    # those checks against the node's time
    checks = timeit.timeit(tracing.enabled, number=200_000) / 200_000
    return {
        "nodes": nodes,
        "langgraph_ms_per_node": 1000 * best_raw / nodes,
        "langgraph_same_work_ms_per_node": 1000 * best_same / nodes,
        "ponder_ms_per_node": 1000 * best_ponder / nodes,
        "ponder_on_langgraph_ms_per_node": 1000 * best_lg / nodes,
        "ratio": best_ponder / best_raw,
        "ratio_same_work": best_ponder / best_same,
        "ratio_on_langgraph_same_work": best_lg / best_same,
        "traced_ms_per_node": 1000 * best_traced / nodes,
        "tracing_on_cost": best_traced / best_ponder - 1,
        "tracing_on_cpu_cost": cpu_traced / cpu_ponder - 1,
        "tracing_off_cost": 2 * checks / (best_ponder / nodes),
    }


async def measure_http(nodes: int, repeats: int) -> dict[str, Any]:
    """Tracing's cost per node when each node makes one real HTTP call (the stand-in)."""
    with standin_process("--time-scale", "0", "--output-tokens", "8") as url:
        pipe = Pipeline(models={"m": f"vllm:standin@{url}"})
        for _ in range(nodes):
            pipe.then("generate", model="m", n=1)
        wf = pipe.build(settings=Settings(cache=False))  # every call goes over HTTP
        await wf.arun(QUESTION)
        best_off = best_on = cpu_off = cpu_on = float("inf")
        for _ in range(repeats):
            gc.collect()
            t, c = time.perf_counter(), time.process_time()
            r = await wf.arun(QUESTION)
            best_off = min(best_off, time.perf_counter() - t)
            cpu_off = min(cpu_off, time.process_time() - c)
            exporter = InMemorySpanExporter()
            tracing.configure(exporter, batch=True)
            gc.collect()
            t, c = time.perf_counter(), time.process_time()
            r2 = await wf.arun(QUESTION)
            best_on = min(best_on, time.perf_counter() - t)
            tracing.flush()
            cpu_on = min(cpu_on, time.process_time() - c)
            tracing.shutdown()
            assert r.output.spend.requests == r2.output.spend.requests == nodes
            spans = exporter.get_finished_spans()
            assert len(spans) == 1 + 2 * nodes, sorted({x.name for x in spans})
    return {
        "http_nodes": nodes,
        "http_ms_per_node": 1000 * best_off / nodes,
        "http_traced_ms_per_node": 1000 * best_on / nodes,
        "http_tracing_on_cost": best_on / best_off - 1,
        "http_cpu_ms_per_node": 1000 * cpu_off / nodes,
        "http_traced_cpu_ms_per_node": 1000 * cpu_on / nodes,
    }


def _memo_switches() -> dict[str, tuple[Any, Any]]:
    """Each hot-path memo: how to bypass it, and how to restore it."""
    import ponder.agents._base as base
    import ponder.agents._components as comp
    import ponder.agents._judges as judges
    from ponder.backends import Model

    users = (base, comp, judges)

    def lru(name: str) -> tuple[Any, Any]:
        cached = getattr(base, name)

        def put(fn: Any) -> None:
            for m in users:
                if hasattr(m, name):
                    setattr(m, name, fn)

        return (lambda: put(cached.__wrapped__)), (lambda: put(cached))

    def method(name: str, forget: Any) -> tuple[Any, Any]:
        real = getattr(Model, name)

        def bypass(self: Model, *a: Any) -> Any:
            forget(self)
            return real(self, *a)

        return (lambda: setattr(Model, name, bypass)), (lambda: setattr(Model, name, real))

    def forget_params(m: Any) -> None:
        m._resolved.clear()
        m._resolved_params.clear()
        m._default_params = None

    return {
        "prompt messages (_messages)": lru("_messages"),
        "sampling params (_sampling)": lru("_sampling"),
        "resolved params (Model._params)": method("_params", forget_params),
        "planned params (Model._plan)": method("_plan", lambda m: m._planned.clear()),
    }


async def measure_memos(nodes: int, repeats: int) -> dict[str, float]:
    """Ponder's µs per node with every memo, with each bypassed, and with none."""
    switches = _memo_switches()
    out: dict[str, float] = {}
    for label in ["every memo", *switches, "no memo"]:
        off = list(switches) if label == "no memo" else [label] if label in switches else []
        for name in off:
            switches[name][0]()
        try:
            r = await measure(nodes, repeats)
        finally:
            for name in off:
                switches[name][1]()
        out[label] = 1000 * r["ponder_ms_per_node"]
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--nodes", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=50)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--memos", action="store_true", help="what each hot-path memo saves")
    args = ap.parse_args()
    if args.memos:
        memos = asyncio.run(measure_memos(args.nodes, max(3, args.repeats // 3)))
        if args.json:
            print(json.dumps(memos, indent=2))
            return 0
        base_us = memos["every memo"]
        for label, us in memos.items():
            print(f"{label:>34}: {us:6.1f} us/node ({us / base_us:.2f}x)")
        return 0
    r = asyncio.run(measure(args.nodes, args.repeats))
    r |= asyncio.run(measure_http(20, max(5, args.repeats // 5)))
    if args.json:
        print(json.dumps(r, indent=2))
        return 0
    print(
        f"{r['nodes']} nodes, ms/node: hand-written LangGraph bare "
        f"{r['langgraph_ms_per_node']:.3f}, same work {r['langgraph_same_work_ms_per_node']:.3f}; "
        f"Ponder {r['ponder_ms_per_node']:.3f} (a chain: no LangGraph), Ponder on LangGraph "
        f"{r['ponder_on_langgraph_ms_per_node']:.3f}\n"
        f"Ponder / bare {r['ratio']:.2f}x, Ponder / same work {r['ratio_same_work']:.2f}x, "
        f"Ponder on LangGraph / same work {r['ratio_on_langgraph_same_work']:.2f}x "
        "(target <= 1.2)\n"
        f"tracing on: {r['traced_ms_per_node']:.3f} ms/node, "
        f"+{100 * r['tracing_on_cost']:.1f}% on the instant fake model "
        f"(CPU with the spans' conversion: +{100 * r['tracing_on_cpu_cost']:.1f}%); "
        f"tracing off: {100 * r['tracing_off_cost']:.2f}% per node (target < 1%)\n"
        f"nodes calling the stand-in over HTTP: {r['http_ms_per_node']:.3f} ms/node, traced "
        f"{r['http_traced_ms_per_node']:.3f}: +{100 * r['http_tracing_on_cost']:.1f}% "
        "(target <= 10%); Ponder's CPU per node "
        f"{r['http_cpu_ms_per_node']:.3f} ms, traced with the spans' conversion "
        f"{r['http_traced_cpu_ms_per_node']:.3f} ms"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
