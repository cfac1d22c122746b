"""The same attacks against the pack's routes inside a real ComfyUI 0.3.75.

ComfyUI's own origin middleware lets `Origin: null` through and skips its check when Host is
not a loopback name, so the pack's handlers check for themselves (headless/server/guard.py).
"""

from __future__ import annotations

import aiohttp
import pytest

pytestmark = [pytest.mark.comfyui, pytest.mark.slow]

CARD = b'{"spec": "chara_card_v2", "spec_version": "2.0", "data": {"name": "Planted", "description": "x"}}'


async def _ws_status(url: str, **headers: str) -> int:
    async with aiohttp.ClientSession() as http:
        try:
            async with http.ws_connect(url, headers=headers) as ws:
                await ws.close()
                return 101
        except aiohttp.WSServerHandshakeError as exc:
            return exc.status


async def _upload(url: str, **headers: str) -> int:
    form = aiohttp.FormData()
    form.add_field("card", CARD, filename="planted.json", content_type="application/json")
    async with aiohttp.ClientSession() as http, http.post(url, data=form, headers=headers) as response:
        return response.status


async def test_foreign_null_and_rebinding_requests_are_refused_inside_comfyui(comfyui_server):
    port = comfyui_server.rsplit(":", 1)[1]
    ws = comfyui_server.replace("http://", "ws://") + "/persona/ws"
    cards = f"{comfyui_server}/persona/personas"
    assert await _ws_status(ws, Origin="https://evil.example") == 403
    assert await _ws_status(ws, Origin="null") == 403
    assert await _upload(cards, Origin="null") == 403
    assert await _upload(cards, Origin="https://evil.example") == 403
    rebinding = {"Host": f"evil.example:{port}", "Origin": f"http://evil.example:{port}"}
    assert await _ws_status(ws, **rebinding) in (403, 421)
    assert await _upload(cards, **rebinding) in (403, 421)
    async with aiohttp.ClientSession() as http, http.get(f"{comfyui_server}/persona/personas") as listing:
        assert "planted" not in {p["id"] for p in await listing.json()}
    # ComfyUI's own page (same origin) still opens the chat.
    assert await _ws_status(ws, Origin=comfyui_server) == 101
