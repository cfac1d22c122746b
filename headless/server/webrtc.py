"""WebRTC media for a viewer (protocol 1.1): signalling over the WebSocket, media over aiortc.

A client that sends `webrtc.offer` gets a `webrtc.answer`; once the peer connection is
connected the session's frames and speech leave on its tracks (webrtc_tracks.py) instead of
as kind-1/kind-2 binary frames, and `webrtc.state` says so. A peer that fails, times out or
is closed sends the media back to the WebSocket. JSON control messages never move.

aiortc is the maintained Python WebRTC stack (ICE, DTLS-SRTP, RTP/RTCP with REMB bitrate
control, H.264/VP8/Opus through PyAV); this module is only the glue: one peer per connection
(a session streams to one connection at a time, so one per session), offers rate-limited,
trickled candidates bounded, every peer closed with its connection. aiortc is an optional
dependency (`comfyui-persona[webrtc]`): without it the server offers no `webrtc` feature and
answers offers with `webrtc_unavailable`.

aiortc gathers its ICE candidates before answering (no trickle from the server): the answer
holds them all. That takes seconds when a configured STUN server does not answer, so the offer
is answered in a task of its own and the connection's other messages go on meanwhile; a
candidate trickled before the offer is applied waits for it. Clients may trickle theirs with
`webrtc.candidate` or wait for gathering to complete before sending the offer (what the page does).
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .protocol import ProtocolError, WebRTCCandidate, WebRTCClose, WebRTCOffer, WebRTCPlayout, error_message

if TYPE_CHECKING:
    from .config import ServerConfig
    from .connection import Connection
    from .frames import EncodedFrame

log = logging.getLogger("comfyui_persona.serve")

__all__ = ["MAX_CANDIDATES", "WebRTCDesk", "WebRTCPeer", "video_codecs"]

#: Remote candidates one peer takes (a browser sends a handful per network interface).
MAX_CANDIDATES = 64
OFFER_WINDOW_S = 60.0


def _missing_aiortc() -> str | None:
    try:
        import aiortc  # noqa: F401
    except ImportError:
        return "this server has no WebRTC support: install comfyui-persona[webrtc] (aiortc)"
    return None


def video_codecs() -> list[str]:
    """What the video track may be encoded as, preferred first: H.264 where PyAV has the libx264
    encoder aiortc uses, then VP8 (libvpx, in every PyAV wheel)."""
    import av

    names = []
    try:
        av.codec.Codec("libx264", "w")
        names.append("H264")
    except Exception:  # PyAV raises its own UnknownCodecError (a ValueError) or FFmpegError
        pass
    return [*names, "VP8"]


def _codec_preferences(kind: str, video: list[str]) -> list:
    """aiortc's capabilities for `kind`, ordered by `video` (audio: Opus only), each with its
    retransmission (rtx) entry."""
    from aiortc import RTCRtpSender

    wanted = video if kind == "video" else ["opus"]
    codecs = RTCRtpSender.getCapabilities(kind).codecs
    chosen = [c for name in wanted for c in codecs if c.mimeType.split("/")[1].lower() == name.lower()]
    return chosen + [c for c in codecs if c.mimeType.lower().endswith("/rtx")]


class WebRTCPeer:
    """One connection's peer connection: its tracks, its state, and the media switch (`MediaSink`)."""

    def __init__(self, connection: Connection, config: ServerConfig, audio_rate: int, video_codecs: list[str],
                 on_end: Callable[[WebRTCPeer], None]) -> None:
        from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection

        from .webrtc_tracks import MediaClock

        self.connection = connection
        self.config = config
        self.audio_rate = audio_rate
        self.video_codecs = video_codecs
        self._on_end = on_end
        servers = [RTCIceServer(urls=s.urls, username=s.username, credential=s.credential) for s in config.ice_servers]
        # An explicit list, even empty: aiortc's default is a public STUN server.
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=servers))
        self.clock = MediaClock()
        self.video_track = None
        self.audio_track = None
        self.codecs: dict[str, str] = {}  # kind → negotiated codec name
        self.live = False  # connected: the media go on the tracks
        self.ended = False
        self.candidates = 0
        self._early: list = []  # candidates trickled before the offer was applied (it is answered in a task)
        self.answering: asyncio.Task | None = None  # `WebRTCDesk._answer`, while it gathers
        self._timeout: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task] = set()
        self.pc.on("connectionstatechange", self._state_changed)

    # -- signalling ----------------------------------------------------------------------------

    async def answer(self, offer: WebRTCOffer) -> dict:
        """The `webrtc.answer` for `offer`; `ProtocolError("bad_offer")` says why there is none."""
        from aiortc import RTCSessionDescription
        from aiortc.sdp import SessionDescription

        from .webrtc_tracks import AudioTrack, VideoTrack

        try:
            parsed = SessionDescription.parse(offer.sdp)
        except Exception as exc:  # aiortc's parser raises whatever the bad line trips (ValueError, IndexError...)
            raise ProtocolError("bad_offer", f"the offer's SDP does not parse ({type(exc).__name__}: {exc})",
                                offer.id) from None
        kinds = [m.kind for m in parsed.media]
        if "video" not in kinds and "audio" not in kinds:
            raise ProtocolError("bad_offer", "the offer has no audio or video section (m=audio / m=video)", offer.id)
        # The server only sends: a section that would have it receive (more tracks, a data
        # channel, sendrecv) would feed the client's media to native decoders nobody reads.
        extra = [m.kind for m in parsed.media if m.kind not in ("audio", "video")]
        if extra or kinds.count("video") > 1 or kinds.count("audio") > 1:
            raise ProtocolError("bad_offer", "the offer may hold one audio and one video section and nothing else "
                                f"(it has: {', '.join(kinds)})", offer.id)
        sending = [m.kind for m in parsed.media if m.direction not in ("recvonly", "inactive")]
        if sending:
            raise ProtocolError("bad_offer", f"the {' and '.join(sending)} section must be recvonly: this server "
                                "receives no media", offer.id)
        self.candidates += sum(len(m.ice_candidates) for m in parsed.media)
        if self.candidates > MAX_CANDIDATES:
            raise ProtocolError("bad_offer", f"more than {MAX_CANDIDATES} ICE candidates in the offer", offer.id)
        # An inactive section gets no track: its media stay on the WebSocket.
        wanted = {m.kind for m in parsed.media if m.direction == "recvonly"}
        if not wanted:
            raise ProtocolError("bad_offer", "every section of the offer is inactive: nothing to send", offer.id)
        # DTLS-SRTP needs the client's certificate fingerprint and role: without them aiortc
        # answers, then fails inside its transport (a traceback, and the client waits the
        # connect timeout); every browser sends both.
        unkeyed = [m.kind for m in parsed.media if m.direction == "recvonly" and not (m.dtls and m.dtls.fingerprints)]
        if unkeyed:
            raise ProtocolError("bad_offer", f"the {' and '.join(unkeyed)} section has no DTLS fingerprint and setup "
                                "(a=fingerprint, a=setup)", offer.id)
        if "video" in wanted:
            self.video_track = VideoTrack(self.clock)
            self.pc.addTransceiver(self.video_track, direction="sendonly").setCodecPreferences(_codec_preferences("video", self.video_codecs))
        elif "video" in kinds:
            self.pc.addTransceiver("video", direction="inactive")
        if "audio" in wanted:
            self.audio_track = AudioTrack(self.audio_rate, self.clock)
            self.pc.addTransceiver(self.audio_track, direction="sendonly").setCodecPreferences(_codec_preferences("audio", []))
        elif "audio" in kinds:
            self.pc.addTransceiver("audio", direction="inactive")
        try:
            await self.pc.setRemoteDescription(RTCSessionDescription(sdp=offer.sdp, type="offer"))
            early, self._early = self._early, []
            for candidate in early:
                await self.pc.addIceCandidate(candidate)
            await self.pc.setLocalDescription(await self.pc.createAnswer())
        except Exception as exc:  # aiortc checks the offer here (codecs, mids): whatever it trips is the offer's
            text = str(exc)
            if "send parameters" in text:  # aiortc: no codec in common for a media section
                kind = "video" if "video" in text else "audio"
                have = ", ".join(self.video_codecs) if kind == "video" else "opus"
                text = f"the offer has no {kind} codec this server sends ({have})"
            raise ProtocolError("bad_offer", f"the offer cannot be answered: {text[:300]}", offer.id) from None
        sdp = self.pc.localDescription.sdp
        for media in SessionDescription.parse(sdp).media:
            if media.kind in wanted and media.rtp.codecs and media.port:
                self.codecs[media.kind] = media.rtp.codecs[0].mimeType.split("/")[1]
        loop = asyncio.get_running_loop()
        self._timeout = loop.call_later(self.config.webrtc_connect_timeout_s, self._connect_timed_out)
        return {"type": "webrtc.answer", "reply_to": offer.id, "sdp": sdp, "codecs": dict(self.codecs)}

    async def add_candidate(self, message: WebRTCCandidate) -> None:
        from aiortc.sdp import candidate_from_sdp

        self.candidates += 1
        if self.candidates > MAX_CANDIDATES:
            raise ProtocolError("rate_limited", f"more than {MAX_CANDIDATES} ICE candidates for one offer")
        candidate = None
        if message.candidate is not None:  # None: the end of the client's candidates
            line = message.candidate.removeprefix("candidate:")
            try:
                candidate = candidate_from_sdp(line)
            except Exception:  # aiortc asserts the field count, then converts them
                raise ProtocolError("invalid", "field 'candidate' is not an ICE candidate line") from None
            candidate.sdpMid = message.sdp_mid
            candidate.sdpMLineIndex = message.sdp_mline_index
        if self.pc.remoteDescription is None:  # the offer's task has not applied it yet
            self._early.append(candidate)
        else:
            await self.pc.addIceCandidate(candidate)

    # -- state ---------------------------------------------------------------------------------

    async def _state_changed(self) -> None:
        state = self.pc.connectionState
        if state == "connected" and not self.ended and not self.live:
            self.live = True
            if self._timeout is not None:
                self._timeout.cancel()
            log.info("webrtc connected (%s)", ", ".join(f"{k} {v}" for k, v in sorted(self.codecs.items())))
            self.connection.send({"type": "webrtc.state", "state": "connected", "media": "webrtc",
                                  "codecs": dict(self.codecs)})
        elif state in ("failed", "closed"):
            # Not closed by us (`end` closes after marking the peer ended): aiortc reports a lost
            # path (ICE consent checks failing) as "closed"; for the client it is a failure.
            await self.end("failed", "the peer connection " + ("was lost" if state == "closed" else "failed"), failed=True)

    def _connect_timed_out(self) -> None:
        if self.live or self.ended:
            return
        task = asyncio.get_running_loop().create_task(
            self.end("failed", f"not connected within {self.config.webrtc_connect_timeout_s:g} s", failed=True))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def end(self, state: str, reason: str, *, failed: bool = False, tell: bool = True) -> None:
        """Media back to the WebSocket, the peer closed; `tell`: say so on the socket."""
        if self.ended:
            return
        self.ended = True
        if self.answering is not None and self.answering is not asyncio.current_task():
            self.answering.cancel()  # still gathering: nobody will take its answer
        was_live, self.live = self.live, False
        if self._timeout is not None:
            self._timeout.cancel()
        self._on_end(self)
        if tell:
            if failed:
                self.connection.send(error_message("webrtc_failed", f"WebRTC media stopped: {reason}; "
                                                   "frames and audio go over the WebSocket again"))
            self.connection.send({"type": "webrtc.state", "state": "failed" if failed else "closed",
                                  "media": "websocket", "reason": reason})
        if was_live:
            log.info("webrtc ended: %s", reason)
        elif failed:
            log.info("webrtc never connected: %s", reason)
        for track in (self.video_track, self.audio_track):
            if track is not None:
                track.stop()
        try:
            await self.pc.close()
        except Exception:  # aiortc may trip on a half-negotiated peer (a refused offer): it is gone either way
            log.debug("closing a WebRTC peer failed", exc_info=True)

    # -- MediaSink: called by the connection's pump ----------------------------------------------

    def video(self, frame: EncodedFrame) -> bool:
        track = self.video_track
        if not self.live or track is None or frame.rgb is None:
            return False
        if track.accepts(frame):
            track.push(frame)
        return True

    def audio(self, packet: bytes) -> bool:
        if not self.live or self.audio_track is None:
            return False
        self.audio_track.push_packet(packet)
        return True

    def drop_speech(self) -> None:
        if self.audio_track is not None:
            self.audio_track.drop_speech()


class WebRTCDesk:
    """The server's WebRTC side: what `ready` announces, each connection's peer and offer budget."""

    def __init__(self, config: ServerConfig, audio_rate: int,
                 report: Callable[[Connection, str, str, str | None], None]) -> None:
        self.config = config
        self.audio_rate = audio_rate
        self._report = report  # an error for the client, counted as the service counts its own
        self.unavailable = "WebRTC is off on this server" if not config.webrtc else _missing_aiortc()
        # Probed once, when the server is built (off the event loop): PyAV's encoders do not change.
        self.video_codecs = video_codecs() if self.unavailable is None else []
        self.peers: dict[Connection, WebRTCPeer] = {}
        self._offers: dict[Connection, collections.deque[float]] = {}

    @property
    def enabled(self) -> bool:
        return self.unavailable is None

    def advertise(self, ready: dict) -> None:
        """Add the `webrtc` feature and its settings to a `ready` message (when offered)."""
        if not self.enabled:
            return
        ready["features"] = [*ready["features"], "webrtc"]
        ready["webrtc"] = {
            "ice_servers": [s.model_dump(exclude_none=True) for s in self.config.ice_servers],
            "video_codecs": list(self.video_codecs),
            "audio_codecs": ["opus"],
        }

    async def handle(self, connection: Connection, message: Any) -> None:
        if not self.enabled:
            raise ProtocolError("webrtc_unavailable", self.unavailable or "", getattr(message, "id", None))
        peer = self.peers.get(connection)
        if isinstance(message, WebRTCOffer):
            await self._offer(connection, peer, message)
        elif isinstance(message, WebRTCCandidate):
            if peer is None:
                raise ProtocolError("invalid", "no WebRTC peer connection: send webrtc.offer first")
            await peer.add_candidate(message)
        elif isinstance(message, WebRTCPlayout):
            if peer is None:
                raise ProtocolError("invalid", "no WebRTC peer connection: send webrtc.offer first")
            peer.clock.audio_lead_s = message.audio_lag_ms / 1000.0
        elif isinstance(message, WebRTCClose):
            if peer is not None:
                await peer.end("closed", "closed by the client")
            else:  # nothing to close: say where the media are
                connection.send({"type": "webrtc.state", "state": "closed", "media": "websocket",
                                 "reason": "no WebRTC peer connection"})

    async def _offer(self, connection: Connection, peer: WebRTCPeer | None, offer: WebRTCOffer) -> None:
        if peer is not None:
            raise ProtocolError("invalid", "a WebRTC peer connection is already open on this connection "
                                "(one per session); send webrtc.close first", offer.id)
        now = asyncio.get_running_loop().time()
        times = self._offers.setdefault(connection, collections.deque())
        while times and now - times[0] > OFFER_WINDOW_S:
            times.popleft()
        limit = self.config.webrtc_offers_per_minute
        if len(times) >= limit:
            raise ProtocolError("rate_limited", f"more than {limit} webrtc.offer per minute; wait before offering again",
                                offer.id)
        times.append(now)
        peer = WebRTCPeer(connection, self.config, self.audio_rate, self.video_codecs, self._forget_peer)
        self.peers[connection] = peer
        peer.answering = asyncio.get_running_loop().create_task(self._answer(connection, peer, offer))

    async def _answer(self, connection: Connection, peer: WebRTCPeer, offer: WebRTCOffer) -> None:
        """Answer in a task of its own: aiortc gathers every ICE candidate first, seconds when a
        configured STUN server does not answer, and the connection's other messages (chat,
        ping) are served meanwhile. A refused offer is reported as the handler's errors are."""
        try:
            answer = await peer.answer(offer)
        except asyncio.CancelledError:  # the peer ended while it gathered (webrtc.close, the socket)
            return
        except ProtocolError as exc:
            await peer.end("failed", "offer refused", tell=False)
            self._report(connection, exc.code, exc.message, exc.reply_to)
            return
        except Exception as exc:  # a bug: say what failed, keep the session
            log.exception("answering a WebRTC offer failed")
            await peer.end("failed", "offer refused", tell=False)
            self._report(connection, "internal", f"answering the offer failed: {type(exc).__name__}: {exc}", offer.id)
            return
        finally:
            peer.answering = None
        if peer.ended:
            return
        connection.media = peer
        connection.send(answer)

    def _forget_peer(self, peer: WebRTCPeer) -> None:
        connection = peer.connection
        if self.peers.get(connection) is peer:
            del self.peers[connection]
        if connection.media is peer:
            connection.media = None

    async def forget(self, connection: Connection) -> None:
        """The connection is closing: its peer closes with it, silently."""
        peer = self.peers.get(connection)
        self._offers.pop(connection, None)
        if peer is not None:
            await peer.end("closed", "the WebSocket closed", tell=False)

    async def close(self) -> None:
        for peer in list(self.peers.values()):
            await peer.end("closed", "the server is stopping", tell=False)
