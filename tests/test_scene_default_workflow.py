"""`persona serve --workflow workflows/persona_scene_chat.json`: a page that sends no
`hello.scene` (nor a persona) gets the workflow's cast as its scene, as it gets the default
persona from a one-persona workflow: `ready` lists both, and each speaks in its own voice.
Real server on port 0, the saved scene workflow, the embedded interpreter, the built-in cards,
real speech."""

from __future__ import annotations

import asyncio
import json

import pytest
from test_scene_server import _collect_until, _seconds, connect, spoken_seconds

from comfyui_persona.headless.runner import WorkflowError, WorkflowGraph, load_workflow
from comfyui_persona.headless.runner.hosts import RunnerHosts
from comfyui_persona.headless.server import PersonaService, ServerConfig
from comfyui_persona.nodes import NODE_CLASS_MAPPINGS
from paths import REPO
from server_harness import hello, running, warm_up_interpreter

SCENE_WORKFLOW = REPO / "workflows" / "persona_scene_chat.json"


@pytest.fixture(scope="module", autouse=True)
def _warm():
    warm_up_interpreter()


def scene_service() -> PersonaService:
    graph = WorkflowGraph(load_workflow(SCENE_WORKFLOW, NODE_CLASS_MAPPINGS), NODE_CLASS_MAPPINGS)
    return PersonaService(graph, ServerConfig(resume_grace_s=5.0))


async def test_a_hello_without_scene_plays_the_workflow_s_cast_each_in_its_own_voice():
    service = await asyncio.to_thread(scene_service)
    try:
        async with running(service) as server, connect(server) as ws:
            ready = await hello(ws)  # what the page sends when opened without ?persona or ?scene
            assert [p["id"] for p in ready["scene"]["personas"]] == ["mira", "bjorn"]
            assert ready["persona"]["id"] == "mira" and set(ready["states"]) == {"mira", "bjorn"}
            await ws.send(json.dumps({"type": "chat", "id": "c1", "text": "Mira, wave; Bjorn, sit down"}))
            session = next(iter(service.sessions.values()))
            voices = session.speech.voices
            assert voices["mira"] != voices["bjorn"]  # each card's own voice
            audio, messages = await _collect_until(
                ws, lambda a, m: sum(x["type"] == "reply" and x.get("done", False) for x in m) >= 2)
            directives = next(m for m in messages if m["type"] == "directives")["directives"]
            assert [(d["character"], d["action"]) for d in directives] == [("mira", "wave"), ("bjorn", "sit")]
            lines = [(m["character"], m["text"]) for m in messages if m["type"] == "reply" and m.get("done")]
            assert [who for who, _ in lines] == ["mira", "bjorn"]
            expected = sum(spoken_seconds(voices[who], text) for who, text in lines)
            more, _ = await _collect_until(ws, lambda a, m: _seconds(audio + a) >= expected - 0.05)
            audio += more
            windows = list(session.speech._speakers)
        # Both lines heard, each in its speaker's voice (the lead's voice for both would last this).
        one_voice = sum(spoken_seconds(voices["mira"], text) for _, text in lines)
        heard = _seconds(audio)
        assert abs(heard - expected) < abs(heard - one_voice), (heard, expected, one_voice)
        assert [who for _, _, who in windows] == ["mira", "bjorn"]
    finally:
        service.pool.shutdown(wait=True)


async def test_a_v1_hello_naming_a_persona_still_gets_one_persona():
    service = await asyncio.to_thread(scene_service)
    try:
        async with running(service) as server, connect(server) as ws:
            ready = await hello(ws, persona="bjorn")
            assert ready["persona"]["id"] == "bjorn" and "scene" not in ready and "states" not in ready
    finally:
        service.pool.shutdown(wait=True)


def test_a_workflow_whose_scene_node_is_bad_is_refused_at_start_with_the_node_s_message():
    workflow = load_workflow(SCENE_WORKFLOW, NODE_CLASS_MAPPINGS)
    node_id = next(k for k, v in workflow.items() if v["class_type"] == "PersonaScene")
    workflow[node_id]["inputs"]["personas"] = "mira, mira"
    with pytest.raises(WorkflowError, match=f"node {node_id} \\(PersonaScene\\): a persona appears once per scene"):
        RunnerHosts(WorkflowGraph(workflow, NODE_CLASS_MAPPINGS))
    one = load_workflow(REPO / "workflows" / "persona_preview_chat.json", NODE_CLASS_MAPPINGS)
    assert RunnerHosts(WorkflowGraph(one, NODE_CLASS_MAPPINGS)).default_scene == ()
