"""A client's own tools and answer formats, honoured by a workflow (``ponder serve``).

An OpenAI client may offer its own ``tools`` (it runs them, on its side) and ask for a
``response_format``. A workflow honours both with its own models:

* :func:`tool_turn`: the workflow's lead step (its first ``generate``) samples the turn
  ``n`` times with the client's tools offered, exactly as that step samples answers, and
  the samples vote. When most samples call tools, the turn is those calls (the client
  runs them and sends the results back); when most answer, the whole workflow runs on
  the conversation so far, tool results included, and writes the answer.
* :func:`typed_answer`: the workflow's answer, written by its lead model as JSON in the
  client's schema (constrained where the backend can), validated, with one repair turn
  that quotes what was wrong.

>>> turn = await tool_turn(wf, messages, tools, "auto")    # doctest: +SKIP
>>> turn.calls                                             # doctest: +SKIP
(ToolCall(id='call_0', name='calculator', arguments='{"expression": "17 * 23"}'),)
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import JsonValue

from ponder.agents import GenerateConfig, Spend
from ponder.agents._base import _spend
from ponder.backends import Model
from ponder.backends._scope import BudgetLike
from ponder.errors import ParseError
from ponder.types import Message, ToolCall, ToolSpec, call_signature
from ponder.workflows._build import Workflow

__all__ = ["ToolTurn", "lead", "tool_turn", "typed_answer"]

#: samples of a tool turn at most (a turn is one step; its votes need not be a stack's)
MAX_TURN_SAMPLES = 8

_FORMAT_SYSTEM = (
    "Write the given answer to the request as one JSON value that matches the JSON Schema "
    "below. Keep the answer's content; reply with the JSON only.\n\nJSON Schema:\n{schema}"
)


@dataclass(frozen=True)
class ToolTurn:
    """What a tool turn decided: ``calls`` for the client to run (empty: the workflow
    answers), what the samples spent, and the vote (``support`` of ``samples``)."""

    calls: tuple[ToolCall, ...]
    spend: Spend = field(default_factory=Spend)
    support: int = 0
    samples: int = 0


def lead(wf: Workflow) -> tuple[Model, GenerateConfig]:
    """The model and settings of ``wf``'s lead step: its first ``generate`` component
    (else its first model, sampled once). Must be called inside the workflow's loop."""
    models = wf._bind(wf._engine()).models
    first = next(iter(models))
    for n, node in wf.spec.node_map().items():
        for comp, (_info, config) in zip(node.components, wf._configs[n], strict=True):
            if isinstance(config, GenerateConfig):
                name = comp.model or (comp.models[0] if comp.models else first)
                return models[name], config
    return models[first], GenerateConfig(n=1, temperature=None)


async def tool_turn(
    wf: Workflow,
    messages: Sequence[Message],
    tools: Sequence[ToolSpec],
    tool_choice: str | None = None,
    *,
    parallel_tool_calls: bool | None = None,
    budgets: Sequence[BudgetLike] = (),
) -> ToolTurn:
    """One turn of a client's tool conversation, decided by ``wf``'s lead step.

    The lead step's model samples the turn (its ``n``, at most 8, its temperature and
    seed) with ``tools`` offered; the samples vote, a set of calls (names and arguments,
    order aside) being one ballot and any answer in prose another. With
    ``tool_choice="required"`` or a tool's name only calls count; with ``"none"`` the
    turn is the workflow's answer and no model call is made. Spends from the run's
    budget (``wf``'s own) and ``budgets``."""
    if tool_choice == "none" or not tools:
        return ToolTurn(())
    model, config = lead(wf)
    engine = wf._engine()
    n = min(config.n, MAX_TURN_SAMPLES)
    with engine.run(wf._budget(), *budgets, name=f"{wf.spec.name} tool turn"):
        c = await model.generate(
            list(messages),
            n=n,
            temperature=config.temperature if n > 1 else 0.0,
            seed=config.seed,
            max_tokens=config.max_tokens,
            tools=tuple(tools),
            tool_choice=tool_choice,
            parallel_tool_calls=parallel_tool_calls,
        )
    spend = _spend(c)
    ballots: Counter[str] = Counter()
    first: dict[str, tuple[ToolCall, ...]] = {}
    for ch in c.choices:
        if ch.tool_calls:
            sig = call_signature(ch.tool_calls)
            ballots[sig] += 1
            first.setdefault(sig, ch.tool_calls)
        elif tool_choice in (None, "auto"):
            ballots[""] += 1  # an answer in prose: the workflow answers
    if not ballots:
        raise ParseError(
            f"{model.id} made no tool call in {len(c.choices)} sample(s), though tool_choice "
            f"{tool_choice!r} asks for one; try tool_choice 'auto', or a model that calls tools"
        )
    sig, support = ballots.most_common(1)[0]
    if not sig:
        return ToolTurn((), spend, support, len(c.choices))
    turn = sum(1 for m in messages if m.role == "assistant")
    calls = tuple(
        ToolCall(id=f"call_{turn}_{i}", name=call.name, arguments=call.arguments)
        for i, call in enumerate(first[sig])
    )
    return ToolTurn(calls, spend, support, len(c.choices))


def _schema_error(value: Any, schema: dict[str, JsonValue]) -> str | None:
    """What is wrong with ``value`` against ``schema`` (the first error, with its path and
    the offending value), or None."""
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import best_match

    error = best_match(Draft202012Validator(schema).iter_errors(value))
    if error is None:
        return None
    where = "/".join(str(p) for p in error.absolute_path) or "(the top level)"
    return f"at {where}: {error.message} (the value was {json.dumps(error.instance)[:200]})"


def _check(text: str, schema: dict[str, JsonValue]) -> str | None:
    try:
        value = json.loads(text)
    except ValueError as e:
        return f"not JSON: {e} (the reply began {text[:120]!r})"
    return _schema_error(value, schema)


async def typed_answer(
    wf: Workflow,
    request: str,
    answer: str,
    schema: dict[str, JsonValue] | None,
    *,
    repair: int = 1,
    budgets: Sequence[BudgetLike] = (),
) -> tuple[str, Spend]:
    """``answer`` (the workflow's answer to ``request``) as JSON text that validates
    against ``schema`` (None: any JSON object), written by ``wf``'s lead model.

    The schema goes to the backend as a constraint where it takes one (llama.cpp's
    grammar, OpenAI's structured outputs); the reply is validated here whatever the
    backend did, and each of ``repair`` repair turns quotes the error, its place and the
    offending value. Raises :class:`ponder.errors.ParseError` when no reply validates."""
    model, _config = lead(wf)
    target: dict[str, JsonValue] = schema if schema is not None else {"type": "object"}
    messages = [
        Message.system(_FORMAT_SYSTEM.format(schema=json.dumps(target, indent=1))),
        Message.user(f"Request:\n{request}\n\nAnswer:\n{answer}"),
    ]
    spend = Spend()
    engine = wf._engine()
    why = ""
    text = ""
    with engine.run(wf._budget(), *budgets, name=f"{wf.spec.name} typed answer"):
        for attempt in range(repair + 1):
            c = await model.generate(list(messages), n=1, temperature=0.0, json_schema=target)
            spend = spend + _spend(c)
            text = c.choices[0].text.strip()
            problem = _check(text, target)
            if problem is None:
                return text, spend
            why = problem
            if attempt < repair:
                messages += [
                    Message.assistant(text),
                    Message.user(
                        f"That JSON is invalid {problem}. Reply with corrected JSON only."
                    ),
                ]
    raise ParseError(
        f"{model.id} could not write the answer in the requested format after {repair} "
        f"repair turn(s): {why}; its last reply began {text[:200]!r}"
    )
