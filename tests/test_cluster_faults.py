"""Faults only a cluster of separate processes shows: a second ingress *process* resuming a
session, and the Ray head going away under running ingresses.

The cluster here is a real `ray start --head --block` process (its temp dir under pytest's,
ended by its process id); `persona deploy --cluster ADDRESS` deploys the replicas and serves
one ingress, `persona deploy --attach` a second, each in its own process as a user runs them.
This test process never joins the cluster: Ray ends a driver whose head has been gone for a
minute, and that must be an ingress under test, not pytest.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
import websockets
from test_cluster import VIDEO, open_session

from paths import REPO
from server_harness import next_frame, recv_json, wait_for_type

SLOW = 90.0

pytestmark = [
    pytest.mark.timeout(300),
    pytest.mark.filterwarnings("ignore:The `metrics_interval_s` field:DeprecationWarning"),
]


@dataclass
class Head:
    address: str
    process: subprocess.Popen
    env: dict


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _stop(process: subprocess.Popen, timeout: float = 60.0) -> int | None:
    """SIGTERM our own child, then SIGKILL if it does not go; its exit code."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            return process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
    return process.wait(30)


@pytest.fixture(scope="module")
def head(tmp_path_factory):
    ray_tmp = tmp_path_factory.mktemp("rh")  # short: Ray's socket paths must fit 107 bytes
    port = _free_port()
    # Token auth off for this private one-machine cluster (it listens on 127.0.0.1 only); on
    # SIGTERM the head drains for a second, not Ray's 30 (the stop is the point of the test).
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "1"}
    log = (ray_tmp / "head.log").open("w")
    process = subprocess.Popen(
        [str(Path(sys.executable).parent / "ray"), "start", "--head", "--block", f"--port={port}",
         "--node-ip-address=127.0.0.1", f"--temp-dir={ray_tmp}", "--num-cpus=4", "--include-dashboard=false",
         "--disable-usage-stats"], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + SLOW
        while "Ray runtime started" not in (ray_tmp / "head.log").read_text():
            assert process.poll() is None, (ray_tmp / "head.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "ray start --head did not start"
            time.sleep(0.2)
        yield Head(f"127.0.0.1:{port}", process, env)
    finally:
        _stop(process)
        log.close()


@contextlib.contextmanager
def _ingress_process(head: Head, folder: Path, *extra: str):
    """`persona deploy` on the test's head, as a user runs it: (process, port, stderr file),
    stopped on leaving."""
    stderr_path = folder / "stderr.log"
    with stderr_path.open("w") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "comfyui_persona.headless", "deploy", "--cluster", head.address, "--app-name",
             "persona-faults", "--port", "0", "--replica-host", "127.0.0.1", "--no-speech", "--retry-after-s", "3",
             "--cluster-check-period-s", "1", "--cluster-check-timeout-s", "3", *extra],
            cwd=REPO, env=head.env, stdout=subprocess.PIPE, stderr=stderr, text=True)
        try:
            line = process.stdout.readline()
            match = re.search(r"persona deploy: http://127\.0\.0\.1:(\d+)/", line)
            if not match:
                pytest.fail(f"persona deploy did not start: {line}{stderr_path.read_text()[-3000:]}")
            yield process, int(match.group(1)), stderr_path
        finally:
            _stop(process)
            process.stdout.close()


@pytest.fixture(scope="module")
def first_ingress(head, tmp_path_factory):
    """`persona deploy` (one preview replica) on the test's head: the deployment and its ingress."""
    folder = tmp_path_factory.mktemp("first")
    with _ingress_process(
        head, folder, "--replicas", "1", "--replica-cpus", "0.5", "--no-warm-up", "--resume-grace-s", "60",
        "--queue-timeout-s", str(SLOW), "--recordings-dir", str(folder / "recordings"),
    ) as ingress:
        yield ingress


@pytest.fixture(scope="module")
def second_ingress(head, first_ingress, tmp_path_factory):
    """`persona deploy --attach` on the same cluster: a separate ingress process, no replicas."""
    with _ingress_process(head, tmp_path_factory.mktemp("second"), "--attach") as ingress:
        yield ingress


async def test_a_session_resumes_with_its_history_through_another_ingress_process(first_ingress, second_ingress):
    """The session directory is a detached actor: an ingress in another process, which never
    saw the session, finds its replica by name and the client gets it back, history included."""
    _, port, _ = first_ingress
    _, other_port, _ = second_ingress
    ws, ready = await open_session(port)
    try:
        await ws.send(json.dumps({"type": "chat", "id": "c1", "text": "please wave at me"}))
        await wait_for_type(ws, "reply", SLOW, reply_to="c1", done=True)
    finally:
        await ws.close()
    async with websockets.connect(f"ws://127.0.0.1:{other_port}/persona/ws", max_size=None, open_timeout=SLOW) as again:
        await again.send(json.dumps({"type": "hello", "video": VIDEO, "session": ready["session"]}))
        resumed = await recv_json(again, SLOW)
        assert resumed["type"] == "ready", resumed
        assert resumed["resumed"] is True and resumed["session"] == ready["session"]
        assert resumed["replica"] == ready["replica"]  # its own replica, found in the directory
        assert [(e["role"], e["text"]) for e in resumed["history"]][:1] == [("user", "please wave at me")]
        assert any(e["role"] == "persona" and e["done"] and e["text"] for e in resumed["history"])
        await next_frame(again, SLOW)
        await again.send(json.dumps({"type": "chat", "id": "c2", "text": "now smile"}))
        await wait_for_type(again, "reply", SLOW, reply_to="c2", done=True)


async def test_the_ray_head_going_away_is_reported_and_new_sessions_are_refused(head, first_ingress, second_ingress):
    process, port, stderr_path = second_ingress
    base = f"http://127.0.0.1:{port}"
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{base}/health") as answer:
            assert answer.status == 200 and (await answer.json())["ray"] == "up"
        # The head stops (`ray start --block` ends its processes on SIGTERM, as `ray stop` would).
        stop_started = time.monotonic()
        await asyncio.to_thread(_stop, head.process)
        stopped_at = time.monotonic()
        deadline = time.monotonic() + SLOW
        while True:
            async with http.get(f"{base}/health") as answer:
                health = await answer.json()
                if answer.status == 503:
                    break
            assert time.monotonic() < deadline, health
            await asyncio.sleep(0.2)
        noticed_s = time.monotonic() - stopped_at
        assert health["status"] == "unavailable" and health["ray"] == "down"
        assert "Ray cluster" in health["message"] and "new sessions are refused" in health["message"]
        assert answer.headers["Retry-After"] == "3"
        async with http.get(f"{base}/metrics") as answer:
            assert "persona_cluster_up 0" in await answer.text()
    # A new session and a resumed one: both refused at once with the reason, not left waiting.
    for fields in ({}, {"session": "A" * 24}):
        asked_at = time.monotonic()
        async with websockets.connect(f"ws://127.0.0.1:{port}/persona/ws", max_size=None, open_timeout=SLOW) as ws:
            await ws.send(json.dumps({"type": "hello", "video": VIDEO, **fields}))
            refused = await recv_json(ws, SLOW)
            assert refused["type"] == "error" and refused["code"] == "busy" and refused["fatal"] is True, refused
            assert "Ray cluster" in refused["message"] and refused["retry_after_s"] == 3
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), SLOW)
            assert closed.value.rcvd.code == 1013
        refused_s = time.monotonic() - asked_at
    print(f"head gone: stopping it took {stopped_at - stop_started:.2f} s; the ingress's /health said 503 "
          f"{noticed_s:.2f} s after; a new session refused in {refused_s:.3f} s")
    # The ingress still stops when asked, at once and saying why (no wait on the head that is gone).
    asked_at = time.monotonic()
    code = await asyncio.to_thread(_stop, process, SLOW)
    print(f"ingress stopped {time.monotonic() - asked_at:.2f} s after SIGTERM")
    assert code == 1
    assert "persona deploy: stopped without the Ray cluster" in stderr_path.read_text()
    # So does the ingress that deployed the replicas.
    first, _, first_stderr = first_ingress
    assert await asyncio.to_thread(_stop, first, SLOW) == 1
    assert "persona deploy: stopped without the Ray cluster" in first_stderr.read_text()
