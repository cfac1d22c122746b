"""The chat page in a real browser: Debian's Chromium driven by Playwright (no browser download).

Against the real server on port 0 in this process: the page connects, the test types a
message and sees the reply, the status indicator changes, quick actions work and video
frames advance on the canvas; the reply is heard (Web Audio decodes, schedules and plays
non-silent speech) and a recording is started, stopped, downloaded and decoded; the
persona gallery switches persona and imports cards, showing a bad card's error. A screenshot is saved under test-artifacts/ (and copied to
docs/images/chat_page.png for the README when PERSONA_UPDATE_DOC_IMAGES=1). Skipped, not failed, where /usr/bin/chromium
is absent.
"""

import asyncio
import contextlib
import time

import pytest
from browser_media import ARGS as AUDIO_ARGS
from browser_media import CHROMIUM, QUIET_ARGS, chromium_page

from paths import REPO, publish_doc_image
from server_harness import make_service, running, service_fixtures

ARTIFACTS = REPO / "test-artifacts"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed at /usr/bin/chromium"),
]

ARGS = QUIET_ARGS  # the page tests that need no sound


@contextlib.asynccontextmanager
async def chat_page(service, profile, *, args=ARGS, **options):
    """The real server for `service` on port 0 and the chat page on it in Chromium, connected
    (`#connection` ready): (server, page, console errors)."""
    from playwright.async_api import async_playwright, expect

    async with running(service) as server, async_playwright() as pw:
        async with chromium_page(pw, profile, args=args, **options) as (page, console_errors):
            await page.goto(server.http_url + "/?media=websocket", timeout=20000)  # the JPEG canvas; WebRTC: test_webrtc_browser.py
            await expect(page.locator("#connection")).to_have_attribute("data-state", "ready", timeout=20000)
            yield server, page, console_errors


service, _warm = service_fixtures(resume_grace_s=5.0)


async def _frame_index(page) -> int:
    value = await page.locator("#video").get_attribute("data-frame-index", timeout=5000)
    return int(value) if value is not None else -1


async def _wait_js(page, expression: str, timeout: float = 10.0) -> None:
    """Poll a JS expression until it is true. Not `page.wait_for_function`: that compiles its
    predicate with `eval` inside the page, which the page's CSP (no unsafe-eval) refuses;
    `page.evaluate` goes through the DevTools protocol, outside the page's policy."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await page.evaluate(expression):
        if loop.time() > deadline:
            raise AssertionError(f"{expression} did not become true within {timeout} s")
        await asyncio.sleep(0.1)


async def _wait_frame_after(page, index: int, timeout: float = 10.0) -> int:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        current = await _frame_index(page)
        if current > index:
            return current
        await asyncio.sleep(0.1)
    raise AssertionError(f"video did not advance past frame {index}")


async def test_chat_page_chats_shows_status_and_streams_video(service, tmp_path):
    from playwright.async_api import expect

    async with chat_page(service, tmp_path / "profile", viewport={"width": 1100, "height": 720}) as (
            _server, page, console_errors):
        await expect(page.locator("#persona-name")).to_have_text("Mira")
        first = await _wait_frame_after(page, -1)
        second = await _wait_frame_after(page, first)
        assert second > first

        await page.fill("#message", "please wave at me")
        await page.press("#message", "Enter")
        reply = page.locator("li.persona[data-done='true']").last
        await expect(reply).to_be_visible(timeout=20000)
        assert "wave" in (await reply.get_attribute("data-directives"))
        assert (await reply.inner_text()).strip()
        await expect(page.locator("#status-action")).to_have_text("wave", timeout=10000)
        await expect(page.locator("#status-expression")).not_to_have_text("neutral", timeout=5000)

        await page.click("#quick-actions button[data-action='sit']")
        await expect(page.locator("#status-pose")).to_have_text("sitting", timeout=10000)
        later = await _wait_frame_after(page, second)
        await expect(page.locator("#metrics")).to_contain_text("fps", timeout=5000)

        ARTIFACTS.mkdir(exist_ok=True)
        shot = ARTIFACTS / "chat_page.png"
        await page.screenshot(path=str(shot))
        publish_doc_image(shot, "chat_page.png")

        # Reconnect with session resume: a reload keeps the same session (sessionStorage).
        session = await page.evaluate("window.sessionStorage.getItem('persona.session')")
        await page.reload()
        await expect(page.locator("#connection")).to_have_attribute("data-state", "ready", timeout=20000)
        assert await page.evaluate("window.personaClient.ready.resumed") is True
        assert await page.evaluate("window.personaClient.ready.session") == session
        await _wait_frame_after(page, -1)
        assert later > second and not console_errors, console_errors


async def test_chat_page_shows_errors_clearly(service, tmp_path):
    from playwright.async_api import async_playwright, expect

    async with running(service) as server, async_playwright() as pw:
        async with chromium_page(pw, tmp_path / "profile", args=ARGS) as (page, _errors):
            await page.goto(server.http_url + "/?persona=nobody", timeout=20000)
            await expect(page.locator("#errors")).to_contain_text("unknown_persona", timeout=20000)
            # The client falls back to the server's default persona and carries on.
            await expect(page.locator("#connection")).to_have_attribute("data-state", "ready", timeout=20000)




async def test_chat_page_keeps_a_message_over_the_limit_and_counts_as_the_server_does(service, tmp_path):
    """Over 4,000 characters nothing is sent, the error says how long it is and the text stays to
    edit (a browser's maxlength cut a paste silently); 4,000 emoji (8,000 UTF-16 units) fit, as
    the server counts code points."""
    from playwright.async_api import expect

    async with chat_page(service, tmp_path / "profile") as (_server, page, console_errors):
        too_long = "🙂" * 4001
        await page.fill("#message", too_long)
        await page.press("#message", "Enter")
        await expect(page.locator("#errors")).to_contain_text("too_large: your message is 4,001 characters")
        assert await page.input_value("#message") == too_long
        assert await page.locator("li.user").count() == 0

        await page.fill("#message", "🙂" * 4000)
        await page.press("#message", "Enter")
        await expect(page.locator("li.persona[data-done='true']").last).to_be_visible(timeout=20000)
        assert await page.locator("li.user").count() == 1
        assert await page.input_value("#message") == ""
        await expect(page.locator("#errors")).to_be_empty()
        assert not console_errors, console_errors


async def test_chat_page_shows_right_to_left_text_and_wraps_long_words_on_a_phone(service, tmp_path):
    """An Arabic message ran left to right; a long German compound or a URL ran off a phone's
    screen (no wrapping inside a word)."""
    from playwright.async_api import expect

    async with chat_page(service, tmp_path / "profile", viewport={"width": 390, "height": 844}) as (
            _server, page, console_errors):
        await page.fill("#message", "مرحبا، كيف حالك؟")
        assert await page.eval_on_selector("#message", "el => getComputedStyle(el).direction") == "rtl"
        await page.press("#message", "Enter")
        arabic = page.locator("li.user").last
        await expect(arabic).to_have_text("مرحبا، كيف حالك؟")
        assert await arabic.evaluate("el => getComputedStyle(el).direction") == "rtl"
        await page.fill("#message", "Donaudampfschifffahrtsgesellschaftskapitän" * 4)
        await page.press("#message", "Enter")
        await expect(page.locator("li.user")).to_have_count(2)
        long_word = page.locator("li.user").last
        assert await long_word.evaluate("el => el.scrollWidth <= el.clientWidth + 1")
        assert await long_word.evaluate("el => getComputedStyle(el).direction") == "ltr"
        assert not console_errors, console_errors


async def test_chat_page_plays_speech_and_downloads_a_recording(tmp_path):
    """The page hears the reply (non-silent PCM decoded, scheduled and played through Web
    Audio), mutes, records, and the downloaded MP4 decodes with the reported duration,
    a frame count that matches 24 fps and a non-silent audio track."""
    import av
    import numpy as np
    from playwright.async_api import expect

    service = make_service(resume_grace_s=5.0, recordings_dir=str(tmp_path / "recordings"))
    try:
        async with chat_page(service, tmp_path / "profile", args=AUDIO_ARGS, accept_downloads=True,
                                  viewport={"width": 1280, "height": 760}) as (_server, page, errors):
            await _wait_frame_after(page, -1)

            await page.click("#record")
            await expect(page.locator("#record")).to_have_attribute("aria-pressed", "true", timeout=10000)
            started = time.monotonic()
            await page.fill("#message", "hello! how are you today?")
            await page.press("#message", "Enter")
            await expect(page.locator("li.persona[data-done='true']").last).to_be_visible(timeout=20000)
            await _wait_js(page, "window.personaAudio.stats.played >= 5", timeout=20)
            stats = await page.evaluate("window.personaAudio.stats")
            assert stats["samples"] > 22050 * 0.5 and stats["rms"] > 0.01, stats
            assert stats["scheduled"] >= stats["played"] >= 5, stats
            assert await page.evaluate("window.personaAudio.context.state") == "running"

            await page.click("#mute")
            await _wait_js(page, "window.personaAudio.gain.gain.value < 0.01", timeout=5)
            await page.click("#mute")
            await page.wait_for_timeout(1500)

            await page.click("#record")
            link = page.locator("#recording-link")
            await expect(link).to_be_visible(timeout=20000)
            wall_s = time.monotonic() - started
            async with page.expect_download(timeout=20000) as download_info:
                await link.click()
            download = await download_info.value
            saved = tmp_path / "recording.mp4"
            await download.save_as(str(saved))
            label = await link.inner_text()
            assert not errors, errors
    finally:
        service.pool.shutdown(wait=True)

    duration_s = float(label.split("(")[1].split(" s")[0])
    with av.open(str(saved)) as container:
        rate = float(container.streams.video[0].average_rate)
        frames = sum(1 for _ in container.decode(video=0))
        file_seconds = float(container.duration) / av.time_base
    with av.open(str(saved)) as container:
        samples = np.concatenate([f.to_ndarray().reshape(-1) for f in container.decode(audio=0)])
    assert abs(rate - 24) < 0.5, rate  # 24 fps (the AAC priming shift stretches frame 0 by 46 ms)
    assert abs(file_seconds - duration_s) <= 0.5, (file_seconds, duration_s)
    assert abs(frames / 24.0 - duration_s) <= 0.5, (frames, duration_s)
    # Frames are rendered in real time, so the file is about as long as the button was on
    # (looser: the two clicks' answers travel over the socket and a busy box renders late).
    assert abs(duration_s - wall_s) <= 1.0, (duration_s, wall_s)
    assert float(np.sqrt(np.mean(samples.astype(np.float64) ** 2))) > 0.005


async def test_gallery_switches_persona_and_imports_cards_with_clear_errors(tmp_path):
    import json

    from playwright.async_api import expect

    service = make_service(resume_grace_s=5.0, personas_dir=str(tmp_path / "personas"))
    bad = tmp_path / "broken.json"
    bad.write_text('{"spec": "chara_card_v2", "data": {"description": "no name"}}')
    good = tmp_path / "tess.json"
    good.write_text(json.dumps({"spec": "chara_card_v2", "spec_version": "2.0",
                                "data": {"name": "Tess Tester", "description": "Made by a test."}}))
    lossy = tmp_path / "lena.json"  # imports, but its reference image names an asset it lacks
    lossy.write_text(json.dumps({"spec": "chara_card_v2", "spec_version": "2.0", "data": {
        "name": "Lena Lossy", "description": "Made by a test.",
        "extensions": {"comfyui_persona": {"appearance": {"reference_image": "embeded://assets/face.png"}}}}}))
    try:
        async with chat_page(service, tmp_path / "profile", args=AUDIO_ARGS, viewport={"width": 1280, "height": 760}) as (_server, page, errors):
            buttons = page.locator("#personas button")
            await expect(buttons).to_have_count(len(service.library.ids()), timeout=10000)
            assert await buttons.count() >= 6
            await expect(page.locator("#personas button[aria-current='true']")).to_have_attribute("data-persona", "mira")
            await _wait_js(
                page, "[...document.querySelectorAll('#personas img')].every(i => i.complete && i.naturalWidth > 0)",
                timeout=15,
            )
            other = next(pid for pid in service.library.ids() if pid != "mira")
            await page.click(f"#personas button[data-persona='{other}']")
            name = service.library.get(other).name
            await expect(page.locator("#persona-name")).to_have_text(name, timeout=20000)
            await expect(page.locator("#connection")).to_have_attribute("data-state", "ready", timeout=20000)
            assert await page.evaluate("window.personaClient.ready.persona.id") == other

            await page.set_input_files("#card-file", str(bad))
            message = page.locator("#gallery-message")
            await expect(message).to_contain_text("bad_card", timeout=10000)
            await expect(message).to_contain_text("data.name")
            assert await message.get_attribute("data-kind") == "error"

            await page.set_input_files("#card-file", str(lossy))
            await expect(message).to_contain_text("imported Lena Lossy; warning:", timeout=10000)
            await expect(message).to_contain_text("reference_image")
            assert await message.get_attribute("data-kind") == "warning"

            await page.set_input_files("#card-file", str(good))
            await expect(message).to_contain_text("imported Tess Tester", timeout=10000)
            assert await message.get_attribute("data-kind") == "info"
            await page.click("#personas button[data-persona='tess-tester']", timeout=10000)
            await expect(page.locator("#persona-name")).to_have_text("Tess Tester", timeout=20000)
            await _wait_frame_after(page, -1)
            assert not errors, errors
    finally:
        service.pool.shutdown(wait=True)
