"""The HTTP side of the server and `persona serve`: page, health, metrics, port 0, token rule."""

import asyncio
import json
import re
import shutil
import subprocess
import sys

import aiohttp
import pytest
import websockets
from blockbuster import blockbuster_ctx

from comfyui_persona.headless.server import InsecureBindError, ServerConfig, check_exposure, is_loopback
from paths import REPO
from server_harness import (
    TIMEOUT,
    hello,
    next_frame,
    running,
    service_fixtures,
    settle,
)

service, _warm = service_fixtures(resume_grace_s=0.1)


async def test_page_health_and_prometheus_metrics(service):
    with blockbuster_ctx(["comfyui_persona"]):
        async with running(service) as server, aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT)) as http:
            async with http.get(server.http_url + "/") as page:
                assert page.status == 200 and "/persona/static/app.js" in await page.text()
            async with http.get(server.http_url + "/persona/static/persona_client.js") as script:
                assert script.status == 200 and "class PersonaClient" in await script.text()
            async with http.get(server.http_url + "/health") as health:
                assert (await health.json())["status"] == "ok"
            async with websockets.connect(server.ws_url, max_size=None, open_timeout=TIMEOUT) as ws:
                await hello(ws)
                await ws.send(json.dumps({"type": "action", "id": "a", "directive": {"action": "nod", "expression": "smile", "intensity": 0.5}}))
                await ws.send("not json")
                for _ in range(30):
                    await next_frame(ws)
                async with http.get(server.http_url + "/metrics") as metrics:
                    text = await metrics.text()
                    assert metrics.content_type == "text/plain"
                async with http.get(server.http_url + "/persona/health") as health:
                    assert (await health.json())["sessions"] == 1
    values = dict(re.findall(r"^(persona_[a-z_]+(?:\{[^}]*\})?) (\S+)$", text, flags=re.M))
    assert values["persona_sessions"] == "1" and values["persona_sessions_connected"] == "1"
    assert float(values["persona_frames_sent_total"]) >= 29
    assert float(values["persona_stream_fps"]) > 0
    assert values['persona_errors_total{code="bad_json"}'] == "1"
    assert int(values["persona_directive_latency_ms_count"]) == 1
    assert "# TYPE persona_directive_latency_ms histogram" in text


async def test_sessions_expire_after_the_grace_period_and_close_their_parts(service):
    async with running(service) as server:
        async with websockets.connect(server.ws_url, max_size=None, open_timeout=TIMEOUT) as ws:
            first = await hello(ws)
            await next_frame(ws)
        await settle(lambda: not service.sessions, timeout=10)
        # The runner (and its store entry) closes after the session leaves the table.
        await settle(lambda: len(service.store) == 0, timeout=10)
        async with websockets.connect(server.ws_url, max_size=None, open_timeout=TIMEOUT) as ws:
            # Gone from memory, not from the saved conversations: it comes back on new parts.
            again = await hello(ws, session=first["session"])
            assert again["session"] == first["session"] and again["resumed"] is True
            await next_frame(ws)


# Drives the page's protocol client in Node with a scripted socket, to order events
# the way a browser can deliver them.
_CLIENT_PROBE = """
const sockets = [];
globalThis.WebSocket = class {
  static OPEN = 1;
  constructor(url) { this.url = url; this.readyState = 0; this.sent = []; sockets.push(this); }
  send(data) { this.sent.push(JSON.parse(data)); }
  close() { this.readyState = 3; }
};
const { PersonaClient } = await import("./persona_client.mjs");
const client = new PersonaClient({ url: "ws://test/persona/ws", storage: null });
const open = (ws, session) => {
  ws.readyState = 1; ws.onopen();
  ws.onmessage({ data: JSON.stringify({ type: "ready", session }) });
};
client.connect(); open(sockets[0], "s1");
client.newSession("juno"); open(sockets[1], "s2");
sockets[0].onclose({ code: 1000 });
client.chat("hello");
console.log(JSON.stringify({ sent: sockets[1].sent.map((m) => m.type), pending: client.pending.length }));
"""


@pytest.mark.skipif(shutil.which("node") is None, reason="needs Node.js to run the page's client")
def test_client_switching_persona_is_not_stalled_by_the_old_sockets_late_close(tmp_path):
    source = (REPO / "headless" / "static" / "persona_client.js").read_text(encoding="utf-8")
    (tmp_path / "persona_client.mjs").write_text(source, encoding="utf-8")
    (tmp_path / "probe.mjs").write_text(_CLIENT_PROBE, encoding="utf-8")
    result = subprocess.run(["node", "probe.mjs"], cwd=tmp_path, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"sent": ["hello", "chat"], "pending": 0}


def test_token_is_required_beyond_loopback():
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5")
    with pytest.raises(InsecureBindError, match="--token"):
        check_exposure(ServerConfig(host="0.0.0.0"))
    check_exposure(ServerConfig(host="0.0.0.0", token="x"))
    check_exposure(ServerConfig(host="127.0.0.1"))


def _persona(*args, env=None, timeout=60):
    return subprocess.run([sys.executable, "-m", "comfyui_persona.headless", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO, env=env)


def test_serve_refuses_to_bind_beyond_loopback_without_a_token():
    result = _persona("serve", "--host", "0.0.0.0", "--port", "0", "--quiet", "--no-warm-up")
    assert result.returncode == 2 and "without a token" in result.stderr


def test_serve_refuses_a_broken_workflow_naming_the_node(tmp_path):
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps({"1": {"class_type": "PersonaStreamSink", "inputs": {}}}))
    result = _persona("serve", "--workflow", str(broken), "--port", "0", "--quiet", "--no-warm-up")
    assert result.returncode == 2 and "node 1 (PersonaStreamSink)" in result.stderr and "'frames'" in result.stderr


async def test_serve_on_port_0_prints_the_real_port_and_serves():
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "comfyui_persona.headless", "serve", "--port", "0", "--no-warm-up",
        cwd=REPO, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        line = (await asyncio.wait_for(process.stdout.readline(), 60)).decode()
        port = int(re.search(r"http://127\.0\.0\.1:(\d+)/", line).group(1))
        assert port > 0
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT)) as http:
            async with http.get(f"http://127.0.0.1:{port}/health") as health:
                assert (await health.json())["status"] == "ok"
            async with websockets.connect(f"ws://127.0.0.1:{port}/persona/ws", max_size=None, open_timeout=30) as ws:
                await hello(ws)
                await next_frame(ws)
    finally:
        process.terminate()
        await asyncio.wait_for(process.wait(), 30)
    log = (await process.stderr.read()).decode()
    assert re.search(r"session \S+ started: persona mira, backend preview", log)
    assert re.search(r"session \S+ ended \(server stopping\): \d+ s, \d+ frames sent, \d+ dropped", log)


def test_serve_names_every_node_type_it_cannot_run_at_load_with_its_pack(tmp_path):
    """Not a 500 per reconnect: at start-up, one line per unknown type, with the pack a saved
    UI workflow says provides it (`cnr_id`) and what to do."""
    ui = json.loads((REPO / "workflows" / "persona_preview_chat.json").read_text())
    extra = [{"id": 90, "type": "PreviewImage", "mode": 0, "inputs": [], "outputs": [], "widgets_values": [],
              "properties": {"cnr_id": "comfy-core"}},
             {"id": 91, "type": "UpscaleWithModelPlus", "mode": 0, "inputs": [], "outputs": [], "widgets_values": [],
              "properties": {"cnr_id": "comfyui-some-pack"}}]
    ui["nodes"] = [*ui["nodes"], *extra]
    path = tmp_path / "with_core_nodes.json"
    path.write_text(json.dumps(ui))
    result = _persona("serve", "--workflow", str(path), "--port", "0", "--quiet", "--no-warm-up")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "PreviewImage (node 90): a ComfyUI core node: run with --comfyui PATH" in result.stderr
    assert "UpscaleWithModelPlus (node 91): from the pack 'comfyui-some-pack'" in result.stderr
