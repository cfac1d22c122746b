"""The Persona Scene node in a real ComfyUI 0.3.75: the shipped scene workflow streams a
two-persona scene, and a bad scene is refused on the node while ComfyUI goes on.

- ComfyUI's own PromptExecutor (tests/comfyui_driver.py, one process for every run): "Mira,
  wave; Bjorn, sit down" gives Mira a wave and Bjorn a sit, both drawn in one 512x320 picture;
  an unknown persona, a repeated one and five fail ComfyUI's validation on the scene node with
  our message; the next good run streams on in the same process, the chunks going on.
- ComfyUI's server (`main.py --cpu`): `POST /prompt` with a bad scene is a 400 whose
  `node_errors` name the node (what the frontend marks on the canvas), and the good prompt
  after it runs to `execution_success`, its sink's chunk shown (ComfyUI's WebSocket, no polling).
"""

from __future__ import annotations

import asyncio
import copy
import json
import urllib.error
import urllib.request
import uuid

import pytest

from paths import REPO

pytestmark = [pytest.mark.comfyui, pytest.mark.slow]

API = REPO / "workflows" / "api" / "persona_scene_chat_api.json"
SCENE_NODE = "1"
BAD = {
    "unknown": ("mira, nobody", "unknown persona 'nobody' in the scene; known: "),
    "repeated": ("mira, bjorn, mira", "a persona appears once per scene; repeated: mira"),
    "five": ("mira, bjorn, ada, juno, sol", "a scene holds 2 to 4 personas; got 5 (mira, bjorn, ada, juno, sol)"),
    "one": ("mira", "a scene holds 2 to 4 personas; got 1 (mira); for one persona use Persona Card Loader"),
}


def _workflow(personas: str = "mira, bjorn", turn: int = 0, session: str = "scene") -> dict:
    workflow = copy.deepcopy(json.loads(API.read_text()))
    workflow[SCENE_NODE]["inputs"]["personas"] = personas
    for node in workflow.values():
        if "session_id" in node["inputs"]:
            node["inputs"]["session_id"] = session
        if node["class_type"] == "PersonaConversationTurn":
            node["inputs"]["turn"] = turn
    return workflow


@pytest.fixture(scope="module")
def scene_report(comfyui, tmp_path_factory: pytest.TempPathFactory) -> dict:
    work = tmp_path_factory.mktemp("scene-driver")
    runs = [{"name": "wave-sit", "prompt": _workflow(turn=1), "sessions": ["scene"]}]
    runs += [{"name": f"bad-{name}", "prompt": _workflow(personas), "sessions": ["scene"]}
             for name, (personas, _) in BAD.items()]
    runs.append({"name": "after", "prompt": _workflow(turn=-1), "sessions": ["scene"]})
    return {run["name"]: run for run in comfyui.run_prompts(runs, work)["runs"]}


def _succeeded(run: dict) -> None:
    assert "crash" not in run, run["crash"]
    assert run["valid"], run["validation"]
    assert run["success"], [m for m in run["messages"] if m["event"] == "execution_error"]


def test_comfyui_runs_the_scene_workflow_each_character_doing_its_part(scene_report: dict) -> None:
    run = scene_report["wave-sit"]
    _succeeded(run)
    (directives,) = [e["directives"] for e in run["events"] if e["kind"] == "directives"]
    assert [(d["character"], d["action"]) for d in directives] == [("mira", "wave"), ("bjorn", "sit")]
    states = [e["state"] for e in run["events"] if e["kind"] == "state"]
    assert {s["character"] for s in states} == {"mira", "bjorn"}, "each character reports its own state"
    (chunk,) = [e for e in run["events"] if e["kind"] == "chunk"]
    assert chunk["shape"] == [2, 320, 512, 3]
    replies = [e["text"] for e in run["events"] if e["kind"] == "reply"]
    assert replies and replies[-1].startswith("Mira: ") and "\nBjorn: " in replies[-1], replies


@pytest.mark.parametrize("name", list(BAD))
def test_a_bad_scene_fails_validation_on_the_scene_node_with_our_message(scene_report: dict, name: str) -> None:
    run = scene_report[f"bad-{name}"]
    assert "crash" not in run, run["crash"]
    assert run["valid"] is False and not run["events"], "a bad scene must not run"
    node_errors = run["validation"][2]
    assert list(node_errors) == [SCENE_NODE] and node_errors[SCENE_NODE]["class_type"] == "PersonaScene"
    (error,) = node_errors[SCENE_NODE]["errors"]
    assert error["type"] == "custom_validation_failed"
    assert error["details"].startswith(f"personas - {BAD[name][1]}"), error["details"]


def test_comfyui_goes_on_streaming_the_scene_after_the_bad_ones(scene_report: dict) -> None:
    first = next(e for e in scene_report["wave-sit"]["events"] if e["kind"] == "chunk")
    run = scene_report["after"]
    _succeeded(run)
    (chunk,) = [e for e in run["events"] if e["kind"] == "chunk"]
    assert chunk["first_index"] == first["first_index"] + first["shape"][0], "the same stream goes on"
    assert not [e for e in run["events"] if e["kind"] == "directives"], "no new turn: nothing re-interpreted"


def _post(url: str, payload: dict) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=json.dumps(payload).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


async def test_comfyuis_server_marks_the_scene_node_and_runs_the_next_prompt(comfyui_server: str) -> None:
    import websockets

    client_id = uuid.uuid4().hex
    ws_url = comfyui_server.replace("http://", "ws://") + f"/ws?clientId={client_id}"
    async with websockets.connect(ws_url, max_size=None, open_timeout=60) as ws:
        for personas, message in BAD.values():
            status, body = _post(f"{comfyui_server}/prompt", {"prompt": _workflow(personas, session="server"),
                                                                "client_id": client_id})
            assert status == 400, body
            (error,) = body["node_errors"][SCENE_NODE]["errors"]
            assert message in error["details"], error
        status, body = _post(f"{comfyui_server}/prompt", {"prompt": _workflow(session="server"), "client_id": client_id})
        assert status == 200 and not body["node_errors"], body
        prompt_id = body["prompt_id"]
        shown = []  # the output nodes' `ui`, as the frontend gets it (`executed`)
        while True:
            raw = await asyncio.wait_for(ws.recv(), 120)
            if not isinstance(raw, str):
                continue
            message = json.loads(raw)
            if message.get("data", {}).get("prompt_id") != prompt_id:
                continue
            assert message["type"] != "execution_error", message
            if message["type"] == "executed":
                shown.append(message["data"]["output"])
            if message["type"] == "execution_success":
                break
    (sink,) = [o["persona_stream"][0] for o in shown if "persona_stream" in o]
    assert sink["count"] == 2 and sink["backend"] == "preview"

