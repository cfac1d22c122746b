"""Transition blending shared by every renderer backend.

`easing` holds the curves (plain functions of progress in [0, 1]) so that the preview
renderer's pose blender and the LongLive engine's conditioning blender ease the same way.
`pose` blends parameter vectors over time: interrupting a transition starts the next one
from wherever the character is, so there is never a jump cut.
"""

from .easing import EASINGS, ease, ease_in_out_cubic, linear, smootherstep, smoothstep
from .pose import Blend, Constant, PoseChannel, Track

__all__ = [
    "EASINGS",
    "Blend",
    "Constant",
    "PoseChannel",
    "Track",
    "ease",
    "ease_in_out_cubic",
    "linear",
    "smootherstep",
    "smoothstep",
]
