"""How smooth is the preview? Largest per-frame change, in pose and in pixels.

`pose_step` is the largest change of any pose parameter between two consecutive frames,
each parameter divided by its full-move scale (`params.BODY_SCALE`/`FACE_SCALE`), so 1.0
means "a whole gesture in one frame" — a jump cut. `pixel_step` is the mean absolute
difference of two frames (0–255, over all pixels and channels) and the fraction of pixels
that changed by more than `PIXEL_THRESHOLD` levels in some channel.

`sweep` runs every action→action pair, every expression→expression pair and a set of
interruptions (a new directive two frames into the previous one's cross-fade, three deep)
and returns the worst steps with where they happened; `steady_cases` runs each action and
expression alone, which gives the character's own fastest motion. The bounds and why they
are what they are: docs/preview.md ("Smoothness"). In short: a transition may move any
parameter at most `MAX_POSE_STEP` of its range per frame, and may change the picture at
most `PIXEL_RATIO_BOUND` times as much per frame as the fastest steady motion does.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from ...persona.schema import CORE_ACTIONS, CORE_EXPRESSIONS, ActionDirective
from ..backend import SessionSpec
from .params import BODY_SCALE, FACE_SCALE
from .renderer import PreviewRenderer

__all__ = [
    "MAX_POSE_STEP",
    "PIXEL_RATIO_BOUND",
    "PIXEL_THRESHOLD",
    "steady_cases",
    "SweepResult",
    "pixel_step",
    "pose_step",
    "sweep",
    "transition_cases",
]

#: Bounds the sweep must stay under at 16 fps (justified in docs/preview.md).
MAX_POSE_STEP = 0.4
PIXEL_RATIO_BOUND = 1.2
PIXEL_THRESHOLD = 32


def pose_step(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray]) -> float:
    body = np.abs(b[0] - a[0]) / BODY_SCALE
    face = np.abs(b[1] - a[1]) / FACE_SCALE
    return float(max(body.max(), face.max()))


def pixel_step(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """(mean abs difference 0–255, fraction of pixels changed by > PIXEL_THRESHOLD)."""
    diff = np.abs(a.astype(np.int16) - b.astype(np.int16))
    return float(diff.mean()), float((diff.max(axis=-1) > PIXEL_THRESHOLD).mean())


def _d(action: str = "idle", expression: str = "neutral") -> ActionDirective:
    return ActionDirective(action=action, expression=expression, intensity=1.0)


def transition_cases() -> Iterator[tuple[str, list[tuple[int, ActionDirective]]]]:
    """(label, [(frame to submit at, directive)...]) for every case of the sweep."""
    actions = [e.name for e in CORE_ACTIONS]
    expressions = [e.name for e in CORE_EXPRESSIONS]
    for a in actions:
        for b in actions:
            yield f"action {a}->{b}", [(0, _d(a)), (14, _d(b))]
    for a in expressions:
        for b in expressions:
            yield f"expression {a}->{b}", [(0, _d(expression=a)), (8, _d(expression=b))]
    for i, a in enumerate(actions):
        b = actions[(i + 5) % len(actions)]
        c = actions[(i + 11) % len(actions)]
        e1, e2 = expressions[i % len(expressions)], expressions[(i + 7) % len(expressions)]
        yield (
            f"interrupt {a}->{b}->{c}",
            [(0, _d(a, e1)), (12, _d(b, e2)), (14, _d(c, e1)), (16, _d("sit", e2))],
        )


def steady_cases() -> Iterator[tuple[str, list[tuple[int, ActionDirective]]]]:
    """Each action and expression on its own, from rest (its own motion, one blend-in)."""
    for e in CORE_ACTIONS:
        yield f"steady {e.name}", [(0, _d(e.name))]
    for e in CORE_EXPRESSIONS:
        yield f"steady {e.name}", [(0, _d(expression=e.name))]


@dataclass
class SweepResult:
    cases: int = 0
    frames: int = 0
    max_pose_step: float = 0.0
    max_pose_case: str = ""
    max_pixel_mean: float = 0.0
    max_pixel_changed: float = 0.0
    max_pixel_case: str = ""
    per_case: dict[str, float] = field(default_factory=dict)


def sweep(
    width: int = 128,
    height: int = 128,
    fps: float = 16.0,
    draw: bool = True,
    blend_scale: float = 1.0,
    tail_frames: int = 22,
    cases: list[tuple[str, list[tuple[int, ActionDirective]]]] | None = None,
) -> SweepResult:
    """Run the transition cases and record the worst per-frame changes (blinks off)."""
    result = SweepResult()
    for label, plan in cases if cases is not None else transition_cases():
        renderer = PreviewRenderer(chunk_frames=1, blinks=False, blend_scale=blend_scale)
        renderer.start_session(SessionSpec("sweep", "Sweep", {}, width, height, fps, 0))
        last_frame = plan[-1][0] + tail_frames
        schedule = dict((frame, d) for frame, d in plan)
        prev_pose = prev_pixels = None
        worst = 0.0
        for frame in range(last_frame):
            if frame in schedule:
                renderer.submit([schedule[frame]], seq=frame)
            if draw:
                pixels = renderer.next_chunk().frames[0]
                assert renderer.last_pose is not None
                pose = renderer.last_pose
            else:
                pose = renderer.step_pose()
                pixels = None
            if prev_pose is not None:
                step = pose_step(prev_pose, pose)
                worst = max(worst, step)
                if step > result.max_pose_step:
                    result.max_pose_step, result.max_pose_case = step, f"{label} @frame {frame}"
            if pixels is not None and prev_pixels is not None:
                mean, changed = pixel_step(prev_pixels, pixels)
                if mean > result.max_pixel_mean:
                    result.max_pixel_mean, result.max_pixel_case = mean, f"{label} @frame {frame}"
                result.max_pixel_changed = max(result.max_pixel_changed, changed)
            prev_pose, prev_pixels = pose, pixels
            result.frames += 1
        result.per_case[label] = worst
        result.cases += 1
    return result
