"""One reference frame for a scene: each character's framed photo side by side (issue 20).

LongLive anchors identity by writing a reference's latents into the frame sink, and the sink
holds one picture. A scene's picture is its characters side by side, left to right as the
scene prompt names them ("On the left, Mira: …"), so the reference is made the same way:
slot i of n spans columns [round(i·W/n), round((i+1)·W/n)) — the slots the preview renderer
centres its characters in — and holds character i's own `IdentityConditioner.reference_frame`
at that slot's size (framed on that character's face). Each character is then anchored where
the prompt and the preview put it, and the sink is still one chunk: the same cost as one
persona's reference.

The encode is the single reference's (`IdentityConditioner.reference_latents`), taken over
unchanged: only the frame it encodes differs.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .conditioner import IdentityConditioner

__all__ = ["SceneReference", "slot_bounds"]


def slot_bounds(width: int, count: int) -> list[tuple[int, int]]:
    """Columns [start, end) of each of `count` equal slots across `width`, left to right."""
    return [(round(i * width / count), round((i + 1) * width / count)) for i in range(count)]


class SceneReference:
    """The scene's characters' references side by side; used where one conditioner's
    reference is (the engine's `_encode_reference`)."""

    def __init__(self, conditioners: Sequence[IdentityConditioner]) -> None:
        if not 1 <= len(conditioners) <= 4:
            raise ValueError(f"a scene reference holds 1 to 4 characters, not {len(conditioners)}")
        self.conditioners = tuple(conditioners)

    def reference_frame(self, width: int, height: int) -> np.ndarray:
        """(height, width, 3) uint8: each character framed on its face in its own slot."""
        frame = np.empty((height, width, 3), dtype=np.uint8)
        for (start, end), conditioner in zip(slot_bounds(width, len(self.conditioners)), self.conditioners,
                                             strict=True):
            frame[:, start:end] = conditioner.reference_frame(end - start, height)
        return frame

    # The single reference's encode, reading this class's frame (both only call reference_frame).
    reference_video_tensor = IdentityConditioner.reference_video_tensor
    reference_latents = IdentityConditioner.reference_latents
