"""Fuzzing `/persona/ws`: hostile and broken clients next to a well-behaved one.

Malformed JSON, random bytes, huge frames, floods, messages in the wrong order and
abrupt disconnects (mid-frame included) are thrown at the server while a "bystander"
session streams. Every case must be answered per PROTOCOL.md, the bystander must keep
getting frames and pongs, and afterwards sessions and asyncio tasks are back to baseline.
"""

import asyncio
import contextlib
import json
import random
import struct

import pytest
import websockets
from blockbuster import blockbuster_ctx

from comfyui_persona.headless.server.protocol import ERROR_CODES
from server_harness import (
    TIMEOUT,
    hello,
    make_service,
    next_frame,
    recv_json,
    running,
    service_fixtures,
    settle,
)

SEED = 20261125


service, _warm = service_fixtures(resume_grace_s=0.2, messages_per_second=1000, max_sessions=6)


@pytest.fixture
def strict_service():
    service = make_service(resume_grace_s=0.2, messages_per_second=50, max_sessions=6)
    yield service
    service.pool.shutdown(wait=True)


@pytest.fixture
def no_blocking():
    with blockbuster_ctx(["comfyui_persona"]) as guard:
        yield guard


def connect(server):
    return websockets.connect(server.ws_url, open_timeout=TIMEOUT, close_timeout=2, max_size=None)


async def _bystander_alive(ws, tag: str) -> None:
    """The well-behaved session still gets frames and answers."""
    await next_frame(ws)
    await ws.send(json.dumps({"type": "ping", "id": tag}))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + TIMEOUT
    while loop.time() < deadline:
        message = await recv_json(ws, skip=("metrics", "state"))
        if message["type"] == "pong" and message["id"] == tag:
            return
    raise AssertionError("bystander got no pong")


def _garbage(rng: random.Random) -> list:
    """Deterministic hostile payloads: (payload, codes it may be answered with)."""
    cases = []
    for _ in range(25):
        raw = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 200)))
        cases.append((raw, {"bad_json"}))
        text = raw.decode("latin-1")
        cases.append((text, {"bad_json", "invalid", "unknown_type"}))
    cases += [
        ("", {"bad_json"}),
        ("null", {"bad_json"}),
        ("1e999", {"bad_json"}),
        ("[" * 5000 + "]" * 5000, {"bad_json"}),
        ('{"type": "chat", "id": "x", "text": "\\ud800"}', {"bad_json", "invalid", "not_ready"}),
        (json.dumps({"type": None}), {"invalid"}),
        (json.dumps({"type": ["hello"]}), {"invalid"}),
        (json.dumps({"type": "hello", "video": []}), {"invalid"}),
        (json.dumps({"type": "chat", "id": {"a": 1}, "text": "x"}), {"invalid", "not_ready"}),
        (json.dumps({"type": "action", "id": "a", "directive": {"action": "wave", "expression": "smile", "intensity": "high"}}),
         {"invalid", "not_ready"}),
        (json.dumps({"type": "x" * 10_000}), {"unknown_type"}),
        ("{" + '"a":1,' * 20_000 + '"type":"ping"}', {"too_large"}),
    ]
    return cases


async def test_garbage_is_answered_per_protocol_and_the_bystander_keeps_streaming(service, no_blocking):
    rng = random.Random(SEED)
    async with running(service) as server, connect(server) as bystander:
        await hello(bystander)
        async with connect(server) as hostile:
            for payload, codes in _garbage(rng):
                await hostile.send(payload)
                message = await recv_json(hostile, skip=("metrics", "state"))
                assert message["type"] == "error" and message["code"] in codes, (payload[:80], message)
                assert message["code"] in ERROR_CODES and "fatal" not in message
            await _bystander_alive(bystander, "after-garbage")
            # The hostile connection is still usable: it can say hello properly now.
            assert (await hello(hostile))["type"] == "ready"
        await _bystander_alive(bystander, "after-hostile-left")


async def test_wrong_order_messages_get_not_ready_then_work_after_hello(service, no_blocking):
    async with running(service) as server, connect(server) as ws:
        for message in (
            {"type": "chat", "id": "1", "text": "hi"},
            {"type": "action", "id": "2", "directive": {"action": "wave", "expression": "smile", "intensity": 0.5}},
            {"type": "reset", "id": "3"},
            {"type": "ping", "id": "4"},
        ):
            await ws.send(json.dumps(message))
            error = await recv_json(ws)
            assert error["code"] == "not_ready" and error["reply_to"] == message["id"]
        await hello(ws)
        await ws.send(json.dumps({"type": "ping", "id": "5"}))
        assert (await recv_json(ws)) == {"type": "pong", "id": "5"}


async def test_huge_frames_are_refused_without_hurting_others(service, no_blocking):
    async with running(service) as server, connect(server) as bystander:
        await hello(bystander)
        async with connect(server) as ws:
            await hello(ws)
            await ws.send("x" * (512 * 1024))  # over 64 KiB, under the hard cap: too_large, stays
            assert (await recv_json(ws))["code"] == "too_large"
            await ws.send(json.dumps({"type": "ping", "id": "alive"}))
            assert (await recv_json(ws))["id"] == "alive"
            await ws.send(b"\x00" * (2 * 1024 * 1024))  # over the hard cap: the socket layer closes (1009)
            with pytest.raises(websockets.ConnectionClosed) as closed:
                while True:
                    await asyncio.wait_for(ws.recv(), TIMEOUT)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
        await _bystander_alive(bystander, "after-huge")


async def test_a_flood_is_rate_limited_then_closed_and_the_bystander_is_unaffected(strict_service, no_blocking):
    """Over the limit: `rate_limited`; five times the limit in a second: closed (1008), since
    refusing each message still costs the loop a read per message."""
    async with running(strict_service) as server, connect(server) as bystander:
        await hello(bystander)
        async with connect(server) as flooder:
            await hello(flooder)
            codes, pongs = set(), 0
            with contextlib.suppress(websockets.ConnectionClosed):
                for n in range(2000):
                    await flooder.send(json.dumps({"type": "ping", "id": f"f{n}"}))
            with contextlib.suppress(websockets.ConnectionClosed):
                while True:
                    message = await recv_json(flooder, timeout=TIMEOUT, skip=("metrics", "state"))
                    if message["type"] == "error":
                        codes.add(message["code"])
                    else:
                        pongs += 1
            assert flooder.close_code == 1008
            assert codes == {"rate_limited"} and 0 < pongs <= 50
            await _bystander_alive(bystander, "after-flood")
        await _bystander_alive(bystander, "after-flood-left")


async def test_chat_flood_is_bounded_by_the_turn_queue(service, no_blocking):
    async with running(service) as server, connect(server) as ws:
        await hello(ws)
        for n in range(40):
            await ws.send(json.dumps({"type": "chat", "id": f"c{n}", "text": "wave"}))
        codes = set()
        replies = 0
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while loop.time() < deadline:
            message = await recv_json(ws, timeout=30, skip=("metrics", "state", "directives"))
            if message["type"] == "error":
                codes.add(message["code"])
            elif message["type"] == "reply" and message["done"]:
                replies += 1
            if replies + 0 >= 16:
                break
        assert codes <= {"rate_limited"} and replies >= 16


async def _raw_socket_disconnect_mid_frame(port: int) -> None:
    """Open a WebSocket by hand, send half a frame, vanish."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), TIMEOUT)
    writer.write(
        b"GET /persona/ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    await asyncio.wait_for(writer.drain(), TIMEOUT)
    await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
    payload = json.dumps({"type": "hello"}).encode()
    mask = b"\x01\x02\x03\x04"
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    frame = bytes([0x81, 0x80 | len(payload)]) + mask + masked
    writer.write(frame)  # a whole hello: a session starts
    writer.write(bytes([0x81, 0x80 | 126]) + struct.pack(">H", 1000) + mask + b"\x00" * 10)  # then half a frame
    await asyncio.wait_for(writer.drain(), TIMEOUT)
    await asyncio.sleep(0.3)
    writer.transport.abort()


async def test_abrupt_disconnects_leak_no_sessions_or_tasks(service, no_blocking):
    async with running(service) as server, connect(server) as bystander:
        await hello(bystander)
        await next_frame(bystander)
        await asyncio.sleep(0.1)
        baseline_tasks = len(asyncio.all_tasks())
        for _ in range(3):
            await _raw_socket_disconnect_mid_frame(server.port)
            async with connect(server) as ws:  # a client that vanishes mid-stream
                await hello(ws)
                await next_frame(ws)
                await ws.send(json.dumps({"type": "chat", "id": "c", "text": "dance"}))
                ws.transport.abort()
        await _bystander_alive(bystander, "after-disconnects")
        # Resume grace is 0.2 s here: the dead sessions expire, their tasks end, the store empties.
        await settle(lambda: len(service.sessions) == 1, timeout=15)
        await settle(lambda: len(service.store) == 1, timeout=15)
        await settle(lambda: len(service.connections) == 1, timeout=15)
        await settle(lambda: len(asyncio.all_tasks()) <= baseline_tasks, timeout=15)
    assert len(service.sessions) == 0 and len(service.store) == 0


async def test_speaking_and_recording_clients_that_vanish_leak_nothing(service, no_blocking, tmp_path):
    """Speech and recordings add tasks, threads and open files: a client that floods
    record on/off and vanishes mid-speech leaves no session, task or open recording."""
    service.recordings_dir = tmp_path
    dialogue = "This is a long reply that is still being spoken when the client disappears. " * 3
    async with running(service) as server, connect(server) as bystander:
        await hello(bystander)
        await next_frame(bystander)
        await asyncio.sleep(0.1)
        baseline_tasks = len(asyncio.all_tasks())
        for _ in range(3):
            async with connect(server) as ws:
                await hello(ws)
                await next_frame(ws)
                for n in range(6):  # on/off flood: answered or refused, never stuck
                    await ws.send(json.dumps({"type": "record", "id": f"r{n}", "on": n % 2 == 0}))
                await ws.send(json.dumps({"type": "record", "id": "last", "on": True}))
                await ws.send(json.dumps({"type": "action", "id": "a", "directive": {
                    "action": "wave", "expression": "smile", "intensity": 0.5, "dialogue": dialogue}}))
                for _ in range(20):
                    await asyncio.wait_for(ws.recv(), TIMEOUT)
                ws.transport.abort()
        await _bystander_alive(bystander, "after-speakers")
        await settle(lambda: len(service.sessions) == 1, timeout=20)
        await settle(lambda: len(service.store) == 1, timeout=15)
        await settle(lambda: not service.active_recordings, timeout=15)
        await settle(lambda: len(asyncio.all_tasks()) <= baseline_tasks, timeout=15)
    assert len(service.sessions) == 0 and not service.active_recordings
    sizes = await asyncio.to_thread(lambda: [f.stat().st_size for f in tmp_path.glob("*.mp4")])
    assert sizes and all(size > 0 for size in sizes)  # every recording was finished, none lost
