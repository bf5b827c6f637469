"""Core values: the public API, model references, parameters, settings, pool, prices, fakes."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import ponder
from ponder import (
    Budget,
    ConfigurationError,
    GenerateParams,
    MissingAPIKeyError,
    Model,
    ModelRef,
    Price,
    PriceTable,
    Settings,
    SQLiteCache,
    Usage,
)
from ponder.backends import Endpoint, EndpointPool, MemoryCache, Provider, register_provider
from ponder.testing import FakeModel


def test_public_api_is_pinned() -> None:
    assert sorted(ponder.__all__) == sorted(
        [
            "AuthenticationError", "BackendError", "BadRequestError", "Budget", "BudgetExceeded",
            "Choice", "Completion", "ConfigurationError", "GenerateParams", "MemoryCache",
            "Message", "MissingAPIKeyError", "Model", "ModelRef", "ParseError", "PonderError",
            "Price", "PriceTable", "Provider", "Quirks", "RateLimitError", "RequestTimeout",
            "RetryPolicy", "SQLiteCache", "ServerError", "Settings", "StreamChunk",
            "TokenLogprob", "ToolExecutionError", "TransportError", "Usage", "__version__",
            "register_provider",
        ]
    )  # fmt: skip
    for name in ponder.__all__:
        assert hasattr(ponder, name)


def test_every_error_is_a_ponder_error() -> None:
    for name in ponder.errors.__all__:
        assert issubclass(getattr(ponder.errors, name), ponder.PonderError)


@pytest.mark.parametrize(
    ("text", "provider", "name", "urls"),
    [
        ("openai:gpt-4o-mini", "openai", "gpt-4o-mini", ()),
        ("anthropic:claude-sonnet-4-5", "anthropic", "claude-sonnet-4-5", ()),
        ("ollama:llama3:8b", "ollama", "llama3:8b", ()),
        (
            "vllm:Qwen/Qwen2.5-7B@http://10.0.0.5:8000/v1/",
            "vllm",
            "Qwen/Qwen2.5-7B",
            ("http://10.0.0.5:8000/v1",),
        ),
        (
            "vllm:m@http://a:1/v1,https://b:2/v1",
            "vllm",
            "m",
            ("http://a:1/v1", "https://b:2/v1"),
        ),
    ],
)
def test_model_strings_parse(text: str, provider: str, name: str, urls: tuple[str, ...]) -> None:
    ref = ModelRef.parse(text)
    assert (ref.provider, ref.name, ref.base_urls) == (provider, name, urls)
    assert ModelRef.parse(str(ref)) == ref


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("gpt-4o", "expected 'provider:model'"),
        ("openai:", "expected 'provider:model'"),
        ("nosuch:model", "unknown provider 'nosuch'; known providers: anthropic"),
        ("vllm:m@http://", "not an http"),
    ],
)
def test_malformed_model_strings_say_what_is_wrong(text: str, match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        ModelRef.parse(text)


@given(
    st.sampled_from(["openai", "vllm", "anthropic", "llamacpp"]),
    st.text(
        alphabet=st.characters(whitelist_categories=("L", "N"), whitelist_characters="-_./:"),
        min_size=1,
        max_size=40,
    ),
)
def test_model_string_round_trips(provider: str, name: str) -> None:
    ref = ModelRef(provider=provider, name=name)
    assert ModelRef.parse(str(ref)) == ref


def test_missing_api_key_names_the_variable() -> None:
    with pytest.raises(MissingAPIKeyError, match="OPENAI_API_KEY"):
        Model("openai:gpt-4o-mini", settings=Settings.load(cache=False))


def test_api_key_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-test")
    assert Settings.load().api_key("anthropic_api_key") == "sk-test"


def test_invalid_setting_from_environment_is_a_configuration_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PONDER_MAX_CONCURRENCY", "0")
    with pytest.raises(ConfigurationError, match="max_concurrency"):
        Settings.load()


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"temperature": 3.0}, "temperature"),
        ({"n": 0}, "n=0"),
        ({"top_p": 0.0}, "top_p"),
        ({"max_tokens": -1}, "max_tokens"),
        ({"top_logprobs": 3}, "logprobs"),
        ({"bogus": 1}, "bogus"),
    ],
)
def test_out_of_range_parameters_are_refused(kw: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        GenerateParams.build(**kw)


def test_remote_requests_are_blocked_in_tests() -> None:
    m = Model("openai:gpt-4o-mini", settings=Settings.load(openai_api_key="sk-x", cache=False))
    with pytest.raises(ConfigurationError, match=r"blocked a model request to https://api\.openai"):
        m.generate_sync("hi")
    assert m.meter.requests == 0


def test_pool_ejects_a_failing_endpoint_and_lets_it_back_after_cooldown() -> None:
    now = [0.0]
    a, b = Endpoint("http://a/v1"), Endpoint("http://b/v1")
    pool = EndpointPool([a, b], eject_after=2, cooldown=5.0, clock=lambda: now[0])
    pool.report(a, False)
    pool.report(a, False)
    assert a.ejections == 1
    assert all(pool.pick() is b for _ in range(5))
    now[0] = 5.1
    a.outstanding = 0
    b.outstanding = 3
    assert pool.pick() is a  # back after the cooldown, and least loaded
    pool.report(a, True)
    assert a.ejections == 0
    assert a.consecutive_failures == 0


def test_pool_prefers_least_outstanding() -> None:
    a, b = Endpoint("http://a/v1"), Endpoint("http://b/v1")
    a.outstanding = 5
    assert EndpointPool([a, b]).pick() is b


def test_pool_slot_is_released_on_error_and_on_cancellation_while_waiting() -> None:
    ep = Endpoint("http://a/v1", max_concurrency=1)
    pool = EndpointPool([ep])

    async def fails() -> None:
        async with pool.acquire() as got:
            assert got is ep
            assert (ep.outstanding, ep.in_flight) == (1, 1)
            raise RuntimeError("boom")

    async def main() -> None:
        with pytest.raises(RuntimeError):
            await fails()
        assert (ep.outstanding, ep.in_flight) == (0, 0)
        async with pool.acquire():
            waiter = asyncio.create_task(pool.acquire().__aenter__())
            await asyncio.sleep(0)
            assert ep.outstanding == 2  # one holds the slot, one waits for it
            waiter.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiter
            assert ep.outstanding == 1
        assert (ep.outstanding, ep.in_flight) == (0, 0)

    asyncio.run(main())


def test_retry_after_reraises_a_first_error_that_is_not_retryable() -> None:
    calls: list[int] = []

    async def fn() -> str:
        calls.append(1)
        return "ok"

    policy = ponder.RetryPolicy(max_retries=2, initial=0.001)
    refused = ponder.BadRequestError("bad", status=400)
    with pytest.raises(ponder.BadRequestError):
        asyncio.run(policy.retry_after(refused, fn))
    assert calls == []
    limited = ponder.RateLimitError("slow down", retry_after=0.0)
    assert asyncio.run(policy.retry_after(limited, fn)) == "ok"
    assert calls == [1]


def test_event_loop_choice_follows_ponder_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    import uvloop

    from ponder._internal import loop

    monkeypatch.setenv("PONDER_LOOP", "asyncio")
    assert loop.loop_factory() is None
    assert loop.run(asyncio.sleep(0, "done")) == "done"
    monkeypatch.setenv("PONDER_LOOP", "auto")
    assert loop.loop_factory() is uvloop.new_event_loop
    new = loop.new_event_loop()
    assert isinstance(new, uvloop.Loop)
    new.close()

    async def which() -> str:
        return type(asyncio.get_running_loop()).__module__

    assert loop.run(which()).startswith("uvloop")
    monkeypatch.setitem(sys.modules, "uvloop", None)  # as if it were not installed
    assert loop.loop_factory() is None
    monkeypatch.setenv("PONDER_LOOP", "uvloop")
    with pytest.raises(ConfigurationError, match="pip install uvloop"):
        loop.loop_factory()


def test_prices_use_longest_prefix_and_can_be_overridden() -> None:
    table = PriceTable({"openai:gpt-4o-mini-ft": Price(1.0, 2.0)})
    u = Usage(prompt_tokens=1_000_000, completion_tokens=1_000_000)
    assert table.cost("openai:gpt-4o-mini-2024", u) == pytest.approx(0.75)
    assert table.cost("openai:gpt-4o-mini-ft-x", u) == pytest.approx(3.0)
    assert table.cost("vllm:anything", u) == 0.0


def test_budget_rejects_negative_limits() -> None:
    with pytest.raises(ConfigurationError, match="max_cost"):
        Budget(max_cost=-1)


def test_fake_model_scripts_outputs_and_records_calls() -> None:
    m = FakeModel(["a", "b"])
    c = m.generate_sync("q", n=3)
    assert c.texts == ["a", "b", "a"]
    assert m.calls[0].n == 3
    assert m.calls[0].messages[0].content == "q"


def test_fake_model_as_function_and_without_n() -> None:
    m = FakeModel(lambda msgs, p, i: f"{msgs[-1].content}-{i}", supports_n=False)
    c = m.generate_sync("x", n=2)
    assert sorted(c.texts) == ["x-0", "x-1"]
    assert len(m.calls) == 2


def test_fake_model_applies_the_cache_policy() -> None:
    m = FakeModel(["a", "b", "c"], cache=MemoryCache())
    assert m.generate_sync("q", n=2).texts == ["a", "b"]
    assert m.generate_sync("q", n=2).texts == ["a", "b"]
    assert len(m.calls) == 1


def test_registering_a_provider_makes_it_addressable() -> None:
    register_provider(
        Provider("mycloud", "openai", "http://127.0.0.1:1234/v1"), replace_existing=True
    )
    assert Model("mycloud:m", settings=Settings.load(cache=False)).pool.endpoints[0].base_url == (
        "http://127.0.0.1:1234/v1"
    )
    with pytest.raises(ConfigurationError, match="already registered"):
        register_provider(Provider("mycloud", "openai", None))


def test_messages_must_be_well_formed() -> None:
    m = FakeModel(["a"])
    with pytest.raises(ConfigurationError, match="message 0"):
        m.generate_sync([{"role": "wizard", "content": "x"}])
    with pytest.raises(ConfigurationError, match="empty"):
        m.generate_sync([])


def test_sqlite_cache_sees_puts_at_once_and_keeps_them_across_processes(tmp_path: Path) -> None:
    from ponder.types import Choice, TokenLogprob

    path = tmp_path / "c.sqlite"
    cache = SQLiteCache(path)
    lp = (TokenLogprob("a", -0.5, (("a", -0.5), ("b", -1.0))),)
    cache.put_many("k", [Choice(0, "zero"), Choice(1, "one", "length", lp)])
    got = cache.get_many("k", 3)  # visible before the writer commits
    assert sorted(got) == [0, 1]
    assert got[1].finish_reason == "length"
    assert got[1].logprobs == lp
    cache.close()
    cache.close()  # idempotent
    with pytest.raises(ConfigurationError, match="closed"):
        cache.put_many("k", [Choice(2, "two")])
    again = SQLiteCache(path)
    assert len(again) == 2
    assert again.get_many("k", 2)[0].text == "zero"
    assert all(c.cached for c in again.get_many("k", 2).values())
    again.close()


def test_sqlite_cache_in_an_unwritable_place_says_how_to_fix_it(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(ConfigurationError, match="PONDER_CACHE"):
        SQLiteCache(blocker / "cache.sqlite")


async def test_concurrent_calls_report_only_their_own_requests_and_cost() -> None:
    m = FakeModel(["a b c"], delay=0.01, prices=PriceTable({"vllm:fake": Price(1.0, 2.0)}))
    outs = await asyncio.gather(*(m.generate(f"q{i}", n=2) for i in range(5)))
    assert [o.requests for o in outs] == [1] * 5
    assert sum(o.cost for o in outs) == pytest.approx(m.meter.cost)
    assert all(o.cost == pytest.approx(outs[0].cost) for o in outs)


# -- the fake model ---------------------------------------------------------------------


async def test_a_fake_scripts_faults_and_says_when_its_script_is_not_used_up() -> None:
    from ponder import RateLimitError, ServerError
    from ponder.backends import RetryPolicy

    quick = RetryPolicy(max_retries=2, initial=0.001, maximum=0.002)
    m = FakeModel([RateLimitError("slow down"), "4"], cycle=False, retry=quick)
    assert m.ref.provider == "fake"  # its own provider id, not vllm's
    assert (await m.generate("2+2?")).text == "4"  # the scripted 429 was retried
    assert m.meter.retries == 1
    m.assert_complete()
    with pytest.raises(ConfigurationError, match="asked for reply 3, but its script has 2"):
        await m.generate("again?")
    short = FakeModel(["a", "b", ServerError("boom")], cycle=False)
    await short.generate("one")
    with pytest.raises(AssertionError, match="used 1 of its 3 scripted replies; the next"):
        short.assert_complete()
    looping = FakeModel(["x"])  # cycle=True: the script starts again
    assert (await looping.generate("q", n=3)).texts == ["x", "x", "x"]


async def test_a_registered_provider_with_its_own_key_variable_needs_one_edit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A keyed OpenAI-compatible provider is one register_provider call: its key comes
    from its own environment variable, through Settings, and a missing key names it."""
    from ponder import AuthenticationError
    from ponder.backends import PROVIDERS
    from ponder.testing import StandinConfig, StandinServer

    register_provider(Provider("acme", "openai", None, api_key_env="ACME_API_KEY",
                               key_required=True))  # fmt: skip
    try:
        async with StandinServer(StandinConfig(api_key="sk-acme")) as server:
            ref = f"acme:m@{server.base_url}"
            monkeypatch.delenv("ACME_API_KEY", raising=False)
            with pytest.raises(MissingAPIKeyError, match="ACME_API_KEY"):
                Model(ref, settings=Settings.load(cache=False))
            monkeypatch.setenv("ACME_API_KEY", "sk-wrong")
            async with Model(ref, settings=Settings.load(cache=False)) as m:
                with pytest.raises(AuthenticationError):
                    await m.generate("What is 2+2?")
            monkeypatch.setenv("ACME_API_KEY", "sk-acme")
            async with Model(ref, settings=Settings.load(cache=False)) as m:
                assert (await m.generate("What is 2+2?")).text
    finally:
        PROVIDERS.pop("acme", None)


async def test_a_keyed_provider_reads_its_key_from_its_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from ponder.errors import MissingAPIKeyError
    from ponder.testing import StandinConfig, StandinServer

    async with StandinServer(StandinConfig(time_scale=0)) as s:
        register_provider(Provider.keyed("mycloudkeyed", s.base_url), replace_existing=True)
        monkeypatch.delenv("MYCLOUDKEYED_API_KEY", raising=False)
        with pytest.raises(MissingAPIKeyError, match="MYCLOUDKEYED_API_KEY"):
            async with Model("mycloudkeyed:m", settings=Settings.load(cache=False)) as m:
                await m.generate("hi")
        monkeypatch.setenv("MYCLOUDKEYED_API_KEY", "sk-test")
        async with Model("mycloudkeyed:m", settings=Settings.load(cache=False)) as m:
            assert (await m.generate("hi")).text
