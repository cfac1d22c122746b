"""Pose-level transition blending: eased, continuous, interruptible, bounded."""

from __future__ import annotations

import numpy as np
import pytest

from comfyui_persona.video.transitions import EASINGS, Blend, Constant, PoseChannel, ease
from comfyui_persona.video.transitions.easing import MAX_SLOPE
from comfyui_persona.video.transitions.pose import MAX_DEPTH


@pytest.mark.parametrize("name", sorted(EASINGS))
def test_easing_goes_from_zero_to_one_monotonically_within_its_max_slope(name):
    t = np.linspace(0.0, 1.0, 2001)
    y = np.array([ease(name, x) for x in t])
    assert y[0] == pytest.approx(0.0) and y[-1] == pytest.approx(1.0)
    assert np.all(np.diff(y) >= -1e-12)
    slope = np.diff(y) / np.diff(t)
    assert slope.max() <= MAX_SLOPE[name] * 1.001
    assert slope.max() >= MAX_SLOPE[name] * 0.98  # the recorded slope is the real maximum
    assert ease(name, -1.0) == 0.0 and ease(name, 2.0) == 1.0


def test_unknown_easing_lists_the_known_ones():
    with pytest.raises(KeyError, match="smoothstep"):
        ease("bouncy", 0.5)


class _Ramp:
    """A moving track: value = rate * t (so a frozen source would show)."""

    def __init__(self, rate: float, offset: float = 0.0) -> None:
        self.rate, self.offset = rate, offset

    def sample(self, t_ms: float) -> np.ndarray:
        return np.array([self.offset + self.rate * t_ms])


def test_blend_follows_the_live_source_then_lands_on_the_target():
    blend = Blend(_Ramp(1.0), Constant(np.array([0.0])), start_ms=100.0, duration_ms=200.0)
    assert blend.sample(50.0)[0] == pytest.approx(50.0)  # before: source, still moving
    assert blend.sample(400.0)[0] == pytest.approx(0.0)
    assert 0.0 < blend.sample(200.0)[0] < 200.0


def test_interrupting_mid_transition_starts_from_where_the_channel_is():
    channel = PoseChannel(Constant(np.array([0.0, 0.0])))
    channel.play(Constant(np.array([10.0, -10.0])), now_ms=0.0, blend_ms=400.0)
    before = channel.sample(150.0).copy()
    assert 0.0 < before[0] < 10.0  # mid-way
    channel.play(Constant(np.array([-5.0, 5.0])), now_ms=150.0, blend_ms=400.0)
    after = channel.sample(150.0)
    np.testing.assert_allclose(after, before)  # no jump at the interruption
    assert channel.sample(1000.0) == pytest.approx(np.array([-5.0, 5.0]))
    assert not channel.blending


def test_rapid_interruptions_stay_continuous_and_keep_nesting_bounded():
    channel = PoseChannel(Constant(np.zeros(1)))
    previous = channel.sample(0.0).copy()
    rng = np.random.default_rng(0)
    largest = 0.0
    for frame in range(1, 200):
        t = frame * 62.5
        if frame % 2 == 0:  # a new target every other frame: faster than any blend finishes
            channel.play(Constant(rng.uniform(-1, 1, 1)), now_ms=t, blend_ms=500.0)
            assert channel.depth() <= MAX_DEPTH
        value = channel.sample(t).copy()
        largest = max(largest, float(abs(value - previous)[0]))
        previous = value
    # Targets at most 2 apart; smoothstep's slope 1.5 over 8 frames bounds one layer to 0.375,
    # nested layers that are each easing share the same bound in the worst case.
    assert largest < 0.75


def test_cut_is_the_only_way_to_jump():
    channel = PoseChannel(Constant(np.zeros(1)))
    channel.cut(Constant(np.ones(1)))
    assert channel.sample(0.0)[0] == 1.0
