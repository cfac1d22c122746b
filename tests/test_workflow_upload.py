"""`POST /persona/workflows` on the real server: a body that arrives in pieces is read whole,
a body of the wrong shape is a 400 naming where, never a 500, and an upload cannot send the
conversation (and the operator's API key) elsewhere or write files (headless/runner/upload_policy.py)."""

import asyncio
import io
import json

import aiohttp
import pytest

from server_harness import TIMEOUT, WORKFLOW, make_service, running


@pytest.fixture
def service():
    service = make_service()
    yield service
    service.pool.shutdown(wait=True)


async def _post(server, body) -> tuple[int, dict]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT * 3)) as client:
        async with client.post(f"{server.http_url}/persona/workflows", data=body,
                               headers={"Content-Type": "application/json"}) as response:
            return response.status, await response.json()


async def test_a_workflow_arriving_in_pieces_is_read_whole(service):
    """Before, the handler took whatever had arrived at its first read: a 1.5 MB workflow (or a
    small one sent in two writes) was refused as "not JSON", well under the 2 MiB limit."""
    saved = json.loads(WORKFLOW.read_text())
    saved.setdefault("extra", {})["notes"] = "x" * 1_500_000  # a large, valid saved graph
    body = json.dumps(saved).encode()

    async def in_two_writes():
        yield body[: len(body) // 2]
        await asyncio.sleep(0.05)  # the first half is read before the rest is sent
        yield body[len(body) // 2:]

    async with running(service) as server:
        status, answer = await _post(server, in_two_writes())
        assert status == 201 and answer["id"], answer
        status, answer = await _post(server, io.BytesIO(b"x" * (2 * 2**20 + 10)))
        assert status == 413 and answer["code"] == "bad_workflow"


@pytest.mark.parametrize("shape, where", [
    ({"1": {"class_type": "PersonaConversationTurn", "inputs": 5}}, "1.inputs"),
    ({"nodes": [{"id": 1, "type": "PersonaConversationTurn", "inputs": 5}], "links": []}, "nodes.0.inputs"),
    ({"nodes": [], "links": 5}, "links"),
    ({"nodes": [{"id": 1, "type": "PersonaConversationTurn"}], "links": [[99]]}, "links.0"),
    ({"nodes": [{"id": 1, "type": "PersonaConversationTurn", "properties": [1]}], "links": []}, "nodes.0.properties"),
    ({"nodes": [{"id": 1, "type": ["PersonaConversationTurn"]}], "links": []}, "nodes.0.type"),  # was a 500
])
async def test_a_workflow_of_the_wrong_shape_is_a_400_naming_where(service, shape, where):
    async with running(service) as server:
        status, answer = await _post(server, json.dumps(shape).encode())
    assert status == 400 and answer["code"] == "bad_workflow", answer
    assert where in answer["message"], answer


def _api_default() -> dict:
    from comfyui_persona.headless.runner import load_workflow
    from comfyui_persona.nodes import NODE_CLASS_MAPPINGS

    return load_workflow(WORKFLOW, NODE_CLASS_MAPPINGS)


async def test_an_upload_cannot_point_the_interpreter_elsewhere_or_write_files(service):
    """An uploaded Persona Interpreter with `backend=openai` and the uploader's `base_url` made
    the server send the operator's OPENAI_API_KEY there; a Session Recorder in an upload wrote
    to the working directory outside every recording limit."""
    hostile = _api_default()
    interpreter = next(k for k, n in hostile.items() if n["class_type"] == "PersonaInterpreter")
    hostile[interpreter]["inputs"].update(backend="openai", options="base_url=http://127.0.0.1:9/v1")
    recorder = _api_default()
    recorder["900"] = {"class_type": "PersonaSessionRecorder", "inputs": {}}
    async with running(service) as server:
        status, answer = await _post(server, json.dumps(hostile).encode())
        assert status == 400 and answer["code"] == "bad_workflow", answer
        assert f"node {interpreter} (PersonaInterpreter)" in answer["message"], answer
        status, answer = await _post(server, json.dumps(recorder).encode())
        assert status == 400 and "node 900 (PersonaSessionRecorder)" in answer["message"], answer
        status, answer = await _post(server, json.dumps(_api_default()).encode())  # the server's own settings
        assert status == 201, answer


async def test_a_node_id_that_is_a_digit_but_no_number_is_never_a_500(service):
    """"²" is a digit to str.isdigit() and no number to int(): ordering the nodes crashed (500)."""
    workflow = _api_default()
    first = min(workflow, key=int)
    text = json.dumps(workflow).replace(f'"{first}": {{', '"²": {').replace(f'["{first}", ', '["²", ')
    async with running(service) as server:
        status, answer = await _post(server, text.encode())
    assert status in (201, 400), (status, answer)  # it runs, or is refused by name: never a 500


async def test_an_upload_of_many_tiny_values_is_refused_and_nan_is_no_number(service):
    """2 MiB of `[{},{},...]` in an input no node reads held 45 MiB of memory, and 32 such
    uploads are kept; JSON's NaN passed every range check (the session then failed to start)."""
    from comfyui_persona.headless.runner.hosts import MAX_WORKFLOW_VALUES

    bloated = _api_default()
    next(iter(bloated.values()))["inputs"]["unread"] = [{}] * (MAX_WORKFLOW_VALUES + 1)
    not_a_number = _api_default()
    renderer = next(k for k, n in not_a_number.items() if "fps" in n["inputs"])
    not_a_number[renderer]["inputs"]["fps"] = float("nan")
    async with running(service) as server:
        status, answer = await _post(server, json.dumps(bloated).encode())
        assert status == 400 and "JSON values" in answer["message"], answer
        status, answer = await _post(server, json.dumps(not_a_number).encode())  # json.dumps writes NaN
        assert status == 400 and f"node {renderer}" in answer["message"] and "finite" in answer["message"], answer
