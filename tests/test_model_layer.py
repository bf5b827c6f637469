"""The model layer against the stand-in server: fan-out, retries, budgets, cache, cancel."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web
from conftest import free_port

from ponder import (
    AuthenticationError,
    BadRequestError,
    Budget,
    BudgetExceeded,
    ConfigurationError,
    Model,
    ParseError,
    PonderError,
    RetryPolicy,
    ServerError,
    Settings,
)
from ponder.backends import RedisCache
from ponder.testing import StandinConfig, StandinServer

pytestmark = pytest.mark.asyncio


@pytest.mark.parametrize("provider", ["vllm", "llamacpp"])
async def test_n_samples_go_out_as_one_request_or_fan_out_where_n_is_unsupported(
    standin: StandinServer, settings: Settings, provider: str
) -> None:
    async with Model(f"{provider}:strong@{standin.base_url}", settings=settings) as m:
        c = await m.generate("Problem 1: go", n=8, seed=3)
    assert len(c.choices) == 8
    assert [ch.index for ch in c.choices] == list(range(8))
    if provider == "vllm":  # supports n
        assert standin.stats.requests == 1
        assert c.requests == 1
        # the prompt was prefilled once and reused by the other 7 samples
        assert standin.stats.prompt_tokens_reused == 7 * standin.stats.prompt_tokens
    else:  # llama.cpp's server does not: 8 requests, in parallel, with distinct seeds
        assert standin.stats.requests == 8
        assert standin.stats.max_concurrency > 1
        assert len(set(c.texts)) > 1


async def test_second_identical_run_is_served_from_cache_with_zero_requests(
    standin: StandinServer, settings: Settings
) -> None:
    async with Model(f"vllm:strong@{standin.base_url}", settings=settings) as m:
        first = await m.generate("Problem 2: go", n=5, seed=1)
    before = standin.stats.requests
    async with Model(f"vllm:strong@{standin.base_url}", settings=settings) as m2:
        second = await m2.generate("Problem 2: go", n=5, seed=1)
        assert m2.meter.requests == 0
    assert standin.stats.requests == before
    assert second.texts == first.texts
    assert all(ch.cached for ch in second.choices)
    assert second.usage.total_tokens == 0
    assert second.cost == 0


async def test_cache_pays_only_for_missing_samples(
    standin: StandinServer, settings: Settings
) -> None:
    async with Model(f"vllm:strong@{standin.base_url}", settings=settings) as m:
        await m.generate("Problem 3: go", n=3, seed=1)
        c = await m.generate("Problem 3: go", n=5, seed=1)
    assert [ch.cached for ch in c.choices] == [True, True, True, False, False]
    assert standin.stats.samples == 5


async def test_exhausted_budget_stops_with_what_was_spent(
    standin: StandinServer, settings: Settings
) -> None:
    budget = Budget(max_requests=3)
    async with Model(f"llamacpp:weak@{standin.base_url}", settings=settings, budget=budget) as m:
        with pytest.raises(BudgetExceeded) as info:
            await m.generate("Problem 4: go", n=8, seed=0)
    assert info.value.spent["requests"] == 3
    assert "max_requests=3" in str(info.value)
    assert standin.stats.requests == 3
    # the three samples that were paid for are kept
    async with Model(f"llamacpp:weak@{standin.base_url}", settings=settings) as m2:
        c = await m2.generate("Problem 4: go", n=8, seed=0)
    assert sum(ch.cached for ch in c.choices) == 3
    assert standin.stats.requests == 8


async def test_token_budget_counts_usage(standin: StandinServer, settings: Settings) -> None:
    budget = Budget(max_tokens=10)
    async with Model(f"vllm:x@{standin.base_url}", settings=settings, budget=budget) as m:
        await m.generate("hello", max_tokens=20)
        with pytest.raises(BudgetExceeded) as info:
            await m.generate("hello again", max_tokens=20)
    assert info.value.spent["total_tokens"] >= 10


@pytest_asyncio.fixture
async def flaky(
    chat_server: Callable[[Any], Awaitable[str]],
) -> AsyncIterator[tuple[str, list[float]]]:
    """A server that answers 429 with Retry-After: 0.2 once, then 200."""
    arrivals: list[float] = []

    async def chat(request: web.Request) -> web.Response:
        arrivals.append(asyncio.get_running_loop().time())
        if len(arrivals) == 1:
            return web.json_response(
                {"error": {"message": "slow down"}}, status=429, headers={"Retry-After": "0.2"}
            )
        return web.json_response(
            {
                "choices": [{"index": 0, "message": {"content": "ok"}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1},
            }
        )

    yield await chat_server(chat), arrivals


async def test_retry_honours_retry_after(
    flaky: tuple[str, list[float]], settings: Settings
) -> None:
    url, arrivals = flaky
    async with Model(f"vllm:x@{url}", settings=settings, cache=False) as m:
        c = await m.generate("hi")
    assert c.text == "ok"
    assert len(arrivals) == 2
    assert arrivals[1] - arrivals[0] >= 0.2  # waited at least Retry-After, not 0.01s backoff
    assert m.meter.retries == 1


async def test_401_raises_authentication_error_and_is_not_retried(settings: Settings) -> None:
    async with StandinServer(StandinConfig(time_scale=0.01, api_key="right")) as s:
        ref = f"vllm:x@{s.base_url}"
        async with Model(ref, settings=Settings.load(vllm_api_key="wrong", cache=False)) as m:
            with pytest.raises(AuthenticationError, match="VLLM_API_KEY"):
                await m.generate("hi")
        assert s.stats.status_counts == {"401": 1}
        async with Model(ref, settings=Settings.load(vllm_api_key="right", cache=False)) as ok:
            assert (await ok.generate("hi")).text
            assert "right" not in repr(ok.wire)  # its header cache holds the key


async def test_400_is_a_bad_request_and_not_retried(
    standin: StandinServer, settings: Settings
) -> None:
    async with Model(f"vllm:x@{standin.base_url}", settings=settings) as m:
        with pytest.raises(BadRequestError, match="seed"):
            await m.generate("hi", extra={"seed": "not-a-number"})
    assert standin.stats.status_counts == {"400": 1}
    assert m.meter.retries == 0


async def test_response_that_is_not_json_raises_parse_error(
    settings: Settings, chat_server: Callable[[Any], Awaitable[str]]
) -> None:
    async def chat(request: web.Request) -> web.Response:
        return web.Response(text="<html>gateway</html>")

    url = await chat_server(chat)
    async with Model(f"vllm:x@{url}", settings=settings) as m:
        with pytest.raises(ParseError, match="not a chat completion"):
            await m.generate("hi")


async def test_cancelling_a_run_closes_its_open_connections(settings: Settings) -> None:
    cfg = StandinConfig(ttft_base=30.0, time_scale=1.0)
    async with StandinServer(cfg) as s:
        async with Model(f"llamacpp:x@{s.base_url}", settings=settings) as m:
            task = asyncio.create_task(m.generate("hi", n=4))
            for _ in range(200):
                if s.stats.in_flight == 4:
                    break
                await asyncio.sleep(0.01)
            assert s.stats.in_flight == 4
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            for _ in range(200):
                if s.stats.cancelled == 4:
                    break
                await asyncio.sleep(0.01)
        assert s.stats.cancelled == 4
        assert s.stats.in_flight == 0
        assert s.stats.completed == 0


async def test_partial_fan_out_failure_keeps_completed_samples(settings: Settings) -> None:
    cfg = StandinConfig(time_scale=0.01, fault_500=0.3, seed=7)
    async with StandinServer(cfg) as s:
        no_retry = RetryPolicy(max_retries=0)
        async with Model(f"llamacpp:x@{s.base_url}", settings=settings, retry=no_retry) as m:
            with pytest.raises(ServerError):
                await m.generate("hi", n=20, seed=1)
        generated = s.stats.samples
        assert 0 < generated < 20
        async with Model(f"llamacpp:x@{s.base_url}", settings=settings) as m2:
            c = await m2.generate("hi", n=20, seed=1)
        assert len(c.choices) == 20
        assert sum(ch.cached for ch in c.choices) == generated
        assert s.stats.samples == 20  # nothing generated twice


async def test_streaming_yields_text_and_caches_the_result(
    standin: StandinServer, settings: Settings
) -> None:
    async with Model(f"vllm:x@{standin.base_url}", settings=settings) as m:
        parts = [c async for c in m.stream("hello", max_tokens=12, seed=5)]
        text = "".join(p.text for p in parts)
        assert parts[-1].finish_reason == "length"
        assert len(parts) > 2
        full = await m.generate("hello", max_tokens=12, seed=5)
        assert full.text == text
        assert full.choices[0].cached
        assert m.meter.usage.completion_tokens == 12


async def test_prefill_continues_a_partial_answer(
    standin: StandinServer, settings: Settings
) -> None:
    async with Model(f"vllm:x@{standin.base_url}", settings=settings) as m:
        c = await m.generate("Problem 0: go", prefill="Sure! ", max_tokens=5)
    assert c.text.startswith("Sure! ")


async def test_prefill_refused_where_the_provider_cannot(settings: Settings) -> None:
    m = Model("ollama:llama3:8b", settings=settings)
    with pytest.raises(ConfigurationError, match="prefill"):
        await m.generate("hi", prefill="x")
    await m.aclose()


async def test_logprobs_stop_and_seed_determinism(
    standin: StandinServer, settings: Settings
) -> None:
    async with Model(f"vllm:x@{standin.base_url}", settings=settings, cache=False) as m:
        a = await m.generate("hello", logprobs=True, top_logprobs=2, seed=9, max_tokens=8)
        b = await m.generate("hello", logprobs=True, top_logprobs=2, seed=9, max_tokens=8)
        assert a.texts == b.texts
        lp = a.choices[0].logprobs
        assert lp is not None
        assert len(lp) == 8
        assert len(lp[0].top) == 2
        assert a.choices[0].mean_logprob is not None
        word = a.text.split()[2]
        stopped = await m.generate("hello", seed=9, max_tokens=8, stop=[" " + word])
        assert " " + word not in stopped.text


async def test_replica_that_keeps_failing_is_ejected(
    standin: StandinServer, settings: Settings
) -> None:
    dead = "http://127.0.0.1:9/v1"  # discard port: connection refused
    s = Settings.load(cache=False, retry_initial=0.001, retry_max=0.01, eject_after=2)
    async with Model(f"llamacpp:x@{dead},{standin.base_url}", settings=s) as m:
        c = await m.generate("hi", n=30)
        dead_ep, live_ep = m.pool.endpoints
    assert len(c.choices) == 30
    assert dead_ep.ejections >= 1
    assert live_ep.served == 30
    assert dead_ep.served == 0


async def test_a_cached_sample_is_readable_at_every_moment_of_its_write(tmp_path: Path) -> None:
    """Read-your-writes while the writer thread commits: a look-up between the commit and
    the writer's bookkeeping once missed entries (seen under load)."""
    from ponder.backends._cache import SQLiteCache
    from ponder.types import Choice

    cache = SQLiteCache(tmp_path / "c.sqlite")
    try:
        for i in range(3000):
            cache.put_many(f"k{i}", [Choice(0, f"text {i}")])
            assert cache.get_many(f"k{i}", 1)[0].text == f"text {i}"
    finally:
        cache.close()


async def test_the_cache_batches_its_commits_and_flush_does_not_wait_for_the_batch(
    tmp_path: Path,
) -> None:
    """Samples arriving one by one are committed together; flush() and close() commit at
    once, whatever the linger (an hour here: a flush that waited for it would hang)."""
    import sqlite3
    import threading

    from ponder.backends._cache import SQLiteCache
    from ponder.types import Choice

    cache = SQLiteCache(tmp_path / "c.sqlite", linger=3600)
    for i in range(50):
        cache.put_many(f"k{i}", [Choice(0, f"text {i}")])
    assert cache.get_many("k49", 1)[0].text == "text 49"  # readable before any commit
    other = sqlite3.connect(tmp_path / "c.sqlite")
    assert other.execute("SELECT COUNT(*) FROM responses").fetchone() == (0,)  # lingering
    done = threading.Thread(target=cache.flush)
    done.start()
    done.join(60)
    assert not done.is_alive()
    assert other.execute("SELECT COUNT(*) FROM responses").fetchone() == (50,)
    cache.put_many("late", [Choice(0, "late")])
    closer = threading.Thread(target=cache.close)
    closer.start()
    closer.join(60)
    assert not closer.is_alive()
    assert other.execute("SELECT COUNT(*) FROM responses").fetchone() == (51,)
    other.close()


async def test_redis_cache_is_shared_by_models_of_different_processes(
    standin: StandinServer, tmp_path: Path, redis_url: str
) -> None:
    # two Settings as two server processes or Ray workers would have them: separate SQLite
    # paths, one Redis; the second pays for nothing the first already sampled
    a = Settings.load(cache_path=tmp_path / "a.sqlite", cache_url=redis_url)
    b = Settings.load(cache_path=tmp_path / "b.sqlite", cache_url=redis_url)
    async with Model(f"vllm:strong@{standin.base_url}", settings=a) as m:
        assert isinstance(m.cache, RedisCache)
        first = await m.generate("Problem 4: go", n=3, seed=9)
        streamed = "".join([ch.text async for ch in m.stream("Problem 5: go", seed=2)])
    samples = standin.stats.samples
    async with Model(f"vllm:strong@{standin.base_url}", settings=b) as m2:
        second = await m2.generate("Problem 4: go", n=5, seed=9)
        again = "".join([ch.text async for ch in m2.stream("Problem 5: go", seed=2)])
    assert second.texts[:3] == first.texts
    assert again == streamed
    assert [ch.cached for ch in second.choices] == [True, True, True, False, False]
    assert standin.stats.samples == samples + 2  # only the two new samples were generated
    assert not (tmp_path / "b.sqlite").exists()


async def test_unreachable_redis_cache_never_fails_a_generation(
    standin: StandinServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    s = Settings.load(
        cache_path=tmp_path / "c.sqlite", cache_url=f"redis://127.0.0.1:{free_port()}/0"
    )
    async with Model(f"vllm:strong@{standin.base_url}", settings=s) as m:
        c = await m.generate("Problem 6: go", n=2, seed=1)
        c2 = await m.generate("Problem 6: go", n=2, seed=1)
    assert len(c.choices) == 2
    assert c2.texts == c.texts
    assert not any(ch.cached for ch in c2.choices)
    assert "Check that Redis is running" in caplog.text


async def test_cache_url_must_be_a_redis_url() -> None:
    with pytest.raises(ConfigurationError, match="not a Redis URL"):
        RedisCache("http://127.0.0.1:6379")


async def test_repeated_overrides_are_validated_once_and_bad_ones_still_refused() -> None:
    from ponder import GenerateParams, Message
    from ponder.backends import MemoryCache, request_key
    from ponder.testing import FakeModel

    m = FakeModel(["The answer is 4"], cache=MemoryCache())
    a = m._params(None, {"temperature": 0.7, "seed": 3})
    assert m._params(None, {"temperature": 0.7, "seed": 3}) is a  # memoised
    assert m._params(None, {"temperature": 0.7, "seed": 4}).seed == 4
    stops = m._params(None, {"stop": ["\n"]})  # unhashable override: validated each time
    assert stops.stop == ("\n",)
    assert m._params(None, {"stop": ["\n"]}) is not stops
    with pytest.raises(ConfigurationError, match="temperature"):
        m._params(None, {"temperature": 9.0})
    with pytest.raises(ConfigurationError, match="temperature"):
        await m.generate("2+2?", temperature=9.0)  # a refused value is not memoised
    given = GenerateParams(temperature=0.2, n=2)
    resolved = m._params(given, {})
    assert m._params(given, {}) is resolved  # a kept params object is resolved once
    assert resolved.timeout is not None  # ... with the settings' timeout filled in
    assert m._params(GenerateParams(temperature=0.2, n=2), {}) == resolved
    # an equal params object made separately hashes to the same cache key
    same = GenerateParams(temperature=0.7, seed=3, timeout=a.timeout)
    msgs = [Message.user("2+2?")]
    assert request_key(m.id, msgs, a) == request_key(m.id, msgs, same)
    first = await m.generate("2+2?", temperature=0.7, seed=3)
    again = await m.generate("2+2?", temperature=0.7, seed=3)
    assert again.choices[0].cached
    assert again.text == first.text


async def test_a_hung_endpoint_fails_within_the_first_byte_timeout_naming_it() -> None:
    """A server that takes the connection and never answers: the call fails once the
    first-byte timeout passes (not after 5 attempts of the 600 s total), saying which
    setting to raise."""

    from ponder.backends._openai import StalledError

    done = asyncio.Event()

    async def hang(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.read(65536)
            await done.wait()  # never answers while the test runs
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    server = await asyncio.start_server(hang, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        settings = Settings.load(cache=False, first_byte_timeout=0.5, retry_initial=0.01)
        async with Model(f"vllm:m@http://127.0.0.1:{port}/v1", settings=settings) as m:
            with pytest.raises(StalledError, match="PONDER_FIRST_BYTE_TIMEOUT"):
                await m.generate("q")
            assert m.meter.retries == 0
    finally:
        done.set()
        server.close()
        await server.wait_closed()
        await asyncio.sleep(0.05)  # the handler closes its side
    defaults = Settings.load()
    assert defaults.first_byte_timeout < 60  # a hung server fails within a minute


async def test_a_stream_is_retried_until_its_first_piece_and_never_after(
    settings: Settings, chat_server: Callable[[Any], Awaitable[str]]
) -> None:
    """Streams go through the same retry path as plain calls: a 503 before any text is
    retried; a connection lost after text has been shown is an error (the text cannot be
    taken back), and the budget reserved for it is released."""
    served: list[str] = []

    async def chat(request: web.Request) -> web.StreamResponse:
        served.append("request")
        if len(served) == 1:
            return web.json_response({"error": {"message": "overloaded"}}, status=503)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        delta = {"choices": [{"index": 0, "delta": {"content": "The answer"}}]}
        await resp.write(f"data: {json.dumps(delta)}\n\n".encode())
        request.transport.close()  # type: ignore[union-attr]  # the server dies mid-answer
        return resp

    url = await chat_server(chat)
    budget = Budget(max_tokens=100_000)
    async with Model(f"vllm:x@{url}", settings=settings, cache=False, budget=budget) as m:
        shown: list[str] = []

        async def read() -> None:
            async for chunk in m.stream("hi", max_tokens=50):
                shown.append(chunk.text)

        with pytest.raises(PonderError):
            await read()
    assert shown == ["The answer"]
    assert len(served) == 2  # the 503 retried once; the broken stream not retried
    assert m.meter.retries == 1
    assert budget.reserved_tokens == 0


async def test_score_is_a_model_call_with_its_policies(
    standin: StandinServer, settings: Settings
) -> None:
    """Model.score: vLLM's score API behind the model's slots, budget, cache and retries;
    a wire without a score API says how a reward model is served."""
    budget = Budget(max_tokens=100_000)
    async with Model(f"vllm:pairrm@{standin.base_url}", settings=settings, budget=budget) as m:
        texts = ["\\boxed{1}", "\\boxed{2}"]
        first = await m.score("What is 1 + 1?", texts)
        assert len(first) == 2
        assert await m.score("What is 1 + 1?", texts) == first  # from the cache
        assert (m.meter.requests, m.meter.cached_samples) == (1, 1)
        assert budget.spent.usage.prompt_tokens > 0
        assert budget.reserved_tokens == 0
        assert await m.score("What is 1 + 1?", []) == []
    keyed = Settings.load(anthropic_api_key="k", cache=False)
    async with Model("anthropic:claude@http://127.0.0.1:9", settings=keyed) as a:
        with pytest.raises(ConfigurationError, match="no score API"):
            await a.score("q", ["t"])
