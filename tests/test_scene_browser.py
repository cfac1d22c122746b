"""A two-persona scene in the chat page, in a real browser (Debian's Chromium driven by
Playwright, as tests/test_browser_chat.py launches it), against the real server on port 0:
the gallery's scene picker starts a scene, the header shows the cast, "Mira, wave; Bjorn, sit
down" gives each their own line and action, who is sitting shows in the cast, the video
streams, and a quick action goes to the character picked in the cast, also after the socket
drops and the session resumes (the chat redrawn as it was shown, a bubble per speaker). A screenshot is saved under test-artifacts/ (and copied to docs/images/
chat_page_scene.png when PERSONA_UPDATE_DOC_IMAGES=1). Skipped where /usr/bin/chromium is absent."""


import pytest
from test_browser_chat import ARTIFACTS, CHROMIUM, _wait_frame_after, chat_page

from paths import publish_doc_image
from server_harness import service_fixtures

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed at /usr/bin/chromium"),
]


service, _warm = service_fixtures(resume_grace_s=5.0, speech=False)


async def test_a_two_persona_scene_in_the_chat_page(service, tmp_path):
    from playwright.async_api import expect

    async with chat_page(service, tmp_path / "profile", viewport={"width": 1100, "height": 760}) as (
            _server, page, console_errors):
        await expect(page.locator("#cast")).to_be_hidden()

        # one ticked is not a scene: a clear message, the session carries on
        await page.check("#personas .scene-pick[value='mira']")
        await page.click("#start-scene")
        await expect(page.locator("#gallery-message")).to_contain_text("2 to 4 personas")
        await page.check("#personas .scene-pick[value='bjorn']")
        await page.click("#start-scene")
        await expect(page.locator("#persona-name")).to_have_text("Mira & Bjorn", timeout=20000)
        cast = page.locator("#cast li")
        await expect(cast).to_have_count(2)
        assert await cast.evaluate_all("items => items.map(i => i.dataset.character)") == ["mira", "bjorn"]
        first = await _wait_frame_after(page, -1)

        await page.fill("#message", "Mira, wave; Bjorn, sit down")
        await page.press("#message", "Enter")
        lines = page.locator("li.persona[data-character]")
        await expect(lines).to_have_count(2, timeout=20000)
        assert await lines.evaluate_all("items => items.map(i => i.dataset.character)") == ["mira", "bjorn"]
        await expect(lines.first.locator(".speaker")).to_have_text("Mira")
        actions = page.locator("li.persona[data-directives]").last
        await expect(actions).to_have_attribute("data-directives", "Mira: wave · smile → Bjorn: sit · neutral",
                                                timeout=5000)
        await expect(page.locator("#cast li[data-character='bjorn'] .cast-state")).to_contain_text(
            "sitting", timeout=20000)
        await _wait_frame_after(page, first)
        ARTIFACTS.mkdir(exist_ok=True)
        shot = ARTIFACTS / "chat_page_scene.png"
        await page.screenshot(path=str(shot))
        publish_doc_image(shot, "chat_page_scene.png")

        # the quick actions go to the character picked in the cast (Mira at first)
        await page.click("#cast li[data-character='bjorn'] .cast-pick")
        await expect(page.locator("#cast li[data-character='bjorn'] .cast-pick")).to_have_attribute(
            "aria-pressed", "true")
        # a dropped socket (a network blip): the client resumes the session, the pick holds
        session = await page.evaluate("window.personaClient.ready.session")
        await page.evaluate("window.personaClient.ws.close()")
        await page.wait_for_function(
            "(id) => window.personaClient.ready?.resumed === true && window.personaClient.ready.session === id"
            " && document.querySelector('#connection').dataset.state === 'ready'", arg=session, timeout=20000)
        await expect(page.locator("#cast li[data-character='bjorn'] .cast-pick")).to_have_attribute(
            "aria-pressed", "true")
        # the chat is redrawn from ready.history as it was shown: a bubble per speaker, named
        assert await lines.evaluate_all("items => items.map(i => i.dataset.character)") == ["mira", "bjorn"]
        await expect(lines.first.locator(".speaker")).to_have_text("Mira")
        await expect(page.locator("li.persona[data-directives]").first).to_have_attribute(
            "data-directives", "Mira: wave · smile → Bjorn: sit · neutral")
        await page.click("#quick-actions button[data-action='stand']")
        await expect(page.locator("#cast li[data-character='bjorn'] .cast-state")).to_contain_text(
            "standing", timeout=20000)
        await expect(page.locator("#cast li[data-character='mira'] .cast-state")).to_contain_text("standing")

        assert not console_errors, console_errors
