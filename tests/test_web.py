"""The web chat page, end to end in headless Debian chromium driven by Playwright (the
browser comes from apt, never downloaded): send a message, see the answer stream in and
the pipeline panel fill, take a screenshot."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from playwright.async_api import Browser, async_playwright
from test_serve import KEY, question, served, standin_url  # noqa: F401 - fixtures

from ponder.apps.server import PonderServer

CHROMIUM = "/usr/bin/chromium"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest_asyncio.fixture
async def browser() -> AsyncIterator[Browser]:
    if shutil.which(CHROMIUM) is None:
        pytest.fail("Debian chromium is not installed: apt-get install chromium (./dev test does)")
    async with async_playwright() as p:
        b = await p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield b
        await b.close()


async def test_chat_page_streams_an_answer_and_shows_the_pipeline(
    served: tuple[str, PonderServer],  # noqa: F811
    browser: Browser,
    tmp_path: Path,
) -> None:
    base, _ = served
    page = await browser.new_page(bypass_csp=True, viewport={"width": 1280, "height": 760})
    await page.goto(base + "/")
    await page.fill("#api-key", KEY)
    await page.dispatch_event("#api-key", "change")
    await page.wait_for_function("document.querySelectorAll('#model option').length === 2")
    await page.select_option("#model", "vote")
    q = question(7)
    await page.fill("#input", q)
    await page.press("#input", "Enter")
    done = page.locator('.msg.assistant[data-done="1"]')
    await done.wait_for(timeout=30_000)
    answer = await done.get_attribute("data-raw")
    assert answer is not None
    assert "\\boxed{" in answer
    assert await done.locator(".katex").count() >= 1  # the boxed answer is typeset
    assert await page.locator("#nodes .node.done").count() == 2
    summary = await page.inner_text("#summary")
    assert summary.startswith("Finished: answer ")
    # the live graph: both layers lit as done, each with its figures, joined by an edge
    assert await page.locator("#graph .gnode.done").count() == 2
    stats = await page.locator("#graph .gnode .stats").all_inner_texts()
    assert stats[0].startswith("+5 cand · "), stats
    assert " tok · " in stats[0]
    assert stats[0].endswith(" s")
    assert await page.locator('#graph path[data-edge="layer1->layer2"]').count() == 1
    # the workflow list refreshed (the key field losing focus does it, even mid-run) keeps
    # the graph of the run it shows
    await page.evaluate("loadModels()")  # awaits the refreshed list
    assert await page.locator("#graph .gnode.done").count() == 2
    # the vote's histogram, its winner the final answer, and the candidates behind it
    assert await page.locator("#votes .bar").count() >= 1
    win = await page.locator("#votes .bar.win .label").inner_text()
    assert summary.startswith(f"Finished: answer {win} ")
    behind = page.locator("#behind details")
    assert await behind.count() >= 1
    assert win in await behind.first.locator("summary").inner_text()
    cands = await page.locator("#nodes .node .cand").count()
    assert cands >= 6  # one summary line + five candidates of the generate layer
    # the thread is kept: the user message and the answer, titled by the question
    assert await page.locator(".msg.user").inner_text() == q
    assert (await page.locator("#threads .thread.active").inner_text()).startswith("Problem")
    shot = tmp_path / "web-chat.png"
    await page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    if os.environ.get("PONDER_UPDATE_SCREENSHOT"):
        shutil.copy(shot, Path(__file__).parent.parent / "docs" / "web-chat.png")


async def test_chat_page_says_a_key_is_needed_and_shows_a_failed_run(
    served: tuple[str, PonderServer],  # noqa: F811
    browser: Browser,
) -> None:
    base, _ = served
    page = await browser.new_page(bypass_csp=True)
    await page.goto(base + "/")
    # keys are configured and none is typed: the list says so, and Send is off
    await page.wait_for_function("document.querySelector('#model option') !== null")
    assert "enter your API key" in await page.inner_text("#model")
    assert await page.is_disabled("#send")
    # a run refused by the server: the error is shown and the panel does not stay "Running"
    await page.evaluate(
        "() => { const s = document.getElementById('model'); const o = document.createElement"
        "('option'); o.value = o.textContent = 'vote'; s.appendChild(o); s.value = 'vote';"
        " s.dispatchEvent(new Event('change')); }"
    )
    assert not await page.is_disabled("#send")
    await page.fill("#input", "hello")
    await page.press("#input", "Enter")
    err = page.locator(".msg.error")
    await err.wait_for(timeout=10_000)
    assert "missing API key" in await err.inner_text()
    assert (await page.inner_text("#summary")).startswith("Failed: ")


async def test_chat_page_names_layers_by_component_and_shows_cached_tokens(
    standin_url: str,  # noqa: F811
    browser: Browser,
    tmp_path: Path,
) -> None:
    from test_serve import serving

    from ponder import Settings
    from ponder.apps._serve_settings import ServeSettings
    from ponder.workflows import Workflow, WorkflowSpec

    spec = WorkflowSpec.model_validate(
        {
            "name": "stack",
            "models": {"m": f"vllm:m@{standin_url}"},
            "layers": [[{"generate": {"n": 2}}, {"generate": {"n": 2}}], "vote"],
        }
    )
    settings = Settings.load(cache_path=tmp_path / "cache.sqlite")
    server = PonderServer({"stack": Workflow(spec, settings=settings)}, ServeSettings())
    async with serving(server) as base:
        page = await browser.new_page(bypass_csp=True)
        await page.goto(base + "/")
        await page.wait_for_function("document.querySelectorAll('#model option').length === 1")
        for attempt in range(2):  # the second run is served from the response cache
            if attempt:
                await page.click("#new-thread")  # the same question, with no history
            await page.fill("#input", question(9))
            await page.press("#input", "Enter")
            await page.wait_for_function(
                "() => { const m = document.querySelectorAll('.msg.assistant');"
                " return m.length === 1 && m[0].dataset.done === '1'; }",
                timeout=30_000,
            )
        heads = await page.locator("#nodes .node .head span:first-child").all_inner_texts()
        assert heads == ["layer1 · generate ×2", "layer2 · vote"]
        states = await page.locator("#nodes .node .state").all_inner_texts()
        assert states[0].startswith("cached: ")  # not "0 tok"
        summary = await page.inner_text("#summary")
        assert "cached (saved $" in summary
        assert summary.endswith(" s")  # with its elapsed time


async def test_chat_page_graph_lights_nodes_as_they_run_and_draws_loops(
    browser: Browser,
) -> None:
    """A workflow with a loop: the graph is laid out from its edges (the loop dashed), a
    running node is lit with its elapsed time, and the summary counts time and tokens."""
    from test_serve import serving

    from ponder import Settings
    from ponder.apps._serve_settings import ServeSettings
    from ponder.testing import FakeModel
    from ponder.workflows import Workflow, WorkflowSpec

    spec = WorkflowSpec.model_validate(
        {
            "name": "loop",
            "models": {"m": "vllm:m@http://127.0.0.1:9/v1"},
            "nodes": {
                "draft": {"generate": {"model": "m", "n": 2}},
                "check": {"verify": {"model": "m"}},
                "improve": {"refine": {"model": "m", "max_rounds": 1}},
                "pick": {"best_of_n": {"score": "verifier"}},
            },
            "edges": [
                "draft -> check",
                {"from": "check", "when": "verified_share < 0.5", "to": "improve",
                 "else": "pick", "max_iterations": 2},
                "improve -> check",
            ],
        }
    )  # fmt: skip
    slow = FakeModel(["Working... The answer is \\boxed{7}."], delay=0.6)
    wf = Workflow(spec, settings=Settings.load(cache=False), models={"m": slow})
    async with serving(PonderServer({"loop": wf}, ServeSettings())) as base:
        page = await browser.new_page(bypass_csp=True)
        await page.goto(base + "/")
        await page.locator("#model option").first.wait_for(state="attached")
        tops = {}
        for name in ("draft", "check", "improve", "pick"):
            box = await page.locator(f'#graph .gnode[data-node="{name}"]').bounding_box()
            assert box is not None
            tops[name] = box["y"]
        assert tops["draft"] < tops["check"] < tops["improve"]
        assert tops["check"] < tops["pick"]
        loop = page.locator('#graph path[data-edge="improve->check"]')
        assert await loop.get_attribute("stroke-dasharray") == "4 3"
        when = await page.locator('#graph path[data-edge="check->improve"] title').text_content()
        assert when is not None
        assert "verified_share" in when
        await page.fill("#input", "What is 3 + 4?")
        await page.press("#input", "Enter")
        running = page.locator("#graph .gnode.running .stats")
        await running.first.wait_for(timeout=10_000)
        await page.wait_for_function(
            "document.querySelector('#graph .gnode.running .stats')?.textContent"
            ".match(/running… [0-9.]+ s/) !== null"
        )
        assert (await page.inner_text("#summary")).startswith("Running… ")
        await page.locator('.msg.assistant[data-done="1"]').wait_for(timeout=30_000)
        assert await page.locator('#graph .gnode[data-node="pick"].done').count() == 1
        assert (await page.inner_text("#summary")).startswith("Finished: answer 7")


HOSTILE = """Here is **bold**, a table and code.

| a | b |
|---|---|
| 1 | 2 |

```python
def f(x):
    return x * 2
```

Inline math $x^2 + 1$ and display math:

$$\\frac{a}{b} = \\sqrt{2}$$

<img src=x onerror="window.__pwned = 1"><script>window.__pwned = 2</script>
[click](javascript:window.__pwned=3) ![tracker](http://203.0.113.9/pixel.png)
<a href="https://example.org/">a link</a>

The answer is \\boxed{42}."""


async def test_chat_page_renders_markdown_latex_and_code_and_runs_no_model_script(
    browser: Browser,
) -> None:
    """A model's answer is Markdown with LaTeX and code: it is rendered with the vendored
    libraries (no request leaves the server), and what an attacker could put in an answer
    (inline handlers, scripts, javascript: links, outside images) does nothing. The page
    runs under its real Content-Security-Policy here (no bypass)."""
    from test_serve import serving

    from ponder import Settings
    from ponder.apps._serve_settings import ServeSettings
    from ponder.testing import FakeModel
    from ponder.workflows import Workflow, WorkflowSpec

    spec = WorkflowSpec.model_validate(
        {"name": "md", "models": {"m": "vllm:m@http://127.0.0.1:9/v1"}, "layers": ["generate"]}
    )
    wf = Workflow(spec, settings=Settings.load(cache=False), models={"m": FakeModel([HOSTILE])})
    async with serving(PonderServer({"md": wf}, ServeSettings())) as base:
        page = await browser.new_page()
        outside: list[str] = []
        page.on("request", lambda r: outside.append(r.url) if not r.url.startswith(base) else None)
        dialogs: list[str] = []
        page.on("dialog", lambda d: dialogs.append(d.message))
        await page.goto(base + "/")
        await page.locator("#model option").first.wait_for(state="attached")
        await page.fill("#input", "Show me")
        await page.press("#input", "Enter")
        msg = page.locator('.msg.assistant[data-done="1"]')
        await msg.wait_for(timeout=20_000)
        assert await msg.locator("strong").inner_text() == "bold"
        assert await msg.locator("table td").count() == 2
        assert await msg.locator("pre code.hljs .hljs-keyword").count() >= 1  # highlighted
        assert await msg.locator(".katex").count() >= 3  # inline, display and the box
        assert await msg.locator(".katex-display").count() == 1
        assert await msg.locator("script").count() == 0
        assert await msg.locator("[onerror]").count() == 0
        hrefs = await msg.locator("a").evaluate_all("as => as.map(a => a.getAttribute('href'))")
        assert not any(h and h.lower().startswith("javascript:") for h in hrefs)
        assert "https://example.org/" in hrefs
        assert await msg.locator('a[href="https://example.org/"]').get_attribute("rel") == (
            "noopener noreferrer"
        )
        # the vendored libraries came from this server; the tracker was never fetched
        assert outside == [], outside
        blocked = msg.locator("img[data-blocked]")
        assert await blocked.count() == 2  # shown as its alt text, with no src
        assert await blocked.nth(1).get_attribute("src") is None
        assert dialogs == []
        assert await page.evaluate("() => window.__pwned === undefined")


async def test_chat_page_shows_an_agents_tool_calls(browser: Browser) -> None:
    """An agent's trajectory reaches the page: each tool call, its arguments and result,
    under the step that made it (an error in red)."""
    from test_serve import serving

    from ponder import Settings
    from ponder.apps._serve_settings import ServeSettings
    from ponder.testing import FakeModel
    from ponder.types import ToolCall
    from ponder.workflows import Workflow, WorkflowSpec

    replies: list[object] = [
        ToolCall(id="a", name="calculator", arguments='{"expression": 42}'),
        ToolCall(id="b", name="calculator", arguments='{"expression": "6 * 7"}'),
        "The calculator says 42: \\boxed{42}",
    ]
    spec = WorkflowSpec.model_validate(
        {
            "name": "agent",
            "models": {"m": "vllm:m@http://127.0.0.1:9/v1"},
            "layers": [{"generate": {"n": 1, "tools": ["calculator"]}}],
        }
    )
    fake = FakeModel(replies)  # type: ignore[arg-type]
    wf = Workflow(spec, settings=Settings.load(cache=False), models={"m": fake})
    async with serving(PonderServer({"agent": wf}, ServeSettings())) as base:
        page = await browser.new_page(bypass_csp=True)
        await page.goto(base + "/")
        await page.locator("#model option").first.wait_for(state="attached")
        await page.fill("#input", "What is 6 * 7?")
        await page.press("#input", "Enter")
        await page.locator('.msg.assistant[data-done="1"]').wait_for(timeout=20_000)
        calls = await page.locator("#nodes .cand.tool").all_inner_texts()
        assert len(calls) == 2
        assert calls[0].startswith('↳ calculator({"expression": 42}) → Error: invalid arguments')
        assert calls[1] == '↳ calculator({"expression": "6 * 7"}) → 42'
        assert await page.locator("#nodes .cand.tool.error").count() == 1
