"""The persona gallery over HTTP: list with portraits, card import (good and bad), and an
imported persona used in `hello`. Real server on port 0, real library in tmp_path."""

import json

import aiohttp
import pytest
import websockets

from comfyui_persona.persona.library import builtin_persona_ids
from server_harness import (
    TIMEOUT,
    hello,
    make_service,
    next_frame,
    running,
    wait_for_type,
    warm_up_interpreter,
)

GOOD_CARD = {
    "spec": "chara_card_v2",
    "spec_version": "2.0",
    "data": {"name": "Tess Tester", "description": "A card made by a test.", "personality": "curious", "first_mes": "Hi!"},
}


@pytest.fixture(scope="module", autouse=True)
def _warm():
    warm_up_interpreter()


@pytest.fixture
def service(tmp_path):
    service = make_service(resume_grace_s=5.0, personas_dir=str(tmp_path / "personas"), token=None)
    yield service
    service.pool.shutdown(wait=True)


def _form(data: bytes, filename: str, field: str = "card") -> aiohttp.FormData:
    form = aiohttp.FormData()
    form.add_field(field, data, filename=filename, content_type="application/octet-stream")
    return form


async def test_list_has_every_builtin_with_a_portrait_png(service):
    async with running(service) as server, aiohttp.ClientSession() as http:
        async with http.get(server.http_url + "/persona/personas") as response:
            assert response.status == 200
            personas = await response.json()
        ids = [p["id"] for p in personas]
        assert set(builtin_persona_ids()) <= set(ids) and len(ids) >= 6
        assert all(p["builtin"] and p["name"] and "description" in p for p in personas)
        async with http.get(server.http_url + personas[0]["portrait"]) as response:
            assert response.status == 200 and response.headers["Content-Type"] == "image/png"
            assert (await response.read()).startswith(b"\x89PNG")
        async with http.get(server.http_url + "/persona/personas/nobody/portrait.png") as response:
            assert response.status == 404


async def test_imported_card_is_listed_and_usable_in_hello(service):
    async with running(service) as server, aiohttp.ClientSession() as http:
        data = json.dumps(GOOD_CARD).encode()
        async with http.post(server.http_url + "/persona/personas", data=_form(data, "tess.json")) as response:
            assert response.status == 201, await response.text()
            created = await response.json()
        assert created == {"id": "tess-tester", "name": "Tess Tester", "warnings": []}
        async with http.get(server.http_url + "/persona/personas") as response:
            listed = {p["id"]: p for p in await response.json()}
        assert listed["tess-tester"]["builtin"] is False
        async with http.get(server.http_url + listed["tess-tester"]["portrait"]) as response:
            assert response.status == 200
        async with websockets.connect(server.ws_url, open_timeout=TIMEOUT, max_size=None) as ws:
            ready = await hello(ws, persona="tess-tester")
            assert ready["type"] == "ready" and ready["persona"]["name"] == "Tess Tester"
            await next_frame(ws)
            await ws.send(json.dumps({"type": "chat", "id": "c1", "text": "hello"}))
            reply = await wait_for_type(ws, "reply", reply_to="c1", done=True, timeout=30)
            assert reply["text"]


async def test_card_whose_reference_finds_nothing_imports_without_it_and_says_so(service, tmp_path):
    """Decided: an optional photo that finds nothing (here: an upload naming a file on the
    server, which it may never read) costs the card its anchoring, not the import. The 201
    carries the warning for the UI; the stored card no longer names the file."""
    from PIL import Image

    from comfyui_persona.persona.cards import EXTENSION_KEY, REFERENCE_FIELD

    Image.new("RGB", (8, 8), "red").save(tmp_path / "server-file.png")
    card = json.loads(json.dumps(GOOD_CARD))
    card["data"]["extensions"] = {EXTENSION_KEY: {"appearance": {"reference_image": str(tmp_path / "server-file.png")}}}
    async with running(service) as server, aiohttp.ClientSession() as http:
        form = _form(json.dumps(card).encode(), "tess.json")
        async with http.post(server.http_url + "/persona/personas", data=form) as response:
            assert response.status == 201, await response.text()
            created = await response.json()
        assert created["id"] == "tess-tester"
        (warning,) = created["warnings"]
        assert "tess.json" in warning and REFERENCE_FIELD in warning and "upload" in warning
        async with http.get(server.http_url + "/persona/personas") as response:
            assert "tess-tester" in {p["id"] for p in await response.json()}
    stored = json.loads((tmp_path / "personas" / "tess-tester.json").read_text())
    assert stored["data"]["extensions"][EXTENSION_KEY]["appearance"]["reference_image"] is None


@pytest.mark.parametrize(
    ("data", "filename", "says"),
    [
        (b"{not json", "broken.json", "not valid JSON"),
        (json.dumps({"spec": "chara_card_v2", "data": {}}).encode(), "empty.json", "data.name"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "broken.png", "broken.png: PNG chunk"),
        ("plain-png", "photo.png", "photo.png"),
        (b"hello world", "notes.txt", "not a character card"),
        (b"", "empty.json", "empty"),
    ],
)
async def test_bad_card_is_a_400_bad_card_naming_the_problem(service, data, filename, says):
    if data == "plain-png":  # a real picture with no card inside
        import io

        from PIL import Image

        buffer = io.BytesIO()
        Image.new("RGB", (8, 8), "red").save(buffer, format="PNG")
        data = buffer.getvalue()
    async with running(service) as server, aiohttp.ClientSession() as http:
        async with http.post(server.http_url + "/persona/personas", data=_form(data, filename)) as response:
            assert response.status == 400
            body = await response.json()
        assert body["code"] == "bad_card" and says in body["message"], body
        async with http.get(server.http_url + "/persona/personas") as response:
            assert all(p["builtin"] for p in await response.json())


async def test_upload_without_card_field_or_multipart_is_rejected(service):
    async with running(service) as server, aiohttp.ClientSession() as http:
        async with http.post(server.http_url + "/persona/personas", data=_form(b"{}", "x.json", "file")) as response:
            assert response.status == 400 and "'card'" in (await response.json())["message"]
        async with http.post(server.http_url + "/persona/personas", json=GOOD_CARD) as response:
            assert response.status == 400 and "multipart" in (await response.json())["message"]


async def test_import_needs_the_token_when_the_server_has_one(tmp_path):
    service = make_service(personas_dir=str(tmp_path / "personas"), token="s3cret")
    try:
        async with running(service) as server, aiohttp.ClientSession() as http:
            data = json.dumps(GOOD_CARD).encode()
            url = server.http_url + "/persona/personas"
            async with http.post(url, data=_form(data, "tess.json")) as response:
                assert response.status == 401
            async with http.post(url + "?token=s3cret", data=_form(data, "tess.json")) as response:
                assert response.status == 201
    finally:
        service.pool.shutdown(wait=True)
