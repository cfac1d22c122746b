"""Scenes on the preview renderer (video/preview/ensemble.py): 2–4 characters in one frame,
each with its own look and directive timeline. Real Skia drawing at small sizes."""

from __future__ import annotations

import numpy as np
import pytest
from renderer_checks import assert_a_cancelled_chunk_is_rendered_again_whole

from comfyui_persona.persona.schema import ActionDirective
from comfyui_persona.video.backend import RendererBackend, RenderError, SessionSpec
from comfyui_persona.video.preview import PreviewRenderer, ScenePreviewRenderer
from comfyui_persona.video.preview.params import BODY, FACE
from comfyui_persona.video.preview.smoothness import MAX_POSE_STEP, pose_step

LOOKS = {
    "mira": {"outfit_colour": "#d14a4a", "hair_style": "ponytail", "background_colour": "#dfe8f1"},
    "bjorn": {"outfit_colour": "#2a4ad1", "hair_style": "short"},
    "ada": {"outfit_colour": "#2ad14a", "hair_style": "long"},
    "kai": {"outfit_colour": "#d1c22a", "hair_style": "bun"},
}
SIZE = 128


def _spec(who: str, **kw) -> SessionSpec:
    return SessionSpec(who, who.title(), dict(LOOKS[who]), kw.pop("width", SIZE), kw.pop("height", SIZE), 16.0,
                       seed=3, **kw)


def _scene(*cast: str, chunk_frames: int = 4, **kw) -> ScenePreviewRenderer:
    r = ScenePreviewRenderer(chunk_frames=chunk_frames, **kw)
    r.start_scene([_spec(who) for who in cast])
    return r


def _d(action="idle", expression="neutral", character=None) -> ActionDirective:
    return ActionDirective(action=action, expression=expression, intensity=1.0, character=character)


def _moved(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a - b) / BODY.scale))


def test_a_scene_renderer_is_a_renderer_backend_and_draws_every_character_in_one_frame():
    assert isinstance(ScenePreviewRenderer(), RendererBackend)
    for cast in (("mira", "bjorn"), ("mira", "bjorn", "ada", "kai")):
        chunk = _scene(*cast).next_chunk()
        assert chunk.frames.shape == (4, SIZE, SIZE, 3) and chunk.pts_ms == [0, 62, 125, 188]
        frame = chunk.frames[-1].astype(int)
        # each slot shows its own outfit colour (a card's look), left to right
        for i, who in enumerate(cast):
            outfit = np.array([int(LOOKS[who]["outfit_colour"][k:k + 2], 16) for k in (1, 3, 5)])
            slot = frame[:, i * SIZE // len(cast):(i + 1) * SIZE // len(cast)]
            near = np.abs(slot - outfit).max(axis=-1) < 30
            assert near.sum() > 10, f"{who}'s outfit is not in slot {i}"
            others = [w for w in cast if w != who]
            for other in others:  # and not in the others' slots
                colour = np.array([int(LOOKS[other]["outfit_colour"][k:k + 2], 16) for k in (1, 3, 5)])
                assert (np.abs(slot - colour).max(axis=-1) < 30).sum() < near.sum()


def test_a_directive_naming_a_character_drives_only_that_one_and_none_means_the_first():
    still, r = _scene("mira", "bjorn"), _scene("mira", "bjorn")
    r.submit([_d("wave", "laugh", character="bjorn")], seq=1)
    for _ in range(4):
        still.next_chunk(), r.next_chunk()
    assert _moved(still.last_poses["bjorn"][0], r.last_poses["bjorn"][0]) > 0.15
    assert np.array_equal(still.last_poses["mira"][0], r.last_poses["mira"][0])  # Mira untouched

    unnamed = _scene("mira", "bjorn")
    unnamed.submit([_d("sit")], seq=2)
    for _ in range(6):
        unnamed.next_chunk()
    assert unnamed.last_poses["mira"][0][BODY.index["sit"]] > 0.5
    assert unnamed.last_poses["bjorn"][0][BODY.index["sit"]] < 0.01


def test_each_character_runs_its_own_timeline_and_a_submission_keeps_the_others_queues():
    r = _scene("mira", "bjorn")
    r.submit([_d("wave", character="mira"), _d("sit", character="bjorn")], seq=1)
    assert r.next_chunk().shows_directives == [1]
    r.submit([_d("nod", "smile", character="bjorn")], seq=2)  # replaces only Bjorn's queue
    for _ in range(2):
        r.next_chunk()
    mira = r._performers["mira"]
    assert mira._playing is not None and mira._playing.name == "wave"  # still waving
    assert r._performers["bjorn"]._playing.name == "nod"


def test_a_scene_character_moves_exactly_as_the_single_renderer_draws_it():
    """The scene steps each character with the single renderer's own code: same poses."""
    single = PreviewRenderer(chunk_frames=4)
    single.start_session(SessionSpec("mira", "Mira", dict(LOOKS["mira"]), SIZE, SIZE, 16.0, seed=3))
    scene = _scene("mira", "bjorn")
    for r in (single, scene):
        r.submit([_d("dance", "surprised"), _d("bow")], seq=1)
    for _ in range(12):
        single.next_chunk(), scene.next_chunk()
        assert np.array_equal(single.last_pose[0], scene.last_poses["mira"][0])


def test_bad_scenes_and_bad_directives_are_render_errors_and_queue_nothing():
    with pytest.raises(RenderError, match="1 to 4 characters, not 5"):
        ScenePreviewRenderer().start_scene([_spec(w) for w in LOOKS] + [_spec("mira")])
    with pytest.raises(RenderError, match="once per scene"):
        ScenePreviewRenderer().start_scene([_spec("mira"), _spec("mira")])
    with pytest.raises(RenderError, match="size and fps"):
        ScenePreviewRenderer().start_scene([_spec("mira"), _spec("bjorn", width=256)])
    r = _scene("mira", "bjorn")
    with pytest.raises(RenderError, match="'ada', who is not in this scene"):
        r.submit([_d("wave", character="mira"), _d("wave", character="ada")], seq=1)
    with pytest.raises(RenderError, match="unknown action 'juggle'"):
        r.submit([_d("wave", character="mira"), ActionDirective(action="juggle", expression="neutral",
                                                                 intensity=1.0, character="bjorn")], seq=1)
    r.next_chunk()
    assert r._performers["mira"]._playing is None  # neither submission queued its first part
    with pytest.raises(RenderError, match="not in this scene"):
        r.set_speech(None, 500, character="ada")


def test_listeners_turn_toward_whoever_speaks_smoothly_and_back():
    r = _scene("mira", "bjorn", "ada", blinks=False)
    r.set_speech(None, 1500, character="bjorn")
    previous = None
    for _ in range(5):
        r.next_chunk()
        poses = dict(r.last_poses)
        if previous is not None:
            for who in poses:
                assert pose_step(previous[who], poses[who]) <= MAX_POSE_STEP
        previous = poses
    gaze = FACE.index["gaze_x"]
    assert r.last_poses["mira"][1][gaze] > 0.4  # Bjorn stands to Mira's right
    assert r.last_poses["ada"][1][gaze] < -0.4  # and to Ada's left
    speaker, own = r.last_poses["bjorn"], r._performers["bjorn"].last_pose
    assert np.array_equal(speaker[0], own[0]) and np.array_equal(speaker[1], own[1])  # the speaker faces front
    assert not np.array_equal(r.last_poses["mira"][1], r._performers["mira"].last_pose[1])
    for _ in range(12):  # the speech ends: heads come back
        r.next_chunk()
    assert abs(r.last_poses["mira"][1][gaze]) < 0.1


def test_speech_drives_only_the_speakers_mouth():
    r = _scene("mira", "bjorn", blinks=False)
    r.set_speech([(0, "A"), (300, "D"), (600, "X")], character="bjorn")
    opened = {"mira": 0.0, "bjorn": 0.0}
    for _ in range(3):
        r.next_chunk()
        for who in opened:
            opened[who] = max(opened[who], r.last_poses[who][1][FACE.index["mouth_open"]])
    assert opened["bjorn"] > 0.3 and opened["mira"] < 0.05


def test_a_chunk_cancelled_half_way_is_rendered_again_whole():
    def scene():
        r = _scene("mira", "bjorn")
        r.submit([_d("wave", character="bjorn"), _d("nod")], seq=1)
        r.set_speech(None, 900, character="mira")
        return r

    assert_a_cancelled_chunk_is_rendered_again_whole(scene, cancel_at=1)


def test_same_seed_same_frames():
    def script():
        r = _scene("mira", "bjorn", "ada")
        r.submit([_d("clap", character=w) for w in ("mira", "bjorn", "ada")], seq=1)
        return np.concatenate([r.next_chunk().frames for _ in range(3)])

    assert np.array_equal(script(), script())


def test_one_mouth_timeline_moves_each_speakers_mouth_in_their_own_window():
    """A speech track hands over who speaks when (`set_speakers`), then one timeline that names
    nobody: Mira's mouth moves in her line, Bjorn's in his, never both."""
    r = _scene("mira", "bjorn", blinks=False)
    r.set_speakers([(0, 500, "mira"), (500, 1000, "bjorn")])
    r.set_speech([(0, "D"), (200, "C"), (400, "X"), (520, "D"), (700, "C"), (900, "X")])
    mouth = FACE.index["mouth_open"]
    opened = []
    for _ in range(4):  # 16 frames at 16 fps: one second
        r.next_chunk()
        opened.append({who: r.last_poses[who][1][mouth] for who in ("mira", "bjorn")})
    assert opened[0]["mira"] > 0.3 and opened[0]["bjorn"] < 0.05  # 0-250 ms: Mira talks
    assert opened[2]["bjorn"] > 0.3 and opened[2]["mira"] < 0.05  # 500-750 ms: Bjorn talks
    assert r._speaker == "bjorn"  # and the others look at him



def test_the_transition_sweep_in_a_scene_stays_under_the_pose_bound_for_each_character():
    """The existing bound (smoothness.MAX_POSE_STEP) over the sweep's interruption cases and
    one action->action pair per action, performed by both characters at once while the
    speaker changes every 8 frames, so heads turn mid-transition. (Speaker windows without
    visemes: the mouth is not a transition, and the single sweep has no speech either.)"""
    from comfyui_persona.persona.schema import CORE_ACTIONS
    from comfyui_persona.video.preview.smoothness import transition_cases

    actions = [e.name for e in CORE_ACTIONS]
    pairs = {f"action {a}->{actions[(i + 3) % len(actions)]}" for i, a in enumerate(actions)}
    cases = [(label, plan) for label, plan in transition_cases() if label.startswith("interrupt") or label in pairs]
    assert len(cases) == 2 * len(actions)
    worst, where = 0.0, ""
    for label, plan in cases:
        r = ScenePreviewRenderer(chunk_frames=1, blinks=False)
        r.start_scene([SessionSpec(who, who, {}, 64, 64, 16.0, 0) for who in ("mira", "bjorn")])
        r.set_speakers([(k * 500, (k + 1) * 500, ("bjorn", "mira")[k % 2]) for k in range(8)])
        schedule = dict(plan)
        previous = None
        for frame in range(plan[-1][0] + 22):
            if frame in schedule:
                d = schedule[frame]
                r.submit([d.model_copy(update={"character": "mira"}), d.model_copy(update={"character": "bjorn"})],
                         seq=frame)
            r.next_chunk()
            poses = dict(r.last_poses)
            if previous is not None:
                for who in poses:
                    step = pose_step(previous[who], poses[who])
                    if step > worst:
                        worst, where = step, f"{label} {who} @frame {frame}"
            previous = poses
    assert worst <= MAX_POSE_STEP, where
