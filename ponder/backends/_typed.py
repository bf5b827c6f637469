"""Typed outputs: ``model.generate(..., output=MyModel)`` returns validated objects.

Where the provider has a structured-output mode (OpenAI's ``json_schema`` response format,
vLLM's and SGLang's guided decoding, llama.cpp's grammars, the embedded model's grammar)
the schema goes to it; elsewhere (Anthropic) the schema is put in the prompt. Either way
each choice's text is parsed and validated, and a choice that does not validate gets up
to ``repair`` more turns that show the model its reply and what is wrong with it.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Sequence
from typing import Any, Protocol, TypeVar

from pydantic import BaseModel, ValidationError

from ponder.types import Choice, Completion, Message


class _Generates(Protocol):
    """What typed generation needs of a model (ponder.Model)."""

    @property
    def quirks(self) -> Any: ...

    async def generate(
        self, prompt: Any, params: Any = None, *, use_cache: bool = True, **overrides: Any
    ) -> Completion: ...


__all__ = ["generate_typed", "parse_json", "validate_output"]

T = TypeVar("T", bound=BaseModel)

_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL)


def parse_json(text: str) -> Any:
    """The JSON value in a model's reply: the whole text, else a fenced block, else the
    outermost object or list in it. Raises ValueError when there is none."""
    s = text.strip()
    try:
        return json.loads(s)
    except ValueError:
        pass
    m = _FENCE.search(s)
    if m:
        try:
            return json.loads(m.group(1))
        except ValueError:
            pass
    for open_, close in (("{", "}"), ("[", "]")):
        i, j = s.find(open_), s.rfind(close)
        if 0 <= i < j:
            try:
                return json.loads(s[i : j + 1])
            except ValueError:
                continue
    raise ValueError("the reply holds no JSON value")


def validate_output(output: type[T], text: str) -> tuple[T | None, str | None]:
    """``(object, None)`` if ``text`` holds JSON that validates as ``output``, else
    ``(None, what is wrong)``."""
    try:
        data = parse_json(text)
    except ValueError as e:
        return None, str(e)
    try:
        return output.model_validate(data), None
    except ValidationError as e:
        problems = "; ".join(
            f"{'.'.join(str(x) for x in err['loc']) or 'the value'}: {err['msg']}"
            + (f" (you wrote {_shown(err['input'])})" if "input" in err else "")
            for err in e.errors()[:10]
        )
        return None, problems


def _shown(value: Any) -> str:
    """The offending value as the model wrote it (JSON), cut short."""
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _instruction(schema: dict[str, Any]) -> str:
    return (
        "Reply with only a JSON object (no prose, no code fence) that matches this JSON "
        f"Schema:\n{json.dumps(schema)}"
    )


def _with_instruction(messages: Sequence[Message], schema: dict[str, Any]) -> list[Message]:
    """The schema told in the prompt, for providers without a structured-output mode."""
    out = list(messages)
    text = _instruction(schema)
    if out and out[0].role == "system":
        out[0] = Message.system(out[0].content + "\n\n" + text)
    else:
        out.insert(0, Message.system(text))
    return out


async def generate_typed(
    model: _Generates,
    messages: Sequence[Message],
    output: type[T],
    overrides: dict[str, Any],
    *,
    repair: int = 1,
    use_cache: bool = True,
) -> Completion:
    """:meth:`Model.generate` with each choice's ``parsed`` set to a validated ``output``
    (None for a choice that still does not validate after ``repair`` repair turns; its
    text is the last reply). Usage, cost and requests include the repair turns."""
    schema = output.model_json_schema()
    native = model.quirks.supports_json_schema
    asked = list(messages) if native else _with_instruction(messages, schema)
    kw = {**overrides, "json_schema": schema} if native else dict(overrides)
    first = await model.generate(asked, use_cache=use_cache, **kw)
    usage, cost, requests = first.usage, first.cost, first.requests
    cached, saved = first.cached_usage, first.saved_cost
    choices: list[Choice] = []
    for ch in first.choices:
        obj, why = validate_output(output, ch.text)
        convo = asked
        for attempt in range(repair):
            if obj is not None:
                break
            convo = [
                *convo,
                Message.assistant(ch.text),
                Message.user(
                    f"That reply does not match the schema ({why}). Reply with only the "
                    "corrected JSON object."
                ),
            ]
            seed = kw.get("seed")
            fix = await model.generate(
                convo,
                use_cache=use_cache,
                **{**kw, "n": 1, "seed": None if seed is None else seed + 1000 * (attempt + 1)},
            )
            usage, cost, requests = usage + fix.usage, cost + fix.cost, requests + fix.requests
            cached, saved = cached + fix.cached_usage, saved + fix.saved_cost
            ch = dataclasses.replace(fix.choices[0], index=ch.index)
            obj, why = validate_output(output, ch.text)
        choices.append(dataclasses.replace(ch, parsed=obj))
    return Completion(
        model=first.model,
        choices=tuple(choices),
        usage=usage,
        cost=cost,
        requests=requests,
        cached_usage=cached,
        saved_cost=saved,
    )
