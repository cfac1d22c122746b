"""A viewer session's frames on their way out: encoded, queued, paced, measured.

`FrameQueue` is the one place that knows the frames waiting for the viewer: the render loop
fills it, the connection's pump empties it at the stream rate, a new plan or a reset drops
what was rendered before it (`invalidate`), and the directive-to-frame latency is measured
when the first frame showing a turn is sent.
"""

from __future__ import annotations

import asyncio
import collections
from dataclasses import dataclass, field
from typing import Any

from .metrics import ServerMetrics

__all__ = ["EncodedFrame", "FrameQueue", "SessionStats"]


@dataclass
class EncodedFrame:
    data: bytes  # media header + JPEG
    index: int
    pts_ms: int
    shows: list[int]  # turns whose directives this frame is the first to show
    rgb: Any = None  # the rendered picture (uint8 HxWx3): what a WebRTC video track encodes


@dataclass
class SessionStats:
    frames_sent: int = 0
    dropped: int = 0
    latency_ms: float | None = None
    latencies_ms: list[float] = field(default_factory=list)
    sent_times: collections.deque = field(default_factory=lambda: collections.deque(maxlen=256))

    def fps(self, now: float) -> float:
        recent = [t for t in self.sent_times if now - t <= 1.0]
        return float(len(recent))


class FrameQueue:
    """Encoded frames waiting for the viewer, bounded (oldest dropped first)."""

    def __init__(self, limit: int, metrics: ServerMetrics) -> None:
        self.frames: collections.deque[EncodedFrame] = collections.deque()
        self.limit = limit
        self.metrics = metrics
        self.stats = SessionStats()
        self.need_frames = asyncio.Event()
        self.fps = 24.0
        self.chunk_frames = 1
        #: Bumped by every new plan and reset: frames rendered under an older one are stale.
        self.plan_version = 0
        self._directive_times: dict[int, float] = {}  # turn → loop time its directives were known

    # -- filling ------------------------------------------------------------------------------

    def extend(self, produced: list[EncodedFrame]) -> None:
        self.frames.extend(produced)
        overflow = len(self.frames) - self.limit
        if overflow > 0:
            self.drop(overflow)

    def full(self) -> bool:
        return len(self.frames) >= max(2, self.chunk_frames)

    def want_frames(self) -> None:
        if not self.full():
            self.need_frames.set()

    def drop(self, count: int | None = None) -> None:
        count = len(self.frames) if count is None else count
        for _ in range(count):
            self.frames.popleft()
        self.count_dropped(count)

    def count_dropped(self, count: int) -> None:
        self.stats.dropped += count
        self.metrics.frames_dropped_total += count

    def invalidate(self) -> None:
        """A new plan or a reset: what is queued is stale; render the new one at once."""
        self.plan_version += 1
        self.drop()
        self.need_frames.set()

    # -- the pump -----------------------------------------------------------------------------

    def stream_fps(self, max_fps: int | None) -> float:
        return min(self.fps, float(max_fps)) if max_fps else self.fps

    def directives_known(self, turn: int, at: float) -> None:
        """`turn`'s directives were known at loop time `at`: its latency runs from there."""
        self._directive_times[turn] = at

    def timed_turns(self) -> set[int]:
        """Turns whose latency clock runs: known, and no frame showing them sent yet."""
        return set(self._directive_times)

    def frame_sent(self, frame: EncodedFrame, now: float) -> None:
        stats = self.stats
        stats.frames_sent += 1
        stats.sent_times.append(now)
        self.metrics.frames_sent_total += 1
        for turn in frame.shows:
            began = self._directive_times.pop(turn, None)
            if began is not None:
                latency = (now - began) * 1000.0
                stats.latency_ms = latency
                stats.latencies_ms.append(latency)
                del stats.latencies_ms[:-1000]
                self.metrics.observe_latency(latency)
            # Earlier turns no frame will show (superseded before they were rendered, or their
            # frames dropped): forget their clocks, or they would pile up for the session's life.
            for older in [t for t in self._directive_times if t < turn]:
                del self._directive_times[older]

    def metrics_message(self, now: float) -> dict:
        latency = self.stats.latency_ms
        return {
            "type": "metrics",
            "fps": round(self.stats.fps(now), 2),
            "latency_ms": None if latency is None else round(latency, 1),
            "frames_sent": self.stats.frames_sent,
            "dropped": self.stats.dropped,
        }
