"""The stand-in server: slots, queue, routes, determinism, faults, and the oracle's exactness."""

from __future__ import annotations

import asyncio
import math
import random
from typing import Any

import aiohttp
import pytest

from ponder import Model, RetryPolicy, Settings, TransportError
from ponder.testing import (
    OracleConfig,
    ProblemBank,
    StandinConfig,
    StandinServer,
    majority_vote_accuracy,
)
from ponder.testing.oracle import extract_boxed, respond

pytestmark = pytest.mark.asyncio


async def _post(
    session: aiohttp.ClientSession, url: str, body: dict[str, Any]
) -> tuple[int, dict[str, Any], dict[str, str]]:
    async with session.post(url, json=body) as r:
        return r.status, await r.json(), dict(r.headers)


def _chat(content: str = "hi", **kw: Any) -> dict[str, Any]:
    return {"model": "standin", "messages": [{"role": "user", "content": content}], **kw}


async def test_slots_queue_bound_and_429_with_retry_after() -> None:
    cfg = StandinConfig(slots=2, queue_limit=1, ttft_base=0.3, per_token=0.0, retry_after=7)
    async with StandinServer(cfg) as s, aiohttp.ClientSession() as session:
        url = s.base_url + "/chat/completions"
        results = await asyncio.gather(*(_post(session, url, _chat()) for _ in range(4)))
    statuses = sorted(r[0] for r in results)
    assert statuses == [200, 200, 200, 429]
    rejected = next(r for r in results if r[0] == 429)
    assert rejected[2]["Retry-After"] == "7"
    assert "queue full" in rejected[1]["error"]["message"]
    assert s.stats.max_concurrency == 2
    assert s.stats.max_queue_depth == 1


async def test_a_request_with_n_holds_n_slots_and_prefills_once() -> None:
    cfg = StandinConfig(slots=4, ttft_base=0.2, per_token=0.0)
    async with StandinServer(cfg) as s, aiohttp.ClientSession() as session:
        url = s.base_url + "/chat/completions"
        a, b = await asyncio.gather(
            _post(session, url, _chat("one two three", n=3)),
            _post(session, url, _chat("one two three", n=3)),
        )
    assert len(a[1]["choices"]) == 3
    assert len(b[1]["choices"]) == 3
    assert s.stats.max_concurrency == 3  # the second waited: 3 + 3 > 4 slots
    assert s.stats.max_queue_depth == 1
    assert s.stats.prompt_tokens == 6  # each prompt (3 tokens) prefilled once
    assert s.stats.prompt_tokens_reused == 12  # shared by the 2 other samples of each


async def test_same_seed_same_output_across_server_instances() -> None:
    outs = []
    for _ in range(2):
        async with StandinServer(StandinConfig(time_scale=0)) as s, aiohttp.ClientSession() as se:
            _, data, _ = await _post(
                se, s.base_url + "/chat/completions", _chat("Problem 3: x", n=4, seed=11)
            )
        outs.append([c["message"]["content"] for c in data["choices"]])
    assert outs[0] == outs[1]
    assert len(set(outs[0])) > 1


async def test_routes_models_health_stats_completions(standin: StandinServer) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.get(standin.base_url + "/models") as r:
            assert [m["id"] for m in (await r.json())["data"]] == ["standin", "strong", "weak"]
        async with session.get(standin.root_url + "/health") as r:
            assert (await r.json()) == {"status": "ok"}
        status, data, _ = await _post(
            session,
            standin.base_url + "/completions",
            {"model": "standin", "prompt": "x", "max_tokens": 4},
        )
        assert status == 200
        assert data["choices"][0]["finish_reason"] == "length"
        assert data["usage"]["completion_tokens"] == 4
        async with session.get(standin.root_url + "/stats") as r:
            stats = await r.json()
        assert stats["requests"] == 1
        assert stats["generated_tokens"] == 4
        async with session.post(standin.root_url + "/stats/reset") as r:
            assert r.status == 200
        assert standin.stats.requests == 0


@pytest.mark.parametrize(
    ("body", "match"),
    [
        ({"messages": [{"role": "user", "content": "x"}]}, "'model' is required"),
        ({"model": "m", "messages": []}, "'messages' must be a non-empty list"),
        ({"model": "m", "messages": [{"role": "user", "content": "x"}], "n": 0}, "'n'"),
        ({"model": "m", "messages": [{"role": "user", "content": 1}]}, "content"),
    ],
)
async def test_invalid_requests_get_400_with_a_message(
    standin: StandinServer, body: dict[str, Any], match: str
) -> None:
    async with aiohttp.ClientSession() as session:
        status, data, _ = await _post(session, standin.base_url + "/chat/completions", body)
        assert status == 400
        assert match in data["error"]["message"]
        async with session.post(standin.base_url + "/chat/completions", data=b"{nope") as r:
            assert r.status == 400
            assert "not valid JSON" in (await r.json())["error"]["message"]


async def test_anthropic_route_through_the_sdk(standin: StandinServer, settings: Settings) -> None:
    s = Settings.load(anthropic_api_key="sk-test", cache=False)
    async with Model(f"anthropic:strong@{standin.root_url}", settings=s) as m:
        c = await m.generate(
            [
                {"role": "system", "content": "You are careful."},
                {"role": "user", "content": "Problem 0: solve"},
            ],
            n=3,
            max_tokens=200,
            temperature=0.7,  # sent in the body when the SDK's signature lacks it
        )
        assert len(c.choices) == 3
        assert standin.stats.requests == 3  # n > 1 by parallel requests
        assert all(extract_boxed(t) for t in c.texts)
        assert c.usage.prompt_tokens == standin.stats.prompt_tokens  # summed over 3 requests
        pre = await m.generate("hello", prefill="Certainly:", max_tokens=3)
        assert pre.text.startswith("Certainly:")
        assert pre.choices[0].finish_reason == "length"
        parts = [p async for p in m.stream("hello", max_tokens=5)]
        assert "".join(p.text for p in parts).strip()
        assert parts[-1].finish_reason == "length"


async def test_cut_streams_raise_transport_error(settings: Settings) -> None:
    cfg = StandinConfig(time_scale=0.01, fault_cut_stream=1.0, output_tokens=20)
    async with StandinServer(cfg) as s, Model(f"vllm:x@{s.base_url}", settings=settings) as m:
        with pytest.raises(TransportError, match=r"cut|ended|failed"):
            async for _ in m.stream("hello"):
                pass
    assert s.stats.faults["cut_stream"] == 1


async def test_fan_out_of_1000_with_20_percent_faults_returns_every_sample_once(
    tmp_path: Any,
) -> None:
    cfg = StandinConfig(
        slots=128,
        time_scale=0.01,
        retry_after=0.01,
        seed=3,
        fault_429=0.05,
        fault_500=0.05,
        fault_reset=0.05,
        fault_slow=0.05,
    )
    settings = Settings.load(
        cache_path=tmp_path / "c.sqlite", retry_initial=0.005, retry_max=0.02, max_retries=8
    )
    async with StandinServer(cfg) as s:
        async with Model(f"llamacpp:weak@{s.base_url}", settings=settings) as m:
            c = await m.generate("Problem 1: go", n=1000, seed=5)
        assert len(c.choices) == 1000
        assert [ch.index for ch in c.choices] == list(range(1000))
        failed = s.stats.faults["429"] + s.stats.faults["500"] + s.stats.faults["reset"]
        assert 100 < failed < 250  # about 15% of the attempts
        assert s.stats.faults["slow"] > 0
        assert m.meter.retries == failed  # exactly one retry per failed attempt, bounded
        assert s.stats.requests == 1000 + failed
        assert s.stats.samples == 1000  # no generation beyond the retried failures


def _measured_majority(p: float, k: int, n: int, problems: int, seed: int) -> float:
    cfg = OracleConfig(default_accuracy=p, distractors=k, bank_seed=seed)
    bank = ProblemBank(seed, k)
    right = 0
    for pid in range(problems):
        prob = bank.problem(pid)
        answers = []
        for j in range(n):
            out = respond(cfg, bank, "m", "", prob.question, random.Random(pid * 1000 + j))
            assert out is not None
            answers.append(extract_boxed(out[0]))
        counts: dict[str | None, int] = {}
        for a in answers:
            counts[a] = counts.get(a, 0) + 1
        top = max(counts.values())
        leaders = sorted(str(a) for a, v in counts.items() if v == top)
        winner = random.Random(pid).choice(leaders)
        right += prob.is_correct(winner)
    return right / problems


@pytest.mark.parametrize(("p", "k", "n"), [(0.6, 3, 5), (0.4, 3, 7), (0.3, 5, 9)])
async def test_oracle_majority_vote_accuracy_matches_the_computed_value(
    p: float, k: int, n: int
) -> None:
    expected = majority_vote_accuracy(p, k, n)
    problems = 3000
    measured = _measured_majority(p, k, n, problems, seed=1)
    sigma = math.sqrt(expected * (1 - expected) / problems)
    assert abs(measured - expected) < 4 * sigma, (measured, expected)


async def test_majority_vote_formula_edge_cases() -> None:
    assert majority_vote_accuracy(0.7, 3, 1) == pytest.approx(0.7)
    assert majority_vote_accuracy(1.0, 3, 5) == pytest.approx(1.0)
    assert majority_vote_accuracy(0.5, 1, 2) == pytest.approx(0.25 + 0.5 * 0.5)


async def test_oracle_through_the_server_matches_per_sample_accuracy(
    settings: Settings,
) -> None:
    cfg = StandinConfig(time_scale=0, oracle=OracleConfig(accuracy={"strong": 0.8}))
    bank = ProblemBank(0)
    async with StandinServer(cfg) as s, Model(f"vllm:strong@{s.base_url}", settings=settings) as m:
        outs = await asyncio.gather(
            *(m.generate(bank.problem(i).question, n=10, seed=i) for i in range(100))
        )
    right = sum(
        bank.problem(i).is_correct(extract_boxed(t)) for i, c in enumerate(outs) for t in c.texts
    )
    assert abs(right / 1000 - 0.8) < 4 * math.sqrt(0.16 / 1000)


async def test_verifier_rates_follow_the_configuration() -> None:
    cfg = OracleConfig(verifier_tpr=0.9, verifier_fpr=0.2)
    bank = ProblemBank(0)
    yes_right = yes_wrong = 0
    trials = 2000
    for i in range(trials):
        prob = bank.problem(i)
        right = f"Candidate answer: \\boxed{{{prob.answer}}}"
        wrong = f"Candidate answer: \\boxed{{{prob.distractors[0]}}}"
        for text, bucket in ((right, "r"), (wrong, "w")):
            out = respond(
                cfg,
                bank,
                "v",
                "You are a verifier.",
                f"{prob.question}\n{text}",
                random.Random(i * 2 + (bucket == "w")),
            )
            assert out is not None
            yes = out[0].endswith("Verdict: yes")
            if bucket == "r":
                yes_right += yes
            else:
                yes_wrong += yes
    assert abs(yes_right / trials - 0.9) < 4 * math.sqrt(0.09 / trials)
    assert abs(yes_wrong / trials - 0.2) < 4 * math.sqrt(0.16 / trials)


async def test_roles_are_recognised_and_answer_in_their_format() -> None:
    cfg = OracleConfig()
    bank = ProblemBank(0)
    q = bank.problem(1).question  # multistep
    cands = (
        f"{q}\nCandidate 1: \\boxed{{{bank.problem(1).answer}}}\n"
        f"Candidate 2: \\boxed{{{bank.problem(1).distractors[0]}}}"
    )
    rng = random.Random(0)
    for system, prefix in (
        ("You rank candidates.", "Ranking: "),
        ("You are a critic.", "Candidate 1: "),
        ("You are a process reward model; score each step.", "Step scores: "),
        ("Write unit tests.", "```python"),
        ("Fuse the candidates into one.", "Synthesising"),
    ):
        out = respond(cfg, bank, "m", system, cands, rng)
        assert out is not None
        assert out[0].startswith(prefix), (system, out[0])
    assert respond(cfg, bank, "m", "", "no tag here", rng) is None


async def test_retries_survive_a_server_that_resets_every_other_connection(
    settings: Settings,
) -> None:
    cfg = StandinConfig(time_scale=0.01, fault_reset=0.5, seed=1)
    async with StandinServer(cfg) as s:
        retry = RetryPolicy(max_retries=10, initial=0.001, maximum=0.01)
        async with Model(f"llamacpp:x@{s.base_url}", settings=settings, retry=retry) as m:
            c = await m.generate("hi", n=20)
    assert len(c.choices) == 20
    assert s.stats.faults["reset"] > 0
