"""The media tracks a WebRTC peer sends: the session's frames and its spoken audio, on its clock.

aiortc pulls a track (`recv`) from its sender task and encodes what it gets (H.264 through
PyAV's libx264, VP8 through libvpx, Opus through libopus). The video track is a small queue
the connection's pump pushes into (connection.py paces the frames at the stream rate, as it
does for the WebSocket); `recv` turns one queued frame into a PyAV frame stamped with its pts
on the session clock (90 kHz ticks). The audio track is a continuous 20 ms-frame stream on
the loop clock, silence between utterances, each utterance placed where its pts falls.

A/V sync: aiortc's RTCP sender reports pair an RTP timestamp with the wall time its packet
left, and a browser aligns the two streams by those reports. Speech audio is released ahead
of the picture (speech_lane.py), so the audio track starts each utterance at the wall time
the picture with the same pts is handed over (`MediaClock`): both streams then leave at their
own pts. Measured in a browser: benchmarks/webrtc_av_sync.py.
"""

from __future__ import annotations

import asyncio
import collections
import fractions
from typing import Any

import av
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from .frames import EncodedFrame
from .protocol import parse_media_frame

__all__ = ["AudioTrack", "MediaClock", "VideoTrack"]

VIDEO_CLOCK_HZ = 90_000
#: aiortc's H.264 encoder counts time in 1/30 s: frames closer than that would share a pts.
MIN_FRAME_GAP_MS = 34
#: Longest speech waits for its picture (a stalled picture must not silence speech).
MAX_AUDIO_HOLD_S = 1.0
#: The audio clock gives up catching up after a loop stall this long (no burst of old frames).
MAX_LAG_S = 0.2
#: A packet whose pts is this close to the end of the previous one continues it (ms rounding).
CONTIGUOUS_MS = 5
#: Audio frame length handed to the Opus encoder (one Opus packet).
FRAME_MS = 20


class MediaClock:
    """When (loop time) the viewer is shown a given pts: updated by every frame handed over."""

    def __init__(self) -> None:
        self._offset: float | None = None

    def shown(self, pts_ms: int, now: float) -> None:
        self._offset = now - pts_ms / 1000.0

    def due(self, pts_ms: int) -> float | None:
        """Loop time at which `pts_ms` is shown; None before the first frame."""
        return None if self._offset is None else self._offset + pts_ms / 1000.0


class _PushTrack(MediaStreamTrack):
    """A bounded queue aiortc pulls from (oldest dropped when the encoder falls behind)."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self._items: collections.deque[Any] = collections.deque(maxlen=limit)
        self._ready = asyncio.Event()
        self.pushed = 0
        self.dropped = 0

    def push(self, item: Any) -> None:
        if len(self._items) == self._items.maxlen:
            self.dropped += 1
        self._items.append(item)
        self.pushed += 1
        self._ready.set()

    async def _next(self) -> Any:
        while not self._items:
            if self.readyState != "live":
                raise MediaStreamError
            self._ready.clear()
            await self._ready.wait()
        if self.readyState != "live":
            raise MediaStreamError
        return self._items.popleft()

    def stop(self) -> None:
        super().stop()
        self._ready.set()  # a sender waiting in recv ends


class VideoTrack(_PushTrack):
    """The session's pictures (`EncodedFrame.rgb`), pts in 90 kHz ticks of the session clock."""

    kind = "video"

    def __init__(self, limit: int = 4) -> None:
        super().__init__(limit)
        self._last_pts_ms: int | None = None

    def accepts(self, frame: EncodedFrame) -> bool:
        """False for a frame too close to the previous one for the encoder's clock (skipped)."""
        return self._last_pts_ms is None or frame.pts_ms - self._last_pts_ms >= MIN_FRAME_GAP_MS

    def push(self, item: EncodedFrame) -> None:
        self._last_pts_ms = item.pts_ms
        super().push(item)

    async def recv(self) -> av.VideoFrame:
        frame: EncodedFrame = await self._next()
        picture = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame.rgb), format="rgb24")
        picture.pts = frame.pts_ms * (VIDEO_CLOCK_HZ // 1000)
        picture.time_base = fractions.Fraction(1, VIDEO_CLOCK_HZ)
        return picture


class _Speech:
    """One stretch of contiguous speech: where it starts on the session clock, its samples."""

    def __init__(self, start: int, samples: np.ndarray, arrived: float) -> None:
        self.start = start  # samples on the session clock
        self.end = start + samples.size  # just after the last sample pushed
        self.arrived = arrived  # loop time its first packet came
        self.chunks: collections.deque[np.ndarray] = collections.deque([samples])
        self.begun = False  # its first sample is on the wire

    def append(self, samples: np.ndarray) -> None:
        self.chunks.append(samples)
        self.end += samples.size

    def read(self, count: int) -> np.ndarray:
        parts, got = [], 0
        while self.chunks and got < count:
            chunk = self.chunks[0]
            part = chunk[: count - got]
            if part.size == chunk.size:
                self.chunks.popleft()
            else:
                self.chunks[0] = chunk[part.size :]
            parts.append(part)
            got += part.size
        return np.concatenate(parts) if parts else np.zeros(0, dtype="<i2")

    @property
    def queued(self) -> int:
        return sum(c.size for c in self.chunks)


class AudioTrack(MediaStreamTrack):
    """The session's speech (kind-2 packets: s16 mono PCM) as a continuous 20 ms-frame stream.

    Continuous, as a microphone's: one frame every 20 ms of the loop clock, silence where no
    one speaks, so the RTP timestamps advance with the wall clock. A browser aligns audio and
    video by mapping each stream's RTP timestamps to the sender's wall clock (RTCP sender
    reports); an audio stream sent only while speaking, its timestamps running on across the
    pauses, cannot be mapped and was measured out of sync (docs/server.md "WebRTC media").
    Each stretch of speech starts in the frame, at the sample, where the picture with its pts
    is handed over (`MediaClock.due`), and then plays on contiguously; aiortc stamps every Opus
    packet of one `recv` with one RTP timestamp, so a frame holds one Opus packet's worth."""

    kind = "audio"

    def __init__(self, rate: int, clock: MediaClock, limit_s: float = 30.0) -> None:
        super().__init__()
        self.rate = rate
        self.clock = clock
        self.frame_samples = rate * FRAME_MS // 1000
        self.limit = int(limit_s * rate)  # speech samples held at most (oldest dropped)
        self._speech: collections.deque[_Speech] = collections.deque()
        self._start: float | None = None  # loop time of the first frame
        self._sent = 0  # frames returned
        self.pushed = 0  # packets
        self.dropped = 0  # samples dropped for the limit

    def push_packet(self, packet: bytes) -> None:
        _, _, pts_ms, pcm = parse_media_frame(packet)
        samples = np.frombuffer(pcm, dtype="<i2")
        if not samples.size:
            return
        self.pushed += 1
        start = round(pts_ms * self.rate / 1000)
        tail = self._speech[-1] if self._speech else None
        # Packets are stamped in whole ms: one that starts where the last ended continues it
        # exactly (a gapless stream for the encoder); a real gap (silence) keeps its own pts.
        if tail is not None and (abs(start - tail.end) <= self.rate * CONTIGUOUS_MS // 1000 or start < tail.end):
            tail.append(samples)
        else:
            self._speech.append(_Speech(start, samples, asyncio.get_running_loop().time()))
        excess = sum(s.queued for s in self._speech) - self.limit
        while excess > 0 and len(self._speech) > 1:
            excess -= self._speech[0].queued
            self.dropped += self._speech.popleft().queued

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        loop = asyncio.get_running_loop()
        if self._start is None:
            self._start = loop.time()
        at = self._start + self._sent * FRAME_MS / 1000
        wait = at - loop.time()
        if wait > 0:
            await asyncio.sleep(wait)
        elif wait < -MAX_LAG_S:  # the loop stalled: go on from now, no burst of old frames
            self._start -= wait
            at -= wait
        if self.readyState != "live":
            raise MediaStreamError
        samples = np.zeros(self.frame_samples, dtype="<i2")
        self._fill(samples, at, loop.time())
        frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = self.rate
        frame.pts = self._sent * self.frame_samples
        frame.time_base = fractions.Fraction(1, self.rate)
        self._sent += 1
        return frame

    def _fill(self, out: np.ndarray, at: float, now: float) -> None:
        """Put into `out` (the frame sounding from loop time `at`) the speech due in it."""
        filled = 0
        while filled < out.size and self._speech:
            speech = self._speech[0]
            if not speech.begun:
                due = self.clock.due(speech.start * 1000 / self.rate)
                if due is None or now - speech.arrived >= MAX_AUDIO_HOLD_S:
                    due = at  # no picture yet, or a stalled one: speech must not wait for it
                offset = round((due - at) * self.rate)
                if offset >= out.size:
                    return  # it starts in a later frame
                filled = max(filled, offset)
                speech.begun = True
            part = speech.read(out.size - filled)
            out[filled : filled + part.size] = part
            filled += part.size
            if not speech.queued:
                if len(self._speech) == 1:
                    return  # the stretch may go on (its next packet is late): keep it open
                self._speech.popleft()
