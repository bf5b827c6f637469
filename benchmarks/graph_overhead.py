"""Graph overhead: a 100-node pipeline on the fake model, Ponder vs hand-written LangGraph.

Both graphs run the same work: 100 nodes in a row, each one model call (a FakeModel
answering at once, through the full model layer) whose answer is added to the state.
The hand-written graph is a plain ``StateGraph`` over a ``TypedDict`` with a list
reducer; Ponder's is ``Pipeline(...).then("generate", ...)`` x 100 (typed pools,
answer extraction, spend ledger, events). Printed: time per node of each, and the ratio.

    python benchmarks/graph_overhead.py [--nodes 100] [--repeats 5] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import operator
import time
from typing import Annotated, Any, TypedDict

from langgraph.graph import END, START, StateGraph

from ponder.testing import FakeModel
from ponder.workflows import Pipeline

QUESTION = "What is 6 * 7?"


class _S(TypedDict):
    question: str
    answers: Annotated[list[str], operator.add]


def hand_written(model: FakeModel, nodes: int) -> Any:
    g: StateGraph[Any] = StateGraph(_S)

    def make(i: int) -> Any:
        async def node(state: _S) -> dict[str, Any]:
            c = await model.generate(state["question"], seed=i)
            return {"answers": [c.text]}

        return node

    for i in range(nodes):
        g.add_node(f"n{i}", make(i))
        g.add_edge(START if i == 0 else f"n{i - 1}", f"n{i}")
    g.add_edge(f"n{nodes - 1}", END)
    return g.compile()


async def measure(nodes: int, repeats: int) -> dict[str, Any]:
    model = FakeModel(["The answer is \\boxed{42}."])
    raw = hand_written(model, nodes)
    pipe = Pipeline(models={"m": "vllm:fake@http://127.0.0.1:9/v1"})
    for _ in range(nodes):
        pipe.then("generate", model="m", n=1)
    wf = pipe.build(models={"m": model})
    best_raw = best_ponder = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        out = await raw.ainvoke({"question": QUESTION, "answers": []})
        best_raw = min(best_raw, time.perf_counter() - t)
        assert len(out["answers"]) == nodes
        t = time.perf_counter()
        result = await wf.arun(QUESTION)
        best_ponder = min(best_ponder, time.perf_counter() - t)
        assert len(result.output.candidates) == nodes
    return {
        "nodes": nodes,
        "langgraph_ms_per_node": 1000 * best_raw / nodes,
        "ponder_ms_per_node": 1000 * best_ponder / nodes,
        "ratio": best_ponder / best_raw,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--nodes", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    r = asyncio.run(measure(args.nodes, args.repeats))
    if args.json:
        print(json.dumps(r, indent=2))
        return 0
    print(
        f"{r['nodes']} nodes: hand-written LangGraph {r['langgraph_ms_per_node']:.3f} ms/node, "
        f"Ponder {r['ponder_ms_per_node']:.3f} ms/node, ratio {r['ratio']:.2f}x (target <= 1.2)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
