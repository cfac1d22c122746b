"""The named parameters the preview character is posed with, as flat float vectors.

Two channels are blended separately: `BODY` (posture, limbs, head) and `FACE` (brows,
eyes, mouth). Keeping them as plain numpy vectors lets the transition blender treat every
pose the same way and lets the smoothness metric measure "how far did the character move
in one frame" as a single max over normalised parameters (`*_SCALE`: the parameter's full
range over every keyframe in `motions.py`, so a step of 1.0 is an end-to-end jump).

Units: angles in radians; offsets in reference pixels (the character is designed on a
512-pixel-high canvas and scaled); everything else a unitless amount.
Conventions: `turn` and `head_yaw` > 0 face the viewer's right (the character's left);
arm angle 0 hangs down, positive swings outward/up on that arm's side.
"""

from __future__ import annotations

import numpy as np

__all__ = ["BODY", "BODY_SCALE", "FACE", "FACE_SCALE", "ParamSet"]


class ParamSet:
    """An ordered list of parameter names with defaults and per-parameter scales."""

    def __init__(self, spec: dict[str, tuple[float, float]]) -> None:
        self.names: tuple[str, ...] = tuple(spec)
        self.index: dict[str, int] = {name: i for i, name in enumerate(self.names)}
        self.default = np.array([spec[n][0] for n in self.names], dtype=np.float64)
        self.scale = np.array([spec[n][1] for n in self.names], dtype=np.float64)

    def __len__(self) -> int:
        return len(self.names)

    def vector(self, base: np.ndarray | None = None, **values: float) -> np.ndarray:
        out = (self.default if base is None else base).copy()
        for name, value in values.items():
            out[self.index[name]] = value
        return out

    def as_dict(self, vec: np.ndarray) -> dict[str, float]:
        return dict(zip(self.names, vec.tolist(), strict=True))


#: name: (neutral value, scale of a full move)
BODY = ParamSet(
    {
        "walk_speed": (0.0, 150.0),  # scene scroll, reference px per second
        "body_x": (0.0, 28.0),
        "body_y": (0.0, 10.0),
        "lean": (0.0, 0.3),
        "turn": (0.0, 1.7),
        "bow": (0.0, 1.0),
        "sit": (0.0, 1.0),
        "shrug": (0.0, 1.0),
        "head_roll": (0.0, 0.3),
        "head_yaw": (0.0, 1.6),
        "head_pitch": (0.0, 1.2),
        "l_upper": (0.12, 2.9),
        "l_fore": (0.1, 4.0),
        "r_upper": (0.12, 2.9),
        "r_fore": (0.1, 4.0),
        "l_thigh": (0.0, 0.76),
        "l_shin": (0.0, 0.4),
        "r_thigh": (0.0, 0.76),
        "r_shin": (0.0, 0.4),
        "point": (0.0, 1.0),  # index finger extended on the right hand
    }
)
BODY_SCALE = BODY.scale

FACE = ParamSet(
    {
        "brow_l": (0.0, 1.75),
        "brow_r": (0.0, 1.75),
        "brow_tilt": (0.0, 2.0),  # >0 inner ends up (sad), <0 inner ends down (angry)
        "eye_l": (1.0, 1.3),
        "eye_r": (1.0, 1.3),
        "eye_happy": (0.0, 1.0),
        "gaze_x": (0.0, 1.0),
        "gaze_y": (0.0, 1.3),
        "mouth_w": (1.0, 0.6),
        "mouth_open": (0.0, 1.0),
        "mouth_curve": (0.2, 1.85),
        "mouth_round": (0.0, 1.0),
        "blush": (0.0, 1.0),
        "face_roll": (0.0, 0.3),
    }
)
FACE_SCALE = FACE.scale
