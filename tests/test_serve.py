"""``ponder serve``: the official openai client against a real uvicorn server whose
workflows run on the stand-in server; errors, limits, events, cancellation, crashes."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from contextlib import AbstractAsyncContextManager
from typing import ClassVar

import httpx
import openai
import pytest
import pytest_asyncio
from pydantic import BaseModel

from ponder import Settings
from ponder.agents import Pool, register_component, unregister_component
from ponder.apps._api import ApiError
from ponder.apps._serve_settings import ServeSettings
from ponder.apps.server import PonderServer
from ponder.testing import StandinConfig, StandinServer
from ponder.testing.oracle import OracleConfig, ProblemBank
from ponder.workflows import Workflow, WorkflowSpec

ORACLE = OracleConfig(accuracy={"m": 0.7})
BANK = ProblemBank(ORACLE.bank_seed, ORACLE.distractors)
KEY = "sk-test-key"


def vote_workflow(url: str, name: str = "vote", n: int = 5) -> Workflow:
    spec = WorkflowSpec.model_validate(
        {
            "name": name,
            "models": {"m": f"vllm:m@{url}"},
            "layers": [{"generate": {"n": n}}, {"vote": {}}],
        }
    )
    return Workflow(spec, settings=Settings.load(cache=False))


def serving(server: PonderServer) -> AbstractAsyncContextManager[str]:
    """``server`` under a real uvicorn on a free loopback port."""
    return server.running()


@pytest_asyncio.fixture
async def standin_url() -> AsyncIterator[str]:
    async with StandinServer(StandinConfig(time_scale=0, oracle=ORACLE)) as s:
        yield s.base_url


@pytest_asyncio.fixture
async def served(standin_url: str) -> AsyncIterator[tuple[str, PonderServer]]:
    server = PonderServer(
        {"vote": vote_workflow(standin_url), "single": vote_workflow(standin_url, "single", 1)},
        ServeSettings(api_keys=[KEY]),
    )
    async with serving(server) as base:
        yield base, server


def question(i: int = 0) -> str:
    return BANK.problem(BANK.ids("arithmetic", 1, start=i * 4)[0]).question


# -- the openai client, unchanged ------------------------------------------------------------


async def test_openai_client_gets_answers_with_usage(served: tuple[str, PonderServer]) -> None:
    base, _ = served
    async with openai.AsyncOpenAI(base_url=f"{base}/v1", api_key=KEY) as client:
        models = await client.models.list()
        assert sorted(m.id for m in models.data) == ["single", "vote"]
        q = question()
        r = await client.chat.completions.create(
            model="vote", messages=[{"role": "user", "content": q}], n=2
        )
    answer = BANK.problem(int(q.split()[1].rstrip(":"))).answer
    assert r.choices[0].message.content is not None
    assert f"\\boxed{{{answer}}}" in r.choices[0].message.content  # vote of 5 at p=0.7
    assert len(r.choices) == 2  # the chosen answer, then a different candidate
    assert r.choices[1].message.content != r.choices[0].message.content
    assert r.usage is not None
    assert r.usage.completion_tokens > 0
    assert r.id.startswith("run-")


async def test_openai_client_streams_events_then_the_answer(
    served: tuple[str, PonderServer],
) -> None:
    base, _ = served
    async with openai.AsyncOpenAI(base_url=f"{base}/v1", api_key=KEY) as client:
        stream = await client.chat.completions.create(
            model="vote",
            messages=[
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": question(1)},
            ],
            stream=True,
            stream_options={"include_usage": True},
        )
        text, kinds, usage = "", [], None
        async for chunk in stream:
            extra = chunk.model_extra or {}
            if "event" in extra.get("ponder", {}):
                kinds.append(extra["ponder"]["event"]["kind"])
            for c in chunk.choices:
                text += c.delta.content or ""
            usage = chunk.usage or usage
    assert "\\boxed{" in text
    assert kinds[0] == "node_started"
    assert kinds[-1] == "run_finished"
    assert "node_finished" in kinds
    assert usage is not None
    assert usage.total_tokens > 0


async def test_run_events_replay_after_the_run(served: tuple[str, PonderServer]) -> None:
    base, _ = served
    async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {KEY}"}) as c:
        body = {"model": "vote", "messages": [{"role": "user", "content": question(2)}]}
        r = await c.post("/v1/chat/completions", json=body)
        run_id = r.headers["x-ponder-run-id"]
        events = []
        async with c.stream("GET", f"/v1/runs/{run_id}/events") as s:
            async for line in s.aiter_lines():
                if line.startswith("data: ") and line != "data: {}":
                    events.append(json.loads(line[6:]))
        other = await c.get(f"/v1/runs/{run_id}/events", headers={"Authorization": "Bearer x"})
        missing = await c.get("/v1/runs/run-nope/events")
    nodes = [e["node"] for e in events if e["kind"] == "node_finished"]
    assert nodes == ["layer_0", "layer_1"] or len(nodes) == 2
    finished = events[-1]
    assert finished["kind"] == "run_finished"
    assert finished["data"]["tokens"] > 0
    new = next(e for e in events if e["kind"] == "node_finished")["data"]["new_candidates"]
    assert len(new) == 5
    assert other.status_code == 401
    assert missing.status_code == 404


# -- bad input and security ------------------------------------------------------------------


async def test_keys_are_required_and_checked(served: tuple[str, PonderServer]) -> None:
    base, _ = served
    async with openai.AsyncOpenAI(base_url=f"{base}/v1", api_key="wrong", max_retries=0) as cl:
        with pytest.raises(openai.AuthenticationError, match="invalid API key"):
            await cl.models.list()
    async with httpx.AsyncClient(base_url=base) as c:
        r = await c.get("/v1/models")
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "missing_api_key"


async def test_malformed_requests_get_openai_style_4xx(served: tuple[str, PonderServer]) -> None:
    base, _ = served
    auth = {"Authorization": f"Bearer {KEY}"}
    async with httpx.AsyncClient(base_url=base, headers=auth) as c:
        bad_json = await c.post(
            "/v1/chat/completions",
            content=b"{nope",
            headers={"Content-Type": "application/json"},
        )
        no_messages = await c.post("/v1/chat/completions", json={"model": "vote", "messages": []})
        bad_role = await c.post(
            "/v1/chat/completions",
            json={"model": "vote", "messages": [{"role": "wizard", "content": "hi"}]},
        )
        last_not_user = await c.post(
            "/v1/chat/completions",
            json={"model": "vote", "messages": [{"role": "assistant", "content": "hi"}]},
        )
        unknown = await c.post(
            "/v1/chat/completions",
            json={"model": "gpt-9", "messages": [{"role": "user", "content": "hi"}]},
        )
        huge = await c.post(
            "/v1/chat/completions",
            json={"model": "vote", "messages": [{"role": "user", "content": "x" * 2_000_000}]},
        )
    assert bad_json.status_code == 400
    assert "not valid JSON" in bad_json.json()["error"]["message"]
    assert no_messages.status_code == 422
    assert "messages" in no_messages.json()["error"]["message"]
    assert bad_role.status_code == 422
    assert last_not_user.status_code == 422
    assert "from the user" in last_not_user.json()["error"]["message"]
    assert unknown.status_code == 404
    assert "GET /v1/models" in unknown.json()["error"]["message"]
    assert huge.status_code == 413


async def test_the_api_takes_only_json_of_bounded_depth(served: tuple[str, PonderServer]) -> None:
    base, _ = served
    auth = {"Authorization": f"Bearer {KEY}"}
    body = json.dumps({"model": "vote", "messages": [{"role": "user", "content": "hi"}]})
    async with httpx.AsyncClient(base_url=base, headers=auth) as c:
        plain = await c.post(
            "/v1/chat/completions", content=body, headers={"Content-Type": "text/plain"}
        )
        form = await c.post("/v1/chat/completions", data={"model": "vote"})
        nested = await c.post(
            "/v1/chat/completions",
            content=b"[" * 400_000 + b"]" * 400_000,
            headers={"Content-Type": "application/json"},
        )
        deep_but_valid = await c.post(
            "/v1/chat/completions",
            content=(b'{"a":' * 100) + b"1" + b"}" * 100,
            headers={"Content-Type": "application/json"},
        )
    assert plain.status_code == 415
    assert plain.json()["error"]["code"] == "unsupported_media_type"
    assert form.status_code == 415
    assert nested.status_code == 400
    assert nested.json()["error"]["code"] == "invalid_json"
    assert deep_but_valid.status_code == 400
    assert "nested 100 levels" in deep_but_valid.json()["error"]["message"]


async def test_forwarded_for_is_ignored_unless_from_a_trusted_proxy(standin_url: str) -> None:
    settings = ServeSettings(requests_per_minute=2)
    server = PonderServer({"single": vote_workflow(standin_url, "single", 1)}, settings)
    async with serving(server) as base, httpx.AsyncClient(base_url=base) as c:
        codes = [
            (
                await c.post(
                    "/v1/chat/completions",
                    json={"model": "nope", "messages": [{"role": "user", "content": "x"}]},
                    headers={"X-Forwarded-For": f"203.0.113.{i}"},
                )
            ).status_code
            for i in range(4)
        ]
    assert codes[:2] == [404, 404]
    assert codes[2:] == [429, 429]  # a new X-Forwarded-For does not reset the limit
    trusting = PonderServer(
        {"single": vote_workflow(standin_url, "single", 1)},
        ServeSettings(trusted_proxies=["127.0.0.1"], allow_open_remote=True),
    )
    assert trusting.uvicorn_options()["forwarded_allow_ips"] == "127.0.0.1"


def test_an_open_server_answers_only_loopback_clients(standin_url: str) -> None:
    from starlette.requests import Request

    def request(host: str) -> Request:
        return Request({"type": "http", "headers": [], "client": (host, 5000)})

    wf = {"single": vote_workflow(standin_url, "single", 1)}
    closed = PonderServer(wf, ServeSettings())
    assert closed.callers.identify(request("127.0.0.1")) == "ip:127.0.0.1"
    assert closed.callers.identify(request("::1")) == "ip:::1"
    with pytest.raises(ApiError) as e:
        closed.callers.identify(request("203.0.113.9"))
    assert e.value.status == 403
    assert "PONDER_SERVE_API_KEYS" in e.value.message
    opened = PonderServer(wf, ServeSettings(allow_open_remote=True))
    assert opened.callers.identify(request("203.0.113.9")) == "ip:203.0.113.9"


async def test_an_open_server_refuses_foreign_host_and_origin_names(standin_url: str) -> None:
    """DNS rebinding: a page on evil.example whose name now points at 127.0.0.1 sends
    Host: evil.example (and its Origin); an open server answers only its own names."""
    server = PonderServer({"single": vote_workflow(standin_url, "single", 1)}, ServeSettings())
    body = {"model": "single", "messages": [{"role": "user", "content": question(3)}]}
    async with serving(server) as base, httpx.AsyncClient(base_url=base) as c:
        ok = await c.post("/v1/chat/completions", json=body)
        local_name = await c.post(
            "/v1/chat/completions", json=body, headers={"Host": "localhost:9"}
        )
        host = await c.post("/v1/chat/completions", json=body, headers={"Host": "evil.example"})
        origin = await c.post(
            "/v1/chat/completions", json=body, headers={"Origin": "http://evil.example"}
        )
    assert ok.status_code == 200
    assert local_name.status_code == 200
    for r in (host, origin):
        assert r.status_code == 403
        assert r.json()["error"]["code"] == "host_not_allowed"
        assert "PONDER_SERVE_ALLOWED_HOSTS" in r.json()["error"]["message"]


async def test_a_malformed_credential_is_a_401_not_a_500(standin_url: str) -> None:
    server = PonderServer(
        {"single": vote_workflow(standin_url, "single", 1)}, ServeSettings(api_keys=["k1"])
    )
    body = {"model": "single", "messages": [{"role": "user", "content": "x"}]}
    async with serving(server) as base, httpx.AsyncClient(base_url=base) as c:
        for token in ("Bearer ключ".encode(), b"Bearer \xff\xfe", "Bearer k1é".encode()):
            r = await c.post("/v1/chat/completions", json=body, headers={b"Authorization": token})
            assert r.status_code == 401, (token, r.text)
            assert r.json()["error"]["type"] == "authentication_error"


async def test_rate_limits_and_budgets_per_key(standin_url: str) -> None:
    settings = ServeSettings(api_keys=["a", "b"], requests_per_minute=2, token_budget=1)
    server = PonderServer({"single": vote_workflow(standin_url, "single", 1)}, settings)
    body = {"model": "single", "messages": [{"role": "user", "content": question(3)}]}
    async with serving(server) as base, httpx.AsyncClient(base_url=base) as c:
        a = {"Authorization": "Bearer a"}
        first = await c.post("/v1/chat/completions", json=body, headers=a)
        broke = await c.post("/v1/chat/completions", json=body, headers=a)
        limited = await c.post("/v1/chat/completions", json=body, headers=a)
        other_key = await c.post(
            "/v1/chat/completions", json=body, headers={"Authorization": "Bearer b"}
        )
    assert first.status_code == 200
    assert broke.status_code == 429
    assert broke.json()["error"]["code"] == "insufficient_quota"
    assert limited.status_code == 429
    assert int(limited.headers["retry-after"]) >= 0
    assert other_key.status_code == 200


async def test_rate_limits_are_shared_through_redis(standin_url: str, redis_url: str) -> None:
    settings = ServeSettings(requests_per_minute=3, redis_url=redis_url, api_keys=["shared"])
    wf = vote_workflow(standin_url, "single", 1)
    one, two = PonderServer({"single": wf}, settings), PonderServer({"single": wf}, settings)
    h = {"Authorization": "Bearer shared"}
    async with serving(one) as b1, serving(two) as b2, httpx.AsyncClient() as c:
        codes = [(await c.get(f"{b}/v1/models", headers=h)).status_code for b in (b1, b2)]
        body = {"model": "single", "messages": [{"role": "user", "content": question(4)}]}
        codes += [
            (await c.post(f"{b}/v1/chat/completions", json=body, headers=h)).status_code
            for b in (b1, b2, b1, b2)
        ]
    # models does not count; three chats pass in total over both servers, the fourth is refused
    assert codes[:2] == [200, 200]
    assert sorted(codes[2:]) == [200, 200, 200, 429]


# -- faults ------------------------------------------------------------------------------------


class SlowConfig(BaseModel):
    seconds: float = 30.0


class Slow:
    """A node that waits; records whether it was cancelled."""

    name: ClassVar[str] = "slow"
    started: asyncio.Event
    cancelled: list[bool]

    def __init__(self, config: SlowConfig) -> None:
        self.config = config

    async def __call__(self, pool: Pool) -> Pool:
        Slow.started.set()
        try:
            await asyncio.sleep(self.config.seconds)
        except asyncio.CancelledError:
            Slow.cancelled.append(True)
            raise
        return pool


class Boom:
    name: ClassVar[str] = "boom"

    def __init__(self, _config: SlowConfig) -> None:
        pass

    async def __call__(self, pool: Pool) -> Pool:
        raise RuntimeError("kaboom")


@pytest.fixture
def test_components() -> Iterator[None]:
    Slow.started, Slow.cancelled = asyncio.Event(), []
    register_component(config=SlowConfig, models="none")(Slow)
    register_component(config=SlowConfig, models="none")(Boom)
    yield
    unregister_component("slow")
    unregister_component("boom")


def one_node(name: str, component: str, url: str) -> Workflow:
    spec = WorkflowSpec.model_validate(
        {"name": name, "models": {"m": f"vllm:m@{url}"}, "layers": [{component: {}}]}
    )
    return Workflow(spec)


@pytest.mark.usefixtures("test_components")
async def test_a_client_that_disconnects_cancels_its_run(standin_url: str) -> None:
    server = PonderServer({"slow": one_node("slow", "slow", standin_url)}, ServeSettings())
    body = {"model": "slow", "stream": True, "messages": [{"role": "user", "content": "wait"}]}
    async with serving(server) as base, httpx.AsyncClient(base_url=base) as c:
        async with c.stream("POST", "/v1/chat/completions", json=body) as r:
            assert r.status_code == 200
            await asyncio.wait_for(Slow.started.wait(), 10)
        # the client is gone: the run's node must be cancelled, not left running
        for _ in range(200):
            if Slow.cancelled:
                break
            await asyncio.sleep(0.05)
    assert Slow.cancelled == [True]


@pytest.mark.usefixtures("test_components")
async def test_a_crashing_run_never_takes_the_server_down(standin_url: str) -> None:
    server = PonderServer(
        {
            "boom": one_node("boom", "boom", standin_url),
            "single": vote_workflow(standin_url, "single", 1),
        },
        ServeSettings(),
    )
    async with serving(server) as base, httpx.AsyncClient(base_url=base) as c:
        boom = await c.post(
            "/v1/chat/completions",
            json={"model": "boom", "messages": [{"role": "user", "content": "x"}]},
        )
        ok = await c.post(
            "/v1/chat/completions",
            json={"model": "single", "messages": [{"role": "user", "content": question(5)}]},
        )
    assert boom.status_code in (500, 502)
    assert "kaboom" in boom.json()["error"]["message"]
    assert ok.status_code == 200


async def test_the_web_page_is_served_without_a_cdn(served: tuple[str, PonderServer]) -> None:
    base, _ = served
    async with httpx.AsyncClient(base_url=base) as c:
        page = await c.get("/")
        health = await c.get("/health")
        vendored = {
            src: await c.get(src)
            for src in ("/vendor/marked.umd.js", "/vendor/katex.min.js", "/vendor/purify.min.js",
                        "/vendor/highlight.min.js", "/vendor/katex.min.css",
                        "/vendor/fonts/KaTeX_Main-Regular.woff2")
        }  # fmt: skip
        escape = await c.get("/vendor/../server.py")
    assert page.status_code == 200
    assert "<title>Ponder</title>" in page.text
    assert "http://" not in page.text
    assert "https://" not in page.text
    # the page's libraries ship in the package, and only they may run on it
    assert all(r.status_code == 200 and len(r.content) > 1000 for r in vendored.values())
    assert "script-src 'self' 'unsafe-inline'" in page.headers["content-security-policy"]
    assert "img-src 'self' data:" in page.headers["content-security-policy"]
    assert escape.status_code == 404
    assert health.json()["workflows"] == ["single", "vote"]


# -- live answers ----------------------------------------------------------------------------


async def test_runs_at_once_default_to_what_the_endpoints_can_serve(standin_url: str) -> None:
    """Admission by the engine: with no max_concurrent_runs, serve lets in as many runs as
    its workflows' endpoints have request slots (each endpoint once); a setting wins."""
    slow = WorkflowSpec.model_validate({
        "name": "slow", "models": {"m": {"ref": f"vllm:m@{standin_url}", "max_concurrency": 5}},
        "layers": [{"generate": {"n": 1}}],
    })  # fmt: skip
    other = vote_workflow("http://127.0.0.1:9/v1", name="other")  # a second endpoint
    wfs = {"vote": vote_workflow(standin_url), "other": other}
    server = PonderServer(wfs, ServeSettings(api_keys=[KEY]))
    default = Settings.load(cache=False).max_concurrency
    assert server._admission()._value == min(1024, 2 * default)
    limited = PonderServer({"slow": Workflow(slow, settings=Settings.load(cache=False))},
                           ServeSettings(api_keys=[KEY]))  # fmt: skip
    assert limited._admission()._value == 8  # 5 slots, raised to the floor of 8
    fixed = PonderServer(wfs, ServeSettings(api_keys=[KEY], max_concurrent_runs=3))
    assert fixed._admission()._value == 3


def fuse_workflow(url: str) -> Workflow:
    spec = WorkflowSpec.model_validate(
        {
            "name": "fused",
            "models": {"m": f"vllm:m@{url}"},
            "layers": [{"generate": {"n": 3}}, {"fuse": {"n": 1}}],
        }
    )
    return Workflow(spec, settings=Settings.load(cache=False))


async def test_a_live_answer_streams_before_the_run_ends() -> None:
    """The last step (a one-sample fuse) streams its text as the model writes it: the
    content arrives in pieces after the fuse node starts and before the run finishes,
    and it is the answer (not sent again at the end)."""
    cfg = StandinConfig(time_scale=0.01, oracle=ORACLE)
    async with StandinServer(cfg) as s:
        server = PonderServer({"fused": fuse_workflow(s.base_url)}, ServeSettings(api_keys=[KEY]))
        async with (
            serving(server) as base,
            openai.AsyncOpenAI(base_url=f"{base}/v1", api_key=KEY) as client,
        ):
            stream = await client.chat.completions.create(
                model="fused",
                messages=[{"role": "user", "content": question(2)}],
                stream=True,
            )
            order: list[str] = []
            pieces: list[str] = []
            async for chunk in stream:
                extra = chunk.model_extra or {}
                event = extra.get("ponder", {}).get("event")
                if event is not None:
                    order.append(f"{event['kind']}:{event['node']}")
                for c in chunk.choices:
                    if c.delta.content:
                        pieces.append(c.delta.content)
                        order.append("content")
    first = order.index("content")
    assert order.index("node_started:layer2") < first < order.index("node_finished:layer2")
    assert order.index("run_finished:None") > len(order) - 3  # the content came earlier
    assert len(pieces) > 3  # in pieces, as written
    text = "".join(pieces)
    assert "\\boxed{" in text
    assert text.count("Synthesising the candidates.") == 1  # not sent twice


async def test_live_events_from_python_carry_the_final_steps_text() -> None:
    async with StandinServer(StandinConfig(time_scale=0, oracle=ORACLE)) as s:
        wf = fuse_workflow(s.base_url)
        texts, result = [], None
        async for e, res in wf.aevents(question(3), live=True):
            if e.kind == "token":
                assert e.node == "layer2"
                texts.append(e.data["text"])
            result = res or result
        assert result is not None
        fused = [c for c in result.output.candidates if c.provenance.component == "fuse"]
        assert "".join(texts) == fused[0].text
        assert result.output.final == fused[0].answer
        assert result.output.spend.completion_tokens > 0  # the streamed call is accounted
        # without live, no token events
        kinds = {e.kind async for e, _ in wf.aevents(question(3))}
        assert "token" not in kinds


async def test_each_live_run_streams_its_own_answer_only() -> None:
    """The live sink is a field of the run (engine.Run(live=...)): concurrent runs of one
    compiled workflow, live or not, never get each other's text."""
    async with StandinServer(StandinConfig(time_scale=0.01, oracle=ORACLE)) as s:
        wf = fuse_workflow(s.base_url)

        async def one(i: int, live: bool) -> tuple[str, str, int]:
            texts, result = [], None
            async for e, res in wf.aevents(question(i), live=live):
                if e.kind == "token":
                    texts.append(e.data["text"])
                result = res or result
            assert result is not None
            fused = [c for c in result.output.candidates if c.provenance.component == "fuse"]
            return "".join(texts), fused[0].text, len(texts)

        runs = await asyncio.gather(one(1, True), one(5, False), one(9, True))
    (a, fused_a, _), (b, _, pieces_b), (c, fused_c, _) = runs
    assert (a, c) == (fused_a, fused_c)
    assert a != c
    assert (b, pieces_b) == ("", 0)


async def test_leaving_a_live_run_early_stops_it() -> None:
    async with StandinServer(StandinConfig(time_scale=0.01, oracle=ORACLE)) as s:
        wf = fuse_workflow(s.base_url)
        events = wf.aevents(question(4), live=True)
        async for e, _ in events:
            if e.kind == "token":
                break
        await events.aclose()  # the run task is cancelled and awaited: nothing left over
        pending = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        assert not [t for t in pending if "pump" in repr(t.get_coro())]
