"""Typed outputs: ``generate(..., output=MyModel)`` and ``parse`` on every wire: the
schema goes to the provider's structured-output mode or into the prompt, each reply is
validated, and one that does not validate is repaired in a bounded number of turns."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Literal

import pytest
from aiohttp import web
from pydantic import BaseModel, Field

from ponder import GenerateParams, Message, Model
from ponder.errors import ParseError
from ponder.testing import FakeModel

Route = tuple[str, str, Callable[[web.Request], Awaitable[web.StreamResponse]]]
Start = Callable[[list[Route]], Awaitable[str]]


class Verdict(BaseModel):
    answer: int
    confidence: float = Field(ge=0, le=1)
    kind: Literal["exact", "estimate"] = "exact"


def test_json_schema_takes_a_pydantic_model() -> None:
    p = GenerateParams.build(json_schema=Verdict)
    assert p.json_schema == Verdict.model_json_schema()


async def test_a_valid_reply_is_parsed_and_the_schema_sent_natively() -> None:
    model = FakeModel(['Sure: ```json\n{"answer": 42, "confidence": 0.9}\n```'])
    c = await model.generate("6 * 7?", output=Verdict, n=2)
    assert [ch.parsed for ch in c.choices] == [Verdict(answer=42, confidence=0.9)] * 2
    (call,) = model.calls
    assert call.params.json_schema == Verdict.model_json_schema()  # the provider's mode
    assert await model.parse("6 * 7?", Verdict) == Verdict(answer=42, confidence=0.9)


async def test_an_invalid_reply_is_repaired_once_and_the_turn_is_paid() -> None:
    def respond(msgs: Sequence[Message], _p: GenerateParams, i: int) -> str:
        if msgs[-1].content.startswith("That reply does not match"):
            return '{"answer": 42, "confidence": 0.5}'
        return '{"answer": "forty-two", "confidence": 2}'

    model = FakeModel(respond)
    c = await model.generate("6 * 7?", output=Verdict)
    assert c.choices[0].parsed == Verdict(answer=42, confidence=0.5)
    assert c.requests == 2
    shown = model.calls[1].messages
    assert shown[-2].role == "assistant"
    assert "answer: Input should be a valid integer" in shown[-1].content
    assert "confidence: Input should be less than or equal to 1" in shown[-1].content
    # the repair quotes what the model wrote, so it can see which value is wrong
    assert '(you wrote "forty-two")' in shown[-1].content
    assert "(you wrote 2)" in shown[-1].content


async def test_a_reply_that_never_validates_is_none_or_a_clear_error() -> None:
    model = FakeModel(["I think it is 42."])
    c = await model.generate("6 * 7?", output=Verdict, repair=2)
    assert c.choices[0].parsed is None
    assert c.requests == 3  # the answer and two repairs, no more
    with pytest.raises(ParseError, match=r"no valid Verdict after 1 repair turn.*no JSON value"):
        await model.parse("6 * 7?", Verdict)


async def test_openai_wire_sends_strict_only_for_closed_schemas(
    loopback_server: Start,
) -> None:
    bodies: list[dict[str, Any]] = []

    async def chat(request: web.Request) -> web.Response:
        body = await request.json()
        bodies.append(body)
        fmt = body["response_format"]
        schema = fmt.get("schema") or fmt["json_schema"]["schema"]
        reply: dict[str, Any] = {"answer": 1}
        if "confidence" in schema["properties"]:
            reply |= {"confidence": 1.0, "kind": "exact"}
        return web.json_response({"choices": [{"index": 0, "finish_reason": "stop",
            "message": {"role": "assistant", "content": json.dumps(reply)}}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 5}})  # fmt: skip

    class Closed(BaseModel):
        model_config = {"extra": "forbid"}
        answer: int

    url = await loopback_server([("POST", "/v1/chat/completions", chat)])
    for ref in (f"vllm:m@{url}/v1", f"llamacpp:m@{url}/v1"):
        model = Model(ref, cache=False)
        try:
            assert (await model.parse("q", Verdict)).answer == 1
            await model.parse("q", Closed)
        finally:
            await model.aclose()
    vllm_open, vllm_closed, llama_open, _ = (b["response_format"] for b in bodies)
    assert vllm_open["type"] == "json_schema"
    assert vllm_open["json_schema"]["strict"] is False  # optional fields: not strict
    assert vllm_closed["json_schema"]["strict"] is True
    # llama.cpp's servers take the schema as a json_object format (the other form is a 500
    # from llama-cpp-python's server)
    assert llama_open == {"type": "json_object", "schema": Verdict.model_json_schema()}


async def test_anthropic_gets_the_schema_in_the_prompt(
    loopback_server: Start, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "k")
    bodies: list[dict[str, Any]] = []

    async def messages(request: web.Request) -> web.Response:
        bodies.append(await request.json())
        return web.json_response({"id": "m1", "type": "message", "role": "assistant",
            "model": "m", "stop_reason": "end_turn", "stop_sequence": None,
            "content": [{"type": "text", "text": '{"answer": 7, "confidence": 0.25}'}],
            "usage": {"input_tokens": 5, "output_tokens": 9}})  # fmt: skip

    url = await loopback_server([("POST", "/v1/messages", messages)])
    model = Model(f"anthropic:m@{url}", cache=False)
    try:
        v = await model.parse([Message.system("Be brief."), Message.user("3 + 4?")], Verdict)
    finally:
        await model.aclose()
    assert v == Verdict(answer=7, confidence=0.25)
    (body,) = bodies
    assert body["system"].startswith("Be brief.\n\nReply with only a JSON object")
    assert '"confidence"' in body["system"]
    assert "response_format" not in body


class Trip(BaseModel):
    city: str
    days: int
    budget: int


async def test_typed_samples_vote_field_by_field_or_on_a_named_key() -> None:
    from ponder.agents import Generate, GenerateConfig, Pool, Vote, VoteConfig

    replies = [
        '{"city": "Lyon", "days": 3, "budget": 500}',
        '{"city": "Lyon", "days": 4, "budget": 700}',
        '{"city": "Nice", "days": 4, "budget": 500}',
        '{"city": "Lyon", "days": 2, "budget": 900}',
        "not JSON at all",  # repaired once, then still invalid: no typed answer
    ]

    def respond(msgs: Sequence[Message], _p: GenerateParams, i: int) -> str:
        return "still not JSON" if msgs[-1].role == "user" and len(msgs) > 2 else replies[i % 5]

    model = FakeModel(respond)
    pool = await Generate(model, GenerateConfig(n=5, output=Trip))(Pool(query="Plan a trip"))
    values = [c.value for c in pool.candidates]
    assert values[0] == {"city": "Lyon", "days": 3, "budget": 500}
    assert values[4] is None
    assert pool.candidates[4].error == "the reply is not a valid Trip"
    by_field = await Vote(VoteConfig(fields=True))(pool)
    assert by_field.final is not None
    assert json.loads(by_field.final) == {"city": "Lyon", "days": 4, "budget": 500}
    assert by_field.notes[-1].startswith("typed vote field by field")
    on_city = await Vote(VoteConfig(key="city"))(pool)
    assert on_city.final is not None
    assert json.loads(on_city.final) == {"city": "Lyon", "days": 3, "budget": 500}
    assert on_city.vote is not None
    assert on_city.vote.tally == {'"Lyon"': 3.0, '"Nice"': 1.0}
    assert (on_city.vote.counted, on_city.vote.abstained) == (4, 1)


def test_vote_values_on_nested_keys_and_ties() -> None:
    from ponder.agents import vote_values

    rows = [
        {"r": {"unit": "m", "v": 1}},
        {"r": {"unit": "km", "v": 2}},
        {"r": {"unit": "m", "v": 3}},
    ]
    winner, tallies = vote_values(rows, key="r.unit")
    assert winner == {"r": {"unit": "m", "v": 1}}
    assert tallies == {"r.unit": {'"m"': 2.0, '"km"': 1.0}}
    assert vote_values([None, None]) == (None, {})
    # a tie is broken by the seed, among the tied values in sorted order: deterministic
    import random

    for seed in (0, 1, 2, 3):
        expected = int(random.Random(seed).choice(["1", "2"]))
        assert vote_values([{"a": 2}, {"a": 1}], seed=seed)[0] == {"a": expected}
