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
    page = await browser.new_page(viewport={"width": 1280, "height": 760})
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
    answer = await done.inner_text()
    assert "\\boxed{" in answer
    assert await page.locator("#nodes .node.done").count() == 2
    summary = await page.inner_text("#summary")
    assert summary.startswith("Finished: answer ")
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
    page = await browser.new_page()
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
        page = await browser.new_page()
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
