"""A real persona server on port 0 in this process, for the server, protocol, fuzz and browser tests.

aiohttp's testing style (STYLE.md §5): the real app on a free port, real clients, explicit
timeouts on every await, and a guard against blocking calls on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from comfyui_persona.headless.runner import WorkflowGraph, load_workflow
from comfyui_persona.headless.server import PersonaService, ServerConfig, create_app
from comfyui_persona.headless.server.site import start_server
from comfyui_persona.nodes import NODE_CLASS_MAPPINGS
from paths import REPO

WORKFLOW = REPO / "workflows" / "persona_preview_chat.json"
TIMEOUT = 10.0

_GRAPH: WorkflowGraph | None = None


def preview_graph() -> WorkflowGraph:
    """The saved preview workflow, built once per test process (node objects are stateless)."""
    global _GRAPH
    if _GRAPH is None:
        _GRAPH = WorkflowGraph(load_workflow(WORKFLOW, NODE_CLASS_MAPPINGS), NODE_CLASS_MAPPINGS)
    return _GRAPH


_WARM = False


def warm_up_interpreter() -> None:
    """Load the embedded interpreter's models once per process (seconds on a busy 2-core box)."""
    global _WARM
    if not _WARM:
        service = PersonaService(preview_graph(), ServerConfig())
        try:
            service.warm_up()
        finally:
            service.pool.shutdown()
        _WARM = True


def service_fixtures(*, recordings: bool = False, **options):
    """A test module's `service` fixture (a fresh `make_service(**options)` per test, its
    pool shut down after; `recordings`: recording into the test's tmp_path) and an autouse
    fixture warming the interpreter once per module:
    `service, _warm = service_fixtures(resume_grace_s=5.0)`."""

    @pytest.fixture(name="service")
    def service(tmp_path):
        extra = {"recordings_dir": str(tmp_path / "recordings")} if recordings else {}
        made = make_service(**options, **extra)
        yield made
        made.pool.shutdown(wait=True)

    @pytest.fixture(scope="module", autouse=True, name="_warm")
    def warm():
        warm_up_interpreter()

    return service, warm


class _LoopbackURLs:
    port: int

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/persona/ws"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@dataclass
class RunningServer(_LoopbackURLs):
    service: PersonaService
    port: int


def make_service(**config) -> PersonaService:
    """Build outside the event loop: building reads files (cards, workflow)."""
    return PersonaService(preview_graph(), ServerConfig(**config))


@contextlib.asynccontextmanager
async def running(service: PersonaService) -> AsyncIterator[RunningServer]:
    """The service on a free port behind the same gate `persona serve` uses."""
    app = await asyncio.to_thread(create_app, service)
    runner, port = await asyncio.wait_for(start_server(app, "127.0.0.1", 0, service.gate), TIMEOUT)
    try:
        yield RunningServer(service, port)
    finally:
        await asyncio.wait_for(runner.cleanup(), 30)


async def recv_json(ws, timeout: float = TIMEOUT, skip=("metrics", "state")) -> dict:
    """The next JSON message (binary frames and the given periodic types skipped)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        remaining = deadline - loop.time()
        if remaining <= 0:
            raise asyncio.TimeoutError(f"no JSON message within {timeout} s")
        data = await asyncio.wait_for(ws.recv(), remaining)
        if isinstance(data, bytes):
            continue
        message = json.loads(data)
        if message.get("type") in skip:
            continue
        return message


async def wait_for_type(ws, kind: str, timeout: float = TIMEOUT, **match) -> dict:
    """Skip messages until one of `kind` (with the given field values) arrives."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        message = await recv_json(ws, max(0.01, deadline - loop.time()), skip=())
        if message["type"] == kind and all(message.get(k) == v for k, v in match.items()):
            return message


async def next_frame(ws, timeout: float = TIMEOUT) -> bytes:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        data = await asyncio.wait_for(ws.recv(), max(0.01, deadline - loop.time()))
        if isinstance(data, bytes):
            return data


async def hello(ws, **fields) -> dict:
    await ws.send(json.dumps({"type": "hello", **fields}))
    return await recv_json(ws)


async def settle(predicate, timeout: float = TIMEOUT) -> None:
    """Wait (polling) until `predicate()` holds: for cleanup that finishes after a close."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


@dataclass
class ServeProcess(_LoopbackURLs):
    """A `persona serve` subprocess (`serve_process`)."""

    process: asyncio.subprocess.Process
    port: int


@contextlib.asynccontextmanager
async def serve_process(*args: str, env: dict | None = None, stderr=None, preexec_fn=None) -> AsyncIterator[ServeProcess]:
    """`persona serve --port 0 --no-warm-up --quiet ARGS` in a subprocess (the real CLI, its
    own event loop and cores); stopped with SIGTERM (then SIGKILL) after the block."""
    import os
    import re
    import sys

    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "comfyui_persona.headless", "serve", "--port", "0", "--no-warm-up", "--quiet", *args,
        cwd=REPO, stdout=asyncio.subprocess.PIPE, stderr=stderr if stderr is not None else asyncio.subprocess.DEVNULL,
        env={**os.environ, **(env or {})}, preexec_fn=preexec_fn,
    )
    try:
        line = (await asyncio.wait_for(process.stdout.readline(), 120)).decode()
        found = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
        assert found, f"persona serve did not start: {line!r} (exit {process.returncode})"
        yield ServeProcess(process, int(found.group(1)))
    finally:
        if process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), 30)
            except asyncio.TimeoutError:
                process.kill()
                await asyncio.wait_for(process.wait(), 30)
