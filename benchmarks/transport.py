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

Equal quality (the issue's "≤ 25 % of JPEG's bytes at equal visual quality"): the two runs land
at different PSNRs, so their byte ratio (`webrtc_bytes_ratio`) flatters whichever is worse. The
pictures the WebRTC run was scored on are encoded as JPEG at a sweep of qualities (`jpeg_curve`:
bytes per frame with the WebSocket frame's header, mean PSNR), and JPEG's bytes per frame at the
WebRTC run's mean PSNR are read off that curve (`jpeg_bytes_per_frame_at_webrtc_psnr`, log bytes
interpolated linearly in dB): `webrtc_bytes_ratio_equal_psnr` is WebRTC's RTP payload bytes per
frame over that. Why a sweep and not a bitrate cap on H.264 to meet JPEG q80's PSNR: the cap would
be a production setting chosen for a benchmark (viewers would get a worse picture than the link
allows); the sweep compares each codec at a quality it actually delivers. The quality measure is
PSNR on RGB (luma and chroma together) against the rendered frame, per picture, averaged.
Latency: from the frame's hand-over to the transport (the pump's send, the same point for
both) to a decoded picture at the viewer, on the one loop clock of this process (JPEG: arrival
plus the decode's time; WebRTC: aiortc's encode, packetisation, jitter buffer and decode).
Rendering before and display after are the same for both and not counted.

`--browser`: the chat page in Chromium instead (browser_media.py), once per size, transport
(`?media=websocket` / `?media=webrtc`) and link: a frame counter is drawn into every picture as
it is handed to the transport (`StampTap`; for the WebSocket the JPEG is re-encoded with the
server's settings), the page decodes it from what it shows on every animation frame, and
glass-to-glass latency is that wall-clock time minus the hand-over's (one machine, one clock).
Rendering ahead of the hand-over (the frame queue) is the same for both transports and not
counted. Also per run: frames shown per second of those sent, stalls (gaps between new pictures
longer than 250 ms) and bytes per second on the wire (WebSocket: the binary frames; WebRTC: RTP
payload, `bytesSent`). Links: `clean` (loopback) and `impaired` (2 % loss and 100 ms delay each
way; impair.py, since netem is not available here).

    .venv/bin/python benchmarks/transport.py                       # 384², 512², 832x480, 15 s each
    .venv/bin/python benchmarks/transport.py --sizes 384x384 --seconds 5 --no-save
    .venv/bin/python benchmarks/transport.py --browser             # 384², 512², 832x480; clean and impaired

Writes `benchmarks/results/transport-cpu-<date>.json` (`--browser`: `transport_browser-cpu-<date>.json`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

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
    return {"_jpeg_bytes_per_frame": statistics.fmean(len(payload) for _, payload, _, _ in received),
            "bytes_per_s": total / elapsed, "kbit_per_s": total * 8 / elapsed / 1000, "fps": len(received) / elapsed,
            "bytes_per_frame": total / max(1, len(received)), "psnr_db_mean": statistics.fmean(scores),
            "psnr_db_p05": float(np.percentile(scores, 5)), **latency_metrics(latencies),
            "frames": len(received), "seconds": elapsed}


#: JPEG qualities the equal-quality comparison encodes the session's pictures at (simplejpeg,
#: 4:2:0, as the server does): a curve of bytes against PSNR to read the WebRTC run's PSNR off.
JPEG_SWEEP = (30, 40, 50, 60, 70, 75, 80, 85, 90, 95, 98)


def jpeg_curve(pictures: list[np.ndarray], header_bytes: int, qualities=JPEG_SWEEP) -> list[dict]:
    """For each JPEG quality: mean bytes per frame on the WebSocket (the JPEG plus the kind-1
    frame's header) and mean PSNR of the decoded picture, over `pictures` (the rendered frames)."""
    import simplejpeg

    curve = []
    for quality in qualities:
        sizes, scores = [], []
        for picture in pictures:
            jpeg = simplejpeg.encode_jpeg(np.ascontiguousarray(picture), quality=quality, colorspace="RGB",
                                          colorsubsampling="420")
            sizes.append(len(jpeg) + header_bytes)
            scores.append(psnr(simplejpeg.decode_jpeg(jpeg), picture))
        curve.append({"quality": quality, "bytes_per_frame": statistics.fmean(sizes),
                      "psnr_db_mean": statistics.fmean(scores)})
    return curve


def bytes_at_psnr(curve: list[dict], target: float) -> float | None:
    """JPEG bytes per frame at `target` dB: interpolated on the curve (log bytes linear in dB,
    as rate grows about exponentially with PSNR); None outside the curve's range."""
    points = sorted((c["psnr_db_mean"], np.log(c["bytes_per_frame"])) for c in curve)
    if not points[0][0] <= target <= points[-1][0]:
        return None
    xs, ys = zip(*points, strict=True)
    return float(np.exp(np.interp(target, xs, ys)))


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
            sent = tap_sent_pictures(peer.video_track)
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
    # A decoded frame's pts is its RTP timestamp: a random origin plus the picture's time on
    # the media clock (90 kHz ticks, `sent`). Find the origin that puts the most decoded frames
    # on sent pictures, then score each against the rendered frame it shows.
    # Pictures are evenly spaced, so an origin off by whole frames matches as many: the right
    # one also has every match decoded after it was sent, and within a second.
    rendered = tap.rendered
    first_pts = decoded[0][0]
    candidates = {(first_pts - stamp) % 2**32 for stamp in sent}

    def fits(o: int) -> int:
        hits = [(sent.get((t - o) % 2**32), at) for t, at in decoded[:50]]
        return sum(hit is not None and 0.0 <= at - hit[1] < 1.0 for hit, at in hits)

    origin = max(candidates, key=fits)

    def session_pts(t: int) -> int | None:
        hit = sent.get((t - origin) % 2**32)
        return None if hit is None else hit[0]

    scored = [session_pts(t) for t in pictures if session_pts(t) in rendered]
    scores = [psnr(picture, rendered[session_pts(t)]) for t, picture in pictures.items() if session_pts(t) in rendered]
    latencies = [(at - tap.handed[session_pts(t)]) * 1000 for t, at in decoded if session_pts(t) in tap.handed]
    total = end_bytes - start_bytes
    return {"codec": codec, "bytes_per_s": total / elapsed, "kbit_per_s": total * 8 / elapsed / 1000,
            "fps": len(decoded) / elapsed, "bytes_per_frame": total / max(1, len(decoded)),
            "psnr_db_mean": statistics.fmean(scores), "psnr_db_p05": float(np.percentile(scores, 5)),
            **latency_metrics(latencies), "frames": len(decoded), "frames_scored": len(scores), "seconds": elapsed,
            "_scored_pictures": [rendered[p] for p in scored]}


def tap_sent_pictures(track) -> dict[int, tuple[int, float]]:
    """{RTP-clock stamp (mod 2**32) → (session pts, loop time sent)} of every picture the WebRTC
    video track sends from now on: the track stamps a picture with its time on the media clock,
    not its pts."""
    sent: dict[int, tuple[int, float]] = {}
    taken = {}
    next_frame, recv = track._next, track.recv

    async def tapped_next():
        item = await next_frame()
        taken["pts"] = item.pts_ms  # the last one taken before a send is the one sent
        return item

    async def tapped_recv():
        picture = await recv()
        sent[picture.pts % 2**32] = (taken["pts"], asyncio.get_running_loop().time())
        return picture

    track._next, track.recv = tapped_next, tapped_recv
    return sent


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
    # Equal quality: the same pictures the WebRTC run was scored on, as JPEG at every quality
    # of the sweep; JPEG's bytes per frame read off that curve at the WebRTC run's PSNR.
    header = jpeg["bytes_per_frame"] - jpeg.pop("_jpeg_bytes_per_frame")
    curve = await asyncio.to_thread(jpeg_curve, rtc.pop("_scored_pictures"), round(header))
    equal = bytes_at_psnr(curve, rtc["psnr_db_mean"])
    return {"jpeg_ws": jpeg, "webrtc": rtc, "webrtc_bytes_ratio": rtc["bytes_per_s"] / jpeg["bytes_per_s"],
            "jpeg_curve": curve, "jpeg_bytes_per_frame_at_webrtc_psnr": equal,
            "webrtc_bytes_ratio_equal_psnr": None if equal is None else rtc["bytes_per_frame"] / equal}


# -- in a browser: glass-to-glass latency, smoothness, bytes; clean and impaired links ----------


class StampTap:
    """On `Connection.media`: draws a frame counter into every picture handed to the transport
    (browser_media.stamp_counter; for the WebSocket the JPEG is re-encoded with the server's
    settings) and notes the wall-clock time it did, then lets the real sink take the frame."""

    def __init__(self, inner, jpeg_quality: int) -> None:
        self.inner = inner
        self.quality = jpeg_quality
        self.count = 0
        self.stamped: dict[int, float] = {}  # counter value → wall time (s) handed over
        self.ws_bytes = 0

    def video(self, frame) -> bool:
        import simplejpeg
        from browser_media import COUNTER_BITS, stamp_counter

        from comfyui_persona.headless.server.protocol import media_frame, parse_media_frame

        if frame.rgb is None:
            return self.inner.video(frame) if self.inner is not None else False
        value = self.count % (1 << COUNTER_BITS)
        self.count += 1
        frame.rgb = stamp_counter(frame.rgb, value)
        if self.inner is None:  # the WebSocket: the JPEG the viewer gets must show the counter
            kind, index, pts, _ = parse_media_frame(frame.data)
            jpeg = simplejpeg.encode_jpeg(np.ascontiguousarray(frame.rgb), quality=self.quality, colorspace="RGB",
                                          colorsubsampling="420")
            frame.data = media_frame(kind, index, pts, jpeg)
            self.ws_bytes += len(frame.data)
        self.stamped[value] = time.time()
        return self.inner.video(frame) if self.inner is not None else False

    def audio(self, packet: bytes) -> bool:
        return self.inner.audio(packet) if self.inner is not None else False


def smoothness(shown_s: list[float], stall_s: float) -> dict:
    """Gaps between new pictures on screen: stalls are gaps longer than `stall_s`."""
    gaps = np.diff(sorted(shown_s)) if len(shown_s) > 1 else np.zeros(0)
    stalls = gaps[gaps > stall_s]
    return {"stalls": int(stalls.size), "stall_s_total": float(stalls.sum()),
            "gap_ms_max": float(gaps.max() * 1000) if gaps.size else None,
            "gap_ms_p95": float(np.percentile(gaps, 95) * 1000) if gaps.size else None}


async def browser_run(pw, folder, width: int, height: int, media: str, impairment, warmup: float,
                      seconds: float, page_query: str = "", video_codecs: list[str] | None = None) -> dict:
    """One page, one transport, one link: what the viewer sees for `seconds` after `warmup`."""
    from browser_media import ARGS, CHROMIUM, FRAME_COUNTER_JS
    from impair import TcpRelay, UdpRelay, relay_answer, udp_candidates

    from comfyui_persona.headless.server import PersonaService, ServerConfig
    from comfyui_persona.headless.server import webrtc as webrtc_module

    graph = await asyncio.to_thread(graph_of_size, width, height)
    config = ServerConfig(speech=False)
    service = await asyncio.to_thread(PersonaService, graph, config)
    await asyncio.to_thread(service.warm_up)
    if video_codecs and service.webrtc.enabled:
        service.webrtc.video_codecs = [c for c in service.webrtc.video_codecs if c in video_codecs]
    relays: list[UdpRelay] = []
    original_answer = webrtc_module.WebRTCPeer.answer

    async def relayed_answer(peer, offer):  # the server's candidates → relay ports
        answer = await original_answer(peer, offer)
        ports = {}
        for target in udp_candidates(answer["sdp"]):
            relay = await UdpRelay(target, impairment).start()
            relays.append(relay)
            ports[target] = relay.port
        return {**answer, "sdp": relay_answer(answer["sdp"], ports)}

    webrtc_module.WebRTCPeer.answer = relayed_answer
    loop = asyncio.get_running_loop()
    try:
        async with running(service) as server:
            tcp = await TcpRelay(("127.0.0.1", server.port), impairment).start()
            browser = await pw.chromium.launch_persistent_context(
                str(folder / f"profile-{media}-{width}x{height}"), executable_path=str(CHROMIUM), args=ARGS,
                headless=True, viewport={"width": max(1100, width + 500), "height": max(720, height + 200)})
            try:
                page = browser.pages[0] if browser.pages else await browser.new_page()
                await page.goto(f"http://127.0.0.1:{tcp.port}/?media={media}{page_query}", timeout=60000)
                try:
                    await asyncio.wait_for(page.evaluate("""(media) => new Promise((resolve) => {
                      const check = () => window.personaRtc.transport === media && window.personaRtc.client.ready
                        ? resolve(true) : setTimeout(check, 100);
                      check(); })""", media), 60)
                except asyncio.TimeoutError:
                    badge = await page.evaluate("document.getElementById('transport').textContent")
                    raise RuntimeError(f"the page did not get its media on {media} within 60 s (badge: {badge!r})") from None
                (connection,) = [c for c in service.connections if c.session is not None]
                tap = StampTap(connection.media, config.jpeg_quality)
                connection.media = tap
                await page.evaluate(FRAME_COUNTER_JS)
                stop = asyncio.Event()
                actor = loop.create_task(act(lambda m: page.evaluate("(m) => window.personaRtc.client.action(m.directive)", m),
                                             stop))
                await asyncio.sleep(warmup)
                sender = tap.inner.pc.getSenders()[0] if tap.inner is not None else None

                async def rtp_bytes() -> int:
                    stats = await sender.getStats()
                    return sum(s.bytesSent for s in stats.values() if getattr(s, "type", "") == "outbound-rtp")

                start_bytes = await rtp_bytes() if sender else tap.ws_bytes
                begin, first = time.time(), tap.count
                await asyncio.sleep(seconds)
                end_bytes = await rtp_bytes() if sender else tap.ws_bytes
                end, last = time.time(), tap.count
                stop.set()
                await actor
                await asyncio.sleep(1.0 + 2 * impairment.delay_s)  # the last frames reach the screen
                seen = await page.evaluate("window.__counter")
                transport = await page.evaluate("window.personaRtc.transport")
                codec = await page.evaluate("document.getElementById('transport').textContent")
                playout = await page.evaluate("window.personaRtc.playoutTargetMs")
            finally:
                await browser.close()
                await tcp.close()
    finally:
        webrtc_module.WebRTCPeer.answer = original_answer
        for relay in relays:
            relay.close()
        service.pool.shutdown(wait=True)
    from browser_media import COUNTER_BITS

    window = {v % (1 << COUNTER_BITS) for v in range(first, last)}
    latencies, shown = [], []
    for key, at_ms in seen["seen"].items():
        value = int(key)
        if value in window and value in tap.stamped:
            latencies.append(at_ms - tap.stamped[value] * 1000)
            shown.append(at_ms / 1000)
    elapsed = end - begin
    interval = 1.0 / 24
    return {
        "transport": transport, "codec": codec, "playout_target_ms_at_end": playout,
        "bytes_per_s": (end_bytes - start_bytes) / elapsed, "kbit_per_s": (end_bytes - start_bytes) * 8 / elapsed / 1000,
        "fps_sent": (last - first) / elapsed, "fps_shown": len(shown) / elapsed,
        "frames_sent": last - first, "frames_shown": len(shown),
        "glass_to_glass_ms_p50": float(np.percentile(latencies, 50)) if latencies else None,
        "glass_to_glass_ms_p95": float(np.percentile(latencies, 95)) if latencies else None,
        **smoothness(shown, 6 * interval),
        "counter_reads": seen["reads"], "counter_rejects": seen["rejects"],
        "udp_dropped": {way: sum(r.dropped[way] for r in relays) for way in ("down", "up")} if relays else None,
        "seconds": elapsed,
    }


async def browser_size(width: int, height: int, links: dict, warmup: float, seconds: float,
                       medias: list[str], page_query: str = "", video_codecs: list[str] | None = None) -> dict:
    import tempfile

    from playwright.async_api import async_playwright

    out: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        async with async_playwright() as pw:
            for link, impairment in links.items():
                for media in medias:
                    try:
                        result = await browser_run(pw, Path(tmp), width, height, media, impairment, warmup, seconds,
                                                   page_query, video_codecs)
                    except RuntimeError as exc:  # recorded, not hidden: the other runs go on
                        print(f"{width}x{height} {link} {media}: {exc}", flush=True)
                        out.setdefault(link, {})[media] = {"error": str(exc)}
                        continue
                    out.setdefault(link, {})[media] = result
                    print(f"{width}x{height} {link} {media} ({result['codec'] or 'JPEG'}): {result['kbit_per_s']:.0f} kbit/s, "
                          f"shown {result['fps_shown']:.1f} of {result['fps_sent']:.1f} fps, glass-to-glass p50 "
                          f"{result['glass_to_glass_ms_p50']} ms p95 {result['glass_to_glass_ms_p95']} ms, "
                          f"{result['stalls']} stalls ({result['stall_s_total']:.2f} s), max gap {result['gap_ms_max']} ms, "
                          f"playout target {result['playout_target_ms_at_end']} ms",
                          flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", default=None,
                        help="WIDTHxHEIGHT, each a multiple of 16 (default: 384x384 512x512 832x480)")
    parser.add_argument("--seconds", type=float, default=None, help="measured seconds per run (default 15; --browser 10)")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds before measuring (encoder ramp-up)")
    parser.add_argument("--browser", action="store_true",
                        help="the chat page in Chromium: glass-to-glass latency, fps shown and stalls, clean and impaired")
    parser.add_argument("--links", nargs="+", default=["clean", "impaired"], choices=["clean", "impaired"],
                        help="--browser: loopback as is, and/or with 2 %% loss and 100 ms delay each way (impair.py)")
    parser.add_argument("--media", nargs="+", default=["websocket", "webrtc"], choices=["websocket", "webrtc"],
                        help="--browser: the transports measured")
    parser.add_argument("--video-codec", nargs="+", default=None, choices=["H264", "VP8"],
                        help="--browser: the video codecs the server may send (default: all it has, H.264 first)")
    parser.add_argument("--page-query", default="",
                        help="--browser: appended to the page's address (e.g. '&jitter=300', a receiver playout target)")
    parser.add_argument("--no-save", action="store_true", help="print only")
    parser.add_argument("--suffix", default="", help="appended to the result file's name")
    args = parser.parse_args(argv)

    from comfyui_persona.headless.server.config import ServerConfig

    sizes = args.sizes or ["384x384", "512x512", "832x480"]
    seconds = args.seconds or (10.0 if args.browser else 15.0)
    metrics = {}
    if args.browser:
        from impair import Impairment

        every = {"clean": Impairment(), "impaired": Impairment(loss=0.02, delay_s=0.1)}
        links = {k: every[k] for k in args.links}

        async def all_sizes() -> None:
            # One event loop for every run: aioice keeps its mDNS resolver (a browser's host
            # candidates are .local names) bound to the loop that first made it.
            for size in sizes:
                width, height = (int(v) for v in size.lower().split("x"))
                metrics[size] = await browser_size(width, height, links, args.warmup, seconds, args.media,
                                                   args.page_query, args.video_codec)

        asyncio.run(all_sizes())
    for size in [] if args.browser else sizes:
        width, height = (int(v) for v in size.lower().split("x"))
        result = asyncio.run(run_size(width, height, args.warmup, seconds))
        metrics[size] = result
        j, w = result["jpeg_ws"], result["webrtc"]
        print(f"{size}: JPEG/WS {j['kbit_per_s']:.0f} kbit/s at {j['fps']:.1f} fps, PSNR {j['psnr_db_mean']:.1f} dB | "
              f"WebRTC {w['codec']} {w['kbit_per_s']:.0f} kbit/s at {w['fps']:.1f} fps, PSNR {w['psnr_db_mean']:.1f} dB"
              f" | ratio {result['webrtc_bytes_ratio']:.3f}, at equal PSNR {result['webrtc_bytes_ratio_equal_psnr']} | hand-over to decoded p50 "
              f"{j['handover_to_decoded_ms_p50']:.1f} vs {w['handover_to_decoded_ms_p50']:.1f} ms", flush=True)
    if not args.no_save:
        config = {"sizes": sizes, "seconds": seconds, "warmup": args.warmup,
                  "jpeg_quality": ServerConfig().jpeg_quality, "backend": "preview", "fps": 24, "speech": False,
                  "load_avg_1min": os.getloadavg()[0]}
        if args.browser:
            config |= {"viewer": "Debian chromium, headless, the chat page (?media=websocket|webrtc)",
                       "links": {"clean": "loopback", "impaired": "2 % loss and 100 ms delay each way: "
                                 "UDP relay for WebRTC media, TCP relay (fast-retransmit model) for the WebSocket"},
                       "stall": "a gap between new pictures on screen longer than 6 frame intervals (250 ms)"}
            benchmark = "transport_browser"
        else:
            config["link"] = "loopback, no impairment"
            config["quality_measure"] = ("PSNR (dB) on RGB against the rendered frame, mean over the pictures scored; "
                                         "JPEG at equal quality read off a quality sweep of the same pictures")
            config["jpeg_sweep_qualities"] = list(JPEG_SWEEP)
            benchmark = "transport"
        path = result_path(benchmark, "cpu", args.suffix)
        write_result(path, benchmark, cpu_model(), config, metrics)
        print(f"wrote {path.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
