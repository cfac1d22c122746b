"""`persona serve --backend ... --option ...` and the ComfyUI node's `options` box reach the
interpreter: the served workflow's interpreter nodes get the values, the node builds the
backend with them (here against a real HTTP endpoint started in the test), and bad values
fail before anything loads."""

from __future__ import annotations

import asyncio
import json
import threading

import pytest
from aiohttp import web

from comfyui_persona.headless.commands.serve import DEFAULT_WORKFLOW, with_interpreter
from comfyui_persona.headless.runner import WorkflowError, WorkflowGraph, load_workflow
from comfyui_persona.nodes import NODE_CLASS_MAPPINGS
from comfyui_persona.nodes.conversation_nodes import (
    PersonaCardLoader,
    PersonaConversationTurn,
    PersonaInterpreter,
)
from comfyui_persona.nodes.runtime import SessionStore, bind_store


@pytest.fixture(scope="module")
def endpoint():
    """A minimal OpenAI-compatible endpoint that records each request and answers a wave."""
    seen: list[dict] = []

    async def completions(request: web.Request) -> web.Response:
        body = await request.json()
        seen.append(body)
        answer = {"actions": [{"action": "wave", "expression": "smile", "intensity": 0.5}],
                  "expression": "smile", "reply": "Waving from the endpoint!"}
        return web.json_response({"choices": [{"message": {"role": "assistant", "content": json.dumps(answer)}}]})

    loop = asyncio.new_event_loop()
    app = web.Application()
    app.router.add_post("/v1/chat/completions", completions)
    runner = web.AppRunner(app)
    loop.run_until_complete(runner.setup())
    site = web.TCPSite(runner, "127.0.0.1", 0)
    loop.run_until_complete(site.start())
    port = site._server.sockets[0].getsockname()[1]
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield {"url": f"http://127.0.0.1:{port}/v1", "seen": seen}
    asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(30)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(30)
    loop.close()


def _workflow():
    return load_workflow(DEFAULT_WORKFLOW, NODE_CLASS_MAPPINGS)


def test_serve_options_reach_every_interpreter_node_and_validate():
    workflow = with_interpreter(_workflow(), "openai", ["base_url=http://127.0.0.1:8080/v1", "model=qwen"])
    nodes = [n for n in workflow.values() if n["class_type"] == "PersonaInterpreter"]
    assert nodes and all(n["inputs"]["backend"] == "openai" for n in nodes)
    assert all(n["inputs"]["options"] == "base_url=http://127.0.0.1:8080/v1\nmodel=qwen" for n in nodes)
    WorkflowGraph(workflow, NODE_CLASS_MAPPINGS)  # the optional input validates


def test_serve_without_flags_leaves_the_workflow_alone():
    assert with_interpreter(_workflow(), None, []) == _workflow()


@pytest.mark.parametrize(("backend", "options"), [("gpt-9", []), ("openai", ["no-equals-sign"])])
def test_bad_backend_or_option_is_a_workflow_error(backend, options):
    with pytest.raises(WorkflowError):
        with_interpreter(_workflow(), backend, options)


def test_the_node_builds_the_backend_from_its_options(endpoint):
    store = SessionStore()
    store.open("s")
    options = f"base_url={endpoint['url']}\nmodel=served-model\n# a comment\ntimeout=10"
    with bind_store(store):
        (persona,) = PersonaCardLoader().load("mira")
        (turn,) = PersonaConversationTurn().turn(persona, "hi there", "s", 1)
        plan, reply = PersonaInterpreter().interpret(persona, turn, "openai", options)
    assert reply == "Waving from the endpoint!"
    assert [d.action for d in plan.directives] == ["wave"]
    assert endpoint["seen"][-1]["model"] == "served-model"
