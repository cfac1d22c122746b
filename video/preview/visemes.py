"""Mouth shapes for speech: Rhubarb Lip Sync's viseme set (A–H and X).

Timed visemes (offset ms, letter) come from a phoneme aligner or TTS; without timings a
`talking cycle` of plausible shapes (deterministic per seed) runs for the reply's length.
Consecutive shapes ease into each other over `SHAPE_BLEND_MS` (a real mouth never snaps),
and the speech layer fades in (before the first shape, at rest) and out over `FADE_MS` on
top of the expression's mouth, so a smile stays a smile while talking.
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
    """Timed visemes on the session clock: mouth (open, width, round) and layer weight.

    The layer fades in over `FADE_MS` *before* the first shape that is not rest, holding the
    mouth at rest (X), so the first opening of a reply eases in over `SHAPE_BLEND_MS` from
    rest exactly like every opening after a pause. (Faded in from the first shape instead, the
    first opening was the blend times the fade: half open about 32 ms later than the others,
    the mouth lead (`SpeechDriver`) being tuned for the blend alone.) Where there is less than
    `SHAPE_BLEND_MS` before it, the fade takes that long from `start_ms`.

    `previous`: the timeline this one replaces (a sentence queued while another plays is
    handed over as a new timeline from "now"). Its mouth and weight at `start_ms` carry on,
    and a shape it is playing that the new timeline continues at offset 0 keeps its start,
    so a hand-over neither closes the mouth nor restarts a fade or a blend."""

    def __init__(self, visemes: list[tuple[int, str]], start_ms: float, previous: Speech | None = None) -> None:
        cleaned = sorted((int(off), v.upper()) for off, v in visemes)
        for _, letter in cleaned:
            if letter not in VISEMES:
                raise ValueError(f"unknown viseme {letter!r}; known: {' '.join(VISEMES)}")
        self.times = [start_ms + off for off, _ in cleaned]
        self.letters = [letter for _, letter in cleaned]
        self.shapes = [np.array(VISEMES[letter]) for letter in self.letters]
        self.start_ms = start_ms
        self.end_ms = (
            self.times[-1]
            if cleaned and cleaned[-1][1] == "X"
            else (self.times[-1] + 150.0 if cleaned else start_ms)
        )
        self._from_shape = np.array(VISEMES["X"])  # the mouth before the first shape
        self._from_weight = 0.0
        if previous is not None and not previous.done(start_ms):
            self._from_shape = previous.shape(start_ms)
            self._from_weight = previous.weight(start_ms)
            i = previous.index(start_ms)
            if cleaned and cleaned[0][0] == 0 and i >= 0 and previous.letters[i] == cleaned[0][1]:
                self.times[0] = previous.times[i]  # the same shape goes on: its blend too
                self._from_shape = previous.blend_from(i)
        first = next((t for t, letter in zip(self.times, self.letters, strict=True) if letter != "X"), start_ms)
        self._fade_start = max(start_ms, first - FADE_MS)
        self._fade_end = max(first, self._fade_start + SHAPE_BLEND_MS)

    def done(self, t_ms: float) -> bool:
        return t_ms >= self.end_ms + FADE_MS

    def index(self, t_ms: float) -> int:
        """The shape playing at `t_ms` (-1: before the first)."""
        return bisect.bisect_right(self.times, t_ms) - 1

    def blend_from(self, i: int) -> np.ndarray:
        """The mouth shape `i` eases in from."""
        return self.shapes[i - 1] if i > 0 else self._from_shape

    def weight(self, t_ms: float) -> float:
        if not self.times:
            return 0.0
        rise = smoothstep((t_ms - self._fade_start) / (self._fade_end - self._fade_start))
        fade_in = self._from_weight + (1.0 - self._from_weight) * rise
        fade_out = 1.0 - smoothstep((t_ms - self.end_ms) / FADE_MS)
        return min(fade_in, fade_out)

    def shape(self, t_ms: float) -> np.ndarray:
        i = self.index(t_ms)
        if i < 0:
            return self._from_shape
        current = self.shapes[i]
        previous = self.blend_from(i)
        w = smoothstep((t_ms - self.times[i]) / SHAPE_BLEND_MS)
        return previous + (current - previous) * w
