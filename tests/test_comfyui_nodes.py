"""The pack as real ComfyUI 0.3.75 loads it: /object_info for every node, our routes on PromptServer.

ComfyUI's own server (`comfyui_server`, started once per test session) loads the pack from
custom_nodes/ with its own custom-node loader; everything here is read over its HTTP API.
"""

from __future__ import annotations

import json
import urllib.request

import pytest

from comfyui_persona.nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS
from paths import REPO

pytestmark = [pytest.mark.comfyui, pytest.mark.slow]


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=30) as response:
        assert response.status == 200, url
        return response.read()


@pytest.fixture(scope="module")
def object_info(comfyui_server: str) -> dict:
    return json.loads(_get(f"{comfyui_server}/object_info"))


@pytest.mark.parametrize("name", sorted(NODE_CLASS_MAPPINGS))
def test_comfyui_lists_the_node_with_category_description_and_tooltips(object_info: dict, name: str) -> None:
    assert name in object_info, f"ComfyUI did not load {name} (see the server log for an import error)"
    info = object_info[name]
    assert info["category"].startswith("persona/"), info["category"]
    assert info["display_name"] == NODE_DISPLAY_NAME_MAPPINGS[name]
    assert info["display_name"].startswith("Persona")
    assert len(info["description"]) > 20, "every node needs a description"
    assert info["python_module"] == "custom_nodes.comfyui-persona"
    for section in ("required", "optional"):
        for input_name, spec in info["input"].get(section, {}).items():
            options = spec[1] if len(spec) > 1 else {}
            assert options.get("tooltip"), f"{name}.{input_name} has no tooltip"
    assert len(info["output"]) == len(info["output_name"])


def test_comfyui_knows_which_nodes_are_outputs_and_which_defeat_the_cache(object_info: dict) -> None:
    outputs = {name for name, info in object_info.items() if name.startswith("Persona") and info["output_node"]}
    assert outputs == {name for name, cls in NODE_CLASS_MAPPINGS.items() if getattr(cls, "OUTPUT_NODE", False)}
    assert {"PersonaStreamSink", "PersonaSessionRecorder"} <= outputs
    # Per-turn and streaming nodes re-run on every queued prompt; loaders stay cached (the
    # card loader's IS_CHANGED refreshes its image in the asset cache: same card, same value).
    for name, cls in NODE_CLASS_MAPPINGS.items():
        per_run = hasattr(cls, "IS_CHANGED") or getattr(cls, "NOT_IDEMPOTENT", False)
        if name == "PersonaCardLoader":
            value = cls.IS_CHANGED(persona_id="mira")
            assert value == cls.IS_CHANGED(persona_id="mira"), f"{name} is a loader: it must stay cached"
            assert value != cls.IS_CHANGED(persona_id="ada")
            assert not getattr(cls, "NOT_IDEMPOTENT", False)
        elif name in ("PersonaLongLiveLoader", "PersonaTransitionBlender"):
            assert not per_run, f"{name} is a loader: it must stay cached"
        if getattr(cls, "STREAMING", False) or name in ("PersonaConversationTurn", "PersonaDirective"):
            assert per_run, f"{name} runs per turn/tick: it must defeat ComfyUI's cache"


def test_chat_routes_are_mounted_on_comfyuis_server(comfyui_server: str) -> None:
    health = json.loads(_get(f"{comfyui_server}/persona/health"))
    assert health["status"] == "ok" and health["protocol"] == 1
    # One protocol client for both pages: ComfyUI serves the headless page's very file.
    served = _get(f"{comfyui_server}/persona/static/persona_client.js")
    assert served == (REPO / "headless" / "static" / "persona_client.js").read_bytes()
    panel = _get(f"{comfyui_server}/extensions/comfyui-persona/persona_panel.js").decode()
    assert "/persona/static/persona_client.js" in panel and "registerSidebarTab" in panel
    assert "class PersonaClient" not in panel, "the panel must import the protocol client, not copy it"
    # The ComfyUI root stays ComfyUI's (the headless server's root page is not mounted here).
    assert b"persona_client" not in _get(f"{comfyui_server}/")


def test_comfyui_offers_the_saved_workflows_as_templates(comfyui_server: str) -> None:
    templates = json.loads(_get(f"{comfyui_server}/workflow_templates"))
    ours = set(templates.get("comfyui-persona", []))
    assert {"persona_preview_chat", "persona_longlive_chat", "persona_longlive_sparse"} <= ours
    saved = json.loads(_get(f"{comfyui_server}/api/workflow_templates/comfyui-persona/persona_preview_chat.json"))
    assert saved == json.loads((REPO / "workflows" / "persona_preview_chat.json").read_text())


def test_comfyuis_own_parser_reads_a_complete_registry_table(comfyui) -> None:
    code = (
        "import json; from comfy_config import config_parser; "
        f"c = config_parser.extract_node_configuration({str(REPO)!r}); "
        "print(json.dumps({'name': c.project.name, 'publisher': c.tool_comfy.publisher_id, "
        "'display': c.tool_comfy.display_name, 'icon': c.tool_comfy.icon, 'banner': c.tool_comfy.banner_url, "
        "'models': [m.location for m in c.tool_comfy.models], 'comfyui': c.project.supported_comfyui_version, "
        "'license': c.project.license.file, 'repository': c.project.urls.repository, 'web': c.tool_comfy.web}))"
    )
    done = comfyui.run_python(code, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    config = json.loads(done.stdout.strip().splitlines()[-1])
    assert config["name"] == "comfyui-persona" and config["publisher"] and config["display"]
    assert config["icon"].startswith("https://") and config["banner"].startswith("https://")
    assert config["comfyui"].startswith(">=") and config["license"] == "LICENSE" and config["repository"]
    assert config["web"] is None, "WEB_DIRECTORY registers the panel; `web` would register it a second time"
    from comfyui_persona.video import model_files

    assert sorted(config["models"]) == sorted(f"/persona/{spec.filename}" for spec in model_files.FILES.values())
