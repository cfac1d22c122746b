"""The media tracks a WebRTC peer sends: the session's frames and its spoken audio, on its clock.

aiortc pulls a track (`recv`) from its sender task and encodes what it gets (H.264 through
PyAV's libx264, VP8 through libvpx, Opus through libopus), so a track here is a small queue
the connection's pump pushes into (connection.py paces the frames at the stream rate, as it
does for the WebSocket) and `recv` turns one queued item into a PyAV frame stamped with its
pts on the session clock: 90 kHz ticks for video, samples for audio.

A/V sync: aiortc's RTCP sender reports pair an RTP timestamp with the wall time its packet
left, and a browser aligns the two streams by those reports. Speech audio is released ahead
of the picture (speech_lane.py), so the audio track holds each packet until the picture with
the same pts has been shown (`MediaClock`): both streams then leave at their own pts.
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
#: Longest an audio packet waits for its picture (a stalled picture must not silence speech).
MAX_AUDIO_HOLD_S = 1.0
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


class AudioTrack(_PushTrack):
    """The session's speech (kind-2 packets: s16 mono PCM) in 20 ms frames, released when their
    picture shows.

    aiortc stamps every Opus packet of one `recv` with one RTP timestamp, so a frame must hold
    one Opus packet's worth: the packets are cut (and a gap's last piece padded with silence)
    into 20 ms frames here."""

    kind = "audio"

    def __init__(self, rate: int, clock: MediaClock, limit: int = 500) -> None:
        super().__init__(limit)
        self.rate = rate
        self.clock = clock
        self.frame_samples = rate * FRAME_MS // 1000
        self._pending = np.zeros(0, dtype="<i2")  # samples not yet in a whole frame
        self._pending_start = 0  # the first pending sample's pts, in samples

    def push_packet(self, packet: bytes) -> None:
        _, _, pts_ms, pcm = parse_media_frame(packet)
        samples = np.frombuffer(pcm, dtype="<i2")
        if not samples.size:
            return
        start = round(pts_ms * self.rate / 1000)
        end = self._pending_start + self._pending.size
        # Packets are stamped in whole ms: one that starts where the last ended continues it
        # exactly (a gapless stream for the encoder); a real gap (silence) keeps its own pts.
        if abs(start - end) <= self.rate * CONTIGUOUS_MS // 1000 or start < end:
            self._pending = np.concatenate([self._pending, samples])
        else:
            if self._pending.size:  # the end of an utterance: pad its last frame with silence
                self._emit(np.pad(self._pending, (0, self.frame_samples - self._pending.size)))
            self._pending, self._pending_start = samples, start
        while self._pending.size >= self.frame_samples:
            self._emit(self._pending[: self.frame_samples])
            self._pending = self._pending[self.frame_samples :]

    def _emit(self, samples: np.ndarray) -> None:
        self.push((self._pending_start, samples))
        self._pending_start += samples.size

    async def recv(self) -> av.AudioFrame:
        start, samples = await self._next()
        due = self.clock.due(round(start * 1000 / self.rate))
        if due is not None:
            wait = due - asyncio.get_running_loop().time()
            if wait > 0:
                await asyncio.sleep(min(wait, MAX_AUDIO_HOLD_S))
        frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = self.rate
        frame.pts = start
        frame.time_base = fractions.Fraction(1, self.rate)
        return frame
