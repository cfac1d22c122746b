"""Start the headless server: the app on a socket behind the `ConnectionGate`.

One function for `persona serve` and the tests, so the tests exercise the same guarded
socket a user runs (caps, idle timeout) and read back the port the OS chose for port 0.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from .guard import security_headers
from .limits import ConnectionGate

__all__ = ["GatedSite", "gated_app", "start_server"]


def gated_app(gate: ConnectionGate) -> web.Application:
    """An app whose middleware puts the security headers on every answer, the ones aiohttp
    makes itself (404, 405) included, and tells `gate` when a request (a WebSocket too) is in
    progress: the idle timeout runs only between requests. `persona serve` and the cluster's
    ingress are built on it."""

    @web.middleware
    async def headers(request: web.Request, handler):
        gate.request_started(request.transport)
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            security_headers(exc)
            raise
        finally:
            gate.request_finished(request.transport)
        security_headers(response)
        return response

    return web.Application(middlewares=[headers], client_max_size=1024 * 1024)


class GatedSite(web.TCPSite):
    """A TCP site whose connections pass the gate before aiohttp's handler sees them."""

    def __init__(self, runner: web.BaseRunner, host: str, port: int, gate: ConnectionGate) -> None:
        super().__init__(runner, host, port, backlog=512)
        self.gate = gate

    async def start(self) -> None:
        await web.BaseSite.start(self)  # registers the site with the runner (its cleanup stops it)
        server = self._runner.server
        assert server is not None, "call runner.setup() first"
        self._server = await asyncio.get_running_loop().create_server(
            self.gate.protocol_factory(server), self._host, self._port, backlog=self._backlog, reuse_address=True
        )

    @property
    def port(self) -> int:
        sockets = self._server.sockets if self._server is not None else []
        return sockets[0].getsockname()[1] if sockets else self._port


async def start_server(app: web.Application, host: str, port: int, gate: ConnectionGate) -> tuple[web.AppRunner, int]:
    """Serve `app` on host:port (0: any free port); returns the runner (to `cleanup()`) and the port."""
    runner = web.AppRunner(app, access_log=None, keepalive_timeout=gate.idle_timeout_s)
    await runner.setup()
    site = GatedSite(runner, host, port, gate)
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner, site.port
