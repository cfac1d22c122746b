"""Protocol 1.1 WebRTC media: a real aiortc peer in this process against the real server on port 0.

The client negotiates over the WebSocket (`webrtc.offer` → `webrtc.answer`), receives the
session's video (decoded, advancing) and its speech as Opus (decoded, not silent) on the
tracks, and the WebSocket stops carrying kind-1/kind-2 frames from `webrtc.state connected`
on. A client that never offers keeps JPEG/PCM; bad offers get protocol errors and keep the
WebSocket media. Every peer is closed before its test ends (warnings are errors: a leaked
socket fails the run).
"""

from __future__ import annotations

import asyncio
import contextlib
import json

import av
import numpy as np
import pytest
import websockets
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription  # noqa: E402
from aiortc.mediastreams import MediaStreamError  # noqa: E402
from blockbuster import blockbuster_ctx

from comfyui_persona.headless.server.protocol import MEDIA_AUDIO, MEDIA_JPEG, parse_media_frame  # noqa: E402
from comfyui_persona.headless.server.webrtc import video_codecs  # noqa: E402
from server_harness import TIMEOUT, running, service_fixtures  # noqa: E402

service, _warm = service_fixtures(resume_grace_s=5.0)

NEGOTIATE_TIMEOUT = 30.0


@pytest.fixture(autouse=True)
def no_blocking():
    """Fail on blocking calls (file I/O, sleeps...) made on the event loop thread by our code.
    The client peer's close joins its decoder thread (aiortc's receiver): allowed there only."""
    with blockbuster_ctx(["comfyui_persona"]) as guard:
        for name in ("threading.Lock.acquire", "threading.Lock.acquire_lock"):
            guard.functions[name].can_block_in("aiortc/rtcrtpreceiver.py", "__stop_decoder")
        yield guard
SPEECH = "Hello there! It is lovely to see you today."


class Viewer:
    """A WebSocket client that keeps reading (a stalled reader would stall the server's pump):
    JSON messages in order, and every binary frame with the number of JSON messages before it."""

    def __init__(self, ws) -> None:
        self.ws = ws
        self.messages: list[dict] = []
        self.binary: list[tuple[int, int]] = []  # (media kind, JSON messages received before it)
        self._changed = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        with contextlib.suppress(websockets.ConnectionClosed):
            async for data in self.ws:
                if isinstance(data, bytes):
                    self.binary.append((parse_media_frame(data)[0], len(self.messages)))
                else:
                    self.messages.append(json.loads(data))
                self._changed.set()

    async def send(self, **message) -> None:
        await self.ws.send(json.dumps(message))

    async def wait_for(self, predicate, timeout: float = TIMEOUT, after: int = 0):
        """The first JSON message from index `after` on that `predicate` holds for (waiting for new ones)."""
        async def scan():
            seen = after
            while True:
                for message in self.messages[seen:]:
                    if predicate(message):
                        return message
                seen = len(self.messages)
                self._changed.clear()
                await self._changed.wait()
        return await asyncio.wait_for(scan(), timeout)

    async def wait_type(self, kind: str, timeout: float = TIMEOUT, after: int = 0, **match) -> dict:
        return await self.wait_for(lambda m: m["type"] == kind and all(m.get(k) == v for k, v in match.items()),
                                   timeout, after)

    async def wait_binary(self, kind: int, count: int, after: int = 0, timeout: float = TIMEOUT) -> None:
        """Until `count` binary frames of `kind` arrived after the first `after` JSON messages."""
        async def scan():
            while sum(1 for k, n in self.binary if k == kind and n >= after) < count:
                self._changed.clear()
                await self._changed.wait()
        await asyncio.wait_for(scan(), timeout)

    async def close(self) -> None:
        await self.ws.close()
        await asyncio.wait_for(self._task, TIMEOUT)


@contextlib.asynccontextmanager
async def viewer(server, **hello_fields):
    async with websockets.connect(server.ws_url, open_timeout=TIMEOUT, close_timeout=5, max_size=None) as ws:
        client = Viewer(ws)
        try:
            await client.send(type="hello", **hello_fields)
            client.ready = await client.wait_type("ready")
            yield client
        finally:
            await client.close()


@contextlib.asynccontextmanager
async def peer(kinds=("video", "audio")):
    """An aiortc client peer that only receives; closed on exit."""
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    tracks: dict[str, asyncio.Future] = {kind: asyncio.get_running_loop().create_future() for kind in kinds}
    for kind in kinds:
        pc.addTransceiver(kind, direction="recvonly")

    @pc.on("track")
    def on_track(track):
        if not tracks[track.kind].done():
            tracks[track.kind].set_result(track)

    pc.tracks = tracks
    try:
        yield pc
    finally:
        await pc.close()


async def negotiate(client: Viewer, pc: RTCPeerConnection) -> dict:
    """Offer (complete: aiortc gathers before `setLocalDescription` returns), apply the answer,
    wait for `webrtc.state connected`; returns that message."""
    await pc.setLocalDescription(await pc.createOffer())
    after = len(client.messages)
    await client.send(type="webrtc.offer", id="o1", sdp=pc.localDescription.sdp)
    answer = await client.wait_for(lambda m: m["type"] in ("webrtc.answer", "error"), NEGOTIATE_TIMEOUT, after)
    assert answer["type"] == "webrtc.answer", answer
    assert answer["reply_to"] == "o1"
    await pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type="answer"))
    return await client.wait_type("webrtc.state", NEGOTIATE_TIMEOUT, after, state="connected")


async def receive(track, count: int, timeout: float = NEGOTIATE_TIMEOUT) -> list:
    frames = []
    async with asyncio.timeout(timeout):
        while len(frames) < count:
            frames.append(await track.recv())
    return frames


def offer_sdp_with_codecs(sdp: str, kind: str, keep: set[str]) -> str:
    """`sdp` with the `kind` section's codecs cut down to those named in `keep` (by rtpmap)."""
    lines = sdp.split("\r\n")
    out, section, payloads = [], None, set()
    rtpmaps = {}
    for line in lines:
        if line.startswith("m="):
            section = line[2:].split()[0]
        if section == kind and line.startswith("a=rtpmap:"):
            pt, name = line[len("a=rtpmap:"):].split(" ", 1)
            rtpmaps[pt] = name.split("/")[0]
    payloads = {pt for pt, name in rtpmaps.items() if name in keep}
    section = None
    for line in lines:
        if line.startswith("m="):
            section = line[2:].split()[0]
            if section == kind:
                head = line.split()[:3]
                line = " ".join(head + [pt for pt in line.split()[3:] if pt in payloads])
        elif section == kind and line.startswith(("a=rtpmap:", "a=fmtp:", "a=rtcp-fb:")):
            pt = line.split(":", 1)[1].split()[0]
            if pt not in payloads:
                continue
        out.append(line)
    return "\r\n".join(out)


# -- negotiation and media --------------------------------------------------------------------------


async def test_ready_announces_webrtc_with_its_codecs_and_no_ice_servers_by_default(service):
    async with running(service) as server, viewer(server) as client:
        ready = client.ready
    assert "webrtc" in ready["features"]
    assert ready["webrtc"]["ice_servers"] == []
    assert ready["webrtc"]["video_codecs"] == video_codecs() and ready["webrtc"]["audio_codecs"] == ["opus"]
    assert ready["video"]["format"] == "jpeg"  # the 1.0 fields are unchanged


async def test_video_arrives_on_the_track_decoded_and_advancing_and_the_websocket_stops_sending_jpeg(service):
    async with running(service) as server, viewer(server, video={"format": "jpeg", "max_fps": 10}) as client:
        await client.wait_binary(MEDIA_JPEG, 2)  # before any offer: JPEG over the WebSocket, as in 1.0
        async with peer(("video",)) as pc:
            connected = await negotiate(client, pc)
            assert connected["media"] == "webrtc" and connected["codecs"]["video"] == video_codecs()[0]
            switched_at = client.messages.index(connected)
            track = await asyncio.wait_for(pc.tracks["video"], TIMEOUT)
            # An action makes the picture move: frames must change, not only arrive.
            await client.send(type="action", id="a1", directive={"action": "wave", "expression": "smile",
                                                                 "intensity": 1.0})
            frames = await receive(track, 12)
            assert all((f.width, f.height) == (384, 384) for f in frames)
            pts = [f.pts for f in frames]
            assert pts == sorted(pts) and len(set(pts)) == len(pts), pts
            pictures = [f.to_ndarray(format="rgb24").astype(np.int16) for f in frames]
            assert pictures[0].std() > 10  # a drawn character, not a blank or broken decode
            assert max(np.abs(p - pictures[0]).mean() for p in pictures[1:]) > 1.0
            metrics = await client.wait_type("metrics")
            assert metrics["frames_sent"] > 0
        after = [kind for kind, seen in client.binary if seen > switched_at]
        assert MEDIA_JPEG not in after, f"{after.count(MEDIA_JPEG)} JPEG frames on the WebSocket after connected"


async def test_speech_arrives_as_opus_not_silent_and_no_pcm_on_the_websocket(service):
    async with running(service) as server, viewer(server, video={"format": "jpeg", "max_fps": 10}) as client:
        async with peer(("video", "audio")) as pc:
            connected = await negotiate(client, pc)
            assert connected["codecs"] == {"video": video_codecs()[0], "audio": "opus"}
            switched_at = client.messages.index(connected)
            audio = await asyncio.wait_for(pc.tracks["audio"], TIMEOUT)
            video = await asyncio.wait_for(pc.tracks["video"], TIMEOUT)
            drain = asyncio.get_running_loop().create_task(_drain(video))  # keep the video receiver flowing
            try:
                await client.send(type="action", id="a1", directive={"action": "idle", "expression": "smile",
                                                                     "intensity": 0.7, "dialogue": SPEECH})
                loudest = 0.0
                async with asyncio.timeout(NEGOTIATE_TIMEOUT):
                    while loudest <= 500:  # espeak speech is in the thousands; Opus of silence is ~0
                        frame = await audio.recv()
                        samples = frame.to_ndarray().astype(np.float64)
                        loudest = max(loudest, float(np.sqrt((samples ** 2).mean())))
                assert frame.sample_rate == 48000
            finally:
                drain.cancel()
                with contextlib.suppress(asyncio.CancelledError, MediaStreamError):
                    await drain
        after = [kind for kind, seen in client.binary if seen > switched_at]
        assert MEDIA_AUDIO not in after and MEDIA_JPEG not in after


async def _drain(track) -> None:
    while True:
        await track.recv()


async def test_a_client_offering_only_vp8_gets_vp8_video_that_decodes(service):
    async with running(service) as server, viewer(server, video={"format": "jpeg", "max_fps": 10}) as client:
        async with peer(("video",)) as pc:
            await pc.setLocalDescription(await pc.createOffer())
            sdp = offer_sdp_with_codecs(pc.localDescription.sdp, "video", {"VP8", "rtx"})
            assert "H264" not in sdp
            await client.send(type="webrtc.offer", id="o1", sdp=sdp)
            answer = await client.wait_type("webrtc.answer", NEGOTIATE_TIMEOUT)
            assert answer["codecs"] == {"video": "VP8"}
            await pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type="answer"))
            await client.wait_type("webrtc.state", NEGOTIATE_TIMEOUT, state="connected")
            frames = await receive(await asyncio.wait_for(pc.tracks["video"], TIMEOUT), 4)
            assert all((f.width, f.height) == (384, 384) for f in frames)
            assert frames[-1].to_ndarray(format="rgb24").std() > 10


async def test_a_client_that_never_offers_keeps_jpeg_and_pcm_over_the_websocket(service):
    async with running(service) as server, viewer(server) as client:
        await client.send(type="action", id="a1", directive={"action": "idle", "expression": "smile",
                                                             "intensity": 0.7, "dialogue": SPEECH})
        await client.wait_binary(MEDIA_AUDIO, 5)
        await client.wait_binary(MEDIA_JPEG, 10)
    assert not [m for m in client.messages if m["type"].startswith("webrtc.")]


async def test_closing_the_peer_sends_the_media_back_to_the_websocket(service):
    async with running(service) as server, viewer(server, video={"format": "jpeg", "max_fps": 10}) as client:
        async with peer(("video",)) as pc:
            await negotiate(client, pc)
            track = await asyncio.wait_for(pc.tracks["video"], TIMEOUT)
            await receive(track, 2)
            await client.send(type="webrtc.close", id="x1")
            closed = await client.wait_type("webrtc.state", state="closed")
            assert closed["media"] == "websocket"
            await client.wait_binary(MEDIA_JPEG, 3, after=client.messages.index(closed) + 1)
            assert not service.webrtc.peers


async def test_a_peer_that_goes_away_fails_over_to_websocket_media(service):
    """The client's peer closes without a word on the WebSocket: the server's peer sees the
    connection close or fail, says `webrtc.state` and frames come back as JPEG."""
    async with running(service) as server, viewer(server, video={"format": "jpeg", "max_fps": 10}) as client:
        async with peer(("video",)) as pc:
            await negotiate(client, pc)
            await receive(await asyncio.wait_for(pc.tracks["video"], TIMEOUT), 2)
        ended = await client.wait_for(lambda m: m["type"] == "webrtc.state" and m["state"] != "connected", 60)
        assert ended["media"] == "websocket"
        await client.wait_binary(MEDIA_JPEG, 3, after=client.messages.index(ended) + 1)


async def test_a_peer_that_never_connects_fails_with_webrtc_failed_and_media_stay_on_the_websocket(service):
    service.config.webrtc_connect_timeout_s = 0.5  # the client below never applies the answer
    async with running(service) as server, viewer(server) as client, peer(("video",)) as pc:
        await pc.setLocalDescription(await pc.createOffer())
        await client.send(type="webrtc.offer", id="o1", sdp=pc.localDescription.sdp)
        await client.wait_type("webrtc.answer", NEGOTIATE_TIMEOUT)
        error = await client.wait_type("error", code="webrtc_failed")
        assert "not connected within 0.5 s" in error["message"]
        failed = await client.wait_type("webrtc.state", state="failed")
        assert failed["media"] == "websocket"
        assert not service.webrtc.peers
        await client.wait_binary(MEDIA_JPEG, 3, after=len(client.messages))


# -- bad input ------------------------------------------------------------------------------------


async def test_malformed_sdp_is_a_bad_offer_and_jpeg_keeps_flowing(service):
    async with running(service) as server, viewer(server) as client:
        await client.send(type="webrtc.offer", id="o1", sdp="this is not SDP\r\nm=video nonsense\r\n")
        error = await client.wait_type("error", reply_to="o1")
        assert error["code"] == "bad_offer" and "SDP" in error["message"], error
        await client.send(type="webrtc.offer", id="o2", sdp="v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n")
        error = await client.wait_type("error", reply_to="o2")
        assert error["code"] == "bad_offer" and "no audio or video" in error["message"]
        await client.send(type="webrtc.offer", id="o3")
        error = await client.wait_type("error", reply_to="o3")
        assert error["code"] == "invalid" and "'sdp'" in error["message"]
        count = len(client.messages)
        await client.wait_binary(MEDIA_JPEG, 3, after=count)
        assert not service.webrtc.peers


async def test_an_offer_aiortc_cannot_answer_is_a_bad_offer_not_an_internal_error(service):
    """Two sections with one mid: aiortc trips while answering ("Media sections in answer do
    not match offer"); the client gets `bad_offer` naming it (it got `internal` and the server
    logged a traceback), JPEG keeps flowing and no peer is left over."""
    async with running(service) as server, viewer(server) as client, peer() as pc:
        await pc.setLocalDescription(await pc.createOffer())
        sdp = pc.localDescription.sdp.replace("a=mid:1", "a=mid:0").replace("a=group:BUNDLE 0 1", "a=group:BUNDLE 0")
        await client.send(type="webrtc.offer", id="bad", sdp=sdp)
        error = await client.wait_type("error", NEGOTIATE_TIMEOUT, reply_to="bad")
        assert error["code"] == "bad_offer" and "do not match" in error["message"], error
        assert not service.webrtc.peers
        await client.wait_binary(MEDIA_JPEG, 3, after=len(client.messages))


async def test_an_offer_without_a_dtls_fingerprint_is_a_bad_offer_at_once(service):
    """It was answered, then the peer died inside aiortc's DTLS transport (a traceback in the
    log) and the client waited the whole connect timeout for `webrtc_failed`."""
    async with running(service) as server, viewer(server) as client, peer() as pc:
        await pc.setLocalDescription(await pc.createOffer())
        sdp = "\r\n".join(line for line in pc.localDescription.sdp.split("\r\n")
                           if not line.startswith("a=fingerprint"))
        await client.send(type="webrtc.offer", id="nofp", sdp=sdp)
        error = await client.wait_type("error", reply_to="nofp")
        assert error["code"] == "bad_offer" and "fingerprint" in error["message"], error
        assert not service.webrtc.peers
        await client.wait_binary(MEDIA_JPEG, 3, after=len(client.messages))


async def test_an_inactive_video_section_keeps_the_pictures_on_the_websocket(service):
    """Audio over WebRTC, video section inactive: the answer names no video codec, and the
    pictures keep coming as JPEG over the WebSocket (they went nowhere before)."""
    async with running(service) as server, viewer(server) as client:
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        try:
            pc.addTransceiver("video", direction="inactive")
            pc.addTransceiver("audio", direction="recvonly")
            connected = await negotiate(client, pc)
            assert "video" not in connected["codecs"] and "audio" in connected["codecs"], connected
            await client.wait_binary(MEDIA_JPEG, 5, after=client.messages.index(connected) + 1)
        finally:
            await pc.close()


async def test_an_offer_with_only_codecs_we_do_not_send_is_refused_by_name(service):
    async with running(service) as server, viewer(server) as client, peer(("video",)) as pc:
        await pc.setLocalDescription(await pc.createOffer())
        sdp = offer_sdp_with_codecs(pc.localDescription.sdp, "video", {"rtx"})  # no VP8, no H264 left
        assert "VP8" not in sdp and "H264" not in sdp
        await client.send(type="webrtc.offer", id="o1", sdp=sdp)
        error = await client.wait_type("error", reply_to="o1")
        assert error["code"] == "bad_offer", error
        assert "no video codec this server sends" in error["message"] and "VP8" in error["message"]
        await client.wait_binary(MEDIA_JPEG, 3, after=len(client.messages))
        assert not service.webrtc.peers


async def test_offers_are_bounded_one_peer_per_session_and_rate_limited(service):
    service.config.webrtc_offers_per_minute = 2  # answered offers count, refused ones do not
    async with running(service) as server, viewer(server) as client, peer(("video",)) as pc:
        await pc.setLocalDescription(await pc.createOffer())
        sdp = pc.localDescription.sdp
        await client.send(type="webrtc.offer", id="o1", sdp=sdp)
        await client.wait_type("webrtc.answer", NEGOTIATE_TIMEOUT, reply_to="o1")
        await client.send(type="webrtc.offer", id="o2", sdp=sdp)
        second = await client.wait_type("error", reply_to="o2")
        assert second["code"] == "invalid" and "already open" in second["message"]
        assert len(service.webrtc.peers) == 1
        await client.send(type="webrtc.close")
        await client.wait_type("webrtc.state", state="closed")
        for n in (3, 4):
            await client.send(type="webrtc.offer", id=f"o{n}", sdp=sdp)
        await client.wait_type("webrtc.answer", NEGOTIATE_TIMEOUT, reply_to="o3")
        assert (await client.wait_type("error", reply_to="o4"))["code"] == "invalid"
        await client.send(type="webrtc.close")
        await client.wait_type("webrtc.state", after=len(client.messages), state="closed")
        await client.send(type="webrtc.offer", id="o5", sdp=sdp)
        limited = await client.wait_type("error", reply_to="o5")
        assert limited["code"] == "rate_limited" and "per minute" in limited["message"]
        assert not service.webrtc.peers
        await client.wait_binary(MEDIA_JPEG, 3, after=len(client.messages))


async def test_candidates_need_an_offer_are_checked_and_bounded(service):
    service.config.messages_per_second = 1000  # the flood below is for the candidate bound, not the rate limit
    async with running(service) as server, viewer(server) as client, peer(("video",)) as pc:
        await client.send(type="webrtc.candidate", candidate="candidate:1 1 udp 1 192.0.2.9 9 typ host", sdpMid="0")
        assert "webrtc.offer first" in (await client.wait_type("error", code="invalid"))["message"]
        await pc.setLocalDescription(await pc.createOffer())
        await client.send(type="webrtc.offer", id="o1", sdp=pc.localDescription.sdp)
        await client.wait_type("webrtc.answer", NEGOTIATE_TIMEOUT)
        await client.send(type="webrtc.candidate", candidate="candidate:garbage", sdpMid="0")
        bad = await client.wait_for(lambda m: m["type"] == "error" and "ICE candidate line" in m["message"])
        assert bad["code"] == "invalid"
        for port in range(64):
            await client.send(type="webrtc.candidate", candidate=f"candidate:{port} 1 udp 1 192.0.2.9 {9000 + port} typ host",
                              sdpMid="0")
        flood = await client.wait_for(lambda m: m["type"] == "error" and m["code"] == "rate_limited", 30)
        assert "ICE candidates" in flood["message"]


async def test_webrtc_off_in_the_settings_is_not_announced_and_offers_are_refused():
    from server_harness import make_service

    service = await asyncio.to_thread(make_service, webrtc=False)
    try:
        async with running(service) as server, viewer(server) as client:
            assert "webrtc" not in client.ready["features"] and "webrtc" not in client.ready
            await client.send(type="webrtc.offer", id="o1", sdp="v=0\r\n")
            error = await client.wait_type("error", reply_to="o1")
            assert error["code"] == "webrtc_unavailable"
            await client.wait_binary(MEDIA_JPEG, 2)
    finally:
        service.pool.shutdown(wait=True)


# -- settings -------------------------------------------------------------------------------------


def test_ice_servers_are_stun_or_turn_urls_and_a_bare_url_is_a_server():
    import argparse

    from comfyui_persona.headless.server.config import ServerConfig
    from comfyui_persona.headless.settings_args import SettingsError, add_model_arguments, settings_from_args

    parser = argparse.ArgumentParser()
    add_model_arguments(parser, ServerConfig)
    config = settings_from_args(ServerConfig, parser.parse_args(["--ice-server", "stun:stun.example.org:3478",
                                                                 "--no-webrtc"]))
    assert [s.urls for s in config.ice_servers] == [["stun:stun.example.org:3478"]] and config.webrtc is False
    turn = ServerConfig(ice_servers=[{"urls": ["turn:turn.example.org:3478"], "username": "u", "credential": "p"}])
    assert turn.ice_servers[0].username == "u"
    with pytest.raises(SettingsError, match="not a stun:, stuns:, turn: or turns: URL"):
        settings_from_args(ServerConfig, parser.parse_args(["--ice-server", "http://example.org"]))
    with pytest.raises(ValueError, match="needs a username and a credential"):
        ServerConfig(ice_servers=["turn:turn.example.org:3478"])  # a browser would throw on it
    with pytest.raises(ValueError, match="port must be"):
        ServerConfig(ice_servers=["stun:stun.example.org:99999"])
    with pytest.raises(ValueError, match="extra"):
        ServerConfig(ice_servers=[{"urls": ["stun:a:1"], "password": "p"}])


async def test_configured_ice_servers_are_announced_in_ready():
    from server_harness import make_service

    servers = [{"urls": ["stun:stun.example.org:3478"]},
               {"urls": ["turn:turn.example.org:3478"], "username": "u", "credential": "p"}]
    service = await asyncio.to_thread(make_service, ice_servers=servers)
    try:
        async with running(service) as server, viewer(server) as client:
            assert client.ready["webrtc"]["ice_servers"] == servers
    finally:
        service.pool.shutdown(wait=True)


async def test_a_ping_is_answered_while_an_offer_waits_for_a_stun_server_that_never_answers():
    """aiortc gathers every ICE candidate before it answers: seconds with a STUN server that
    does not answer (here a local UDP socket that reads and never replies). The connection
    serves its other messages meanwhile (it used to wait for the answer), and the answer still
    comes."""
    import socket

    from server_harness import make_service

    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))
    stun = f"stun:127.0.0.1:{silent.getsockname()[1]}"
    service = await asyncio.to_thread(make_service, ice_servers=[{"urls": [stun]}])
    try:
        async with running(service) as server, viewer(server) as client, peer() as pc:
            await pc.setLocalDescription(await pc.createOffer())
            after = len(client.messages)
            await client.send(type="webrtc.offer", id="o1", sdp=pc.localDescription.sdp)
            await client.send(type="webrtc.candidate", candidate=None)  # trickled at once: held for the offer
            await client.send(type="ping", id="p1")
            pong = await client.wait_type("pong", after=after, id="p1")
            answer = await client.wait_for(lambda m: m["type"] in ("webrtc.answer", "error"), NEGOTIATE_TIMEOUT, after)
            assert answer["type"] == "webrtc.answer", answer
            assert client.messages.index(pong) < client.messages.index(answer), "the ping waited for the answer"
            assert not [m for m in client.messages[after:] if m["type"] == "error"]
            silent.settimeout(0)
            assert silent.recv(2048), "the server never asked the STUN server (the test would prove nothing)"
    finally:
        silent.close()
        service.pool.shutdown(wait=True)


# -- the audio track's framing and clock --------------------------------------------------------


def _packet(pts_ms: int, samples: np.ndarray) -> bytes:
    from comfyui_persona.headless.server.protocol import media_frame

    return media_frame(MEDIA_AUDIO, 0, pts_ms, samples.astype("<i2").tobytes())


async def test_audio_is_a_continuous_stream_of_20_ms_chunks_with_speech_placed_by_its_pts():
    """A microphone-like stream: consecutive 20 ms chunks, silence between utterances, so RTP
    timestamps follow the wall clock (a browser maps them through the sender reports to align
    audio and picture). Speech split in whole-ms packets plays on gaplessly; a later utterance
    lands exactly its pts distance after the first."""
    from comfyui_persona.headless.server.webrtc_tracks import AudioTrack, MediaClock

    clock = MediaClock()
    track = AudioTrack(22050, clock)
    loop = asyncio.get_running_loop()
    clock.place(0, loop.time())  # the picture at pts 0 sets the media clock
    speech = (np.sin(np.arange(4410) / 7.0) * 8000 + 9000).astype(np.int16)  # no zero sample
    track.push_packet(_packet(100, speech[:2000]))  # 90.7 ms
    track.push_packet(_packet(191, speech[2000:]))  # stamped in whole ms (7 samples off): it continues
    track.push_packet(_packet(500, speech[:441]))  # a new utterance 400 ms after the first
    chunks = [track.pcm_chunk(loop.time()) for _ in range(40)]
    assert all(c.size == 441 for c in chunks)
    stream = np.concatenate(chunks)
    voiced = np.flatnonzero(stream)
    first = int(voiced[0])
    assert abs(first / 22050 - (clock.due(100) - track._start)) <= 1 / 22050  # at its picture's time
    assert np.array_equal(stream[first : first + speech.size], speech)
    assert not stream[first + speech.size : first + 8820].any()  # silence until the second
    assert np.array_equal(stream[first + 8820 : first + 8820 + 441], speech[:441])  # 400 ms later


async def test_a_reset_drops_the_speech_queued_on_the_webrtc_track():
    """Reset cuts the reply: the WebSocket page stops its player, and the WebRTC track drops
    the speech it holds, so the chunks after are silence (the rest of the cut sentence played)."""
    from comfyui_persona.headless.server.webrtc_tracks import AudioTrack, MediaClock

    clock = MediaClock()
    track = AudioTrack(22050, clock)
    loop = asyncio.get_running_loop()
    clock.place(0, loop.time())
    speech = (np.sin(np.arange(22050) / 7.0) * 8000 + 9000).astype(np.int16)  # one second, no zero
    track.push_packet(_packet(0, speech))
    first = [track.pcm_chunk(loop.time()) for _ in range(5)]
    assert np.concatenate(first).any()  # speaking
    track.drop_speech()
    after = np.concatenate([track.pcm_chunk(loop.time()) for _ in range(40)])
    assert not after.any() and track.dropped > 0


async def test_opus_packets_carry_the_time_of_their_sound_and_leave_at_it():
    """The RTP timestamp of an audio packet is the time of its decoded sound (libopus's pts,
    its lookahead included), and the packet leaves at that time on the loop clock, so the
    sender reports (timestamp, time sent) describe the same clock the pictures are sent by: the
    decoded speech starts where its picture's time falls, within the codec's smearing."""
    from comfyui_persona.headless.server.webrtc_tracks import OPUS_RATE, AudioTrack, MediaClock

    clock = MediaClock()
    track = AudioTrack(22050, clock)
    loop = asyncio.get_running_loop()
    clock.place(1000, loop.time())  # the picture at 1000 ms sets the media clock
    track.push_packet(_packet(1200, (np.sin(np.arange(4410) / 7.0) * 12000).astype(np.int16)))
    decoder = av.CodecContext.create("libopus", "r")
    decoder.sample_rate, decoder.layout = OPUS_RATE, "mono"
    packets, decoded, late = [], [], []
    while len(packets) < 30:
        packet = await asyncio.wait_for(track.recv(), TIMEOUT)
        late.append(loop.time() - (track._start + packet.pts / OPUS_RATE))
        packets.append(packet.pts)
        decoded += [f.to_ndarray().reshape(-1) for f in decoder.decode(packet)]
    assert min(late) >= -0.001  # none leaves before its time
    assert packets == [packets[0] + 960 * k for k in range(30)] and packets[0] < 0  # lookahead: sound before pts 0
    sound = np.concatenate(decoded).astype(np.float64)
    onset = int(np.flatnonzero(np.abs(sound) > 1200)[0])  # 10 % of the amplitude
    heard = track._start + (packets[0] + onset) / OPUS_RATE
    assert abs(heard - clock.due(1200)) < 0.003, heard - clock.due(1200)
    track.stop()
    with pytest.raises(MediaStreamError):
        await track.recv()


def test_media_clock_holds_during_speech_and_follows_the_pictures_in_silence():
    """The pump's hand-overs jump (frames dropped for a new plan, a loop stall): while nobody
    speaks the mapping follows a late or much earlier picture; during speech it holds, so the
    pictures keep the mapping the speech started on (a late one leaves late, an early one waits)."""
    from comfyui_persona.headless.server.webrtc_tracks import MAX_SKEW_S, MediaClock

    clock = MediaClock(delay_s=0.02)
    assert clock.due(0) is None
    assert clock.place(0, 10.0) == pytest.approx(10.02)  # the first picture sets it
    assert clock.place(1000, 11.01) == pytest.approx(11.02)  # on time: unchanged
    assert clock.place(2000, 12.2) == pytest.approx(12.22)  # late and silent: follows
    clock.speaking = True
    assert clock.place(3000, 13.4) == pytest.approx(13.22)  # late during speech: holds
    assert clock.place(4000, 13.9) == pytest.approx(14.22)  # early during speech: holds (it waits)
    assert clock.place(5000, 15.22 + MAX_SKEW_S + 0.1) == pytest.approx(15.22 + MAX_SKEW_S + 0.12)  # a stall: follows
    clock.speaking = False
    assert clock.place(6000, 16.0) == pytest.approx(16.02)  # much earlier, silent: pulled back
    clock.delay_by(0.05)  # speech came after its picture's time: the pictures wait for it
    assert clock.due(7000) == pytest.approx(17.07)


async def test_video_pictures_leave_at_their_time_on_the_media_clock_and_are_stamped_with_it():
    """The RTP timestamp of a picture is its time on the media clock (what the sender reports
    pair with the send time), not the pump's hand-over: a picture handed over early waits."""
    from comfyui_persona.headless.server.frames import EncodedFrame
    from comfyui_persona.headless.server.webrtc_tracks import VIDEO_CLOCK_HZ, MediaClock, VideoTrack

    clock = MediaClock()
    clock.speaking = True  # the mapping holds: the second picture is early and must wait
    track = VideoTrack(clock)
    loop = asyncio.get_running_loop()
    rgb = np.zeros((16, 16, 3), dtype=np.uint8)
    track.push(EncodedFrame(b"", 0, 0, [], rgb))
    track.push(EncodedFrame(b"", 1, 125, [], rgb))  # handed over at once: 125 ms early
    first = await asyncio.wait_for(track.recv(), TIMEOUT)
    second = await asyncio.wait_for(track.recv(), TIMEOUT)
    assert loop.time() >= clock.due(125) - track._busy - 0.001  # it waited for its time
    assert second.pts - first.pts == 125 * VIDEO_CLOCK_HZ // 1000
    assert first.pts == round(clock.due(0) * VIDEO_CLOCK_HZ)
    track.stop()


async def test_a_picture_due_too_soon_after_a_pulled_back_mapping_is_skipped_not_sent_late():
    """In silence a picture handed over far earlier than its time pulls the mapping back (queued
    pictures were dropped for a new plan). The next picture's time may then come sooner after the
    last one than the encoder's 1/30 s clock allows: it is skipped, so the pictures after it keep
    the new mapping the speech is placed by, instead of trailing it stretched."""
    from comfyui_persona.headless.server.frames import EncodedFrame
    from comfyui_persona.headless.server.webrtc_tracks import VIDEO_CLOCK_HZ, MediaClock, VideoTrack

    clock = MediaClock()
    track = VideoTrack(clock)
    rgb = np.zeros((16, 16, 3), dtype=np.uint8)
    track.push(EncodedFrame(b"", 0, 0, [], rgb))
    first = await asyncio.wait_for(track.recv(), TIMEOUT)
    track.push(EncodedFrame(b"", 1, 1000, [], rgb))  # 1 s of pts skipped: the mapping is pulled back
    track.push(EncodedFrame(b"", 2, 1040, [], rgb))  # within the early tolerance of the new mapping
    second = await asyncio.wait_for(track.recv(), TIMEOUT)
    assert track.skipped == 1 and clock.moves == 1
    assert second.pts == round(clock.due(1040) * VIDEO_CLOCK_HZ)  # on the new mapping, not trailing it
    assert (second.pts - first.pts) / VIDEO_CLOCK_HZ >= 0.034
    track.stop()


async def test_audio_without_a_picture_plays_at_once():
    """Before the first picture (or after a stall) speech does not wait for it."""
    from comfyui_persona.headless.server.webrtc_tracks import AudioTrack, MediaClock

    track = AudioTrack(22050, MediaClock())
    track.push_packet(_packet(5000, np.ones(441, dtype=np.int16)))
    assert track.pcm_chunk(asyncio.get_running_loop().time()).all()


async def test_an_offer_that_would_make_the_server_receive_media_is_refused(service):
    """The server only sends: extra tracks, a sending section or a data channel would have it
    decode a client's media nobody reads (native decoders, unbounded queues)."""
    async with running(service) as server, viewer(server) as client:
        cases = {
            "two videos": (["video", "video"], "recvonly", False),
            "sendrecv": (["video"], "sendrecv", False),
            "data channel": (["video"], "recvonly", True),
        }
        for n, (name, (kinds, direction, channel)) in enumerate(cases.items()):
            pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
            try:
                for kind in kinds:
                    pc.addTransceiver(kind, direction=direction)
                if channel:
                    pc.createDataChannel("x")
                await pc.setLocalDescription(await pc.createOffer())
                await client.send(type="webrtc.offer", id=f"o{n}", sdp=pc.localDescription.sdp)
                error = await client.wait_type("error", reply_to=f"o{n}")
                assert error["code"] == "bad_offer", (name, error)
            finally:
                await pc.close()
        await client.wait_binary(MEDIA_JPEG, 3, after=len(client.messages))
        assert not service.webrtc.peers


# -- lip-sync across the viewer's audio output (webrtc.playout) --------------------------------------


async def test_speech_leads_its_picture_by_the_reported_audio_lag():
    """A viewer hears each sound its audio output latency after its own playout: with the lag
    it reported (`MediaClock.audio_lead_s`), a stretch of speech starts that much before its
    picture's time, so sound and picture reach the viewer together."""
    from comfyui_persona.headless.server.webrtc_tracks import AudioTrack, MediaClock

    clock = MediaClock()
    clock.audio_lead_s = 0.03
    track = AudioTrack(22050, clock)
    loop = asyncio.get_running_loop()
    clock.place(0, loop.time() + 1.0)  # pictures due a second from now: the speech is in time
    speech = (np.sin(np.arange(2205) / 7.0) * 8000 + 9000).astype(np.int16)
    track.push_packet(_packet(100, speech))
    stream = np.concatenate([track.pcm_chunk(loop.time()) for _ in range(80)])
    first = int(np.flatnonzero(stream)[0])
    assert abs(first / 22050 - (clock.due(100) - 0.03 - track._start)) <= 1 / 22050
    assert clock.moves == 0  # the pictures kept their time


async def test_speech_too_late_for_the_lead_starts_at_once_and_the_pictures_wait():
    """Speech that comes after its lead time cannot be sent earlier: it starts at once and the
    pictures' mapping moves later by the shortfall, so the lead holds between sound and picture."""
    from comfyui_persona.headless.server.webrtc_tracks import AudioTrack, MediaClock

    clock = MediaClock()
    clock.audio_lead_s = 0.05
    track = AudioTrack(22050, clock)
    loop = asyncio.get_running_loop()
    now = loop.time()
    clock.place(0, now)  # the picture at pts 0 leaves 20 ms from now: 30 ms too soon for the lead
    track.push_packet(_packet(0, np.ones(441, dtype=np.int16)))
    first = track.pcm_chunk(now)
    assert first[0] == 1  # from the chunk's first sample on
    assert clock.moves == 1
    assert clock.due(0) - track._start == pytest.approx(0.05, abs=1 / 22050)


async def test_the_viewers_audio_lag_sets_the_lead_and_bad_reports_are_refused_by_name(service):
    """`webrtc.playout` needs a peer, takes a number of ms in [0, 200] and sets the peer's speech
    lead; a bad one is `invalid`, names the field, and changes nothing: the peer stays connected."""
    async with running(service) as server, viewer(server) as client, peer() as pc:
        await client.send(type="webrtc.playout", audio_lag_ms=30)
        assert "webrtc.offer first" in (await client.wait_type("error", code="invalid"))["message"]
        await negotiate(client, pc)
        (rtc,) = service.webrtc.peers.values()
        assert rtc.clock.audio_lead_s == 0.0  # nothing reported: the streams as sent
        await client.send(type="webrtc.playout", audio_lag_ms=28.5)
        await client.send(type="ping", id="p1")
        await client.wait_type("pong", id="p1")  # handled in order: the report before it is applied
        assert rtc.clock.audio_lead_s == pytest.approx(0.0285)
        bad = [{"audio_lag_ms": -1}, {"audio_lag_ms": 201}, {"audio_lag_ms": "30"}, {"audio_lag_ms": True}, {}]
        for n, fields in enumerate(bad):
            seen = len(client.messages)
            await client.send(type="webrtc.playout", id=f"b{n}", **fields)
            error = await client.wait_type("error", after=seen, reply_to=f"b{n}")
            assert error["code"] == "invalid" and "'audio_lag_ms'" in error["message"] and "[0, 200]" in error["message"]
        seen = len(client.messages)
        await client.ws.send('{"type": "webrtc.playout", "id": "nan", "audio_lag_ms": NaN}')
        assert (await client.wait_type("error", after=seen, reply_to="nan"))["code"] == "invalid"
        assert rtc.clock.audio_lead_s == pytest.approx(0.0285)
        assert rtc.live and service.webrtc.peers and not any(m["type"] == "webrtc.state" and m["media"] == "websocket"
                                                               for m in client.messages)
        frames = await receive(await pc.tracks["video"], 3)
        assert len(frames) == 3
