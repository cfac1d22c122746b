"""Easing curves: progress in [0, 1] → weight in [0, 1], monotone, f(0)=0, f(1)=1.

Kept free of any renderer so that the pose blender (`pose.py`) and a conditioning-level
blender (embedding slerp over chunks) share them. Each curve's largest slope is recorded
in `MAX_SLOPE`: a transition of size Δ over n frames then moves at most
`MAX_SLOPE[name] * Δ / n` per frame, which is how the smoothness bound in docs/preview.md
is derived.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

__all__ = ["EASINGS", "MAX_SLOPE", "ease", "ease_in_out_cubic", "linear", "smootherstep", "smoothstep"]


def _clip(t: float) -> float:
    return 0.0 if t <= 0.0 else 1.0 if t >= 1.0 else t


def linear(t: float) -> float:
    return _clip(t)


def smoothstep(t: float) -> float:
    """3t²−2t³: zero slope at both ends, so a blend starts and lands without a kick."""
    t = _clip(t)
    return t * t * (3.0 - 2.0 * t)


def smootherstep(t: float) -> float:
    """6t⁵−15t⁴+10t³: zero slope and curvature at both ends (Perlin's)."""
    t = _clip(t)
    return t * t * t * (t * (6.0 * t - 15.0) + 10.0)


def ease_in_out_cubic(t: float) -> float:
    t = _clip(t)
    return 4.0 * t * t * t if t < 0.5 else 1.0 - (-2.0 * t + 2.0) ** 3 / 2.0


def ease_out_sine(t: float) -> float:
    return float(np.sin(_clip(t) * np.pi / 2.0))


EASINGS: dict[str, Callable[[float], float]] = {
    "linear": linear,
    "smoothstep": smoothstep,
    "smootherstep": smootherstep,
    "ease_in_out_cubic": ease_in_out_cubic,
    "ease_out_sine": ease_out_sine,
}

#: Largest derivative of each curve on [0, 1] (analytic).
MAX_SLOPE: dict[str, float] = {
    "linear": 1.0,
    "smoothstep": 1.5,
    "smootherstep": 1.875,
    "ease_in_out_cubic": 3.0,
    "ease_out_sine": float(np.pi / 2.0),
}


def ease(name: str, t: float) -> float:
    """Apply the named curve; unknown names raise KeyError listing the known ones."""
    try:
        curve = EASINGS[name]
    except KeyError:
        raise KeyError(f"unknown easing {name!r}; known: {', '.join(EASINGS)}") from None
    return curve(t)
