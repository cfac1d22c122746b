"""A viewer session's render loop: one tick of the workflow at a time, while someone watches.

It asks the session's workflow host for a tick on the worker pool whenever a viewer is
attached and the frame queue is low, so the backend's frame clock never runs far ahead of
what is shown. The stream sink's chunk is JPEG-encoded on that same worker thread (the
session's listener calls `encode` from the node), then the frames go into the `FrameQueue`.
Frames rendered while a new plan landed are stale: they are dropped, and the turns they
would have shown are carried to the next kept frame (where their latency is measured).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any

from ...errors import PersonaError
from .frames import EncodedFrame, FrameQueue
from .protocol import MEDIA_JPEG, failure_code, media_frame

log = logging.getLogger("comfyui_persona.serve")

__all__ = ["RenderLoop"]


class RenderLoop:
    """See module docstring. `tick` runs one stream-lane run (blocking: on the pool)."""

    def __init__(self, session_id: str, tick: Callable[[], Any], frames: FrameQueue, pool: Executor,
                 encoder: Callable, quality: int, report: Callable[[str, str], None]) -> None:
        self.session_id = session_id
        self._tick = tick
        self.frames = frames
        self._pool = pool
        self._encoder = encoder
        self._quality = quality
        self._report = report
        self.attached = asyncio.Event()
        self.resumed = asyncio.Event()  # set by a resume; cleared before each tick (ComfyUI's Cancel)
        self.resumed.set()
        self.after_tick: Callable[[], None] = lambda: None  # e.g. a recording asking to be stopped
        self.wake: Callable[[], None] = lambda: None  # the viewer's pump
        self.backend = "?"
        self.frame_shape: tuple[int, int] | None = None  # (height, width) of rendered frames
        self._tick_frames: list[EncodedFrame] = []
        self._unshown: list[int] = []  # turns shown only by frames dropped as stale

    def encode(self, value: Any) -> None:
        """A rendered chunk (`FramesValue`), on the worker thread that ran the tick."""
        chunk = value.chunk
        self.backend = value.backend
        self.frames.fps = value.fps
        self.frames.chunk_frames = max(1, len(chunk.frames))
        if len(chunk.frames):
            self.frame_shape = (int(chunk.frames.shape[1]), int(chunk.frames.shape[2]))
        for k, rgb in enumerate(chunk.frames):
            index = chunk.first_index + k
            pts = int(chunk.pts_ms[k])
            payload = media_frame(MEDIA_JPEG, index, pts, self._encoder(rgb, self._quality))
            shows = list(chunk.shows_directives) if k == 0 else []
            self._tick_frames.append(EncodedFrame(payload, index, pts, shows, rgb=rgb))

    def keep_produced(self) -> None:
        """The frames of a run made outside the loop (the session's first) go to the queue."""
        produced, self._tick_frames = self._tick_frames, []
        self.frames.extend(produced)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        frames = self.frames
        failures = 0
        while True:
            await self.attached.wait()
            if frames.full():
                frames.need_frames.clear()
                await frames.need_frames.wait()
                continue
            version = frames.plan_version
            self._tick_frames = []
            self.resumed.clear()  # before the tick: a resume while it runs is not lost
            try:
                await loop.run_in_executor(self._pool, self._tick)
                failures = 0
            except Exception as exc:
                if isinstance(exc, PersonaError) and exc.code == "interrupted":
                    # The stream was cancelled in ComfyUI: pause until asked to go on.
                    self._report("interrupted", str(exc))
                    await self.resumed.wait()
                    continue
                failures += 1
                log.warning("session %s render failed: %s", self.session_id[:8], exc)
                self._report(failure_code(exc), f"rendering failed: {exc}")
                await asyncio.sleep(min(5.0, 0.5 * failures))
                continue
            produced, self._tick_frames = self._tick_frames, []
            if version != frames.plan_version:
                frames.count_dropped(len(produced))  # rendered while a new plan landed: stale
                # The tick may already have submitted that plan (a turn's plan is visible to
                # the tick before the turn returns); the backend goes on from it, so the next
                # kept frame is the first sent that shows it: its latency is measured there.
                self._unshown.extend(turn for frame in produced for turn in frame.shows)
                continue
            if self._unshown and produced:
                produced[0].shows[:0] = self._unshown
                self._unshown = []
            frames.extend(produced)
            self.after_tick()
            self.wake()
