"""`persona deploy --cluster local` as a user runs it: a real process that starts its own Ray
cluster (temp dir under pytest's tmp), serves the protocol through its ingress, and leaves no
Ray process behind when it is stopped."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys

import websockets

from paths import REPO
from server_harness import next_frame, recv_json

SLOW = 90.0


def _ray_processes(marker: str) -> list[str]:
    """Command lines of live processes that mention `marker` (the test's Ray temp dir)."""
    out = subprocess.run(["ps", "-ww", "-eo", "pid=,args="], capture_output=True, text=True, check=True).stdout
    return [line for line in out.splitlines() if marker in line and "ps -eo" not in line]


async def test_deploy_on_a_local_cluster_serves_the_protocol_and_stops_cleanly(tmp_path, tmp_path_factory):
    ray_tmp = tmp_path_factory.mktemp("rcli")  # a short path: Ray's socket paths must fit 107 bytes
    env = {**os.environ, "RAY_TMPDIR": str(ray_tmp), "XDG_DATA_HOME": str(tmp_path / "data")}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "comfyui_persona.headless", "deploy", "--cluster", "local", "--port", "0",
        "--replicas", "1", "--replica-cpus", "0.5", "--no-warm-up", "--no-speech",
        cwd=REPO, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        line = (await asyncio.wait_for(process.stdout.readline(), SLOW)).decode()
        match = re.search(r"persona deploy: http://127\.0\.0\.1:(\d+)/", line)
        assert match, line + (await process.stderr.read()).decode()[-3000:]
        port = int(match.group(1))
        async with websockets.connect(f"ws://127.0.0.1:{port}/persona/ws", max_size=None, open_timeout=30) as ws:
            await ws.send(json.dumps({"type": "hello", "video": {"format": "jpeg", "max_fps": 2}}))
            ready = await recv_json(ws, SLOW)
            assert ready["type"] == "ready" and ready["replica"] and ready["backend"] == "preview"
            await next_frame(ws, SLOW)
        assert _ray_processes(str(ray_tmp)), "the deploy's Ray processes should run under its temp dir"
    finally:
        process.terminate()
        code = await asyncio.wait_for(process.wait(), SLOW)
    log = (await process.stderr.read()).decode()
    assert code == 0, log[-2000:]
    assert "Traceback" not in log, log[-2000:]
    deadline = asyncio.get_running_loop().time() + 30
    while _ray_processes(str(ray_tmp)):
        assert asyncio.get_running_loop().time() < deadline, _ray_processes(str(ray_tmp))
        await asyncio.sleep(0.5)


def test_deploy_refuses_a_broken_workflow_in_one_line_before_starting_ray(tmp_path):
    ui = json.loads((REPO / "workflows" / "persona_preview_chat.json").read_text())
    ui["nodes"] = [*ui["nodes"], {"id": 91, "type": "UpscaleWithModelPlus", "mode": 0, "inputs": [], "outputs": [],
                                  "widgets_values": [], "properties": {"cnr_id": "comfyui-some-pack"}}]
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(ui))
    env = {**os.environ, "RAY_TMPDIR": str(tmp_path)}
    result = subprocess.run([sys.executable, "-m", "comfyui_persona.headless", "deploy", "--workflow", str(path),
                             "--port", "0"], capture_output=True, text=True, timeout=120, cwd=REPO, env=env)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert "UpscaleWithModelPlus (node 91)" in result.stderr
    assert not (tmp_path / "ray").exists(), "no Ray cluster may start for a workflow that cannot run"
