"""One WebSocket and its pump: the only writer of the socket.

JSON messages go first, then frames from the attached session's `FrameQueue`, paced at the
stream rate (never bursting to catch up by more than one frame), and a `metrics` message
every second. Audio packets (bytes) go as soon as they are queued.

A `MediaSink` (1.1: a connected WebRTC peer, webrtc.py) may take the frames and audio
instead: the pump still paces and counts them, only the bytes stop going over the socket.
"""

from __future__ import annotations

import asyncio
import collections
import json
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from aiohttp import web

    from .frames import EncodedFrame, FrameQueue

__all__ = ["Connection", "MediaSink"]


class MediaSink(Protocol):
    """Another way out for this connection's media (WebRTC tracks): True = taken, not sent here."""

    def video(self, frame: EncodedFrame) -> bool: ...

    def audio(self, packet: bytes) -> bool: ...

    def drop_speech(self) -> None:
        """A reset: speech queued and not yet sounding is not played."""


class Connection:
    """One WebSocket: its outbound queue and the pump that writes it."""

    def __init__(self, ws: web.WebSocketResponse, max_fps: int | None = None, peer: str = "?") -> None:
        self.ws = ws
        self.peer = peer  # the client's address: per-address limits (limits.py)
        self.outbox: collections.deque[dict | bytes] = collections.deque()
        self.wake = asyncio.Event()
        self.stream: FrameQueue | None = None  # the attached session's frames
        self.session = None  # the attached ViewerSession (the service's bookkeeping)
        self.max_fps = max_fps
        self.closed = False
        self.media: MediaSink | None = None  # 1.1: a WebRTC peer carrying the media, once connected
        self.pump_task: asyncio.Task | None = None

    def send(self, message: dict | bytes) -> None:
        self.outbox.append(message)
        self.wake.set()

    def start(self) -> None:
        self.pump_task = asyncio.get_running_loop().create_task(self._pump(), name="persona-pump")

    async def _pump(self) -> None:
        loop = asyncio.get_running_loop()
        next_due = loop.time()
        next_metrics = loop.time() + 1.0
        last_pts: int | None = None
        try:
            while not self.closed:
                while self.outbox:
                    item = self.outbox.popleft()
                    if isinstance(item, bytes):  # an audio packet (kind 2): sent as soon as synthesised
                        if self.media is None or not self.media.audio(item):
                            await self.ws.send_bytes(item)
                    else:
                        await self.ws.send_str(json.dumps(item, separators=(",", ":")))
                stream = self.stream
                now = loop.time()
                timeout = 0.5
                if stream is not None:
                    interval = 1.0 / stream.stream_fps(self.max_fps)
                    if stream.frames and now >= next_due:
                        frame = stream.frames.popleft()
                        if self.max_fps and last_pts is not None and frame.pts_ms - last_pts < 1000.0 / self.max_fps - 1:
                            stream.want_frames()
                            continue  # the viewer asked for fewer frames per second: skip, not stale
                        if self.media is None or not self.media.video(frame):
                            await self.ws.send_bytes(frame.data)
                        last_pts = frame.pts_ms
                        stream.frame_sent(frame, loop.time())
                        # Keep the rate: never burst to catch up by more than one frame.
                        next_due = max(next_due + interval, loop.time() - interval)
                        stream.want_frames()
                        continue
                    if now >= next_metrics:
                        next_metrics = now + 1.0
                        self.send(stream.metrics_message(now))
                        continue
                    timeout = min(next_metrics - now, max(0.0, next_due - now) if stream.frames else 0.5)
                self.wake.clear()
                if self.outbox:
                    continue
                try:
                    await asyncio.wait_for(self.wake.wait(), timeout=max(0.001, timeout))
                except asyncio.TimeoutError:
                    pass
        except (ConnectionResetError, RuntimeError, asyncio.CancelledError):
            # RuntimeError: aiohttp refuses to write to a closing socket; the handler cleans up.
            pass

    async def flush(self, attempts: int = 100) -> None:
        """Give the pump a moment to write what is queued (before a close that says why)."""
        for _ in range(attempts):
            if not self.outbox:
                break
            await asyncio.sleep(0.01)

    async def close(self) -> None:
        self.closed = True
        self.wake.set()
        if self.pump_task is not None:
            self.pump_task.cancel()
            try:
                await asyncio.wait_for(self.pump_task, timeout=5)
            except (asyncio.CancelledError, asyncio.TimeoutError):
                pass
