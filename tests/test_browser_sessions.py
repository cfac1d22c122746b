"""The chat page's sessions in a real browser (Debian's Chromium, Playwright; no download).

- A duplicated tab (a second page given the first one's sessionStorage, as Chromium's
  "Duplicate" does) starts its own session instead of stealing; neither tab reconnects in a
  loop, counted from the clients' own `ready`/`status` events while both stream frames. "Use
  here" moves the conversation, the other tab stops and offers its choice.
- A reload redraws the conversation the server kept (`ready.history`), in order; quick-action
  bubbles end with their directive, never "…"; the newest reply is scrolled into view.
- A server restart (a new server on the same port, the same saved conversations): the page
  resumes the same session with every bubble and the character's pose, and chats on; stats
  are hidden while disconnected.
- The favicon loads and the page load has no 4xx/5xx answer.

Against the real server on port 0 in this process. Skipped where /usr/bin/chromium is absent.
"""

from __future__ import annotations

import asyncio
import json

import pytest
from test_browser_chat import ARGS, CHROMIUM

from comfyui_persona.headless.server import create_app
from comfyui_persona.headless.server.site import start_server
from server_harness import make_service, running, service_fixtures

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed at /usr/bin/chromium"),
]

READY = 20000  # ms: the first session loads the interpreter on a busy box

service, _warm = service_fixtures(resume_grace_s=30.0)

COUNT_EVENTS = """() => {
  window.__seen = { ready: 0, states: [] };
  window.personaClient.addEventListener("ready", () => window.__seen.ready++);
  window.personaClient.addEventListener("status", (e) => window.__seen.states.push(e.detail.state));
}"""


async def _launch(pw, tmp_path, **options):
    return await pw.chromium.launch_persistent_context(
        str(tmp_path / "profile"), executable_path=str(CHROMIUM), args=ARGS, headless=True,
        viewport=options.pop("viewport", {"width": 1100, "height": 720}), **options,
    )


async def _open(context, url):
    page = context.pages[0] if context.pages else await context.new_page()
    return await _goto(page, url)


async def _goto(page, url):
    from playwright.async_api import expect

    page.errors = []
    page.on("pageerror", lambda error: page.errors.append(str(error)))
    await page.goto(url, timeout=READY)
    await expect(page.locator("#connection")).to_have_attribute("data-state", "ready", timeout=READY)
    return page


async def _frame_index(page) -> int:
    value = await page.locator("#video").get_attribute("data-frame-index")
    return int(value) if value is not None else -1


async def _frames_pass(pages, count: int, timeout: float = 30.0) -> None:
    """Wait until every page has drawn `count` more frames: time measured in the stream's own
    events (about count/24 s each), which a takeover loop would interrupt."""
    loop = asyncio.get_running_loop()
    start = [await _frame_index(page) for page in pages]
    deadline = loop.time() + timeout
    while True:
        now = [await _frame_index(page) for page in pages]
        if all(n >= s + count for n, s in zip(now, start, strict=True)):
            return
        if loop.time() > deadline:
            raise AssertionError(f"frames did not advance by {count}: {start} → {now}")
        await asyncio.sleep(0.1)


async def _session(page) -> str:
    return await page.evaluate("window.personaClient.ready.session")


async def _bubbles(page) -> list[tuple[str, str]]:
    return await page.evaluate("[...document.querySelectorAll('#history li')].map(li => [li.className, li.innerText])")


async def _chat(page, text: str) -> None:
    from playwright.async_api import expect

    before = await page.locator("li.persona[data-done='true']").count()
    await page.fill("#message", text)
    await page.press("#message", "Enter")
    await expect(page.locator("li.persona[data-done='true']")).to_have_count(before + 1, timeout=READY)


async def test_duplicated_tab_gets_its_own_session_and_nobody_loops(service, tmp_path):
    from playwright.async_api import async_playwright, expect

    async with running(service) as server, async_playwright() as pw:
        context = await _launch(pw, tmp_path)
        try:
            first = await _open(context, server.http_url + "/?media=websocket")
            # A persona chosen on the page (not in the URL): the duplicate keeps it.
            other = next(pid for pid in service.library.ids() if pid != "mira")
            await first.click(f"#personas button[data-persona='{other}']")
            await expect(first.locator("#persona-name")).to_have_text(service.library.get(other).name, timeout=READY)
            await expect(first.locator("#connection")).to_have_attribute("data-state", "ready", timeout=READY)
            await _chat(first, "please wave at me")
            mine = await _session(first)
            # Duplicate: a new tab with a copy of the first tab's sessionStorage.
            storage = await first.evaluate("JSON.stringify(Object.entries(sessionStorage))")
            second = await context.new_page()
            await second.add_init_script(
                f"if (location.pathname === '/') for (const [k, v] of {storage}) sessionStorage.setItem(k, v);"
            )
            await _goto(second, server.http_url + "/?media=websocket")
            resumed_before = service.metrics.sessions_resumed_total
            for page in (first, second):
                await page.evaluate(COUNT_EVENTS)

            theirs = await _session(second)
            assert theirs != mine and await _session(first) == mine
            assert await second.evaluate("window.personaClient.ready.persona.id") == other
            await expect(second.locator("#notice")).to_contain_text("open in another tab")
            assert await second.locator("#history li").count() == 0  # its own, new conversation
            await _frames_pass([first, second], 48)
            for page in (first, second):
                seen = await page.evaluate("window.__seen")
                assert seen == {"ready": 0, "states": []}, seen
                assert await page.get_attribute("#connection", "data-state") == "ready"
            assert service.metrics.sessions_resumed_total == resumed_before
            assert {s.id for s in service.sessions.values() if s.connection is not None} == {mine, theirs}

            # "Use that conversation here": the second tab takes it, the first stops and asks.
            await second.click("#notice-use-here")
            await expect(second.locator("li.user")).to_have_text(["please wave at me"], timeout=READY)
            assert await _session(second) == mine
            await expect(first.locator("#connection")).to_have_attribute("data-state", "taken", timeout=READY)
            await expect(first.locator("#notice")).to_contain_text("open in another tab")
            await _frames_pass([second], 48)
            seen = await first.evaluate("window.__seen")
            assert seen["ready"] == 0 and seen["states"][-1] == "taken" and "connecting" not in seen["states"], seen
            assert await first.locator("#metrics").is_hidden()

            # The first tab chooses a new conversation: three sessions, none fighting.
            await first.click("#notice-new")
            await expect(first.locator("#connection")).to_have_attribute("data-state", "ready", timeout=READY)
            assert await _session(first) not in (mine, theirs)
            await _frames_pass([first, second], 24)
            assert await second.evaluate("window.__seen.ready") == 1  # its one move, nothing since
            assert not first.errors and not second.errors, (first.errors, second.errors)
        finally:
            await context.close()


async def test_reload_redraws_the_conversation_in_order(service, tmp_path):
    from playwright.async_api import async_playwright, expect

    async with running(service) as server, async_playwright() as pw:
        context = await _launch(pw, tmp_path, viewport={"width": 1100, "height": 560})
        try:
            page = await _open(context, server.http_url + "/?media=websocket")
            await _chat(page, "please wave at me")
            await page.click("#quick-actions button[data-action='nod']")
            action = page.locator("li.persona[data-kind='action']").last
            await expect(action).to_have_attribute("data-done", "true", timeout=READY)
            assert "…" not in await action.inner_text() and "nod" in await action.inner_text()
            for text in ("now smile", "tell me about yourself", "can you sit down", "thank you"):
                await _chat(page, text)
            shown = await _bubbles(page)
            assert len(shown) == 12 and not any("…" in text for _, text in shown), shown
            # The newest reply is in view: the list overflows and is scrolled to its end.
            box = await page.evaluate("""(() => { const h = document.getElementById('history');
                const last = h.lastElementChild.getBoundingClientRect(), r = h.getBoundingClientRect();
                return {overflow: h.scrollHeight > h.clientHeight, bottom: last.bottom, listBottom: r.bottom}; })()""")
            assert box["overflow"] and box["bottom"] <= box["listBottom"] + 1, box
            # A reader scrolled up to older bubbles is not pulled down by an arriving answer.
            done = await page.locator("li.persona[data-done='true']").count()
            await page.evaluate("""(() => { document.getElementById('message').value = 'and a bow';
                document.getElementById('composer').requestSubmit();
                document.getElementById('history').scrollTop = 0; })()""")
            await expect(page.locator("li.persona[data-done='true']")).to_have_count(done + 1, timeout=READY)
            assert await page.evaluate("document.getElementById('history').scrollTop") == 0
            shown = await _bubbles(page)
            assert len(shown) == 14 and shown[-2] == ["user", "and a bow"], shown

            session = await _session(page)
            await page.reload()
            await expect(page.locator("#connection")).to_have_attribute("data-state", "ready", timeout=READY)
            assert await page.evaluate("window.personaClient.ready.resumed") is True
            assert await _session(page) == session
            await expect(page.locator("#history li")).to_have_count(len(shown))
            assert await _bubbles(page) == shown
            await expect(page.locator("#notice")).to_be_hidden()
            # The redrawn conversation goes on.
            await _chat(page, "one more wave")
            assert len(await _bubbles(page)) == len(shown) + 2
            assert not page.errors, page.errors
        finally:
            await context.close()


async def test_server_restart_loses_no_message_and_the_conversation_goes_on(tmp_path):
    """The server stops mid-conversation and a new one starts on the same port (its saved
    conversations in the same folder): the page reconnects to the same session, shows the
    conversation as it was, and the user continues it."""
    from playwright.async_api import async_playwright, expect

    saved = str(tmp_path / "conversations")
    services = [await asyncio.to_thread(make_service, resume_grace_s=30.0, conversations_dir=saved) for _ in range(2)]
    try:
        async with async_playwright() as pw:
            context = await _launch(pw, tmp_path)
            try:
                async with running(services[0]) as server:
                    port = server.port
                    page = await _open(context, server.http_url + "/?media=websocket")
                    await _chat(page, "please wave at me")
                    await _chat(page, "now sit down")
                    await expect(page.locator("#status-pose")).to_have_text("sitting", timeout=READY)
                    old = await _session(page)
                    before = await _bubbles(page)
                    await expect(page.locator("#metrics")).to_contain_text("fps", timeout=READY)
                # Stopped (as on SIGTERM: the service closed, its last saves on disk): the page is disconnected, and shows no stale stats meanwhile.
                await expect(page.locator("#connection")).not_to_have_attribute("data-state", "ready", timeout=READY)
                assert await page.locator("#metrics").is_hidden()
                assert await page.locator("li.user").count() == 2  # nothing dropped before it knows

                app = await asyncio.to_thread(create_app, services[1])
                runner, again = await start_server(app, "127.0.0.1", port, services[1].gate)
                try:
                    assert again == port
                    await expect(page.locator("#connection")).to_have_attribute("data-state", "ready", timeout=READY)
                    assert await _session(page) == old
                    assert await page.evaluate("window.personaClient.ready.resumed") is True
                    assert await _bubbles(page) == before
                    await expect(page.locator("#status-pose")).to_have_text("sitting", timeout=READY)
                    await _chat(page, "hello again")
                    assert [c for c, _ in await _bubbles(page)] == ["user", "persona"] * 3
                    assert list(services[1].sessions) == [old]
                    await expect(page.locator("#metrics")).to_contain_text("fps", timeout=READY)
                    assert not page.errors, page.errors
                finally:
                    await asyncio.wait_for(runner.cleanup(), 30)
            finally:
                await context.close()
    finally:
        for made in services:
            made.pool.shutdown(wait=True)


async def test_page_load_has_a_favicon_and_no_failed_request(service, tmp_path):
    from playwright.async_api import async_playwright

    async with running(service) as server, async_playwright() as pw:
        context = await _launch(pw, tmp_path)
        try:
            failed = []
            context.on("response", lambda r: failed.append((r.status, r.url)) if r.status >= 400 else None)
            page = await _open(context, server.http_url + "/?media=websocket")
            icon = await page.get_attribute("link[rel='icon']", "href")
            answer = await page.request.get(server.http_url + icon)
            assert answer.status == 200 and answer.headers["content-type"].startswith("image/svg+xml")
            assert (await answer.body()).lstrip().startswith(b"<svg")
            await _chat(page, "hi")
            assert not failed, failed
            assert json.loads(json.dumps(await page.evaluate("window.personaClient.ready.features"))).count("history") == 1
        finally:
            await context.close()
