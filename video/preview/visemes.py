"""Mouth shapes for speech: Rhubarb Lip Sync's viseme set (A–H and X).

Timed visemes (offset ms, letter) come from a phoneme aligner or TTS; without timings a
`talking cycle` of plausible shapes (deterministic per seed) runs for the reply's length.
Consecutive shapes ease into each other over `SHAPE_BLEND_MS` (a real mouth never snaps),
and the speech layer fades in and out over `FADE_MS` on top of the expression's mouth, so
a smile stays a smile while talking.
"""

from __future__ import annotations

import bisect

import numpy as np

from ..transitions.easing import smoothstep

__all__ = ["FADE_MS", "SHAPE_BLEND_MS", "VISEMES", "Speech", "talking_cycle"]

#: letter -> (mouth_open, mouth_w, mouth_round); Rhubarb's shape descriptions in comments.
VISEMES: dict[str, tuple[float, float, float]] = {
    "A": (0.0, 0.95, 0.0),  # closed: M, B, P
    "B": (0.2, 1.05, 0.0),  # slightly open, teeth: K, S, T, EE
    "C": (0.45, 1.05, 0.05),  # open: EH, AE
    "D": (0.75, 1.1, 0.0),  # wide open: AA
    "E": (0.4, 0.85, 0.45),  # slightly rounded: AO, ER
    "F": (0.22, 0.65, 0.9),  # puckered: UW, OW, W
    "G": (0.12, 1.0, 0.0),  # upper teeth on lower lip: F, V
    "H": (0.32, 1.0, 0.1),  # tongue up: long L
    "X": (0.0, 1.0, 0.0),  # rest
}
SHAPE_BLEND_MS = 55.0
FADE_MS = 120.0

_CYCLE = "BCDBECAFCHDBGC"


def talking_cycle(duration_ms: int, seed: int) -> list[tuple[int, str]]:
    """Plausible visemes every 80–150 ms for `duration_ms`, ending at rest (X)."""
    rng = np.random.default_rng(seed)
    out: list[tuple[int, str]] = []
    t = 0
    while t < duration_ms:
        out.append((t, _CYCLE[int(rng.integers(len(_CYCLE)))]))
        t += int(rng.integers(80, 151))
    out.append((int(duration_ms), "X"))
    return out


class Speech:
    """Timed visemes on the session clock: mouth (open, width, round) and layer weight."""

    def __init__(self, visemes: list[tuple[int, str]], start_ms: float) -> None:
        cleaned = sorted((int(off), v.upper()) for off, v in visemes)
        for _, letter in cleaned:
            if letter not in VISEMES:
                raise ValueError(f"unknown viseme {letter!r}; known: {' '.join(VISEMES)}")
        self.times = [start_ms + off for off, _ in cleaned]
        self.shapes = [np.array(VISEMES[letter]) for _, letter in cleaned]
        self.start_ms = start_ms
        self.end_ms = (
            self.times[-1]
            if cleaned and cleaned[-1][1] == "X"
            else (self.times[-1] + 150.0 if cleaned else start_ms)
        )

    def done(self, t_ms: float) -> bool:
        return t_ms >= self.end_ms + FADE_MS

    def weight(self, t_ms: float) -> float:
        if not self.times:
            return 0.0
        fade_in = smoothstep((t_ms - self.times[0]) / FADE_MS)
        fade_out = 1.0 - smoothstep((t_ms - self.end_ms) / FADE_MS)
        return min(fade_in, fade_out)

    def shape(self, t_ms: float) -> np.ndarray:
        i = bisect.bisect_right(self.times, t_ms) - 1
        if i < 0:
            return self.shapes[0]
        current = self.shapes[i]
        previous = self.shapes[i - 1] if i > 0 else np.array(VISEMES["X"])
        w = smoothstep((t_ms - self.times[i]) / SHAPE_BLEND_MS)
        return previous + (current - previous) * w
