"""The lip-sync stage on CPU: tiny random MuseTalk files, the real SCRFD detector, real photos, our TTS.

What a host relies on: no speech or no face → the frames as given (no speech: the very
array, before any detection); only pixels inside the mouth region ever change; a cut stops
the re-drawing exactly where the audio stops, whether it comes before a chunk is submitted
or while it is pending; each frame reads the 200 ms of Whisper features MuseTalk's training
gives it. Random weights draw noise in the mouth region: these tests check where and when
the stage draws, not what (that needs the real weights; docs/lipsync.md).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from comfyui_persona.errors import PersonaError
from comfyui_persona.video.lipsync.audio import (
    AudioFeatureCache,
    SpeechAudio,
    clip_speech,
    frame_audio,
    hears,
    speech_from_schedule,
)
from comfyui_persona.video.lipsync.blend import mouth_mask, mouth_region, paste_mouth
from comfyui_persona.video.lipsync.checkpoint import load_musetalk
from comfyui_persona.video.lipsync.errors import LipSyncInputError
from comfyui_persona.video.lipsync.face import CropBox, FaceDetector, FaceTracker, crop_box_from_face
from comfyui_persona.video.lipsync.settings import LipSyncSettings
from comfyui_persona.video.lipsync.stage import LipSyncStage
from comfyui_persona.video.lipsync.testing import face_frame, spoken, write_tiny_lipsync_models

pytestmark = pytest.mark.usefixtures("one_torch_thread")

STEP = 62.5  # 16 fps, the LongLive stream's rate


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tiny-lipsync")
    write_tiny_lipsync_models(directory)
    return load_musetalk(models_dir=directory)


@pytest.fixture(scope="module")
def taesd_model(tmp_path_factory):
    """The same UNet and Whisper with TAESD as the autoencoder (settings.autoencoder "taesd")."""
    directory = tmp_path_factory.mktemp("tiny-lipsync-taesd")
    write_tiny_lipsync_models(directory, autoencoder="taesd")
    return load_musetalk(models_dir=directory, autoencoder="taesd")


@pytest.fixture(scope="module")
def detector():
    return FaceDetector(det_size=320, threads=2)


@pytest.fixture(scope="module")
def face():
    return face_frame("yaoming.jpg")


@pytest.fixture(scope="module")
def sentence():
    return spoken("Hello there, how are you today?", start_ms=0.0)


def stage_for(model, detector, **settings) -> LipSyncStage:
    return LipSyncStage(model, settings=LipSyncSettings(**settings), detector=detector)


def chunk(frame: np.ndarray, n: int = 6, first_ms: float = 250.0):
    return np.stack([frame] * n), [first_ms + STEP * i for i in range(n)]


def changed(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(T,) whether each frame differs anywhere."""
    return (a != b).reshape(len(a), -1).any(axis=1)


# ---- passing through ------------------------------------------------------------------


@pytest.mark.parametrize("autoencoder", ["sd-vae", "taesd"])
def test_no_speech_gives_back_the_very_array_without_looking_for_a_face(autoencoder, request, detector, face):
    model = request.getfixturevalue("taesd_model" if autoencoder == "taesd" else "model")
    stage = stage_for(model, detector, autoencoder=autoencoder)
    frames, pts = chunk(face)
    far = spoken("Later.", start_ms=60_000.0)
    assert stage.process(frames, pts, []) is frames
    assert stage.process(frames, pts, [far]) is frames
    assert stage.tracker.detections == 0 and stage.features.encoded == 0
    assert stage.counters.chunks_passed_through == 2


def test_the_setting_turns_it_off(model, detector, face, sentence):
    stage = stage_for(model, detector, enabled=False)
    frames, pts = chunk(face)
    assert stage.process(frames, pts, [sentence]) is frames
    assert stage.tracker.detections == 0
    stage.apply_settings(LipSyncSettings(enabled=True))
    assert changed(stage.process(frames, pts, [sentence]), frames).all()


def test_frames_without_a_face_pass_through_while_speaking(model, detector, sentence):
    noise = np.random.default_rng(0).integers(0, 256, (6, 384, 320, 3), dtype=np.uint8)
    stage = stage_for(model, detector)
    out = stage.process(noise, [250 + STEP * i for i in range(6)], [sentence])
    assert np.array_equal(out, noise)
    assert stage.tracker.detections >= 2 and stage.counters.frames_speaking == 6 and stage.counters.frames_synced == 0


# ---- where pixels change ---------------------------------------------------------------


@pytest.mark.parametrize("autoencoder", ["sd-vae", "taesd"])
def test_only_the_mouth_region_changes(autoencoder, request, detector, face, sentence):
    model = request.getfixturevalue("taesd_model" if autoencoder == "taesd" else "model")
    assert model.cfg.autoencoder == autoencoder
    stage = stage_for(model, detector, autoencoder=autoencoder)
    frames, pts = chunk(face)
    job = stage.submit(frames, pts, [sentence])
    out = job.result()
    assert changed(out, frames).all()
    found = detector.detect(face)
    x1, _, x2, chin = found.box
    nose_y = found.keypoints[2][1]
    for k, i in enumerate(job.work.indices):
        diff = (out[i] != frames[i]).any(axis=-1)
        ys, xs = np.nonzero(diff)
        # The stage's own promise: nothing outside mouth_region of the box it used.
        rx0, ry0, rx1, ry1 = mouth_region(job.work.boxes[k], face.shape)
        assert xs.min() >= rx0 and xs.max() < rx1 and ys.min() >= ry0 and ys.max() < ry1
        # And independently of the stage's boxes: the lower face of the detection, 2 px dilated.
        height = chin - found.box[1]
        assert xs.min() >= x1 - 2 and xs.max() <= x2 + 2
        assert ys.min() >= nose_y - 2 and ys.max() <= chin + 0.15 * height + 2
        mouth = ((found.keypoints[3] + found.keypoints[4]) / 2).round().astype(int)
        assert diff[mouth[1], mouth[0]]  # the mouth itself was re-drawn


def test_blend_touches_nothing_outside_its_region_and_keeps_exact_values_where_weight_is_zero():
    frame = np.random.default_rng(1).integers(0, 256, (200, 300, 3), dtype=np.uint8)
    original = frame.copy()
    box = CropBox(60.3, 20.7, 251.9, 230.2)  # reaches past the frame's bottom edge
    paste_mouth(frame, np.full((256, 256, 3), 255, np.uint8), box)
    x0, y0, x1, y1 = mouth_region(box, frame.shape)
    outside = np.ones(frame.shape[:2], bool)
    outside[y0:y1, x0:x1] = False
    assert np.array_equal(frame[outside], original[outside])
    assert (frame[y0:y1, x0:x1] != original[y0:y1, x0:x1]).any()
    weights = mouth_mask()
    assert weights[:128].max() == 0.0 and weights.max() == 1.0 and weights[0, :].max() == 0.0


# ---- when: speech windows and cuts -----------------------------------------------------


def test_only_frames_whose_window_reaches_the_speech_are_redrawn(model, detector, face):
    stage = stage_for(model, detector)
    frames, pts = chunk(face, n=8, first_ms=0.0)
    late = spoken("Hi.", start_ms=pts[4] + 100.0)  # frames 0..3 are more than 110 ms before it
    out = stage.process(frames, pts, [late])
    expected = hears(late, pts)
    assert list(expected) == [False, False, False, False, True, True, True, True]
    assert list(changed(out, frames)) == list(expected)


def test_a_cut_while_a_chunk_is_pending_gives_back_original_frames_from_the_cut_on(model, detector, face, sentence):
    stage = stage_for(model, detector)
    frames, pts = chunk(face, n=6, first_ms=0.0)
    job = stage.submit(frames, pts, [sentence])
    stage.cut(pts[3])  # barge-in: the audio stops at frame 3's time
    out = job.result()
    assert list(changed(out, frames)) == [True, True, True, False, False, False]
    assert np.array_equal(out[3:], frames[3:])


def test_after_a_cut_stale_audio_redraws_nothing_from_the_cut_on(model, detector, face, sentence):
    stage = stage_for(model, detector)
    frames, pts = chunk(face, n=6, first_ms=0.0)
    stage.cut(pts[3])
    out = stage.process(frames, pts, [sentence])  # the host still passes the uncut sentence
    assert list(changed(out, frames)) == [True, True, True, False, False, False]
    assert clip_speech([sentence], [pts[3]])[0].end_ms == pytest.approx(pts[3], abs=0.1)


def test_speech_that_starts_after_a_cut_is_synced_again(model, detector, face, sentence):
    stage = stage_for(model, detector)
    stage.cut(100.0)
    frames, pts = chunk(face, n=6, first_ms=400.0)
    reply = spoken("Sure.", start_ms=500.0)
    out = stage.process(frames, pts, [sentence, reply])
    assert list(changed(out, frames)) == list(hears(reply, pts))
    assert changed(out, frames).any()


def test_whisper_encodes_each_sentence_once_across_chunks(model, detector, face, sentence):
    stage = stage_for(model, detector)
    for first in (0.0, 375.0, 750.0):
        frames, pts = chunk(face, n=6, first_ms=first)
        stage.process(frames, pts, [sentence])
    assert stage.features.encoded == 1


def test_each_frame_reads_the_positions_musetalk_trains_it_on(model):
    """At 25 fps, frame f of a clip reads Whisper positions 2f-4 .. 2f+5, zeros outside the
    audio (musetalk/utils/utils.py process_audio_features)."""
    seg = spoken("One two three.", start_ms=1000.0)
    cache = AudioFeatureCache(model)
    feats = cache.features(seg)
    frames = np.arange(-3, 8)
    heard = frame_audio(cache, [seg], 1000.0 + 40.0 * frames)
    for row, f in enumerate(frames):
        for slot in range(10):
            position = 2 * f - 4 + slot
            expected = feats[position] if 0 <= position < len(feats) else torch.zeros_like(feats[0])
            assert torch.equal(heard.windows[row, slot], expected), (f, slot)
    assert list(heard.speaking) == [f >= -2 for f in frames]  # frame -3 reads positions -10 .. -1


# ---- the face track ---------------------------------------------------------------------


def test_tracker_detects_on_its_cadence_and_holds_a_still_face_steady(detector, face):
    tracker = FaceTracker(detector, detect_every=3)
    frames, pts = chunk(face, n=12)
    boxes = tracker.boxes(frames, pts)
    assert tracker.detections == 5  # frames 0, 3, 6, 9 and the chunk's last
    params = np.array([b.params for b in boxes])
    assert np.ptp(params, axis=0).max() < 0.01
    expected = crop_box_from_face(detector.detect(face))
    assert np.allclose(params[0], expected.params)
    more = tracker.boxes(frames[:6], [p + 12 * STEP for p in pts[:6]])  # next chunk: cadence continues
    assert tracker.detections == 8 and all(b is not None for b in more)  # frames 12, 15 and 17 (its last)


def test_tracker_follows_a_moving_face(detector, face):
    tracker = FaceTracker(detector, detect_every=3)
    frames = np.stack([np.roll(face, 3 * i, axis=1) for i in range(12)])
    boxes = tracker.boxes(frames, [STEP * i for i in range(12)])
    truth = [crop_box_from_face(detector.detect(f)).params[0] for f in frames]
    errors = [abs(b.params[0] - t) for b, t in zip(boxes, truth, strict=True)]
    assert max(errors) < 4.0  # px, for a face moving 48 px/s


# ---- inputs ------------------------------------------------------------------------------


def test_bad_inputs_raise_the_stage_error(model, detector, face):
    stage = stage_for(model, detector)
    with pytest.raises(LipSyncInputError, match="uint8"):
        stage.process(face[None].astype(np.float32), [0.0], [])
    with pytest.raises(LipSyncInputError, match="1 frames but 2 timestamps"):
        stage.process(face[None], [0.0, 1.0], [])
    with pytest.raises(PersonaError, match="int16"):
        SpeechAudio(np.zeros(10, np.float32), 22050, 0.0)


def test_speech_from_the_speech_queue_is_exactly_what_it_scheduled():
    from comfyui_persona.video.voice.base import Utterance
    from comfyui_persona.video.voice.schedule import SpeechQueue

    queue = SpeechQueue(lead_ms=120)
    pcm = (np.arange(22050) % 200 - 100).astype(np.int16)
    queue.push(Utterance("a", pcm, 22050), now_ms=1000.0)
    queue.push(Utterance("b", pcm[:11025], 22050), now_ms=1000.0)
    queue.cut(2500.0)
    segments = speech_from_schedule(queue.scheduled())
    assert [s.start_ms for s in segments] == [1120.0, 2120.0]
    assert segments[0].pcm is queue.scheduled()[0].utterance.pcm or np.shares_memory(segments[0].pcm, pcm)
    assert segments[1].end_ms == pytest.approx(2500.0, abs=0.05)
    assert SpeechAudio.from_float(np.array([[0.5, -1.0], [0.5, -1.0]]), 16000).pcm.tolist() == [16384, -32767]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_on_cuda_the_stage_runs_on_its_own_stream_and_matches_the_cpu(model, detector, face, sentence, monkeypatch):
    """Same tiny weights in float32 on the GPU: the chunk goes through the stage's CUDA stream
    (pinned copies, an event the result waits for) and draws what the CPU draws, to a level or two."""
    from comfyui_persona.video.lipsync.checkpoint import materialize_musetalk

    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)  # float32 means float32 here
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)

    frames, pts = chunk(face)
    cpu = stage_for(model, detector).process(frames, pts, [sentence])
    gpu_model = materialize_musetalk(model.cfg, device="cuda")
    gpu_model.load_state_dict(model.state_dict())
    stage = LipSyncStage(gpu_model, settings=LipSyncSettings(dtype="float32"), detector=detector)
    assert stage.stream is not None and stage.stream != torch.cuda.current_stream()
    job = stage.submit(frames, pts, [sentence])
    assert job.work.event is not None and job.work.generated.is_pinned()
    out = job.result()
    assert list(changed(out, frames)) == list(changed(cpu, frames))
    assert np.abs(out.astype(int) - cpu.astype(int)).max() <= 3
