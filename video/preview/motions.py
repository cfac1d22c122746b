"""Keyframed motions: every core action and expression as a track of pose parameters.

A body track is the posture's idle loop (breathing, a slow sway) with the action's
parameters laid over it, as functions of the time since the action started and of the
directive's intensity. Entering and leaving an action is not written here: the channel's
cross-fade (video/transitions/pose.py) does it, so every action can be entered from, and
interrupted into, any other one.

Intensity maps to amplitude `0.35 + 0.65 * intensity`, so intensity 0 is still visible
(an interpreter that says "wave" at 0.0 still wants a small wave) and 1.0 is the full move.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .params import BODY, FACE

__all__ = [
    "ACTION_MOTIONS",
    "EXPRESSION_FACES",
    "ActionTrack",
    "ExpressionTrack",
    "IdleTrack",
    "amplitude",
    "generic_gesture",
]

TAU = 2.0 * math.pi
Overlay = Callable[[float, float], dict[str, float]]


def amplitude(intensity: float) -> float:
    return 0.35 + 0.65 * min(max(float(intensity), 0.0), 1.0)


def _posture_idle(sitting: bool, t: float, phase: float) -> np.ndarray:
    """Breathing and a slow sway: the stream never freezes even with nothing to do."""
    breath = math.sin(TAU * t / 3.6 + phase)
    sway = math.sin(TAU * t / 7.3 + 2.0 * phase)
    if sitting:
        return BODY.vector(
            sit=1.0,
            body_y=1.4 * breath,
            head_roll=0.025 * sway,
            l_upper=-0.05 + 0.015 * breath,
            l_fore=-1.05,
            r_upper=-0.05 + 0.015 * breath,
            r_fore=-1.05,
        )
    return BODY.vector(
        body_y=1.6 * breath,
        head_roll=0.03 * sway,
        l_upper=0.12 + 0.02 * breath,
        r_upper=0.12 + 0.02 * breath,
    )


class IdleTrack:
    """Resting in a posture (standing or sitting)."""

    def __init__(self, sitting: bool, phase: float) -> None:
        self.sitting = sitting
        self.phase = phase

    def sample(self, t_ms: float) -> np.ndarray:
        return _posture_idle(self.sitting, t_ms / 1000.0, self.phase)


class ActionTrack:
    """An action's overlay on a posture's idle loop, timed from `start_ms`."""

    def __init__(
        self, overlay: Overlay, intensity: float, start_ms: float, sitting: bool, phase: float
    ) -> None:
        self.overlay = overlay
        self.amp = amplitude(intensity)
        self.start_ms = start_ms
        self.sitting = sitting
        self.phase = phase

    def sample(self, t_ms: float) -> np.ndarray:
        vec = _posture_idle(self.sitting, t_ms / 1000.0, self.phase)
        local = max(0.0, (t_ms - self.start_ms) / 1000.0)
        for name, value in self.overlay(local, self.amp).items():
            vec[BODY.index[name]] = value
        return vec


# --- actions: (seconds since start, amplitude) -> parameter values ------------------------


def _idle(t: float, a: float) -> dict[str, float]:
    return {}


def _wave(t: float, a: float) -> dict[str, float]:
    return {
        "r_upper": 1.55 + 0.45 * a,
        "r_fore": 1.0 + 0.5 * a * math.sin(TAU * 2.2 * t),
        "head_roll": -0.06 * a,
    }


def _nod(t: float, a: float) -> dict[str, float]:
    return {"head_pitch": 0.75 * a * (0.5 - 0.5 * math.cos(TAU * 1.4 * t))}


def _shake_head(t: float, a: float) -> dict[str, float]:
    return {"head_yaw": 0.7 * a * math.sin(TAU * 1.6 * t)}


def _turn(direction: float) -> Overlay:
    def overlay(t: float, a: float) -> dict[str, float]:
        return {"turn": direction * 0.85 * a, "head_yaw": direction * 0.6 * a}

    return overlay


def _walk(t: float, a: float) -> dict[str, float]:
    phase = TAU * 1.7 * t
    s = math.sin(phase)
    swing = 0.38 * a
    return {
        "walk_speed": 150.0 * a,
        "turn": 0.45,
        "head_yaw": 0.35,
        "body_y": -5.0 * a * (0.5 + 0.5 * math.cos(2.0 * phase)),  # bob twice a stride
        "l_thigh": swing * s,
        "r_thigh": -swing * s,
        "l_shin": 0.5 * swing * max(0.0, -s),
        "r_shin": 0.5 * swing * max(0.0, s),
        "l_upper": 0.12 - 0.35 * a * s,
        "r_upper": 0.12 + 0.35 * a * s,
        "l_fore": 0.25,
        "r_fore": 0.25,
    }


def _point(t: float, a: float) -> dict[str, float]:
    return {"r_upper": 1.2 + 0.35 * a, "r_fore": 0.05, "point": 1.0, "turn": 0.15 * a, "head_yaw": 0.3 * a}


def _shrug(t: float, a: float) -> dict[str, float]:
    return {
        "shrug": a,
        "l_upper": 0.45,
        "r_upper": 0.45,
        "l_fore": 0.6 + 0.6 * a,
        "r_fore": 0.6 + 0.6 * a,
        "head_roll": 0.12 * a,
    }


def _bow(t: float, a: float) -> dict[str, float]:
    return {"bow": 0.9 * a, "head_pitch": 0.8 * a, "l_upper": 0.05, "r_upper": 0.05}


def _clap(t: float, a: float) -> dict[str, float]:
    apart = 0.5 + 0.5 * math.cos(TAU * 2.6 * t)
    fore = -1.72 + 0.75 * apart
    return {"l_upper": 0.15, "r_upper": 0.15, "l_fore": fore, "r_fore": fore}


def _think(t: float, a: float) -> dict[str, float]:
    return {
        "r_upper": -0.45,
        "r_fore": -2.5,
        "l_upper": -0.2,
        "l_fore": -1.25,
        "head_roll": 0.14 * a,
        "head_pitch": -0.35 * a,
        "head_yaw": 0.2 * a * math.sin(TAU * 0.25 * t),
    }


def _dance(t: float, a: float) -> dict[str, float]:
    beat = TAU * 1.0 * t
    s, c = math.sin(beat), math.cos(beat)
    return {
        "body_x": 14.0 * a * s,
        "body_y": -7.0 * a * (0.5 - 0.5 * math.cos(4.0 * beat)),
        "lean": 0.12 * a * s,
        "head_roll": -0.12 * a * s,
        "l_upper": 2.0 + 0.45 * a * s,
        "r_upper": 2.0 - 0.45 * a * s,
        "l_fore": 0.7 + 0.3 * c,
        "r_fore": 0.7 - 0.3 * c,
        "l_thigh": 0.18 * a * max(0.0, s),
        "r_thigh": -0.18 * a * max(0.0, -s),
    }


def _look_around(t: float, a: float) -> dict[str, float]:
    sweep = math.sin(TAU * t / 2.6)
    return {"head_yaw": 0.8 * a * sweep, "turn": 0.25 * a * sweep, "head_pitch": -0.12 * a}


ACTION_MOTIONS: dict[str, Overlay] = {
    "idle": _idle,
    "wave": _wave,
    "nod": _nod,
    "shake_head": _shake_head,
    "sit": _idle,  # the seated posture itself is the motion
    "stand": _idle,
    "turn_left": _turn(+1.0),
    "turn_right": _turn(-1.0),
    "walk": _walk,
    "point": _point,
    "shrug": _shrug,
    "bow": _bow,
    "clap": _clap,
    "think": _think,
    "dance": _dance,
    "look_around": _look_around,
}


def _open_arms(t: float, a: float) -> dict[str, float]:
    sway = math.sin(TAU * 0.9 * t)
    return {"l_upper": 0.8 * a, "r_upper": 0.8 * a, "l_fore": 0.6 + 0.2 * sway, "r_fore": 0.6 - 0.2 * sway}


def _raise_arm(t: float, a: float) -> dict[str, float]:
    return {"l_upper": 2.4 * a + 0.1 * math.sin(TAU * 1.2 * t), "l_fore": 0.3, "head_roll": 0.05 * a}


def _hands_on_hips(t: float, a: float) -> dict[str, float]:
    return {
        "l_upper": 0.75,
        "r_upper": 0.75,
        "l_fore": -1.9,
        "r_fore": -1.9,
        "lean": 0.05 * a * math.sin(TAU * 0.5 * t),
    }


_GENERIC = (_open_arms, _raise_arm, _hands_on_hips)


def generic_gesture(name: str) -> Overlay:
    """A persona's own action: one of a few neutral gestures, picked stably by its name."""
    return _GENERIC[sum(name.encode()) % len(_GENERIC)]


# --- expressions: face parameter targets at full intensity --------------------------------


@dataclass(frozen=True)
class ExpressionTrack:
    """A face held at `amp` of the way from neutral to the expression, with its own motion."""

    name: str
    intensity: float
    start_ms: float

    def sample(self, t_ms: float) -> np.ndarray:
        t = max(0.0, (t_ms - self.start_ms) / 1000.0)
        target = EXPRESSION_FACES.get(self.name, _THOUGHTFUL_GENERIC)
        values = target(t) if callable(target) else target
        full = FACE.vector(**values)
        return FACE.default + (full - FACE.default) * amplitude(self.intensity)


def _laugh(t: float) -> dict[str, float]:
    return {
        "mouth_open": 0.55 + 0.2 * math.sin(TAU * 4.0 * t),
        "mouth_curve": 1.0,
        "mouth_w": 1.2,
        "eye_happy": 1.0,
        "eye_l": 0.25,
        "eye_r": 0.25,
        "brow_l": 0.35,
        "brow_r": 0.35,
        "face_roll": 0.06 * math.sin(TAU * 2.0 * t),
    }


EXPRESSION_FACES: dict[str, dict[str, float] | Callable[[float], dict[str, float]]] = {
    "neutral": {},
    "smile": {
        "mouth_curve": 1.0,
        "mouth_w": 1.15,
        "eye_happy": 0.45,
        "eye_l": 0.85,
        "eye_r": 0.85,
        "brow_l": 0.15,
        "brow_r": 0.15,
    },
    "laugh": _laugh,
    "frown": {"brow_l": -0.35, "brow_r": -0.35, "brow_tilt": -0.55, "mouth_curve": -0.75, "mouth_w": 0.9},
    "sad": {
        "brow_l": 0.15,
        "brow_r": 0.15,
        "brow_tilt": 0.9,
        "mouth_curve": -0.85,
        "mouth_w": 0.85,
        "eye_l": 0.7,
        "eye_r": 0.7,
        "gaze_y": 0.55,
    },
    "angry": {
        "brow_l": -0.75,
        "brow_r": -0.75,
        "brow_tilt": -1.0,
        "mouth_curve": -0.55,
        "mouth_open": 0.12,
        "mouth_w": 0.85,
        "eye_l": 0.85,
        "eye_r": 0.85,
    },
    "surprised": {
        "brow_l": 1.0,
        "brow_r": 1.0,
        "eye_l": 1.3,
        "eye_r": 1.3,
        "mouth_open": 0.7,
        "mouth_round": 0.85,
        "mouth_w": 0.75,
        "mouth_curve": 0.0,
    },
    "confused": {
        "brow_l": 0.85,
        "brow_r": -0.3,
        "mouth_curve": -0.25,
        "mouth_w": 0.8,
        "gaze_x": 0.45,
        "face_roll": 0.16,
    },
    "thoughtful": {
        "gaze_x": 0.6,
        "gaze_y": -0.75,
        "mouth_curve": 0.0,
        "mouth_w": 0.7,
        "brow_l": 0.3,
        "brow_r": 0.05,
        "eye_l": 0.9,
        "eye_r": 0.9,
    },
    "wink": {
        "eye_r": 0.0,
        "eye_happy": 0.4,
        "mouth_curve": 0.85,
        "mouth_w": 1.1,
        "brow_r": -0.2,
        "brow_l": 0.2,
    },
    "shy": {
        "gaze_y": 0.6,
        "gaze_x": -0.35,
        "blush": 1.0,
        "mouth_curve": 0.45,
        "mouth_w": 0.75,
        "eye_l": 0.8,
        "eye_r": 0.8,
        "face_roll": 0.1,
        "brow_tilt": 0.3,
    },
    "excited": {
        "brow_l": 0.8,
        "brow_r": 0.8,
        "eye_l": 1.25,
        "eye_r": 1.25,
        "mouth_curve": 1.0,
        "mouth_open": 0.45,
        "mouth_w": 1.2,
        "blush": 0.35,
    },
}

#: A persona's own expression: a soft, slightly engaged face (one keyframe for all).
_THOUGHTFUL_GENERIC: dict[str, float] = {
    "mouth_curve": 0.5,
    "brow_l": 0.25,
    "brow_r": 0.25,
    "eye_happy": 0.2,
    "blush": 0.2,
}
