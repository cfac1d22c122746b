"""The ComfyUI-only setup stays out of the way outside ComfyUI, and the lazily built chat service.

Inside real ComfyUI the routes are checked by tests/test_comfyui_nodes.py; here: reading the
node mappings imports nothing of ComfyUI, mounts nothing, and progress bars are silent stand-ins.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys

from aiohttp import web

from comfyui_persona.headless import comfyui_routes
from comfyui_persona.headless.server import add_routes
from comfyui_persona.headless.server.guard import AccessPolicy
from comfyui_persona.nodes import comfy_env
from paths import REPO
from server_harness import make_service


def test_importing_the_nodes_outside_comfyui_imports_and_mounts_nothing_of_comfyui() -> None:
    code = (
        "import sys, comfyui_persona as pack; pack.NODE_CLASS_MAPPINGS; "
        "from comfyui_persona.nodes import comfy_env as c; "
        "from comfyui_persona.headless import comfyui_routes as r; "
        "bad = [m for m in ('server', 'folder_paths', 'comfy', 'comfy.utils', 'execution', 'torch') if m in sys.modules]; "
        "print(bad, c.prompt_server(), r.register_routes(), type(c.progress(3)).__name__, c.output_directory())"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[] None False _NoProgress None"


def test_progress_outside_a_comfyui_run_counts_quietly_up_to_its_total() -> None:
    bar = comfy_env.progress(2)
    for _ in range(3):
        bar.update(1)
    assert (bar.current, bar.total) == (2, 2)


async def test_chat_service_is_built_on_the_first_request_and_only_once(aiohttp_client) -> None:
    built = []

    def build():
        service = make_service()  # what is built does not matter here: when, and how often
        built.append(service)
        return service

    lazy = comfyui_routes.LazyService(build)
    app = web.Application()
    add_routes(app.router, lazy, AccessPolicy(), root_pages=False)
    app.on_shutdown.append(lazy.shutdown)
    assert built == [], "mounting must not build the service (ComfyUI's start-up pays nothing)"
    client = await aiohttp_client(app)
    answers = await asyncio.wait_for(
        asyncio.gather(*(client.get("/persona/health") for _ in range(3))), timeout=60
    )
    assert [a.status for a in answers] == [200, 200, 200]
    assert (await answers[0].json())["protocol"] == 1
    assert len(built) == 1
    assert (await client.get("/")).status == 404, "ComfyUI's root page is not ours to take"


async def test_shutdown_during_the_build_closes_that_service_and_builds_no_other(aiohttp_client) -> None:
    import threading

    started, release, closed = threading.Event(), threading.Event(), []

    class Service:
        async def handle_health(self, request):
            return web.json_response({"ok": True})

        async def close(self):
            closed.append(self)

    def build():
        started.set()
        release.wait(30)  # a slow first build (workflow, persona library)
        return Service()

    lazy = comfyui_routes.LazyService(build)
    app = web.Application()
    app.router.add_get("/health", lazy.handle_health)
    client = await aiohttp_client(app)
    first = asyncio.ensure_future(client.get("/health"))
    await asyncio.get_running_loop().run_in_executor(None, started.wait, 30)
    shutdown = asyncio.ensure_future(lazy.shutdown())
    await asyncio.sleep(0.05)
    assert not shutdown.done(), "shutdown waits for the build under way"
    release.set()
    await asyncio.wait_for(shutdown, 30)
    assert len(closed) == 1, "the service built during shutdown is closed"
    assert (await first).status == 200  # the request that started the build was answered
    late = await client.get("/health")
    assert late.status == 503 and (await late.json())["error"] == "unavailable"
    assert len(closed) == 1
