"""Bad workflows inside a real ComfyUI: each a clear error naming the node, and the service
goes on serving the other sessions.

- an unknown node type and a disconnected required input: refused when the tab uploads the
  graph (`POST /persona/workflows`: 400 naming node, class and problem, from ComfyUI's own
  validation), before any session starts;
- a missing model file: the graph validates, the run fails; the session gets an `error`
  naming the node and the file (ComfyUI's `execution_error`, which its frontend shows in its
  error dialog), while another session's stream goes on.
"""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from test_comfyui_native import core_workflow

REPO = Path(__file__).resolve().parents[1]

pytestmark = [pytest.mark.comfyui, pytest.mark.slow]


def _upload(server: str, workflow: dict) -> tuple[int, dict]:
    request = urllib.request.Request(f"{server}/persona/workflows", data=json.dumps(workflow).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_an_unknown_node_type_and_a_disconnected_input_are_refused_naming_the_node(comfyui_server: str) -> None:
    unknown = core_workflow()
    unknown["20"] = {"class_type": "NoSuchNodeAnywhere", "inputs": {}}
    status, body = _upload(comfyui_server, unknown)
    assert status == 400 and body["code"] == "bad_workflow"
    assert "NoSuchNodeAnywhere" in body["message"] and "20" in body["message"]

    disconnected = core_workflow()
    del disconnected["12"]["inputs"]["image"]  # Image Scale with nothing to scale
    status, body = _upload(comfyui_server, disconnected)
    assert status == 400 and "node 12 (ImageScale" in body["message"] and "image" in body["message"]


async def test_a_missing_model_file_fails_that_session_naming_the_file_and_others_stream_on(comfyui_server: str,
                                                                                             tmp_path) -> None:
    import websockets

    from comfyui_persona.headless.server.protocol import MEDIA_JPEG, parse_media_frame

    # the shipped LongLive chat graph as Run queues it, pointed at a folder with no weights
    broken = json.loads((REPO / "workflows" / "api" / "persona_longlive_chat_api.json").read_text())
    loader = next(key for key, node in broken.items() if node["class_type"] == "PersonaLongLiveLoader")
    broken[loader]["inputs"].update(models_dir=str(tmp_path / "no-weights-here"), dtype="float32", compile="off")
    status, body = _upload(comfyui_server, broken)
    assert status == 201, body
    ws_url = comfyui_server.replace("http://", "ws://") + "/persona/ws"
    async with websockets.connect(ws_url, max_size=None, open_timeout=60) as healthy:
        await healthy.send(json.dumps({"type": "hello"}))
        async with websockets.connect(ws_url, max_size=None, open_timeout=60) as failing:
            await failing.send(json.dumps({"type": "hello", "workflow": body["id"]}))
            error = None
            while error is None:
                message = await asyncio.wait_for(failing.recv(), 120)
                if isinstance(message, str) and json.loads(message)["type"] == "error":
                    error = json.loads(message)
            assert error["code"] == "node_failed", error
            assert f"node {loader} (PersonaLongLiveLoader)" in error["message"] and "longlive_base.pt" in error["message"]
        frames = 0
        while frames < 24:  # the other session streams on
            data = await asyncio.wait_for(healthy.recv(), 30)
            frames += isinstance(data, bytes) and parse_media_frame(data)[0] == MEDIA_JPEG
