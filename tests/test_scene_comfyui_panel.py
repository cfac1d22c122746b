"""A two-persona scene in the Persona tab of the real ComfyUI frontend (1.32.9), in headless
Chromium, on ComfyUI's own server (the `comfyui_server` fixture: `main.py --cpu`, the pack in
custom_nodes/).

The shipped scene workflow (workflows/persona_scene_chat.json) goes on the canvas and the tab
streams it ("Stream: this canvas"): the tab asks for the Persona Scene node's cast, the cast
shows Mira and Bjorn, "Mira, wave; Bjorn, sit down" typed in the tab's chat box gives each their
own directive and line, Bjorn's state turns to sitting, frames keep advancing, and a quick action
goes to the character picked in the cast (Bjorn stands, Mira does not), also after the socket
drops and the session resumes. The gallery's
scene picker refuses one ticked persona with a message. Screenshot: test-artifacts/
comfyui_panel_scene.png (copied to docs/images/ when PERSONA_UPDATE_DOC_IMAGES=1).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_comfyui_panel import CHROMIUM, CHROMIUM_ARGS, FRAMES_DRAWN, _open_panel, _picture, _post_json

from paths import REPO

pytestmark = [
    pytest.mark.comfyui,
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.timeout(900),  # a whole browser session on a slow 2-core box; each wait has its own cap
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed at /usr/bin/chromium"),
]

WORKFLOW = REPO / "workflows" / "persona_scene_chat.json"


def test_the_tab_streams_the_scene_workflow_and_each_character_does_its_part(comfyui_server: str,
                                                                              tmp_path: Path) -> None:
    from playwright import sync_api

    _post_json(f"{comfyui_server}/settings", {"Comfy.TutorialCompleted": True})
    console: list[str] = []
    with sync_api.sync_playwright() as playwright:
        context, page = _open_panel(playwright, tmp_path / "profile", console, comfyui_server, CHROMIUM_ARGS)
        try:
            cast = page.locator('[data-testid="persona-cast"] li')
            assert page.get_by_test_id("persona-cast").is_hidden(), "one persona: no cast list"

            # the picker: one ticked persona is not a scene, and the session carries on
            page.get_by_text("Personas", exact=True).click()
            page.locator('[data-testid="persona-gallery"] .scene-pick input[value="mira"]').check()
            page.get_by_test_id("persona-start-scene").click()
            note = page.locator('[data-testid="persona-gallery-message"][data-kind="error"]')
            note.wait_for(timeout=10_000)
            assert "2 to 4 personas" in note.inner_text()
            page.get_by_text("Personas", exact=True).click()  # closed again: the picture shows the chat

            # the scene workflow on the canvas, streamed by the tab
            workflow = json.loads(WORKFLOW.read_text())
            page.evaluate("async (graph) => { await window.comfyAPI.app.app.loadGraphData(graph); }", workflow)
            links = page.evaluate("() => window.comfyAPI.app.app.graph.links.size ?? "
                                  "Object.keys(window.comfyAPI.app.app.graph.links).length")
            assert links == len(workflow["links"]), "the frontend dropped links of the scene workflow"
            page.get_by_test_id("persona-source").select_option("canvas")
            sync_api.expect(page.get_by_test_id("persona-name")).to_have_text("Mira & Bjorn", timeout=60_000)
            page.locator('[data-testid="persona-connection"][data-state="ready"]').wait_for(timeout=60_000)
            assert cast.evaluate_all("items => items.map(i => i.dataset.character)") == ["mira", "bjorn"]
            page.wait_for_function(f"() => ({FRAMES_DRAWN})() > 0", timeout=60_000)
            before = page.evaluate(FRAMES_DRAWN)
            # every action each character shows in the cast, as it changes (a wave may end before a sit does)
            page.evaluate(
                """() => {
                    window.castActions = {};
                    const cast = document.querySelector('[data-testid=persona-cast]');
                    new MutationObserver(() => {
                        for (const item of cast.querySelectorAll('li')) {
                            const seen = (window.castActions[item.dataset.character] ??= []);
                            if (item.dataset.action && seen.at(-1) !== item.dataset.action) seen.push(item.dataset.action);
                        }
                    }).observe(cast, { subtree: true, attributes: true, attributeFilter: ['data-action'] });
                }"""
            )

            page.get_by_test_id("persona-message").fill("Mira, wave; Bjorn, sit down")
            page.get_by_test_id("persona-message").press("Enter")
            lines = page.locator('[data-testid="persona-history"] li.persona[data-character]')
            sync_api.expect(lines).to_have_count(2, timeout=60_000)
            assert lines.evaluate_all("items => items.map(i => i.dataset.character)") == ["mira", "bjorn"]
            assert lines.first.locator(".speaker").inner_text() == "Mira"
            actions = page.locator('[data-testid="persona-history"] li.persona[data-directives]').last
            sync_api.expect(actions).to_have_attribute("data-directives", "Mira: wave · smile → Bjorn: sit · neutral")
            sync_api.expect(page.locator('[data-testid="persona-cast"] li[data-character="bjorn"] .cast-state')
                            ).to_contain_text("sitting", timeout=60_000)
            seen = page.evaluate("() => window.castActions")
            assert "wave" in seen.get("mira", []) and "sit" not in seen.get("mira", []), seen
            assert "sit" in seen.get("bjorn", []) and "wave" not in seen.get("bjorn", []), seen
            # the picture: the tab beside the scene graph, the frontend's news banner closed
            _picture(page, "comfyui_panel_scene.png")
            page.wait_for_function(f"(n) => ({FRAMES_DRAWN})() >= n + 12", arg=before, timeout=60_000)

            # the quick actions go to the character picked in the cast (the lead at first)
            bjorn = page.locator('[data-testid="persona-cast"] li[data-character="bjorn"] .cast-pick')
            bjorn.click()
            sync_api.expect(bjorn).to_have_attribute("aria-pressed", "true")
            # a dropped socket (as when the tab is hidden): the session resumes, the pick holds
            session = page.evaluate("() => window.personaPanelClient.ready.session")
            page.evaluate("() => window.personaPanelClient.ws.close()")
            page.wait_for_function(
                "(id) => window.personaPanelClient.ready?.resumed === true"
                " && window.personaPanelClient.ready.session === id", arg=session, timeout=60_000)
            page.locator('[data-testid="persona-connection"][data-state="ready"]').wait_for(timeout=60_000)
            sync_api.expect(bjorn).to_have_attribute("aria-pressed", "true")
            # the chat redrawn from ready.history as it was shown: a bubble per speaker, named
            assert lines.evaluate_all("items => items.map(i => i.dataset.character)") == ["mira", "bjorn"]
            assert lines.first.locator(".speaker").inner_text() == "Mira"
            sync_api.expect(actions).to_have_attribute("data-directives", "Mira: wave · smile → Bjorn: sit · neutral")
            page.locator('[data-testid="persona-quick"] button[data-action="stand"]').click()
            sync_api.expect(page.locator('[data-testid="persona-cast"] li[data-character="bjorn"] .cast-state')
                            ).to_contain_text("standing", timeout=60_000)
            assert "stand" not in page.evaluate("() => window.castActions").get("mira", [])
        except Exception:
            print("\n".join(console[-40:]))
            raise
        finally:
            context.close()
    errors = [line for line in console if line.startswith("pageerror")]
    assert not errors, errors
