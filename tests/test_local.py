"""The embedded local backend on the real SmolLM2-135M model (short outputs, CPU)."""

from __future__ import annotations

import asyncio
import json
import logging
import re
from pathlib import Path
from typing import Any

import pytest

from ponder import BadRequestError, ConfigurationError, Message, Model, Settings
from ponder.backends import _wiring
from ponder.backends._local import LocalConfig, LocalEngine, LocalWire, default_model_path

pytest.importorskip("llama_cpp", reason="the local extra is not installed")
pytestmark = [pytest.mark.asyncio, pytest.mark.realmodel]

Q = "What is 7 + 5? Answer with a number."


@pytest.fixture
def local(settings: Settings) -> Model:
    return Model("local:smollm2", settings=settings, cache=False)


def _engine() -> LocalEngine:
    return LocalWire().engine("smollm2")


async def test_greedy_output_and_token_counts_match_llama_cpp(local: Model) -> None:
    from llama_cpp import Llama

    c = await local.generate(Q, temperature=0, max_tokens=12)
    # the engine runs llama.cpp with flash attention (docs/local.md): so does the reference
    ref_llm = Llama(
        model_path=str(default_model_path()), n_ctx=512, flash_attn=True, seed=0, verbose=False
    )
    ref: Any = ref_llm.create_chat_completion(
        messages=[{"role": "user", "content": Q}], temperature=0, max_tokens=12
    )
    ref_llm.close()
    assert c.text == ref["choices"][0]["message"]["content"]
    assert c.usage.prompt_tokens == ref["usage"]["prompt_tokens"]
    assert c.usage.completion_tokens == ref["usage"]["completion_tokens"]
    assert c.choices[0].finish_reason == ref["choices"][0]["finish_reason"]


async def test_n_samples_evaluate_the_prompt_once_and_decode_as_one_batch(
    local: Model,
) -> None:
    engine = _engine()
    await local.generate("warm up", max_tokens=1)
    before = (engine.stats.prompt_tokens_evaluated, engine.stats.prompt_tokens_reused,
              engine.stats.decode_steps, engine.stats.batched_tokens)  # fmt: skip
    c = await local.generate(Q, n=4, seed=7, temperature=1.0, max_tokens=10)
    prompt = c.usage.prompt_tokens
    # the prompt is evaluated once; the 3 other samples get a copy of its KV cache
    assert engine.stats.prompt_tokens_evaluated - before[0] == prompt
    assert engine.stats.prompt_tokens_reused - before[1] == 3 * prompt
    steps = engine.stats.decode_steps - before[2]
    batched = engine.stats.batched_tokens - before[3]
    # every step decodes every sample still running: 4 samples of <= 10 tokens take <= 9
    # steps (the first token comes from the prompt's logits)
    assert steps <= 9
    assert batched == c.usage.completion_tokens - 4 + sum(
        ch.finish_reason == "stop" for ch in c.choices
    )
    assert len(set(c.texts)) > 1
    # run alone, a seeded request gives the same samples every time
    again = await local.generate(Q, n=4, seed=7, temperature=1.0, max_tokens=10, use_cache=False)
    assert again.texts == c.texts


async def test_concurrent_requests_join_the_running_batch(local: Model) -> None:
    engine = _engine()
    before_steps, before_tokens = engine.stats.decode_steps, engine.stats.batched_tokens
    prompts = [f"Write a story about {w}." for w in ("a cat", "the sea", "a robot", "snow")]
    outs = await asyncio.gather(
        *(local.generate(p, seed=i, temperature=0.8, max_tokens=24) for i, p in enumerate(prompts))
    )
    steps = engine.stats.decode_steps - before_steps
    tokens = engine.stats.batched_tokens - before_tokens
    assert all(o.usage.completion_tokens > 0 for o in outs)
    # the four requests shared decode steps: fewer steps than tokens decoded
    assert 0 < steps < tokens


SYSTEM = Message.system(
    "You are a careful assistant. Think about the question, then answer in one short "
    "sentence, and never add anything after the answer."
)


async def test_a_prompt_prefix_a_running_request_evaluated_is_shared_not_recomputed(
    local: Model,
) -> None:
    """Concurrent requests with one system prompt: the second takes the first's cells for
    the common prefix and evaluates only the rest, with the same greedy answer as alone."""
    engine = _engine()
    question = [SYSTEM, Message.user("What is the capital of Italy?")]
    alone = await local.generate(question, temperature=0, max_tokens=16)
    before = (engine.stats.prefix_tokens_shared, engine.stats.prompt_tokens_evaluated)
    first, second = await asyncio.gather(
        local.generate([SYSTEM, Message.user("Name a colour.")], temperature=0, max_tokens=40),
        local.generate(question, temperature=0, max_tokens=16, use_cache=False),
    )
    shared = engine.stats.prefix_tokens_shared - before[0]
    evaluated = engine.stats.prompt_tokens_evaluated - before[1]
    assert shared >= 16  # the system prompt, at least
    assert evaluated == first.usage.prompt_tokens + second.usage.prompt_tokens - shared
    assert second.text == alone.text  # the shared cells hold what its own would
    assert first.text


async def test_more_samples_than_sequences_run_in_groups(settings: Settings) -> None:
    small = settings.model_copy(update={"local_max_sequences": 3})
    m = Model("local:smollm2", settings=small, cache=False)
    c = await m.generate(Q, n=7, seed=3, temperature=1.0, max_tokens=6)
    assert len(c.choices) == 7
    assert [ch.index for ch in c.choices] == list(range(7))
    engine = LocalWire(LocalConfig(max_sequences=3)).engine("smollm2")
    assert engine.stats.peak_sequences <= 3
    again = await m.generate(Q, n=7, seed=3, temperature=1.0, max_tokens=6, use_cache=False)
    assert again.texts == c.texts


async def test_each_sample_keeps_its_own_grammar_and_stop_strings(local: Model) -> None:
    schema = {
        "type": "object",
        "properties": {"answer": {"type": "integer"}},
        "required": ["answer"],
    }
    typed, stopped = await asyncio.gather(
        local.generate(Q, n=3, json_schema=schema, seed=1, temperature=1.0, max_tokens=20),
        local.generate("Count: one, two, three, four", n=3, stop=[","], seed=2, max_tokens=30),
    )
    assert all(isinstance(json.loads(t)["answer"], int) for t in typed.texts)
    assert all("," not in t for t in stopped.texts)


async def test_a_bad_request_in_the_batch_fails_alone(local: Model) -> None:
    good, bad = await asyncio.gather(
        local.generate(Q, n=2, seed=1, max_tokens=8),
        local.generate("word " * 5000, max_tokens=4),
        return_exceptions=True,
    )
    assert isinstance(bad, BadRequestError)
    assert not isinstance(good, BaseException)
    assert len(good.choices) == 2


async def test_vote_over_samples_parses_or_marks_each_answer(local: Model) -> None:
    c = await local.generate(
        [Message.system("Reply with only a number."), Message.user(Q)],
        n=5,
        seed=1,
        max_tokens=8,
    )
    answers = [m.group(0) if (m := re.search(r"-?\d+", t)) else None for t in c.texts]
    assert len(answers) == 5
    assert all(t.strip() for t in c.texts)
    assert c.usage.completion_tokens <= 5 * 8


async def test_critique_then_fuse_pipeline_runs(local: Model) -> None:
    drafts = await local.generate(Q, n=2, seed=3, max_tokens=16)
    shown = "\n".join(f"Candidate {i + 1}: {t}" for i, t in enumerate(drafts.texts))
    critique = await local.generate(
        [Message.system("You are a critic."), Message.user(f"{Q}\n{shown}\nCritique them.")],
        seed=3,
        max_tokens=16,
    )
    fused = await local.generate(
        [
            Message.system("Fuse the candidates into one answer."),
            Message.user(f"{Q}\n{shown}\nCritique: {critique.text}\nFinal answer:"),
        ],
        seed=3,
        max_tokens=16,
    )
    assert critique.text.strip()
    assert fused.text.strip()


async def test_prefill_stop_and_json_schema(local: Model) -> None:
    c = await local.generate(Q, prefill="The answer is", temperature=0, max_tokens=6)
    assert c.text.startswith("The answer is")
    s = await local.generate("Count: one, two, three, four", stop=[","], max_tokens=30, seed=2)
    assert "," not in s.text
    schema = {
        "type": "object",
        "properties": {"answer": {"type": "integer"}},
        "required": ["answer"],
    }
    j = await local.generate(Q, json_schema=schema, temperature=0, max_tokens=20)
    assert isinstance(json.loads(j.text)["answer"], int)


async def test_streaming_yields_the_same_text_as_generate(local: Model) -> None:
    pieces = [ch async for ch in local.stream(Q, seed=5, max_tokens=12, use_cache=False)]
    assert pieces[-1].finish_reason in ("stop", "length")
    full = await local.generate(Q, seed=5, max_tokens=12)
    assert "".join(p.text for p in pieces) == full.text


async def test_cancellation_stops_a_request_between_tokens_and_spares_the_others(
    local: Model,
) -> None:
    engine = _engine()
    outs = await asyncio.gather(*(local.generate(f"{Q} ({i})", max_tokens=4) for i in range(6)))
    assert all(o.choices for o in outs)
    cancelled = engine.stats.cancelled
    survivor = asyncio.create_task(local.generate(Q, n=2, seed=4, max_tokens=40, use_cache=False))
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(local.generate("Write a long story.", max_tokens=2000), 0.5)
    stream = local.stream("Write another long story.", max_tokens=2000, use_cache=False)
    got = []
    async for chunk in stream:
        got.append(chunk)
        if len(got) == 3:
            break
    await stream.aclose()
    assert len(got) == 3
    after = await local.generate(Q, max_tokens=3, temperature=0)  # the engine is free again
    assert after.choices[0].text
    assert engine.stats.cancelled == cancelled + 2  # both stopped between two tokens
    spared = await survivor  # decoded in the same batches, untouched by the cancellations
    assert len(spared.choices) == 2


async def test_prompt_longer_than_the_context_window_is_refused(local: Model) -> None:
    with pytest.raises(BadRequestError, match="context window"):
        await local.generate("word " * 5000, max_tokens=4)


async def test_missing_and_corrupt_model_files_are_clear_errors(
    tmp_path: Path, settings: Settings
) -> None:
    with pytest.raises(ConfigurationError, match="no such file"):
        await Model(f"local:{tmp_path / 'nope.gguf'}", settings=settings).generate("hi")
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"this is not a model")
    with pytest.raises(ConfigurationError, match="not a GGUF model file"):
        await Model(f"local:{bad}", settings=settings, cache=False).generate("hi")


async def test_missing_package_names_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    from importlib import metadata

    def missing(name: str) -> Any:
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "distribution", missing)
    with pytest.raises(ConfigurationError, match=r"pip install 'ponder\[local\]'"):
        default_model_path()


async def test_default_model_is_the_embedded_one_and_is_announced_once(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(_wiring, "_announced", False)
    s = Settings.load(cache_path=tmp_path / "c.sqlite")
    with caplog.at_level(logging.WARNING, logger="ponder"):
        a, b = Model(settings=s), Model(settings=s)
    assert a.id == b.id == "local:smollm2"
    assert sum("embedded local model" in r.message for r in caplog.records) == 1
    assert default_model_path().name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    with pytest.raises(ConfigurationError, match="no model given"):
        Model(settings=Settings.load(openai_api_key="sk-x"))


async def test_quickstart_demo_runs_on_the_embedded_model(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from ponder.apps.cli import main

    # the CLI runs its own event loop: give it a thread of its own
    rc = await asyncio.to_thread(main, ["demo", "-n", "2", "--max-tokens", "8"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "local:smollm2" in out
    assert re.search(r"voted: \d/4 right", out)


async def test_typed_output_on_the_embedded_model(local: Model) -> None:
    """output=Model on the embedded backend: the schema becomes a grammar, so even the
    135M model's reply validates."""
    from pydantic import BaseModel

    class Sum(BaseModel):
        answer: int
        sure: bool

    c = await local.generate(Q, output=Sum, temperature=0, max_tokens=30)
    value = c.choices[0].parsed
    assert isinstance(value, Sum)
    again = await local.parse(Q, Sum, temperature=0, max_tokens=30)
    assert again == value


async def test_bounded_integers_are_enforced_by_the_grammar(local: Model) -> None:
    """llama-cpp-python's JSON-schema grammar ignores minimum/maximum: the engine spells
    a bounded integer out as an enum, so even sampled replies of the 135M model stay in
    range (they did not: out-of-range values needed repair turns, which rarely helped)."""
    from typing import Literal

    from pydantic import BaseModel, Field

    from ponder.backends._local import _bounded_ints

    class Rating(BaseModel):
        score: int = Field(ge=1, le=100)
        level: Literal["low", "high"]

    schema = _bounded_ints(Rating.model_json_schema())
    assert schema["properties"]["score"]["enum"] == list(range(1, 101))
    c = await local.generate(
        "Rate the movie Jaws from 1 to 100.", output=Rating, n=6, seed=4, temperature=1.2,
        max_tokens=40,
    )  # fmt: skip
    assert c.requests == 1  # no repair turn was needed
    assert all(isinstance(ch.parsed, Rating) for ch in c.choices)
