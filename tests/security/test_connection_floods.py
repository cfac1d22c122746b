"""Connection denial of service without a token: idle sockets, ping floods, slow hellos, squatting.

The server runs as the real CLI in a child process and the attacker in another one (each
with its own event loop, as on separate machines; here they share the box's two cores), from
other loopback addresses (127.0.0.2…): per-address limits are per address. The victim, on
127.0.0.1, must keep its stream (≥ 3/4 of its rate just before the attack; 24 fps on a quiet
box) and `/health` must answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import textwrap

import aiohttp
import websockets

from comfyui_persona.headless.server.protocol import MEDIA_JPEG, parse_media_frame
from server_harness import hello, serve_process

ATTACKER = textwrap.dedent(
    """
    import asyncio, sys, aiohttp

    PORT, SECONDS = int(sys.argv[1]), float(sys.argv[2])  # SECONDS: the most it floods, unless told to stop

    async def idle_sockets(address, count, held):
        for _ in range(count):
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", PORT, local_addr=(address, 0))
            except OSError:
                continue
            writer.write(b"GET /persona/health HTTP/1.1\\r\\nHost: 127.0.0.1\\r\\n")  # never finished
            held.append(writer)

    async def ping_flood(address, stop):
        connector = aiohttp.TCPConnector(local_addr=(address, 0))
        async with aiohttp.ClientSession(connector=connector) as http:
            while not stop.is_set():
                try:
                    async with http.ws_connect(f"ws://127.0.0.1:{PORT}/persona/ws", autoping=False) as ws:
                        while not ws.closed and not stop.is_set():
                            for _ in range(200):
                                await ws.ping(b"x")
                            await asyncio.sleep(0)
                except (aiohttp.ClientError, ConnectionError, RuntimeError):
                    await asyncio.sleep(0.01)

    async def main():
        held, stop = [], asyncio.Event()
        # 8 addresses x 300 sockets: far over the per-address cap (32) and the total (256).
        await asyncio.gather(*(idle_sockets(f"127.0.0.{n}", 300, held) for n in range(2, 10)))
        print(f"opened {len(held)}", flush=True)
        floods = [asyncio.create_task(ping_flood(f"127.0.0.{n}", stop)) for n in (20, 21)]
        # Until the test has measured the victim under attack and says "stop" (a line on stdin).
        told = asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        await asyncio.wait([told], timeout=SECONDS)
        stop.set()
        await asyncio.gather(*floods, return_exceptions=True)
        print("done", flush=True)

    asyncio.run(main())
    """
)


async def _arrivals(ws, times: list[float]) -> None:
    """Read the victim's stream without pause, noting when each frame arrives."""
    loop = asyncio.get_running_loop()
    with contextlib.suppress(websockets.ConnectionClosed):
        async for data in ws:
            if isinstance(data, bytes) and parse_media_frame(data)[0] == MEDIA_JPEG:
                times.append(loop.time())


def _fps(times: list[float], start: float, end: float) -> float:
    return sum(start <= t < end for t in times) / (end - start)


async def _metric(http: aiohttp.ClientSession, url: str, name: str) -> float:
    async with http.get(f"{url}/metrics", timeout=aiohttp.ClientTimeout(total=10)) as response:
        for line in (await response.text()).splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_idle_socket_and_ping_floods_leave_the_victim_streaming(tmp_path):
    async with serve_process("--personas-dir", str(tmp_path / "p"), "--idle-timeout-s", "3") as server:
        async with websockets.connect(server.ws_url, max_size=None, open_timeout=30) as victim:
            await hello(victim)
            loop = asyncio.get_running_loop()
            times: list[float] = []
            reader = asyncio.create_task(_arrivals(victim, times))
            await asyncio.sleep(2.5)
            baseline = _fps(times, loop.time() - 2.0, loop.time())
            attack_start = loop.time()
            attacker = await asyncio.create_subprocess_exec(
                sys.executable, "-c", ATTACKER, str(server.port), "60", stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE)
            try:
                opened = (await asyncio.wait_for(attacker.stdout.readline(), 60)).decode()
                assert opened.startswith("opened"), opened
                await asyncio.sleep(4.0)
                during = _fps(times, attack_start, loop.time())
                async with aiohttp.ClientSession() as http:
                    async with http.get(f"{server.http_url}/health", timeout=aiohttp.ClientTimeout(total=5)) as health:
                        assert health.status == 200
                    refused = await _metric(http, server.http_url, "persona_sockets_refused_total")
                    idle_closed = await _metric(http, server.http_url, "persona_sockets_idle_closed_total")
                    floods = await _metric(http, server.http_url, 'persona_refused_total{reason="flood"}')
                attacker.stdin.write(b"stop\n")  # measured under attack: the attack may end
                await attacker.stdin.drain()
                assert (await asyncio.wait_for(attacker.stdout.readline(), 60)).decode().strip() == "done"
            finally:
                with contextlib.suppress(ProcessLookupError):
                    attacker.kill()
                await attacker.wait()
            await asyncio.sleep(2.0)
            after = _fps(times, loop.time() - 2.0, loop.time())
            reader.cancel()
        print(f"victim fps: {baseline:.1f} before, {during:.1f} during, {after:.1f} after; "
              f"{opened.strip()} sockets; refused {refused:.0f}, idle-closed {idle_closed:.0f}, ping floods closed {floods:.0f}")
        # Against the same stream's rate just before the attack, on the same (maybe loaded) box:
        # a denial shows as a collapse, not as the percent or two a busy machine costs.
        assert baseline >= 12.0 and during >= 0.75 * baseline and after >= 0.75 * baseline
        assert refused > 1000  # 2,400 tried against a cap of 256 in all, 32 per address
        assert idle_closed > 0 and floods > 0
    assert server.process.returncode is not None


async def test_a_socket_that_never_says_hello_is_closed(tmp_path):
    async with serve_process("--personas-dir", str(tmp_path / "p"), "--hello-timeout-s", "1") as server:
        async with websockets.connect(server.ws_url, open_timeout=30) as silent:
            with contextlib.suppress(websockets.ConnectionClosed):
                while True:
                    await asyncio.wait_for(silent.recv(), 10)
            assert silent.close_code == 1008
        # one whose hello failed is told that, not "no hello" (it sent one)
        async with websockets.connect(server.ws_url, open_timeout=30) as failed:
            await failed.send(json.dumps({"type": "hello", "persona": "nobody"}))
            said = []
            with contextlib.suppress(websockets.ConnectionClosed):
                while True:
                    said.append(await asyncio.wait_for(failed.recv(), 10))
            assert failed.close_code == 1008
            assert "unknown_persona" in said[0] and "again after one that failed" in said[-1], said


async def test_squatting_cannot_deny_a_new_client(tmp_path):
    """One address connects and leaves again and again: each session waits 30 s to be
    resumed. The per-address limit stops it at 4, and a waiting session gives its slot to a
    new client when the server is full, so a newcomer is always served."""
    async with serve_process("--personas-dir", str(tmp_path / "p"), "--max-sessions", "4",
                             "--max-sessions-per-ip", "4") as server:
        connector = aiohttp.TCPConnector(local_addr=("127.0.0.2", 0))
        async with aiohttp.ClientSession(connector=connector) as squatter:
            for n in range(12):
                async with squatter.ws_connect(server.ws_url) as ws:
                    await ws.send_str(json.dumps({"type": "hello"}))
                    ready = json.loads((await ws.receive(timeout=30)).data)
                    assert ready["type"] == "ready", (n, ready)  # its own waiting sessions make room
        for _ in range(3):  # newcomers from another address, one after another
            async with websockets.connect(server.ws_url, open_timeout=30) as newcomer:
                ready = await hello(newcomer)
                assert ready["type"] == "ready", ready
        # Four connected squatters hold every slot: then the server is honestly full.
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=("127.0.0.3", 0))) as holder:
            sockets = []
            for _ in range(4):
                ws = await holder.ws_connect(server.ws_url)
                await ws.send_str(json.dumps({"type": "hello"}))
                assert json.loads((await ws.receive(timeout=30)).data)["type"] == "ready"
                sockets.append(ws)
            async with websockets.connect(server.ws_url, open_timeout=30) as late:
                answer = await hello(late)
                assert answer["type"] == "error" and answer["code"] == "busy"
            for ws in sockets:
                await ws.close()


async def test_hellos_at_once_from_one_address_keep_its_session_limit(tmp_path):
    """Four hellos sent at once from one address with a limit of one session per address: one
    session, three `busy` (sessions still starting were not counted, and all four started)."""
    async with serve_process("--personas-dir", str(tmp_path / "p"), "--max-sessions-per-ip", "1",
                             "--no-keep-conversations") as server:
        connector = aiohttp.TCPConnector(local_addr=("127.0.0.2", 0), limit=0)
        async with aiohttp.ClientSession(connector=connector) as client:
            sockets = [await client.ws_connect(server.ws_url) for _ in range(4)]
            await asyncio.gather(*(ws.send_str(json.dumps({"type": "hello"})) for ws in sockets))
            answers = [json.loads((await ws.receive(timeout=60)).data) for ws in sockets]
            kinds = sorted(a["type"] if a["type"] == "ready" else a["code"] for a in answers)
            assert kinds == ["busy", "busy", "busy", "ready"], answers
            for ws in sockets:
                await ws.close()
