"""The preview renderer: every word renders, chunks and clock, errors, determinism, speech."""

from __future__ import annotations

import numpy as np
import pytest
from renderer_checks import assert_a_cancelled_chunk_is_rendered_again_whole

from comfyui_persona.persona.schema import CORE_ACTIONS, CORE_EXPRESSIONS, ActionDirective
from comfyui_persona.video.backend import RendererBackend, RenderError, SessionSpec
from comfyui_persona.video.preview import PreviewRenderer
from comfyui_persona.video.preview.params import BODY, FACE
from comfyui_persona.video.preview.smoothness import MAX_POSE_STEP, pose_step
from comfyui_persona.video.preview.visemes import Speech

LOOK = {"outfit_colour": "#d14a4a", "hair_style": "ponytail", "background_colour": "#dfe8f1"}
EXTRA = {
    "actions": [{"name": "juggle", "default_duration_s": 2.0}, {"name": "kneel", "pose_after": "sitting"}],
    "expressions": [{"name": "smug", "default_duration_s": 1.5}],
}


def _renderer(width=128, height=128, fps=16.0, seed=0, chunk_frames=4, **kw) -> PreviewRenderer:
    r = PreviewRenderer(chunk_frames=chunk_frames, **kw)
    r.start_session(SessionSpec("ada", "Ada", dict(LOOK), width, height, fps, seed, vocabulary=EXTRA))
    return r


def _d(action="idle", expression="neutral", intensity=1.0, duration_s=None) -> ActionDirective:
    return ActionDirective(action=action, expression=expression, intensity=intensity, duration_s=duration_s)


def _poses(r: PreviewRenderer, frames: int) -> list[tuple[np.ndarray, np.ndarray]]:
    return [r.step_pose() for _ in range(frames)]


def test_preview_renderer_is_a_renderer_backend():
    assert isinstance(PreviewRenderer(), RendererBackend)


def test_chunks_are_uint8_rgb_at_the_requested_size_on_a_frame_clock():
    r = _renderer(width=832, height=480, fps=16.0, chunk_frames=4)
    first, second = r.next_chunk(), r.next_chunk()
    assert first.frames.shape == (4, 480, 832, 3) and first.frames.dtype == np.uint8
    assert first.first_index == 0 and second.first_index == 4
    assert first.pts_ms == [0, 62, 125, 188] and second.pts_ms == [250, 312, 375, 438]
    assert first.frames.flags.c_contiguous


def test_chunk_size_is_configurable_like_longlive():
    assert _renderer(chunk_frames=12).next_chunk().frames.shape[0] == 12


@pytest.mark.parametrize("action", [e.name for e in CORE_ACTIONS if e.name != "idle"] + ["juggle", "kneel"])
def test_every_action_moves_the_body_away_from_idle(action):
    still, r = _renderer(), _renderer()
    if action == "stand":  # standing up only moves a seated character
        for renderer in (still, r):
            renderer.submit([_d("sit")], seq=0)
            _poses(renderer, 40)
    rest = _poses(still, 24)
    r.submit([_d(action)], seq=1)
    acting = _poses(r, 24)
    moved = max(float(np.max(np.abs(a[0] - b[0]) / BODY.scale)) for a, b in zip(rest, acting, strict=True))
    assert moved > 0.15, f"{action} barely moves the body ({moved:.3f})"


@pytest.mark.parametrize("expression", [e.name for e in CORE_EXPRESSIONS if e.name != "neutral"] + ["smug"])
def test_every_expression_changes_the_face_and_the_picture(expression):
    r0, r1 = _renderer(blinks=False), _renderer(blinks=False)
    r1.submit([_d(expression=expression)], seq=1)
    for _ in range(3):
        a, b = r0.next_chunk(), r1.next_chunk()
    face_change = float(np.max(np.abs(r0.last_pose[1] - r1.last_pose[1]) / FACE.scale))
    assert face_change > 0.1
    assert np.any(a.frames[-1] != b.frames[-1])


def test_every_word_renders_a_full_frame_at_low_and_high_intensity():
    r = _renderer(width=64, height=64, chunk_frames=2)
    for intensity in (0.0, 1.0):
        for e in CORE_ACTIONS:
            r.submit([_d(e.name, CORE_EXPRESSIONS[len(e.name) % 12].name, intensity)], seq=0)
            frames = r.next_chunk().frames
            assert frames.shape == (2, 64, 64, 3) and frames.std() > 5.0  # a picture, not a blank


def test_unknown_words_raise_render_error_listing_known_ones():
    r = _renderer()
    with pytest.raises(RenderError, match=r"unknown action 'moonwalk'; known: idle, wave"):
        r.submit([_d("moonwalk")], seq=1)
    with pytest.raises(RenderError, match=r"unknown expression 'smirk'.*smug"):
        r.submit([_d(expression="smirk")], seq=1)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"width": 0}, r"width=0 must be an even integer in \[64, 2048\]"),
        ({"height": 4096}, r"height=4096 must be an even integer in \[64, 2048\]"),
        ({"width": 513}, r"width=513 must be an even integer"),
        ({"width": 512.0}, r"width=512.0 must be an even integer"),
        ({"fps": 0.0}, r"fps=0.0 must be a number in \[1, 60\]"),
        ({"fps": 240}, r"fps=240 must be a number in \[1, 60\]"),
        ({"fps": float("nan")}, r"fps=nan must be a number"),
    ],
)
def test_bad_sizes_and_fps_name_the_field_and_the_allowed_range(kwargs, message):
    spec = SessionSpec(**{"persona_id": "a", "persona_name": "A", "look": {}, **kwargs})
    with pytest.raises(RenderError, match=message):
        PreviewRenderer().start_session(spec)


def test_calls_before_a_session_say_so():
    with pytest.raises(RenderError, match="start_session"):
        PreviewRenderer().next_chunk()


def _script(seed: int) -> np.ndarray:
    r = _renderer(seed=seed, chunk_frames=8)
    r.submit([_d("wave", "smile"), _d("sit", "laugh")], seq=1)
    r.set_speech(None, 800)
    return np.concatenate([r.next_chunk().frames for _ in range(8)])


def test_same_seed_gives_identical_frames_and_another_seed_does_not():
    a, b, c = _script(7), _script(7), _script(8)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_shows_directives_marks_the_chunk_holding_the_first_frame_of_a_submission():
    r = _renderer(chunk_frames=4)
    assert r.next_chunk().shows_directives == []
    r.submit([_d("wave")], seq=41)
    assert r.next_chunk().shows_directives == [41]
    assert r.next_chunk().shows_directives == []


def test_interruption_blends_from_where_the_character_is():
    r = _renderer()
    r.submit([_d("wave")], seq=1)
    poses = _poses(r, 3)  # three frames into the wave's blend-in
    r.submit([_d("sit", "surprised")], seq=2)
    poses += _poses(r, 30)
    steps = [pose_step(a, b) for a, b in zip(poses, poses[1:], strict=False)]
    assert max(steps) < MAX_POSE_STEP
    assert poses[-1][0][BODY.index["sit"]] == pytest.approx(1.0)
    # The arm never finished rising: the interruption turned it round mid-way.
    r_upper = [p[0][BODY.index["r_upper"]] for p in poses]
    assert max(r_upper) < 1.55


def test_a_queue_runs_in_order_and_returns_to_rest():
    r = _renderer()
    r.submit([_d("nod", duration_s=0.5), _d("sit", duration_s=0.5)], seq=1)
    poses = _poses(r, 48)  # 3 s
    pitch = [p[0][BODY.index["head_pitch"]] for p in poses[:10]]
    assert max(pitch) > 0.2  # nodding first
    assert poses[-1][0][BODY.index["sit"]] == pytest.approx(1.0)  # then seated, and stays
    r.submit([_d("stand")], seq=2)
    assert _poses(r, 40)[-1][0][BODY.index["sit"]] == pytest.approx(0.0)


def test_expression_holds_for_its_duration_then_relaxes_to_neutral():
    r = _renderer(blinks=False)
    r.submit([_d(expression="surprised", duration_s=1.0)], seq=1)
    poses = _poses(r, 48)
    brow = [p[1][FACE.index["brow_l"]] for p in poses]
    assert brow[12] > 0.9  # held at 0.75 s
    assert brow[-1] == pytest.approx(0.0, abs=1e-6)


def test_timed_visemes_drive_the_mouth_and_it_closes_after():
    r = _renderer(blinks=False)
    r.set_speech([(0, "X"), (125, "D"), (375, "A"), (500, "F"), (625, "X")])
    poses = _poses(r, 16)
    opening = [p[1][FACE.index["mouth_open"]] for p in poses]
    rounding = [p[1][FACE.index["mouth_round"]] for p in poses]
    assert opening[0] == pytest.approx(0.0)
    assert max(opening[3:6]) > 0.6  # D: wide open
    assert opening[7] < 0.1  # A: closed (M, B, P)
    assert max(rounding[8:10]) > 0.6  # F: puckered
    assert opening[-1] == pytest.approx(0.0)


def test_talking_cycle_without_timings_moves_the_mouth_for_the_duration():
    r = _renderer(blinks=False)
    r.set_speech(None, 1500)
    opening = [p[1][FACE.index["mouth_open"]] for p in _poses(r, 40)]
    talking = opening[2:22]
    assert max(talking) > 0.3 and len({round(x, 3) for x in talking}) > 8
    assert max(opening[30:]) == pytest.approx(0.0)  # silent after 1.5 s + fade


def test_bad_viseme_is_a_render_error():
    with pytest.raises(RenderError, match="unknown viseme 'Q'"):
        _renderer().set_speech([(0, "Q")])


def test_walking_scrolls_the_scene():
    def wall(r: PreviewRenderer) -> list[np.ndarray]:
        return [r.next_chunk().frames[-1][:60, :30].copy() for _ in range(6)]  # wall left of the character

    still = wall(_renderer())
    assert all(np.array_equal(still[0], frame) for frame in still)
    walking = _renderer()
    walking.submit([_d("walk")], seq=1)
    frames = wall(walking)
    assert not np.array_equal(frames[1], frames[-1])


def test_the_look_colours_are_drawn():
    frame = _renderer(width=256, height=256).next_chunk().frames[0]
    red = np.all(np.abs(frame.astype(int) - [0xD1, 0x4A, 0x4A]) < 6, axis=-1)
    assert red.mean() > 0.01  # the outfit


def test_malformed_look_falls_back_to_defaults(caplog):
    r = PreviewRenderer()
    r.start_session(SessionSpec("a", "A", {"skin_colour": "pink", "hair_style": "mohawk"}, 128, 128))
    assert r.next_chunk().frames.shape == (4, 128, 128, 3)
    assert "skin_colour" in caplog.text and "mohawk" in caplog.text


def test_reset_relaxes_to_standing_idle_without_a_jump():
    r = _renderer()
    r.submit([_d("sit", "angry")], seq=1)
    before = _poses(r, 30)[-1]
    r.reset()
    after = _poses(r, 30)
    assert pose_step(before, after[0]) < MAX_POSE_STEP
    assert after[-1][0][BODY.index["sit"]] == pytest.approx(0.0)


def test_an_idle_directive_holds_its_expression_before_the_next_one_starts():
    r = _renderer(blinks=False)
    r.submit([_d(expression="surprised", duration_s=1.0), _d("wave")], seq=1)
    poses = _poses(r, 32)
    assert poses[8][1][FACE.index["brow_l"]] > 0.9  # still surprised at 0.5 s
    assert poses[8][0][BODY.index["r_upper"]] < 0.5  # and not waving yet
    assert poses[-1][0][BODY.index["r_upper"]] > 1.5  # waving after the second


def test_a_persona_action_can_leave_the_character_seated():
    r = _renderer()
    r.submit([_d("kneel", duration_s=0.5)], seq=1)
    assert _poses(r, 40)[-1][0][BODY.index["sit"]] == pytest.approx(1.0)
    assert r.sitting


def test_a_chunk_cancelled_half_way_is_rendered_again_whole():
    """ComfyUI's Cancel between two frames of a chunk: restoring the checkpoint gives the next
    run exactly the frames an uncancelled run would have shown (no gap, no repeat)."""
    from comfyui_persona.persona.schema import ActionDirective
    from comfyui_persona.video.backend import SessionSpec
    from comfyui_persona.video.preview import PreviewRenderer

    def renderer():
        r = PreviewRenderer(chunk_frames=6)
        r.start_session(SessionSpec("mira", "Mira", {}, 96, 96, 24.0, seed=5))
        r.submit([ActionDirective(action="wave", expression="smile", intensity=0.8)], seq=1)
        return r

    assert_a_cancelled_chunk_is_rendered_again_whole(renderer, cancel_at=2)


def _half_open_ms(times: np.ndarray, opening: np.ndarray, after_ms: float) -> float:
    """When the mouth, rising from rest after `after_ms`, is first half way to its peak
    within 200 ms (interpolated between samples): the lip-sync meter's notion of an onset."""
    k = int(np.argmax(times >= after_ms))
    peak = float(opening[k : k + 200].max())
    j = k + int(np.argmax(opening[k:] >= 0.5 * peak))
    share = (0.5 * peak - opening[j - 1]) / (opening[j] - opening[j - 1])
    return float(times[j - 1] + share * (times[j] - times[j - 1]))


def test_the_first_opening_of_a_timeline_is_timed_like_one_after_a_pause():
    """The speech layer fades in at rest before the first shape, so a reply's first opening
    eases in from rest like every opening after a pause (the mouth lead is tuned for that);
    faded in from the first shape, it was half open about 32 ms later than the others."""
    speech = Speech([(100, "D"), (400, "X"), (900, "D"), (1200, "X")], 0.0)
    times = np.arange(1400, dtype=float)  # every millisecond: the layer's timing itself
    opening = np.array([speech.shape(t)[0] * speech.weight(t) for t in times])  # over a closed mouth
    first = _half_open_ms(times, opening, 100.0) - 100.0
    later = _half_open_ms(times, opening, 900.0) - 900.0
    assert abs(first - later) < 1.0, (first, later)
    assert opening[:100].max() < 1e-9  # at rest until its first shape
    assert speech.weight(100.0) == pytest.approx(1.0)  # faded in by then


def test_a_timeline_handed_over_mid_shape_carries_on_the_mouth():
    """A sentence queued while another plays reaches the renderer as a new timeline from
    "now", the shape under way at offset 0: the mouth must go on as if the whole timeline
    had been known from the start (before: it closed and faded in again)."""
    whole = [(100, "D"), (400, "X"), (900, "C"), (1100, "X")]
    r = _renderer(blinks=False, fps=50.0)  # 20 ms frames
    r.set_speech(whole)
    reference = [p[1] for p in _poses(r, 70)]
    r = _renderer(blinks=False, fps=50.0)
    r.set_speech(whole[:2])
    handed = [p[1] for p in _poses(r, 6)]  # 20 ms into the opening
    r.set_speech([(0, "D"), (280, "X"), (780, "C"), (980, "X")])  # as SpeechQueue hands it over
    handed += [p[1] for p in _poses(r, 64)]
    np.testing.assert_allclose(handed, reference, atol=1e-9)
