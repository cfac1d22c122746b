"""Lip sync nodes over `video.lipsync.LipSyncStage` (MuseTalk 1.5).

`Persona Lip Sync`: any frames (IMAGE) + speech (AUDIO) → the same frames, mouth re-synced.
`Persona Stream Lip Sync`: the stream's chunks (FRAMES) → the same chunks with the mouth
re-drawn to the speech the viewer hears with each frame (the session's speech track, on the
session clock the audio packets carry), between the renderer and the sink of a chat workflow.

A thin adapter over `video.lipsync.LipSyncStage` (MuseTalk 1.5). ComfyUI's IMAGE is a float
tensor (B, H, W, C) in 0..1 and its AUDIO a dict {"waveform": (batch, channels, samples)
float in -1..1, "sample_rate": int}; the frames are taken as a clip at `fps` whose first
frame shows when the audio's sample at `audio_start_ms` plays (0: they start together).
Frames go through the stage in chunks of `max_batch`, in order, so the face track and the
box smoothing run across the whole clip. Frames with no speech or no face come back as they
were (to the bit, after the float round trip: IMAGE values that are not multiples of 1/255
are rounded to the nearest such value).

The model loads once per set of files and device (weights from the models folder, or the
files picked in the optional inputs). Nothing heavy is imported at module load.
"""

from __future__ import annotations

import dataclasses
import threading
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .comfy_env import models_folder, progress
from .runtime import current_store, every_run
from .types import FRAMES, FramesValue

#: ComfyUI model folder the pack registers (ComfyUI/models/persona); MuseTalk's files sit
#: under its musetalk/ subfolder (video/model_files.py).
COMFY_MODELS_FOLDER = "persona"
AUTO = "auto"
_WEIGHT_SUFFIXES = (".pth", ".bin", ".safetensors", ".pt")

_MODELS: dict[tuple, Any] = {}
_DETECTORS: dict[tuple, Any] = {}
_LOCK = threading.Lock()


def _setting(name: str, **extra: Any) -> tuple:
    """A ComfyUI input declared from `LipSyncSettings` (one source for default, bounds, tooltip)."""
    from ..video.lipsync.settings import LipSyncSettings

    info = LipSyncSettings.model_fields[name]
    options: dict[str, Any] = {"default": info.default, "tooltip": info.description}
    for rule in info.metadata:
        for attr, key in (("ge", "min"), ("gt", "min"), ("le", "max"), ("lt", "max"), ("multiple_of", "step")):
            if getattr(rule, attr, None) is not None:
                options[key] = getattr(rule, attr)
    choices = typing.get_args(info.annotation)  # a Literal: a combo of its values
    kind = list(choices) if choices else {bool: "BOOLEAN", int: "INT", float: "FLOAT"}[info.annotation]
    return (kind, {**options, **extra})


def weight_choices() -> list[str]:
    """"auto" plus the weight files under ComfyUI/models/persona/musetalk/ (relative paths)."""
    found: set[str] = set()
    for folder in models_folder(COMFY_MODELS_FOLDER):
        root = folder / "musetalk"
        if root.is_dir():
            found |= {str(p.relative_to(folder)) for p in root.rglob("*") if p.suffix in _WEIGHT_SUFFIXES}
    return [AUTO, *sorted(found)]


def _picked(choice: str) -> Path | None:
    """The file a picker names (None for "auto"); a name no longer there is returned as is,
    so the loader's missing-file error names it."""
    if not choice or choice == AUTO:
        return None
    for folder in models_folder(COMFY_MODELS_FOLDER):
        if (folder / choice).is_file():
            return folder / choice
    return Path(choice)


def _models_dir(explicit: str) -> Path | None:
    """The node's folder, else ComfyUI/models/persona when it holds the UNet, else None
    (the default models directory: $PERSONA_MODELS_DIR or ~/.cache/comfyui-persona/models)."""
    from ..video import model_files

    if explicit.strip():
        return Path(explicit.strip()).expanduser()
    for folder in models_folder(COMFY_MODELS_FOLDER):
        try:
            model_files.find("musetalk.unet", folder)
            return folder
        except model_files.CheckpointNotFoundError:
            continue
    return None


def _require_lipsync() -> None:
    """The `lipsync` extra's packages import, else one error naming the extra (not a bare
    "No module named 'diffusers'" from deep inside the loader)."""
    from ..video.lipsync.errors import LipSyncDependencyError

    try:
        import diffusers  # noqa: F401  (MuseTalk's UNet and VAE)
        import transformers  # noqa: F401  (Whisper's encoder)
    except ModuleNotFoundError as exc:
        raise LipSyncDependencyError(
            f"lip sync needs the Python package {exc.name!r}: install the pack's `lipsync` extra "
            "(pip install 'comfyui-persona[lipsync]', in ComfyUI's Python), or switch this node's `enabled` off"
        ) from exc


def _model(files, device: str, dtype_name: str):
    import torch

    from ..video.lipsync.checkpoint import load_musetalk

    key = (files, device, dtype_name)
    with _LOCK:
        if key not in _MODELS:
            dtype = getattr(torch, dtype_name) if device == "cuda" else torch.float32
            _MODELS[key] = load_musetalk(files, device=device, dtype=dtype)
        return _MODELS[key]


def _detector(settings):
    from ..video.lipsync.face import FaceDetector

    key = (settings.det_size, settings.det_threshold, settings.detector_threads)
    with _LOCK:
        if key not in _DETECTORS:
            _DETECTORS[key] = FaceDetector(det_size=settings.det_size, det_threshold=settings.det_threshold,
                                           threads=settings.detector_threads)
        return _DETECTORS[key]


def images_to_frames(images) -> Any:
    """ComfyUI IMAGE (B, H, W, C) float 0..1 → uint8 numpy (B, H, W, 3) (alpha dropped)."""
    import numpy as np

    from ..video.lipsync.errors import LipSyncInputError

    array = images.detach().cpu().numpy() if hasattr(images, "detach") else np.asarray(images)
    if array.ndim == 3:
        array = array[None]
    if array.ndim != 4 or array.shape[-1] not in (3, 4):
        raise LipSyncInputError(f"images must be an IMAGE batch (B, H, W, 3); got shape {tuple(array.shape)}")
    return np.ascontiguousarray(np.rint(np.clip(array[..., :3], 0.0, 1.0) * 255.0).astype(np.uint8))


def audio_to_speech(audio, start_ms: float):
    """ComfyUI AUDIO → one `SpeechAudio` (first item of the batch, channels averaged)."""
    import numpy as np

    from ..video.lipsync.audio import SpeechAudio
    from ..video.lipsync.errors import LipSyncInputError

    try:
        waveform, rate = audio["waveform"], int(audio["sample_rate"])
    except (TypeError, KeyError) as exc:
        raise LipSyncInputError("audio must be a ComfyUI AUDIO value {'waveform', 'sample_rate'}") from exc
    data = waveform.detach().cpu().float().numpy() if hasattr(waveform, "detach") else np.asarray(waveform)
    if data.ndim == 3:
        data = data[0]
    return SpeechAudio.from_float(data, rate, start_ms)


class PersonaLipSync:
    """Re-draws the mouth of the frames to match the speech (MuseTalk 1.5)."""

    DESCRIPTION = (
        "Lip sync any frames to speech with MuseTalk 1.5: finds the face (SCRFD), re-draws the lower face so the "
        "mouth says the audio, and blends only the mouth region back. Frames without speech or without a face pass "
        "through unchanged. Needs the MuseTalk 1.5 files (UNet, sd-vae-ft-mse, whisper-tiny) in "
        "models/persona/musetalk/ (docs/lipsync.md); default face detector: InsightFace buffalo_s, non-commercial "
        "research only."
    )
    CATEGORY = "persona/video"
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("images",)
    FUNCTION = "sync"

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        choices = weight_choices()
        return {
            "required": {
                "images": ("IMAGE", {"tooltip": "The frames (a video's images, or the LongLive sampler's output)."}),
                "audio": ("AUDIO", {"tooltip": "The speech the frames should say."}),
                "fps": ("FLOAT", {"default": 16.0, "min": 1.0, "max": 120.0, "step": 0.5,
                                  "tooltip": "Frame rate of the images (LongLive streams at 16)."}),
                "enabled": _setting("enabled"),
            },
            "optional": {
                "audio_start_ms": ("FLOAT", {"default": 0.0, "min": -600000.0, "max": 600000.0, "step": 1.0,
                                             "tooltip": "When the audio starts, in ms after the first frame shows "
                                             "(negative: it started before)."}),
                "detect_every": _setting("detect_every"),
                "chin_margin": _setting("chin_margin", step=0.01),
                "dtype": _setting("dtype"),
                "models_dir": ("STRING", {"default": "", "tooltip": "Folder holding musetalk/. Empty: "
                                          "ComfyUI/models/persona if it has the files, else $PERSONA_MODELS_DIR, else "
                                          "~/.cache/comfyui-persona/models."}),
                "unet": (choices, {"default": AUTO, "tooltip": "MuseTalk 1.5 unet.pth; auto: from the models folder."}),
                "vae": (choices, {"default": AUTO, "tooltip": "The autoencoder's weights (sd-vae-ft-mse, or TAESD's with "
                                  "autoencoder taesd); auto: from the models folder."}),
                "whisper": (choices, {"default": AUTO,
                                      "tooltip": "whisper-tiny weights; auto: from the models folder."}),
                # last, so workflows saved before it keep their widget values in place
                "autoencoder": _setting("autoencoder"),
            },
        }

    def sync(self, images, audio, fps: float, enabled: bool, audio_start_ms: float = 0.0, detect_every: int = 3,
             chin_margin: float = 0.04, dtype: str = "float16", models_dir: str = "", unet: str = AUTO,
             vae: str = AUTO, whisper: str = AUTO, autoencoder: str = "sd-vae") -> tuple:
        import numpy as np
        import torch

        from ..video.lipsync.checkpoint import find_lipsync_files
        from ..video.lipsync.settings import LipSyncSettings
        from ..video.lipsync.stage import LipSyncStage

        settings = LipSyncSettings(enabled=enabled, detect_every=detect_every, chin_margin=chin_margin, dtype=dtype,
                                   autoencoder=autoencoder)
        if not settings.enabled:
            return (images,)
        _require_lipsync()
        frames = images_to_frames(images)
        speech = [audio_to_speech(audio, audio_start_ms)]
        files = find_lipsync_files(_models_dir(models_dir), unet=_picked(unet), vae=_picked(vae),
                                   whisper=_picked(whisper), autoencoder=settings.autoencoder)
        device = "cuda" if torch.cuda.is_available() else "cpu"
        stage = LipSyncStage(_model(files, device, settings.dtype), settings=settings, detector=_detector(settings))
        pts = np.arange(len(frames)) * 1000.0 / fps
        out = np.empty_like(frames)
        bar = progress(len(frames))
        for start in range(0, len(frames), settings.max_batch):
            part = slice(start, start + settings.max_batch)
            out[part] = stage.process(frames[part], pts[part], speech)
            bar.update(len(out[part]))
        return (torch.from_numpy(out).to(torch.float32).div_(255.0),)


@dataclass
class StreamLipSync:
    """A session's stage for the stream node, and what it was built from (`key`)."""

    key: tuple
    stage: Any


class PersonaStreamLipSync:
    """The stream's chunks with the mouth re-drawn to the session's speech (MuseTalk 1.5)."""

    DESCRIPTION = (
        "Lip sync the live stream: put it between the renderer (e.g. Persona LongLive Sampler) and the Stream "
        "Sink. Each chunk's frames get the mouth re-drawn to exactly the speech the viewer hears with them (the "
        "session's voice); chunks with no speech or no face pass through untouched, and a barge-in cuts it where "
        "the audio is cut. Needs the MuseTalk 1.5 files in models/persona/musetalk/ (docs/lipsync.md); switch "
        "`enabled` off to stream without them."
    )
    CATEGORY = "persona/video"
    RETURN_TYPES = (FRAMES,)
    RETURN_NAMES = ("frames",)
    FUNCTION = "sync"

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        inputs = PersonaLipSync.INPUT_TYPES()
        optional = {k: v for k, v in inputs["optional"].items() if k != "audio_start_ms"}
        return {"required": {"frames": (FRAMES, {"tooltip": "The renderer's chunk."}),
                             "enabled": inputs["required"]["enabled"]},
                "optional": optional}

    @classmethod
    def IS_CHANGED(cls, **_: Any) -> str:
        return every_run()  # a stream node: every chunk is new

    def sync(self, frames: FramesValue, enabled: bool, detect_every: int = 3, chin_margin: float = 0.04,
             dtype: str = "float16", models_dir: str = "", unet: str = AUTO, vae: str = AUTO,
             whisper: str = AUTO, autoencoder: str = "sd-vae") -> tuple:
        from ..video.lipsync.audio import speech_from_schedule
        from ..video.lipsync.settings import LipSyncSettings

        settings = LipSyncSettings(enabled=enabled, detect_every=detect_every, chin_margin=chin_margin, dtype=dtype,
                                   autoencoder=autoencoder)
        if not settings.enabled:
            return (frames,)
        _require_lipsync()
        session = current_store().get(frames.session_id)
        stage = self._stage(session, settings, models_dir, (unet, vae, whisper))
        chunk = frames.chunk
        speech = speech_from_schedule(session.scheduled_speech())
        synced = stage.process(chunk.frames, chunk.pts_ms, speech)
        if synced is chunk.frames:  # no speech reaches these frames, or no face: as they were
            return (frames,)
        return (dataclasses.replace(frames, chunk=dataclasses.replace(chunk, frames=synced)),)

    @staticmethod
    def _stage(session, settings, models_dir: str, picks: tuple[str, str, str]):
        """The session's stage: built once (the files are checked, and the model loaded, at
        the first chunk, so a missing file is reported before anyone speaks); live settings
        are applied to it, a change of files or dtype builds a new one."""
        import torch

        from ..video.lipsync.checkpoint import find_lipsync_files
        from ..video.lipsync.stage import LipSyncStage

        unet, vae, whisper = picks
        files = find_lipsync_files(_models_dir(models_dir), unet=_picked(unet), vae=_picked(vae),
                                   whisper=_picked(whisper), autoencoder=settings.autoencoder)
        device = "cuda" if torch.cuda.is_available() else "cpu"
        key = (files, device, settings.dtype)
        with session.lock:
            slot = session.lipsync
            if slot is None or slot.key != key:
                stage = LipSyncStage(_model(files, device, settings.dtype), settings=settings,
                                     detector=_detector(settings))
                slot = session.lipsync = StreamLipSync(key, stage)
            else:
                slot.stage.apply_settings(settings)
        return slot.stage
