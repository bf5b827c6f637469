"""``ponder generate``: one model call from the command line."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated

import typer
import typer.main

import ponder
from ponder._internal import loop as _loop
from ponder.apps.cli._app import (
    _console,
    app,
)

if TYPE_CHECKING:
    pass


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
        from ponder.engine import engine_for

        m = engine_for().model(model)
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
