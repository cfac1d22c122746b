"""Faults only a cluster of separate processes shows: a second ingress *process* resuming a
session, and the Ray head going away under a running ingress.

The cluster here is a real `ray start --head --block` process (its temp dir under pytest's,
ended by its process id), the replicas are deployed from this test process (a Ray driver),
and the second ingress is `persona deploy --attach` in its own process. Before the head is
stopped, this process leaves the cluster (`ray.shutdown`): Ray ends a driver whose head has
been gone for a minute, and that must be the ingress under test, not pytest.
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
import ray
import websockets
from ray import serve
from test_cluster import VIDEO, WORKFLOW, _until_checkpoint, ingress_on_port, open_session

from comfyui_persona.headless.cluster.deploy import deploy
from comfyui_persona.headless.cluster.settings import ClusterConfig
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


@pytest.fixture(scope="module")
def deployment(head, tmp_path_factory):
    config = ClusterConfig(
        cluster=head.address, app_name="persona-faults", replicas=1, max_sessions=4, replica_cpus=0.5,
        replica_host="127.0.0.1", speech=False, resume_grace_s=60.0, retry_after_s=3, queue_timeout_s=SLOW,
        cluster_check_period_s=1.0, cluster_check_timeout_s=3.0, drain_timeout_s=2.0,
        recordings_dir=str(tmp_path_factory.mktemp("recordings")))
    ray.init(address=head.address, namespace=config.namespace, log_to_driver=False)
    try:
        yield deploy(config, WORKFLOW, warm_up=False)
    finally:
        if ray.is_initialized():  # the head test leaves the cluster itself
            with contextlib.suppress(Exception):
                serve.shutdown()
            ray.shutdown()


@pytest.fixture(scope="module")
def second_ingress(head, deployment, tmp_path_factory):
    """`persona deploy --attach` on the same cluster: a separate ingress process."""
    config = deployment.config
    stderr_path = tmp_path_factory.mktemp("ingress") / "stderr.log"
    stderr = stderr_path.open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "comfyui_persona.headless", "deploy", "--attach", "--cluster", head.address,
         "--app-name", config.app_name, "--port", "0", "--replica-host", "127.0.0.1", "--no-speech",
         "--retry-after-s", str(config.retry_after_s), "--cluster-check-period-s", "1",
         "--cluster-check-timeout-s", "3"],
        cwd=REPO, env=head.env, stdout=subprocess.PIPE, stderr=stderr, text=True)
    try:
        line = process.stdout.readline()
        match = re.search(r"persona deploy: http://127\.0\.0\.1:(\d+)/", line)
        assert match, line + stderr_path.read_text()[-3000:]
        yield process, int(match.group(1)), stderr_path
    finally:
        _stop(process)
        process.stdout.close()
        stderr.close()


async def test_a_session_resumes_with_its_history_through_another_ingress_process(deployment, second_ingress):
    """The session directory is a detached actor: an ingress in another process, which never
    saw the session, finds its replica by name and the client gets it back, history included."""
    _, other_port, _ = second_ingress
    async with ingress_on_port(deployment) as (_, port):
        ws, ready = await open_session(port)
        await ws.send(json.dumps({"type": "chat", "id": "c1", "text": "please wave at me"}))
        await wait_for_type(ws, "reply", SLOW, reply_to="c1", done=True)
        checkpoint = await _until_checkpoint(deployment, ready["session"], replies=1)
        await ws.close()
    async with websockets.connect(f"ws://127.0.0.1:{other_port}/persona/ws", max_size=None, open_timeout=SLOW) as again:
        await again.send(json.dumps({"type": "hello", "video": VIDEO, "session": ready["session"]}))
        resumed = await recv_json(again, SLOW)
        assert resumed["type"] == "ready", resumed
        assert resumed["resumed"] is True and resumed["session"] == ready["session"]
        assert resumed["replica"] == ready["replica"]  # its own replica, found in the directory
        assert [e["text"] for e in resumed["history"]] == [e["text"] for e in checkpoint.history]
        assert "please wave at me" in [e["text"] for e in resumed["history"]]
        await next_frame(again, SLOW)
        await again.send(json.dumps({"type": "chat", "id": "c2", "text": "now smile"}))
        await wait_for_type(again, "reply", SLOW, reply_to="c2", done=True)


async def test_the_ray_head_going_away_is_reported_and_new_sessions_are_refused(head, deployment, second_ingress):
    process, port, stderr_path = second_ingress
    base = f"http://127.0.0.1:{port}"
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{base}/health") as answer:
            assert answer.status == 200 and (await answer.json())["ray"] == "up"
        # This process leaves the cluster, then the head stops (`ray start --block` ends its
        # processes on SIGTERM, as `ray stop` would).
        ray.shutdown()
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
