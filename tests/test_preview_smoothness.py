"""Smoothness: no transition moves the character faster than the bound; jump cuts are caught.

Bounds and their justification: docs/preview.md ("Smoothness") and
video/preview/smoothness.py.
"""

from __future__ import annotations

from comfyui_persona.persona.schema import ActionDirective
from comfyui_persona.video.preview.smoothness import (
    MAX_POSE_STEP,
    PIXEL_RATIO_BOUND,
    steady_cases,
    sweep,
    transition_cases,
)


def _d(action="idle", expression="neutral") -> ActionDirective:
    return ActionDirective(action=action, expression=expression, intensity=1.0)


SNAPS = [
    ("snap idle->sit", [(0, _d()), (10, _d("sit"))]),
    ("snap wave->dance", [(0, _d("wave")), (14, _d("dance"))]),
    ("snap smile->angry", [(0, _d(expression="smile")), (8, _d(expression="angry"))]),
]


def test_every_action_expression_and_interruption_transition_stays_under_the_pose_bound():
    result = sweep(draw=False)
    assert result.cases == 16 * 16 + 12 * 12 + 16
    assert result.max_pose_step < MAX_POSE_STEP, result.max_pose_case


def test_transitions_change_the_picture_no_faster_than_the_characters_own_fastest_motion():
    steady = sweep(width=96, height=96, cases=list(steady_cases()))
    # Every third case keeps this well under a minute on a busy 2-core CI machine; the
    # benchmark (benchmarks/preview.py) runs all of them at 256x256.
    moving = sweep(width=96, height=96, cases=list(transition_cases())[::3])
    assert moving.max_pixel_mean <= PIXEL_RATIO_BOUND * steady.max_pixel_mean, moving.max_pixel_case


def test_a_forced_jump_cut_is_detected_by_the_pose_metric():
    smooth = sweep(draw=False, cases=SNAPS)
    snapped = sweep(draw=False, cases=SNAPS, blend_scale=0.0)
    assert smooth.max_pose_step < MAX_POSE_STEP
    for label, worst in snapped.per_case.items():
        assert worst > MAX_POSE_STEP, f"{label}: a snap of {worst:.2f} went unnoticed"


def test_a_forced_body_jump_cut_is_detected_in_pixels():
    steady = sweep(width=96, height=96, cases=list(steady_cases()))
    bound = PIXEL_RATIO_BOUND * steady.max_pixel_mean
    snapped = sweep(width=96, height=96, cases=SNAPS[:1], blend_scale=0.0)
    smooth = sweep(width=96, height=96, cases=SNAPS[:1])
    assert smooth.max_pixel_mean <= bound < snapped.max_pixel_mean
