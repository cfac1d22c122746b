"""The chat socket's own caps (`OpenSockets`, headless/server/limits.py), where no
`ConnectionGate` stands in front: the routes mounted on a plain aiohttp app, as ComfyUI's
server mounts them. One address gets `max_connections_per_ip` sockets, every address together
`max_connections`; a closed socket frees its place."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from aiohttp import web

from comfyui_persona.headless.server.service import add_routes, policy_for
from server_harness import TIMEOUT, make_service, settle


async def test_chat_sockets_are_capped_per_address_and_in_all_without_a_gate():
    service = make_service(max_connections=2, max_connections_per_ip=1)
    app = web.Application()
    add_routes(app.router, service, policy_for(service.config))
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    url = f"http://127.0.0.1:{port}/persona/ws"
    try:
        async with aiohttp.ClientSession() as local, aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(local_addr=("127.0.0.2", 0))) as other, aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(local_addr=("127.0.0.3", 0))) as third:
            first = await asyncio.wait_for(local.ws_connect(url), TIMEOUT)
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await asyncio.wait_for(local.ws_connect(url), TIMEOUT)
            assert refused.value.status == 503
            second = await asyncio.wait_for(other.ws_connect(url), TIMEOUT)  # another address: its own place
            with pytest.raises(aiohttp.WSServerHandshakeError) as full:
                await asyncio.wait_for(third.ws_connect(url), TIMEOUT)  # but two in all
            assert full.value.status == 503
            await first.close()
            await settle(lambda: service.sockets.total == 1)
            again = await asyncio.wait_for(local.ws_connect(url), TIMEOUT)
            for ws in (again, second):
                await ws.close()
            await settle(lambda: service.sockets.total == 0)
    finally:
        await service.close()
        await runner.cleanup()
        service.pool.shutdown(wait=True)
