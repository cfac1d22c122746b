"""What the pack does only inside a running ComfyUI: chat routes on PromptServer, progress.

Nothing here imports ComfyUI. ComfyUI's `main.py` imports its `server` module and creates
`PromptServer.instance` before it loads custom nodes, so "are we inside ComfyUI?" is
answered by looking at `sys.modules`, never by importing: the headless runner (which
imports the same node modules) and a plain `import comfyui_persona` stay ComfyUI-free,
and an unrelated top-level module called `server` elsewhere is never mistaken for it.

Inside ComfyUI the `/persona/ws` chat protocol, `/persona/health`, `/persona/metrics`,
the chat page `/persona/` and its scripts `/persona/static/...` are served by ComfyUI's
own aiohttp server, with the very handlers the headless server uses (`add_routes`). The
sidebar panel (web_extension/) imports the protocol client from `/persona/static/`, so
one file serves both the headless page and the panel.
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

log = logging.getLogger("comfyui_persona.comfyui")

#: Workflow the ComfyUI-hosted chat service runs (override with $PERSONA_COMFY_WORKFLOW).
WORKFLOW_ENV = "PERSONA_COMFY_WORKFLOW"
DEFAULT_WORKFLOW = Path(__file__).resolve().parent.parent / "workflows" / "persona_preview_chat.json"
_MARK = "_comfyui_persona_routes"


def prompt_server() -> Any | None:
    """ComfyUI's running `PromptServer`, or None outside ComfyUI (imports nothing)."""
    module = sys.modules.get("server")
    server_class = getattr(module, "PromptServer", None)
    return getattr(server_class, "instance", None)


def register_with_comfyui() -> None:
    """Everything the pack sets up in a running ComfyUI; a no-op anywhere else."""
    register_models_folder()
    register_routes()


def register_models_folder(name: str = "persona") -> bool:
    """Add ComfyUI/models/<name>/ as a model folder (extra_model_paths.yaml may add more)."""
    folder_paths = sys.modules.get("folder_paths")
    if folder_paths is None or prompt_server() is None and "comfy.utils" not in sys.modules:
        return False
    folder_paths.add_model_folder_path(name, os.path.join(folder_paths.models_dir, name), is_default=True)
    return True


def register_routes(server: Any | None = None, workflow: str | os.PathLike | None = None) -> bool:
    """Mount the persona routes on ComfyUI's server; True when mounted by this call.

    Does nothing (False) outside ComfyUI or when a copy of the pack already mounted them
    (two installs of the pack must not fight over `/persona/ws`). The chat service itself
    is built on the first request, so ComfyUI's start-up pays nothing for it.
    """
    server = server if server is not None else prompt_server()
    if server is None or getattr(server, _MARK, False):
        return False
    from ..headless.server import add_routes

    path = Path(workflow or os.environ.get(WORKFLOW_ENV) or DEFAULT_WORKFLOW)
    service = LazyService(lambda: _build_service(path))
    add_routes(server.routes, service, root_pages=False)
    app = getattr(server, "app", None)
    if app is not None:
        app.on_shutdown.append(service.shutdown)
    setattr(server, _MARK, True)
    log.info("comfyui-persona: chat at /persona/ (workflow %s)", path.name)
    return True


def _build_service(path: Path):
    from ..headless.runner import WorkflowGraph, load_workflow
    from ..headless.server import PersonaService
    from . import NODE_CLASS_MAPPINGS

    graph = WorkflowGraph(load_workflow(path, NODE_CLASS_MAPPINGS), NODE_CLASS_MAPPINGS)
    return PersonaService(graph)


class LazyService:
    """Stands in for a `PersonaService` until the first request builds the real one.

    `add_routes` only takes the service's `handle_*` coroutines, so this object offers
    each of them as a coroutine that builds the service (once, off the event loop: it
    loads the workflow and the persona library) and delegates.
    """

    def __init__(self, build: Callable[[], Any]) -> None:
        self._build = build
        self._service: Any = None
        self._lock = threading.Lock()

    def _get(self) -> Any:
        with self._lock:
            if self._service is None:
                self._service = self._build()
            return self._service

    async def service(self) -> Any:
        if self._service is not None:
            return self._service
        return await asyncio.get_running_loop().run_in_executor(None, self._get)

    def __getattr__(self, name: str) -> Any:
        if not name.startswith("handle_"):
            raise AttributeError(name)

        async def handler(request):
            service = await self.service()
            return await getattr(service, name)(request)

        handler.__name__ = name
        return handler

    async def shutdown(self, app: Any = None) -> None:
        """Close the sessions when ComfyUI's server stops (registered on `app.on_shutdown`)."""
        if self._service is not None:
            await self._service.close()


class _NoProgress:
    """Progress sink outside a ComfyUI run (headless runner, tests): records nothing."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.current = 0

    def update(self, value: int) -> None:
        self.current = min(self.total, self.current + value)

    def update_absolute(self, value: int, total: int | None = None) -> None:
        if total is not None:
            self.total = total
        self.current = min(self.total, value)


def progress(total: int) -> Any:
    """A progress bar for the node that is running now: `update(n)` / `update_absolute(v)`.

    Inside a ComfyUI run this is `comfy.utils.ProgressBar`, whose hook sends `progress`
    messages to the UI (the green bar on the node), feeds ComfyUI's progress registry and
    raises ComfyUI's interrupt exception when the user cancels. Anywhere else, or inside
    ComfyUI's process but outside a queued run (the chat service's own ticks), it is a
    silent stand-in, so no stray progress is reported against an unrelated node.
    """
    utils = sys.modules.get("comfy.utils")
    context = sys.modules.get("comfy_execution.utils")
    if utils is None or context is None or context.get_executing_context() is None:
        return _NoProgress(total)
    return utils.ProgressBar(total)


def models_folder(kind: str) -> list[Path]:
    """ComfyUI's folders for model `kind` ("diffusion_models", "loras", ...); [] outside ComfyUI."""
    folder_paths = sys.modules.get("folder_paths")
    if folder_paths is None:
        return []
    try:
        return [Path(p) for p in folder_paths.get_folder_paths(kind)]
    except KeyError:
        return []


def output_directory() -> Path | None:
    """ComfyUI's output folder (`--output-directory`), or None outside ComfyUI."""
    folder_paths = sys.modules.get("folder_paths")
    return Path(folder_paths.get_output_directory()) if folder_paths is not None else None
