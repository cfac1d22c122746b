"""Pose-level transition blender: eased cross-fades between parameter tracks.

A *track* is anything that gives a parameter vector for a time on the session clock
(an idle loop, a wave, a smile). A `PoseChannel` plays one track at a time; switching to
a new track cross-fades from the *live* old one (which keeps moving while it fades) to the
new one with an easing curve. If a switch arrives while a cross-fade is still running, the
running blend itself becomes the source of the next one, so the character always starts
from exactly where it is: the output is continuous in time whatever the timing of the
requests, and its per-frame change is bounded by the tracks' own speed plus
`MAX_SLOPE[easing] * |target - source| / blend_frames`.

Nested blends are pruned as soon as they finish; if requests arrive faster than blends
finish, the deepest ones are frozen into a constant (`MAX_DEPTH`) so cost stays bounded.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from .easing import EASINGS

__all__ = ["MAX_DEPTH", "Blend", "Constant", "PoseChannel", "Track"]

#: Most cross-fades kept alive at once; deeper ones are frozen at their current value.
MAX_DEPTH = 4


class Track(Protocol):
    """A parameter vector as a function of session time (ms)."""

    def sample(self, t_ms: float) -> np.ndarray: ...


class Constant:
    """A frozen pose (used to cap nesting, and as a channel's first track)."""

    def __init__(self, value: np.ndarray) -> None:
        self.value = np.asarray(value, dtype=np.float64).copy()

    def sample(self, t_ms: float) -> np.ndarray:
        return self.value


class Blend:
    """Cross-fade from `source` to `target` over [start_ms, start_ms + duration_ms]."""

    def __init__(
        self, source: Track, target: Track, start_ms: float, duration_ms: float, easing: str = "smoothstep"
    ) -> None:
        if easing not in EASINGS:
            raise KeyError(f"unknown easing {easing!r}; known: {', '.join(EASINGS)}")
        self.source = source
        self.target = target
        self.start_ms = float(start_ms)
        self.duration_ms = max(float(duration_ms), 1e-6)
        self._curve = EASINGS[easing]

    def weight(self, t_ms: float) -> float:
        return self._curve((t_ms - self.start_ms) / self.duration_ms)

    def done(self, t_ms: float) -> bool:
        return t_ms >= self.start_ms + self.duration_ms

    def sample(self, t_ms: float) -> np.ndarray:
        w = self.weight(t_ms)
        if w >= 1.0:
            return self.target.sample(t_ms)
        a = self.source.sample(t_ms)
        if w <= 0.0:
            return a
        b = self.target.sample(t_ms)
        return a + (b - a) * w


class PoseChannel:
    """Plays one track at a time and cross-fades on every switch (never a jump cut)."""

    def __init__(self, initial: Track) -> None:
        self._current: Track = initial
        self.target: Track = initial

    def play(self, track: Track, now_ms: float, blend_ms: float, easing: str = "smoothstep") -> None:
        """Switch to `track`, starting from wherever the channel is at `now_ms`."""
        self._prune(now_ms)
        self._current = Blend(self._current, track, now_ms, blend_ms, easing)
        self._cap_depth(now_ms)
        self.target = track

    def cut(self, track: Track) -> None:
        """Switch with no blend (session start / reset only: the caller owns the jump)."""
        self._current = track
        self.target = track

    @property
    def blending(self) -> bool:
        return isinstance(self._current, Blend)

    def depth(self) -> int:
        depth, node = 0, self._current
        while isinstance(node, Blend):
            depth, node = depth + 1, node.source
        return depth

    def sample(self, t_ms: float) -> np.ndarray:
        self._prune(t_ms)
        return self._current.sample(t_ms)

    def _prune(self, t_ms: float) -> None:
        # A finished blend is its target; an inner blend that finished is replaced likewise.
        while isinstance(self._current, Blend) and self._current.done(t_ms):
            self._current = self._current.target
        node = self._current
        while isinstance(node, Blend):
            inner = node.source
            if isinstance(inner, Blend) and inner.done(t_ms):
                node.source = inner.target
                continue
            node = inner

    def _cap_depth(self, t_ms: float) -> None:
        node, depth = self._current, 1
        while isinstance(node, Blend) and isinstance(node.source, Blend):
            if depth >= MAX_DEPTH:
                node.source = Constant(node.source.sample(t_ms))
                break
            node, depth = node.source, depth + 1
