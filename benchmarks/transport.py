"""Bytes on the wire for the session's video: JPEG over the WebSocket vs WebRTC (aiortc), per size.

The real server runs in this process (preview renderer, the saved chat workflow with its size
changed); for each size one session is watched for `--seconds` after a warm-up, first by a
plain WebSocket client (kind-1 JPEG frames, protocol 1.0), then by an aiortc peer that offers
(protocol 1.1: H.264 where PyAV has libx264, else VP8) and decodes what it receives.

Measured per transport: video bytes per second (JPEG: the binary frames' length; WebRTC: the
server sender's RTP payload bytes, `bytesSent` of aiortc's outbound stats, no SRTP/UDP headers),
frames per second delivered, bytes per frame, and the quality of what the viewer gets: PSNR
(dB, luma and chroma together on RGB) of each received picture against the rendered RGB frame
it shows. The rendered frames are tapped on the connection's media hook (`Connection.media`),
which both transports go through. JPEG quality is the server's `jpeg_quality`; the WebRTC
bitrate is whatever aiortc's REMB control settles on over loopback (no impairment here).
Latency: from the frame's hand-over to the transport (the pump's send, the same point for
both) to a decoded picture at the viewer, on the one loop clock of this process (JPEG: arrival
plus the decode's time; WebRTC: aiortc's encode, packetisation, jitter buffer and decode).
Rendering before and display after are the same for both and not counted.

    .venv/bin/python benchmarks/transport.py                       # 384x384 and 832x480, 15 s each
    .venv/bin/python benchmarks/transport.py --sizes 384x384 --seconds 5 --no-save

Writes `benchmarks/results/transport-cpu-<date>.json`. Not measured here yet: a browser's
glass-to-glass latency and impaired links (loss, delay).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import time
from dataclasses import dataclass

import numpy as np

from record import REPO, cpu_model, ensure_package, result_path, write_result

ensure_package()

WORKFLOW = REPO / "workflows" / "persona_preview_chat.json"
ACTIONS = [("wave", "smile"), ("nod", "neutral"), ("clap", "excited"), ("bow", "smile"), ("dance", "excited")]


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 99.0 if mse == 0 else 10.0 * np.log10(255.0**2 / mse)


class Tap:
    """Sits on `Connection.media`: keeps the rendered picture of every frame handed out (by pts),
    then lets the real sink (a WebRTC peer, or none: the WebSocket) take it."""

    def __init__(self, inner=None, keep: int = 2000) -> None:
        self.inner = inner
        self.rendered: dict[int, np.ndarray] = {}
        self.handed: dict[int, float] = {}  # pts → loop time the frame went to the transport
        self.keep = keep

    def video(self, frame) -> bool:
        if frame.rgb is not None and len(self.rendered) < self.keep:
            self.rendered[frame.pts_ms] = np.array(frame.rgb)
            self.handed[frame.pts_ms] = asyncio.get_running_loop().time()
        return self.inner.video(frame) if self.inner is not None else False

    def audio(self, packet: bytes) -> bool:
        return self.inner.audio(packet) if self.inner is not None else False


def graph_of_size(width: int, height: int):
    from comfyui_persona.headless.runner import WorkflowGraph
    from comfyui_persona.headless.runner.workflow import to_api
    from comfyui_persona.nodes import NODE_CLASS_MAPPINGS

    data = json.loads(WORKFLOW.read_text(encoding="utf-8"))
    for node in data["nodes"]:
        if node["type"] == "PersonaPreviewRenderer":
            node["widgets_values"][1:3] = [width, height]
    return WorkflowGraph(to_api(data, NODE_CLASS_MAPPINGS), NODE_CLASS_MAPPINGS)


async def act(send, stop: asyncio.Event) -> None:
    """An action every 2 s: the picture moves as in a conversation, not only idles."""
    n = 0
    while not stop.is_set():
        action, expression = ACTIONS[n % len(ACTIONS)]
        await send({"type": "action", "id": f"a{n}", "directive": {"action": action, "expression": expression,
                                                                 "intensity": 0.8}})
        n += 1
        try:
            await asyncio.wait_for(stop.wait(), 2.0)
        except asyncio.TimeoutError:
            pass


async def measure_websocket(server, connection_of, warmup: float, seconds: float) -> dict:
    import simplejpeg
    import websockets

    from comfyui_persona.headless.server.protocol import MEDIA_JPEG, parse_media_frame

    async with websockets.connect(server.ws_url, max_size=None) as ws:
        await ws.send(json.dumps({"type": "hello"}))
        tap = Tap()
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        actor = None
        received: list[tuple[int, bytes]] = []
        began = None
        deadline = loop.time() + warmup + seconds
        while loop.time() < deadline:
            data = await asyncio.wait_for(ws.recv(), 10)
            if isinstance(data, str):
                if json.loads(data)["type"] == "ready":
                    connection_of().media = tap
                    actor = loop.create_task(act(lambda m: ws.send(json.dumps(m)), stop))
                continue
            kind, _, pts, payload = parse_media_frame(data)
            if kind != MEDIA_JPEG or actor is None:
                continue
            if began is None and loop.time() >= deadline - seconds:
                began = loop.time()
            if began is not None:
                received.append((pts, payload, len(data), loop.time()))
        elapsed = loop.time() - began
        stop.set()
        await actor
    scores, latencies = [], []
    for pts, payload, _, arrived in received:
        if pts not in tap.rendered:
            continue
        started = time.perf_counter()
        picture = simplejpeg.decode_jpeg(payload)
        decode_s = time.perf_counter() - started  # the viewer decodes too: counted in its latency
        scores.append(psnr(picture, tap.rendered[pts]))
        latencies.append((arrived - tap.handed[pts] + decode_s) * 1000)
    total = sum(size for _, _, size, _ in received)
    return {"bytes_per_s": total / elapsed, "kbit_per_s": total * 8 / elapsed / 1000, "fps": len(received) / elapsed,
            "bytes_per_frame": total / max(1, len(received)), "psnr_db_mean": statistics.fmean(scores),
            "psnr_db_p05": float(np.percentile(scores, 5)), **latency_metrics(latencies),
            "frames": len(received), "seconds": elapsed}


def latency_metrics(latencies: list[float]) -> dict:
    """Handed to the transport → decoded picture at the viewer (one loop clock: same process)."""
    return {"handover_to_decoded_ms_p50": float(np.percentile(latencies, 50)),
            "handover_to_decoded_ms_p95": float(np.percentile(latencies, 95))}


async def measure_webrtc(server, service, connection_of, warmup: float, seconds: float) -> dict:
    import websockets
    from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTransceiver("video", direction="recvonly")
    track_ready: asyncio.Future = asyncio.get_running_loop().create_future()
    pc.on("track", lambda track: track_ready.done() or track_ready.set_result(track))
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    try:
        async with websockets.connect(server.ws_url, max_size=None) as ws:
            messages: asyncio.Queue = asyncio.Queue()

            async def read() -> None:
                async for data in ws:
                    if isinstance(data, str):
                        await messages.put(json.loads(data))

            reader = loop.create_task(read())

            async def expect(kind: str) -> dict:
                while True:
                    message = await asyncio.wait_for(messages.get(), 30)
                    if message["type"] == kind:
                        return message
                    if message["type"] == "error":
                        raise RuntimeError(message)

            await ws.send(json.dumps({"type": "hello"}))
            await expect("ready")
            await pc.setLocalDescription(await pc.createOffer())
            await ws.send(json.dumps({"type": "webrtc.offer", "id": "o1", "sdp": pc.localDescription.sdp}))
            answer = await expect("webrtc.answer")
            await pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type="answer"))
            await expect("webrtc.state")
            connection = connection_of()
            peer = connection.media
            tap = Tap(peer)
            connection.media = tap
            actor = loop.create_task(act(lambda m: ws.send(json.dumps(m)), stop))
            track = await asyncio.wait_for(track_ready, 10)
            sender = peer.pc.getSenders()[0]

            async def sent_bytes() -> int:
                stats = await sender.getStats()
                return sum(s.bytesSent for s in stats.values() if getattr(s, "type", "") == "outbound-rtp")

            decoded: list[tuple[int, float]] = []  # (RTP pts, loop time decoded)
            pictures: dict[int, np.ndarray] = {}  # every third one, for PSNR (memory at 832x480)
            deadline = loop.time() + warmup
            while loop.time() < deadline:
                await asyncio.wait_for(track.recv(), 10)
            start_bytes, began = await sent_bytes(), loop.time()
            while loop.time() < began + seconds:
                frame = await asyncio.wait_for(track.recv(), 10)
                decoded.append((frame.pts, loop.time()))
                if len(decoded) % 3 == 1:
                    pictures[frame.pts] = frame.to_ndarray(format="rgb24")
            end_bytes, elapsed = await sent_bytes(), loop.time() - began
            stop.set()
            await actor
            codec = answer["codecs"].get("video")
            await ws.close()
            await reader
    finally:
        await pc.close()
    # Decoded pts = a random RTP origin + the session pts in 90 kHz ticks: find the origin that
    # puts the most decoded frames on rendered ones, then score each against its own frame.
    rendered = tap.rendered
    first_pts = decoded[0][0]
    candidates = [(first_pts - p * 90) % 2**32 for p in rendered]
    origin = max(candidates, key=lambda o: sum(((t - o) % 2**32) // 90 in rendered for t, _ in decoded[:50]))

    def session_pts(t: int) -> int:
        return ((t - origin) % 2**32) // 90

    scores = [psnr(picture, rendered[session_pts(t)]) for t, picture in pictures.items() if session_pts(t) in rendered]
    latencies = [(at - tap.handed[session_pts(t)]) * 1000 for t, at in decoded if session_pts(t) in tap.handed]
    total = end_bytes - start_bytes
    return {"codec": codec, "bytes_per_s": total / elapsed, "kbit_per_s": total * 8 / elapsed / 1000,
            "fps": len(decoded) / elapsed, "bytes_per_frame": total / max(1, len(decoded)),
            "psnr_db_mean": statistics.fmean(scores), "psnr_db_p05": float(np.percentile(scores, 5)),
            **latency_metrics(latencies), "frames": len(decoded), "frames_scored": len(scores), "seconds": elapsed}


@dataclass
class Server:
    port: int

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/persona/ws"


@contextlib.asynccontextmanager
async def running(service):
    """The service's app on a free loopback port, behind the gate `persona serve` uses."""
    from comfyui_persona.headless.server import create_app
    from comfyui_persona.headless.server.site import start_server

    app = await asyncio.to_thread(create_app, service)
    runner, port = await start_server(app, "127.0.0.1", 0, service.gate)
    try:
        yield Server(port)
    finally:
        await runner.cleanup()


async def run_size(width: int, height: int, warmup: float, seconds: float) -> dict:
    from comfyui_persona.headless.server import PersonaService, ServerConfig

    graph = await asyncio.to_thread(graph_of_size, width, height)
    service = await asyncio.to_thread(PersonaService, graph, ServerConfig(speech=False))
    await asyncio.to_thread(service.warm_up)

    def connection_of():
        (connection,) = [c for c in service.connections if c.session is not None]
        return connection

    try:
        async with running(service) as server:
            jpeg = await measure_websocket(server, connection_of, warmup, seconds)
            rtc = await measure_webrtc(server, service, connection_of, warmup, seconds)
    finally:
        service.pool.shutdown(wait=True)
    return {"jpeg_ws": jpeg, "webrtc": rtc, "webrtc_bytes_ratio": rtc["bytes_per_s"] / jpeg["bytes_per_s"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", default=["384x384", "832x480"], help="WIDTHxHEIGHT, each a multiple of 16")
    parser.add_argument("--seconds", type=float, default=15.0, help="measured seconds per transport and size")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds before measuring (encoder ramp-up)")
    parser.add_argument("--no-save", action="store_true", help="print only")
    parser.add_argument("--suffix", default="", help="appended to the result file's name")
    args = parser.parse_args(argv)

    from comfyui_persona.headless.server.config import ServerConfig

    metrics = {}
    for size in args.sizes:
        width, height = (int(v) for v in size.lower().split("x"))
        result = asyncio.run(run_size(width, height, args.warmup, args.seconds))
        metrics[size] = result
        j, w = result["jpeg_ws"], result["webrtc"]
        print(f"{size}: JPEG/WS {j['kbit_per_s']:.0f} kbit/s at {j['fps']:.1f} fps, PSNR {j['psnr_db_mean']:.1f} dB | "
              f"WebRTC {w['codec']} {w['kbit_per_s']:.0f} kbit/s at {w['fps']:.1f} fps, PSNR {w['psnr_db_mean']:.1f} dB"
              f" | ratio {result['webrtc_bytes_ratio']:.3f} | hand-over to decoded p50 "
              f"{j['handover_to_decoded_ms_p50']:.1f} vs {w['handover_to_decoded_ms_p50']:.1f} ms", flush=True)
    if not args.no_save:
        config = {"sizes": args.sizes, "seconds": args.seconds, "warmup": args.warmup,
                  "jpeg_quality": ServerConfig().jpeg_quality, "backend": "preview", "fps": 24,
                  "link": "loopback, no impairment", "speech": False}
        path = result_path("transport", "cpu", args.suffix)
        write_result(path, "transport", cpu_model(), config, metrics)
        print(f"wrote {path.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
