"""The engine and what runs share through it: stable slot identities, atomic budgets,
honest accounting of cache hits, prices, cross-run endpoint limits, scheduling and rate
limits. Tested as a user would: published-style configs, many concurrent runs against
one limit, a rerun after a cache hit."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from ponder import (
    Budget,
    BudgetExceeded,
    ConfigurationError,
    Message,
    Price,
    PriceTable,
    RetryPolicy,
    Settings,
    Usage,
)
from ponder.agents import Pool
from ponder.backends import Endpoint, EndpointPool, Model, ModelRef
from ponder.backends._pool import RateLimiter, Slots, _duration
from ponder.engine import Engine, RedisBudget
from ponder.errors import RateLimitError
from ponder.testing import FakeModel, StandinConfig, StandinServer
from ponder.testing.oracle import OracleConfig, ProblemBank
from ponder.workflows import Workflow, WorkflowSpec, archon_to_spec

ORACLE = OracleConfig(accuracy={"m": 0.6, "n": 0.6})
BANK = ProblemBank(ORACLE.bank_seed, ORACLE.distractors)


def question(i: int = 0) -> str:
    return BANK.problem(BANK.ids("arithmetic", 1, start=i)[0]).question


@pytest_asyncio.fixture
async def standin() -> AsyncIterator[StandinServer]:
    async with StandinServer(StandinConfig(time_scale=0, oracle=ORACLE)) as s:
        yield s


def six_generators(url: str, **extra: Any) -> WorkflowSpec:
    return WorkflowSpec.model_validate(
        {
            "name": "six",
            "models": {"m": f"vllm:m@{url}"},
            "layers": [[{"generate": {"n": 1, "temperature": 0.8}} for _ in range(6)]],
            **extra,
        }
    )


# -- stable identities ---------------------------------------------------------------------


async def test_six_parallel_generators_of_one_model_keep_six_distinct_candidates(
    standin: StandinServer, tmp_path: Path
) -> None:
    settings = Settings.load(cache_path=tmp_path / "c.sqlite")
    wf = Workflow(six_generators(standin.base_url), settings=settings)
    first = (await wf.arun(question(1))).output
    ids = [c.id for c in first.candidates]
    assert len(ids) == 6
    assert len(set(ids)) == 6
    assert ids[0].startswith("layer1.0:vllm:m:")
    seeds = [c.provenance.seed for c in first.candidates]
    assert len(set(seeds)) == 6  # six sources of samples, not one asked six times
    assert standin.stats.requests == 6
    # on an open question (the stand-in samples its text from the seed) the texts differ
    story = (await wf.arun("Tell me something about rivers.")).output
    assert len({c.text for c in story.candidates}) == 6
    assert standin.stats.requests == 12

    # a rerun is served from the cache, each slot its own sample
    again = await Workflow(six_generators(standin.base_url), settings=settings).arun(question(1))
    assert [c.id for c in again.output.candidates] == ids
    assert [c.text for c in again.output.candidates] == [c.text for c in first.candidates]
    story2 = (await wf.arun("Tell me something about rivers.")).output
    assert [c.text for c in story2.candidates] == [c.text for c in story.candidates]
    assert standin.stats.requests == 12


async def test_an_archon_moa_config_keeps_every_generator_and_fuser(
    standin: StandinServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PONDER_ARCHON_URL", standin.base_url)
    gen = {"type": "generator", "model": "m", "model_type": "vLLM", "temperature": 0.7}
    fuse = {"type": "fuser", "model": "m", "model_type": "vLLM", "temperature": 0.7}
    config = {"name": "moa", "layers": [[gen] * 6, [fuse] * 6, [fuse] * 6]}
    spec, _notes = archon_to_spec(config)
    wf = Workflow(spec, settings=Settings.load(cache=False))
    events = [e async for e in wf.astream(question(2))]
    finished = {e.node: e.data for e in events if e.kind == "node_finished"}
    assert finished["layer1"]["candidates"] == 6
    assert finished["layer2"]["candidates"] == 6
    assert finished["layer3"]["candidates"] == 6
    assert standin.stats.requests == 18


# -- prices and honest accounting ---------------------------------------------------------


async def test_a_priced_workflow_costs_tokens_times_price(standin: StandinServer) -> None:
    spec = WorkflowSpec.model_validate(
        {
            "models": {"m": {"ref": f"vllm:m@{standin.base_url}", "price": [2.0, 8.0]}},
            "layers": [{"generate": {"n": 3}}, "vote"],
        }
    )
    out = (await Workflow(spec, settings=Settings.load(cache=False)).arun(question(3))).output
    expected = (out.spend.prompt_tokens * 2.0 + out.spend.completion_tokens * 8.0) / 1e6
    assert out.spend.cost > 0
    assert out.spend.cost == pytest.approx(expected)


async def test_a_price_on_the_model_reference_and_a_later_price_apply() -> None:
    fake = FakeModel(["\\boxed{1}"])
    c0 = await fake.generate("q")
    assert c0.cost == 0.0
    priced = fake.with_prices(PriceTable({fake.id: Price(1e6, 0)}))
    c1 = await priced.generate("q2")
    assert c1.cost == pytest.approx(c1.usage.prompt_tokens)
    assert fake.prices.price(fake.id) is None  # the original is unchanged
    m = Model("vllm:m@http://127.0.0.1:9/v1", settings=Settings.load(cache=False))
    assert m.prices.price(m.id) is None
    ref = ModelRef(provider="vllm", name="m", base_urls=("http://127.0.0.1:9/v1",), price=(1, 2))
    m2 = Model(ref, settings=Settings.load(cache=False))
    assert m2.prices.price(m2.id) is not None


async def test_a_cached_rerun_reports_the_tokens_and_cost_it_saved(
    standin: StandinServer, tmp_path: Path
) -> None:
    settings = Settings.load(cache_path=tmp_path / "c.sqlite")
    spec = WorkflowSpec.model_validate(
        {
            "models": {"m": {"ref": f"vllm:m@{standin.base_url}", "price": [2.0, 8.0]}},
            "layers": [{"generate": {"n": 4}}, "vote"],
        }
    )
    first = (await Workflow(spec, settings=settings).arun(question(4))).output
    assert first.spend.cached_tokens == 0
    again = (await Workflow(spec, settings=settings).arun(question(4))).output
    assert again.spend.total_tokens == 0
    assert again.spend.cost == 0
    assert again.spend.cached_tokens == first.spend.total_tokens
    assert again.spend.saved_cost == pytest.approx(first.spend.cost)
    assert again.spend.all_tokens == first.spend.all_tokens
    # the generated tokens a technique costs read the same on a cold and a warm cache
    assert again.spend.cached_completion_tokens == first.spend.completion_tokens > 0
    assert again.spend.all_completion_tokens == first.spend.all_completion_tokens


# -- runs share components, never per-call state ------------------------------------------


def _fingerprint(pool: Pool) -> tuple[Any, ...]:
    """What one run made: its notes, ledger and candidates (ids, answers, scores, verdicts)."""
    return (
        pool.notes,
        {k: (v.all_tokens, v.requests) for k, v in pool.ledger.items()},
        [(c.id, c.answer, c.scores, c.verdicts, c.error) for c in pool.candidates],
        pool.final,
    )


@pytest.mark.parametrize(
    ("kind", "layers"),
    [
        ("arithmetic", [{"generate": {"n": 4}}, {"verify": {}}, {"vote": {"weight": "verifier"}}]),
        ("multistep", [{"beam_search": {"beam_width": 2, "expansions": 2}}]),
    ],
)
async def test_one_workflow_run_concurrently_gives_each_run_its_solo_result(
    standin: StandinServer, kind: str, layers: list[Any]
) -> None:
    """One compiled workflow (its components built once and shared) runs six different
    questions at once; each run's notes, ledger and candidates equal its run alone: no
    component keeps per-call state (the PRM's unparsed count returns with its scores)."""
    spec = WorkflowSpec.model_validate(
        {"models": {"m": f"vllm:m@{standin.base_url}"}, "layers": layers, "seed": 3}
    )
    wf = Workflow(spec, settings=Settings.load(cache=False))
    questions = [BANK.problem(pid).question for pid in BANK.ids(kind, 6)]  # type: ignore[arg-type]
    solo = [_fingerprint((await wf.arun(q)).output) for q in questions]
    together = await asyncio.gather(*(wf.arun(q) for q in questions))
    assert [_fingerprint(r.output) for r in together] == solo
    assert len({s[3] for s in solo}) > 1  # different questions, different runs


# -- atomic budgets ------------------------------------------------------------------------


async def test_ten_parallel_calls_stop_at_the_budget_plus_one_reservation() -> None:
    fake = FakeModel(["word " * 10], delay=0.01)  # 10 completion tokens per sample
    budget = Budget(max_tokens=100)

    async def call(i: int) -> None:
        async with Engine(Settings.load(cache=False)).run(budget):
            await fake.generate(f"question {i}", n=4, max_tokens=12)

    results = await asyncio.gather(*(call(i) for i in range(10)), return_exceptions=True)
    params = fake._params(None, {"n": 4, "max_tokens": 12})
    reservation = fake._worst([Message.user("question 0")], params, 4)
    refused = [r for r in results if isinstance(r, BudgetExceeded)]
    assert refused, "the budget must stop some calls"
    assert all(r is None or isinstance(r, BudgetExceeded) for r in results)
    spent = budget.spent.usage.total_tokens
    assert spent <= 100 + reservation
    assert budget.reserved_tokens == 0
    assert budget.in_flight == 0


async def test_a_models_own_budget_holds_the_same_way() -> None:
    # the model's own budget holds the same way (the SDK's Budget in README)
    fake = FakeModel(["word " * 10], delay=0.01, budget=Budget(max_tokens=50))
    results = await asyncio.gather(
        *(fake.generate(f"q{i}", max_tokens=10) for i in range(20)), return_exceptions=True
    )
    assert any(isinstance(r, BudgetExceeded) for r in results)
    assert fake.budget is not None
    assert fake.budget.spent.usage.total_tokens <= 50 + 10 + 20


async def test_a_failed_request_gives_its_reservation_back() -> None:
    def boom(_m: Any, _p: Any, _i: int) -> str:
        raise RateLimitError("slow down", retry_after=0.0)

    fake = FakeModel(boom, retry=RetryPolicy(max_retries=0))
    budget = Budget(max_tokens=1000)
    with Engine(Settings.load(cache=False)).run(budget), pytest.raises(RateLimitError):
        await fake.generate("q", max_tokens=10)
    assert budget.reserved_tokens == 0
    assert budget.spent.requests == 0


async def test_serve_per_key_budget_holds_for_thirty_concurrent_requests(
    standin: StandinServer,
) -> None:
    from test_serve import serving

    from ponder.apps._serve_settings import ServeSettings
    from ponder.apps.server import PonderServer

    spec = WorkflowSpec.model_validate(
        {
            "name": "single",
            "models": {"m": f"vllm:m@{standin.base_url}"},
            "layers": [{"generate": {"n": 1, "max_tokens": 40}}, "vote"],
        }
    )
    limit = 500
    wf = Workflow(spec, settings=Settings.load(cache=False))
    server = PonderServer({"single": wf}, ServeSettings(api_keys=["k"], token_budget=limit))
    body = {"model": "single", "messages": [{"role": "user", "content": question(5)}]}
    h = {"Authorization": "Bearer k"}
    async with serving(server) as base, httpx.AsyncClient(base_url=base, timeout=60) as c:
        rs = await asyncio.gather(
            *(c.post("/v1/chat/completions", json=body, headers=h) for _ in range(30))
        )
    codes = [r.status_code for r in rs]
    assert set(codes) <= {200, 429}, codes
    assert 429 in codes
    assert 200 in codes
    budget = server.limits.budget(server.client_id("k"))
    assert isinstance(budget, Budget)
    # one reservation: prompt estimate + 40 tokens
    assert budget.spent.usage.total_tokens <= limit + 200
    served = sum(r.json()["usage"]["total_tokens"] for r in rs if r.status_code == 200)
    assert served <= limit + 200


async def test_a_redis_budget_is_atomic_across_two_servers(redis_url: str) -> None:
    import redis.asyncio as aioredis

    client = aioredis.from_url(redis_url, decode_responses=True)
    name = f"t-{id(client)}"
    one = RedisBudget(client, name, max_tokens=100, poll=0.005)
    two = RedisBudget(client, name, max_tokens=100, poll=0.005)
    admitted = 0

    async def spend(b: RedisBudget) -> None:
        nonlocal admitted
        r = await b.reserve(30)
        admitted += 1
        await asyncio.sleep(0.01)
        b.settle(r, Usage(10, 15), 0.0)

    results = await asyncio.gather(
        *(spend(one if i % 2 else two) for i in range(20)), return_exceptions=True
    )
    await one.flush()
    await two.flush()
    total = await one.total_spent()
    assert any(isinstance(r, BudgetExceeded) for r in results)
    assert total <= 100 + 30
    assert await client.zcard(f"ponder:budget:{name}:held") == 0
    await client.aclose()


# -- endpoint limits hold across runs -----------------------------------------------------


async def test_sixty_four_runs_never_exceed_an_endpoint_limit_of_32() -> None:
    config = StandinConfig(time_scale=0.2, slots=256, oracle=ORACLE)
    async with StandinServer(config) as s:
        spec = WorkflowSpec.model_validate(
            {
                "models": {"m": {"ref": f"vllm:m@{s.base_url}", "max_concurrency": 32}},
                "layers": [{"generate": {"n": 1, "max_tokens": 8}}, "vote"],
            }
        )
        wf = Workflow(spec, settings=Settings.load(cache=False))
        results = await asyncio.gather(*(wf.arun(f"{question(i % 8)} #{i}") for i in range(64)))
        stats = s.stats
    assert all(not r.failures for r in results)
    assert stats.requests == 64
    assert stats.max_concurrency <= 32
    assert stats.max_concurrency >= 16  # the limit was reached, not serialised


async def test_one_engine_shares_models_and_a_workflow_builds_components_once(
    standin: StandinServer,
) -> None:
    async with Engine(Settings.load(cache=False)) as engine:
        a = engine.model(f"vllm:m@{standin.base_url}")
        assert engine.model(f"vllm:m@{standin.base_url}") is a
        priced = engine.model(f"vllm:m@{standin.base_url}", price=(1.0, 1.0))
        assert priced.pool is a.pool
        assert priced is not a
        wf = Workflow(six_generators(standin.base_url), engine=engine)
        await asyncio.gather(*(wf.arun(question(i)) for i in range(3)))
        bound = wf._bound
        await wf.arun(question(4))
        assert wf._bound is bound
        assert len(engine.models) == 1


# -- scheduling and rate limits ------------------------------------------------------------


async def test_slots_serve_waiters_by_priority_then_arrival() -> None:
    slots = Slots(1)
    await slots.acquire()
    order: list[str] = []

    async def waiter(name: str, priority: float) -> None:
        await slots.acquire(priority)
        order.append(name)
        slots.release()

    tasks = [
        asyncio.create_task(waiter(n, p)) for n, p in (("late-wide", 5), ("fresh", 0), ("mid", 2))
    ]
    await asyncio.sleep(0)
    slots.release()
    await asyncio.gather(*tasks)
    assert order == ["fresh", "mid", "late-wide"]
    assert slots.in_use == 0


async def test_a_cancelled_waiter_passes_its_slot_on() -> None:
    slots = Slots(1)
    await slots.acquire()
    t = asyncio.create_task(slots.acquire(0))
    await asyncio.sleep(0)
    t.cancel()
    with pytest.raises(asyncio.CancelledError):
        await t
    slots.release()
    assert slots.in_use == 0
    await asyncio.wait_for(slots.acquire(), 1)


async def test_a_429_pauses_every_request_to_that_endpoint() -> None:
    now = [100.0]
    rate = RateLimiter(clock=lambda: now[0])
    rate.pause(2.0)
    assert rate.delay() == pytest.approx(2.0)
    now[0] += 2.5
    assert rate.delay() == 0
    rate.learn({"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "1m30s"})
    assert rate.delay() == pytest.approx(90.0)
    assert _duration("250ms") == pytest.approx(0.25)
    assert _duration("6m0s") == pytest.approx(360.0)


def test_requests_and_tokens_per_minute_are_token_buckets() -> None:
    now = [0.0]
    rate = RateLimiter(requests_per_minute=2, clock=lambda: now[0])
    assert rate.delay() == 0
    assert rate.delay() == 0
    assert rate.delay() == pytest.approx(30.0)  # the third request waits for a refill
    now[0] += 30
    assert rate.delay() == 0
    tokens = RateLimiter(tokens_per_minute=1000, clock=lambda: now[0])
    assert tokens.delay(800) == 0
    assert tokens.delay(700) == pytest.approx(500 * 60 / 1000)
    tokens.settle(800, 100)  # the request used less than it took: the rest comes back
    assert tokens.delay(700) == 0


async def test_rate_limits_from_429s_are_shared_by_runs() -> None:
    config = StandinConfig(time_scale=0, fault_429=1.0, retry_after=0.2, oracle=ORACLE)
    async with StandinServer(config) as s:
        settings = Settings.load(cache=False, max_retries=0)
        async with Engine(settings) as engine:
            m = engine.model(f"vllm:m@{s.base_url}")
            with pytest.raises(RateLimitError):
                await m.generate("q")
            ep = m.pool.endpoints[0]
            assert ep.rate.paused_until > 0
            assert engine.model(f"vllm:m@{s.base_url}").pool.endpoints[0] is ep


def test_an_endpoint_pool_reports_in_flight_without_private_attributes() -> None:
    pool = EndpointPool([Endpoint("http://127.0.0.1:1/v1", None, 4)])
    assert pool.endpoints[0].in_flight == 0
    assert pool.endpoints[0].waiting == 0
    with pytest.raises(ConfigurationError, match="schedule"):
        Endpoint("http://127.0.0.1:1/v1", None, 4, schedule="random")  # type: ignore[arg-type]


# -- component ownership --------------------------------------------------------------------


async def test_a_bug_in_a_component_is_not_turned_into_a_failure_string() -> None:
    from ponder.agents import register_component, unregister_component
    from ponder.agents._base import _Config

    class BuggyConfig(_Config):
        pass

    @register_component(config=BuggyConfig, models="none")
    class Buggy:
        name = "buggy_test"

        def __init__(self, config: BuggyConfig) -> None:
            self.config = config

        async def __call__(self, pool: Pool) -> Pool:
            raise ValueError("a bug")

    try:
        spec = WorkflowSpec.model_validate({"layers": ["buggy_test"]})
        with pytest.raises(ValueError, match="a bug"):
            await Workflow(spec).arun("q")
    finally:
        unregister_component("buggy_test")


async def test_on_error_raise_ends_the_run_with_the_backend_error() -> None:
    def boom(_m: Any, _p: Any, _i: int) -> str:
        raise RateLimitError("slow down", retry_after=0.0)

    fake = FakeModel(boom, retry=RetryPolicy(max_retries=0))
    spec = WorkflowSpec.model_validate(
        {"models": {"m": "vllm:fake@http://127.0.0.1:9/v1"}, "layers": [{"generate": {"n": 1}}]}
    )
    recorded = await Workflow(spec, models={"m": fake}).arun("q")
    assert "layer1" in recorded.failures
    raising = spec.model_copy(
        update={"layers": (spec.layers[0].model_copy(update={"on_error": "raise"}),)}
    )
    with pytest.raises(RateLimitError):
        await Workflow(raising, models={"m": fake}).arun("q")


def test_check_and_memory_steps_are_usable_from_yaml() -> None:
    from ponder.agents import COMPONENTS

    assert "memory_read" in COMPONENTS
    assert "memory_curate" in COMPONENTS
    spec = WorkflowSpec.model_validate(
        {"models": {"m": "vllm:m@http://127.0.0.1:9/v1"}, "layers": ["generate", "check", "vote"]}
    )
    Workflow(spec)


async def test_check_compares_answers_with_the_reference() -> None:
    fake = FakeModel(["\\boxed{4}", "\\boxed{5}"])
    spec = WorkflowSpec.model_validate(
        {
            "models": {"m": "vllm:fake@http://127.0.0.1:9/v1"},
            "layers": [{"generate": {"n": 2}}, "check", {"best_of_n": {"score": "check"}}],
        }
    )
    out = (await Workflow(spec, models={"m": fake}).arun(Pool(query="2+2?", reference="4"))).output
    assert out.final == "4"
    assert [c.verdicts["check"] for c in out.candidates] == [True, False]


# -- search ----------------------------------------------------------------------------------


def test_a_search_never_resumes_another_searchs_trials(tmp_path: Path) -> None:
    from ponder.eval import load_dataset
    from ponder.eval._search import SearchSpace, search_dir, search_key

    data = load_dataset("bank:arithmetic:4")
    a = SearchSpace(models={"m": "vllm:m@http://127.0.0.1:9/v1"}, samples=[1])
    b = SearchSpace(models={"m": "vllm:m@http://127.0.0.1:9/v1"}, samples=[1, 3])
    wa = search_dir(tmp_path, search_key(a, data))
    (wa / "trial-0.jsonl").write_text("{}\n")
    wb = search_dir(tmp_path, search_key(b, data))
    assert wa != wb
    assert not (wb / "trial-0.jsonl").exists()
    assert search_dir(tmp_path, search_key(a, data)) == wa  # the same search resumes
    (wa / "search.json").write_text(json.dumps({"space": "other"}))
    with pytest.raises(ConfigurationError, match="different search"):
        search_dir(tmp_path, search_key(a, data))


# -- the runtime's chain path --------------------------------------------------------------


async def test_a_chain_runs_the_same_without_langgraph() -> None:
    """A plain chain (Archon layers) runs its node steps in order without LangGraph's
    superstep machinery; results, failures, visits and events match LangGraph's path."""
    from ponder.graphs import CompiledGraph

    def answer(_m: Any, p: Any, i: int) -> str:  # a function of the request, not of order
        return f"\\boxed{{{4 + ((p.seed or 0) + i) % 2}}}"

    good = FakeModel(answer)

    def broken(_m: Any, _p: Any, _i: int) -> str:
        raise RateLimitError("slow down", retry_after=0.0)

    bad = FakeModel(broken, name="bad", retry=RetryPolicy(max_retries=0))
    for fail in (False, True):
        spec = WorkflowSpec.model_validate(
            {
                "models": {"m": "vllm:fake@http://127.0.0.1:9/v1"},
                "layers": [{"generate": {"n": 3}}, "critique", "vote"],
            }
        )
        wf = Workflow(spec, models={"m": bad if fail else good})
        fast = await wf.arun("2+2?")
        assert wf._bound is not None
        chained = wf._bound.graph
        assert chained.chain is not None
        langgraph = CompiledGraph(chained.spec, chained.graph, chained.finals)
        slow = await langgraph.arun(Pool(query="2+2?"))
        assert fast.output == slow.output
        assert (fast.failures, fast.visits) == (slow.failures, slow.visits)
        assert bool(fast.failures) is fail
        fast_events = [(e.kind, e.node) async for e in wf.astream("2+2?")]
        slow_events = [(e.kind, e.node) async for e in langgraph.astream(Pool(query="2+2?"))]
        assert fast_events == slow_events


async def test_branches_joins_and_checkpoints_still_run_on_langgraph(tmp_path: Path) -> None:
    fake = FakeModel(["\\boxed{4}"])
    spec = WorkflowSpec.model_validate(
        {
            "models": {"m": "vllm:fake@http://127.0.0.1:9/v1"},
            "nodes": {"a": {"generate": {"n": 2}}, "b": {"generate": {"n": 1}}, "v": "vote"},
            "edges": [["a", "b"], ["b", "v"]],
        }
    )
    wf = Workflow(spec, models={"m": fake})
    await wf.arun("q")
    assert wf._bound is not None
    assert wf._bound.graph.chain is not None
    looped = WorkflowSpec.model_validate(
        {
            "models": {"m": "vllm:fake@http://127.0.0.1:9/v1"},
            "nodes": {"a": {"generate": {"n": 1}}, "v": "vote"},
            "edges": [{"from": "a", "to": "a", "when": "candidates < 3", "else": "v",
                       "max_iterations": 3}],
        }
    )  # fmt: skip
    wl = Workflow(looped, models={"m": fake})
    out = await wl.arun("q")
    assert wl._bound is not None
    assert wl._bound.graph.chain is None
    assert len(out.output.candidates) == 3
    ck = Workflow(spec, models={"m": fake}, checkpoint=tmp_path / "c.sqlite")
    r = await ck.arun("q", thread_id="t1")
    assert r.output.final == "4"


async def test_equal_settings_share_one_engine_and_its_endpoint_limits() -> None:
    from ponder.engine import engine_for

    a, b = Settings.load(cache=False), Settings.load(cache=False)
    assert a is not b
    assert engine_for(a) is engine_for(b)
    assert engine_for(Settings.load(cache=False, max_concurrency=7)) is not engine_for(a)


async def test_the_engine_builds_each_endpoint_once_with_one_http_session(
    standin: StandinServer,
) -> None:
    """Models of one server share the engine's endpoint: its slots and its HTTP
    connections (one session per endpoint and loop), built once, never swapped in after
    the model was made. The engine closes them; a model made on its own closes its own."""
    async with Engine(Settings.load(cache=False)) as engine:
        a = engine.model(f"vllm:weak@{standin.base_url}")
        b = engine.model(f"vllm:strong@{standin.base_url}")
        (ep,) = a.pool.endpoints
        assert b.pool.endpoints == [ep]
        assert a.endpoints is b.endpoints is engine._endpoints
        await asyncio.gather(a.generate("What is 1 + 1?"), b.generate("What is 2 + 2?"))
        session = ep.http_session()
        await a.aclose()  # an engine's model leaves the shared connections open
        assert not session.closed
        assert (await b.generate("What is 3 + 3?")).text
    assert session.closed
    async with Model(f"vllm:weak@{standin.base_url}", cache=False) as alone:
        await alone.generate("What is 1 + 1?")
        own = alone.pool.endpoints[0].http_session()
        assert own is not session
    assert own.closed


async def test_an_exhausted_rate_limit_header_pauses_the_endpoint(
    chat_server: Callable[[Any], Awaitable[str]],
) -> None:
    """A server that says `x-ratelimit-remaining-requests: 0` (OpenAI's headers) pauses
    its endpoint until `x-ratelimit-reset-requests`, for every run."""
    from aiohttp import web

    body = {
        "id": "x",
        "object": "chat.completion",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"},
                     "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
    }  # fmt: skip

    async def chat(_r: web.Request) -> web.Response:
        return web.json_response(
            body,
            headers={"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "6m0s"},
        )

    url = await chat_server(chat)
    async with Engine(Settings.load(cache=False)) as engine:
        m = engine.model(f"vllm:m@{url}")
        assert (await m.generate("q")).text == "hi"
        rate = m.pool.endpoints[0].rate
        assert rate.delay() > 300  # paused about six minutes, for every run
