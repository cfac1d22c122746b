"""The pack's chat service inside a running ComfyUI: `/persona/...` routes on PromptServer.

Inside ComfyUI the `/persona/ws` chat protocol, `/persona/health`, `/persona/metrics`,
the chat page `/persona/` and its scripts `/persona/static/...` are served by ComfyUI's
own aiohttp server, with the very handlers the headless server uses (`add_routes`). The
sidebar panel (web_extension/) imports the protocol client from `/persona/static/`, so
one file serves both the headless page and the panel. The root `__init__.py` calls
`register_with_comfyui` when ComfyUI loads the pack; outside ComfyUI it does nothing.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import PersonaError
from ..nodes.comfy_env import prompt_server, register_models_folder

log = logging.getLogger("comfyui_persona.comfyui")

#: Workflow the ComfyUI-hosted chat service runs (override with $PERSONA_COMFY_WORKFLOW).
WORKFLOW_ENV = "PERSONA_COMFY_WORKFLOW"
#: Comma-separated origins / host names allowed besides ComfyUI's own (docs/security.md).
ORIGINS_ENV = "PERSONA_ALLOWED_ORIGINS"
HOSTS_ENV = "PERSONA_ALLOWED_HOSTS"
DEFAULT_WORKFLOW = Path(__file__).resolve().parent.parent / "workflows" / "persona_preview_chat.json"
_MARK = "_comfyui_persona_routes"


def register_with_comfyui() -> None:
    """Everything the pack sets up in a running ComfyUI; a no-op anywhere else."""
    register_models_folder()
    register_routes()


def register_routes(server: Any | None = None, workflow: str | os.PathLike | None = None) -> bool:
    """Mount the persona routes on ComfyUI's server; True when mounted by this call.

    Does nothing (False) outside ComfyUI or when a copy of the pack already mounted them
    (two installs of the pack must not fight over `/persona/ws`). The chat service itself
    is built on the first request, so ComfyUI's start-up pays nothing for it.
    """
    server = server if server is not None else prompt_server()
    if server is None or getattr(server, _MARK, False):
        return False
    from .server import ServerConfig, add_routes
    from .server.guard import AccessPolicy
    from .server.logs import install

    install(ServerConfig().log_repeats, on_root_handlers=False)
    path = Path(workflow or os.environ.get(WORKFLOW_ENV) or DEFAULT_WORKFLOW)
    service = LazyService(lambda: _build_service(path, server))
    policy = AccessPolicy(None, allowed_origins(), _env_list(HOSTS_ENV))
    add_routes(server.routes, service, policy, root_pages=False)
    app = getattr(server, "app", None)
    if app is not None:
        app.on_shutdown.append(service.shutdown)
    setattr(server, _MARK, True)
    log.info("comfyui-persona: chat at /persona/ (workflow %s)", path.name)
    return True


def _env_list(name: str) -> list[str]:
    return [item.strip() for item in os.environ.get(name, "").split(",") if item.strip()]


def allowed_origins() -> list[str]:
    """Origins whose pages may use the chat routes besides ComfyUI's own page: $PERSONA_ALLOWED_ORIGINS,
    and the origin ComfyUI itself was told to allow (`--enable-cors-header ORIGIN`; not `*`)."""
    origins = _env_list(ORIGINS_ENV)
    cli_args = getattr(sys.modules.get("comfy.cli_args"), "args", None)
    cors = getattr(cli_args, "enable_cors_header", None)
    if isinstance(cors, str) and cors.strip() and cors.strip() != "*":
        origins.append(cors.strip())
    return origins


def _build_service(path: Path, server: Any | None = None):
    """The chat service of a running ComfyUI: every session's workflow runs as prompts in
    ComfyUI's own queue (`QueuePrompts`), with ComfyUI's node registry (core and every pack),
    on the process-wide session store its executor's nodes use; recordings go to ComfyUI's
    output folder (`--output-directory`)."""
    from ..nodes.comfy_env import output_directory
    from ..nodes.runtime import default_store
    from .runner import load_workflow
    from .runner.comfy_host import QueuePrompts
    from .runner.hosts import PromptHosts
    from .server import PersonaService, ServerConfig

    server = server if server is not None else prompt_server()
    registry = sys.modules["nodes"].NODE_CLASS_MAPPINGS
    hosts = PromptHosts(load_workflow(path, registry), registry, QueuePrompts.of(server), default_store(),
                        trusted_uploads=True)  # the canvas's user is ComfyUI's operator
    output = output_directory()
    config = ServerConfig(recordings_dir=str(output / "persona" / "recordings") if output else None)
    return PersonaService(hosts, config, store=default_store())


class LazyService:
    """Stands in for a `PersonaService` until the first request builds the real one.

    `add_routes` only takes the service's `handle_*` coroutines, so this object offers
    each of them as a coroutine that builds the service (once, off the event loop: it
    loads the workflow and the persona library) and delegates.
    """

    def __init__(self, build: Callable[[], Any]) -> None:
        self._build = build
        self._service: Any = None
        self._lock = threading.Lock()  # held while building: a shutdown waits for a build under way
        self._closed = False

    def _get(self) -> Any:
        with self._lock:
            if self._closed:
                raise ServiceClosedError("the persona chat service is shutting down with ComfyUI's server")
            if self._service is None:
                self._service = self._build()
            return self._service

    def _close_and_take(self) -> Any:
        with self._lock:
            self._closed = True
            return self._service

    async def service(self) -> Any:
        if self._service is not None and not self._closed:
            return self._service
        return await asyncio.get_running_loop().run_in_executor(None, self._get)

    def __getattr__(self, name: str) -> Any:
        if not name.startswith("handle_"):
            raise AttributeError(name)

        async def handler(request):
            try:
                service = await self.service()
            except ServiceClosedError as exc:
                from aiohttp import web

                return web.json_response({"error": "unavailable", "message": str(exc)}, status=503)
            return await getattr(service, name)(request)

        handler.__name__ = name
        return handler

    async def shutdown(self, app: Any = None) -> None:
        """Close the sessions when ComfyUI's server stops (registered on `app.on_shutdown`):
        the tab's, and those of queued Runs (their renderers, their open recordings).

        A service still being built is waited for and closed too (off the event loop: the
        build holds the lock), and none is built after this."""
        from ..nodes.runtime import default_store

        loop = asyncio.get_running_loop()
        service = await loop.run_in_executor(None, self._close_and_take)
        if service is not None:
            await service.close()
        await loop.run_in_executor(None, default_store().close)


class ServiceClosedError(PersonaError, RuntimeError):
    """A request reached the chat routes after ComfyUI's server began shutting down."""
