"""The lip-sync stage: frames already made + the speech heard with them → the mouth re-drawn.

One object per stream (or per ComfyUI run). Per chunk:

1. nothing to do when the stage is off, or when no speech reaches any frame of the chunk
   (`SpeechAudio` segments on the frames' clock): the very array given comes back, before
   any detection or model call;
2. each frame's audio window (`audio.frame_audio`; Whisper runs once per sentence);
3. face boxes (`face.FaceTracker`): frames with no face near them pass through;
4. speaking frames with a face: crops → `MuseTalk.inpaint` → mouths blended back inside
   `blend.mouth_region` only.

On a CUDA device, 2 and 4's model work run on the stage's own CUDA stream, queued by
`submit` (crops go up and re-drawn crops come down through pinned memory); `LipSyncJob.result`
waits for that stream alone and blends on the CPU. A host can therefore submit chunk k and
go on generating chunk k + 1 on its own streams (docs/lipsync.md, "Calling the stage").

Cuts: `cut(at_ms)` (barge-in, reset) ends speech at a point on the clock. Audio handed in
later that started before the cut is ended there (`audio.clip_speech`); frames at or after
the cut are not re-drawn for it, though their 80 ms of left context would still reach it
(only speech that starts at or after the cut re-draws them); and a chunk already submitted
but not yet collected gives back its original frames from `at_ms` on. So the mouth stops
being re-drawn exactly where the audio stops.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from .audio import AudioFeatureCache, SpeechAudio, clip_speech, frame_audio, hears, speech_window_ms
from .blend import crop_faces, paste_mouth
from .errors import LipSyncInputError
from .face import CropBox, FaceDetector, FaceTracker
from .settings import LipSyncSettings

__all__ = ["LipSyncJob", "LipSyncStage", "StageCounters"]

_KEPT_CUTS = 8


@dataclass
class StageCounters:
    """What the stage did so far (benchmarks report it; tests check the cheap paths)."""

    chunks: int = 0
    chunks_passed_through: int = 0  # returned as given: off, or no speech reached them
    frames: int = 0
    frames_speaking: int = 0
    frames_synced: int = 0  # speaking and a face found: mouth re-drawn


@dataclass
class _Work:
    indices: list[int]
    boxes: list[CropBox]
    generated: object  # uint8 (n, 256, 256, 3): numpy on CPU, pinned torch tensor on CUDA
    event: object | None = None  # torch.cuda.Event recorded on the stage's stream


@dataclass
class LipSyncJob:
    """One submitted chunk. `result()` returns its frames (waits for the stage's stream)."""

    frames: np.ndarray
    pts_ms: np.ndarray
    work: _Work | None
    stage: LipSyncStage
    cut_epoch: int
    _out: np.ndarray | None = field(default=None, repr=False)

    def result(self) -> np.ndarray:
        """The chunk's frames: the input array itself when nothing was re-drawn, else a copy
        with the speaking frames' mouths re-drawn. Frames at or after a cut made since
        `submit` are the input frames."""
        if self._out is not None:
            return self._out
        if self.work is None:
            self._out = self.frames
            return self._out
        if self.work.event is not None:
            self.work.event.synchronize()
        generated = self.work.generated
        generated = generated.numpy() if hasattr(generated, "numpy") else generated
        out = self.frames.copy()
        for k, (i, box) in enumerate(zip(self.work.indices, self.work.boxes, strict=True)):
            paste_mouth(out[i], generated[k], box)
        for at in self.stage._cuts_since(self.cut_epoch):
            late = self.pts_ms >= at
            out[late] = self.frames[late]
        self._out = out
        return out


class LipSyncStage:
    """MuseTalk 1.5 lip-sync on chunks of frames (uint8 T×H×W×3 RGB with pts in ms).

    `model`: a loaded `MuseTalk` (else loaded from the models directory, `models_dir` or
    $PERSONA_MODELS_DIR: missing files raise `ModelFileMissingError`). `detector`: a
    `FaceDetector` (else SCRFD from the identity extra). `device`: where a model loaded here
    runs (default: CUDA when there is one). One render loop calls `submit`/`process`/
    `result`; `cut` and `prepare` may be called from any thread.
    """

    def __init__(self, model=None, *, settings: LipSyncSettings | None = None, detector: FaceDetector | None = None,
                 models_dir=None, device=None, stream_priority: int = 0) -> None:
        import torch

        self.settings = settings or LipSyncSettings()
        if model is None:
            from .checkpoint import load_musetalk

            device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
            dtype = getattr(torch, self.settings.dtype) if device.type == "cuda" else torch.float32
            model = load_musetalk(models_dir=models_dir, device=device, dtype=dtype,
                                  autoencoder=self.settings.autoencoder)
        self.model = model
        self.device = model.device
        if self.device.type == "cuda":  # the VAE and UNet are convolutions: NHWC is the tensor cores' layout
            model.unet.to(memory_format=torch.channels_last)
            model.vae.to(memory_format=torch.channels_last)
        self.stream = torch.cuda.Stream(self.device, priority=stream_priority) if self.device.type == "cuda" else None
        self.detector = detector or FaceDetector(det_size=self.settings.det_size,
                                                 det_threshold=self.settings.det_threshold,
                                                 threads=self.settings.detector_threads)
        self.tracker = FaceTracker(self.detector)
        self.features = AudioFeatureCache(model)
        self.counters = StageCounters()
        self._lock = threading.Lock()
        self._cuts: list[tuple[int, float]] = []  # (epoch, at_ms), the last few
        self._epoch = 0
        self.apply_settings(self.settings)

    # ---- settings and control ----------------------------------------------------------

    def apply_settings(self, settings: LipSyncSettings) -> None:
        """Live settings take effect on the next chunk (load-time ones need a new stage)."""
        self.settings = settings
        self.tracker.detect_every = settings.detect_every
        self.tracker.chin_margin = settings.chin_margin
        self.tracker.filter.min_cutoff = settings.smoothing_min_cutoff_hz
        self.tracker.filter.beta = settings.smoothing_beta

    def compile(self, mode: str | None = None) -> None:
        """torch.compile the model's three steps (VAE encode, UNet step, VAE decode) for this
        stage's shapes: an explicit call, never done on import or load. The first chunks after
        it compile (seconds); the shapes are fixed per chunk size, so later chunks reuse them."""
        import torch

        for name in ("encode_latents", "predict_latents", "decode_latents"):
            setattr(self.model, name, torch.compile(getattr(self.model, name), mode=mode, dynamic=False))

    def cut(self, at_ms: float) -> None:
        """Speech ends at `at_ms` on the frames' clock (barge-in, reset): see the module doc."""
        with self._lock:
            self._epoch += 1
            self._cuts = [*self._cuts, (self._epoch, float(at_ms))][-_KEPT_CUTS:]

    def _cuts_since(self, epoch: int) -> list[float]:
        with self._lock:
            return [at for e, at in self._cuts if e > epoch]

    def reset(self) -> None:
        """A new session: forget the face track, the cached audio features and the cuts."""
        self.tracker.reset()
        self.features.clear()
        with self._lock:
            self._cuts = []

    def prepare(self, speech: Sequence[SpeechAudio]) -> None:
        """Encode speech ahead of its frames (e.g. from the TTS thread when a sentence is
        scheduled), so the chunk that first hears it does not pay for Whisper."""
        with self._on_stream():
            for seg in self._clipped(speech):
                self.features.features(seg)

    # ---- chunks -------------------------------------------------------------------------

    def process(self, frames: np.ndarray, pts_ms: Sequence[float], speech: Sequence[SpeechAudio]) -> np.ndarray:
        """`submit(...).result()`: the chunk's frames with the mouth re-synced."""
        return self.submit(frames, pts_ms, speech).result()

    def submit(self, frames: np.ndarray, pts_ms: Sequence[float], speech: Sequence[SpeechAudio]) -> LipSyncJob:
        """Start a chunk; on CUDA the model work is queued on the stage's stream.

        `frames`: uint8 (T, H, W, 3) RGB, not modified until `result()` returns (keep it
        unchanged until then). `pts_ms`: each frame's presentation time. `speech`: the
        segments the viewer hears around these frames (any that reach them; others are
        ignored at no cost)."""
        frames, pts = _checked(frames, pts_ms)
        with self._lock:
            epoch = self._epoch
        self.counters.chunks += 1
        self.counters.frames += len(frames)
        job = LipSyncJob(frames, pts, None, self, epoch)
        speech = self._clipped(speech)
        if not self.settings.enabled or not len(frames) or not _reaches(speech, pts):
            return self._pass(job)
        with self._on_stream():
            heard = frame_audio(self.features, speech, pts)
        heard.speaking &= self._not_silenced(pts, speech)
        self.counters.frames_speaking += int(heard.speaking.sum())
        if not heard.speaking.any():
            return self._pass(job)
        boxes = self.tracker.boxes(frames, pts)
        picks = [i for i in range(len(frames)) if heard.speaking[i] and boxes[i] is not None]
        if not picks:
            return job  # speaking, but no face: frames as given (the track went on)
        chosen = [boxes[i] for i in picks]
        crops = crop_faces(frames[picks], chosen)
        job.work = self._redraw(crops, heard.windows, picks)
        job.work.boxes = chosen
        self.counters.frames_synced += len(picks)
        return job

    def _pass(self, job: LipSyncJob) -> LipSyncJob:
        self.counters.chunks_passed_through += 1
        self.tracker.reset()  # the next speaking chunk starts a fresh track, not one from long ago
        return job

    def _not_silenced(self, pts: np.ndarray, speech: Sequence[SpeechAudio]) -> np.ndarray:
        """Frames at or after a cut are not re-drawn for speech the cut ended (only for
        speech that starts at or after it), though their left context still holds it."""
        with self._lock:
            cuts = [at for _, at in self._cuts]
        allowed = np.ones(len(pts), dtype=bool)
        for at in cuts:
            late = pts >= at
            if late.any():
                fresh = np.zeros(len(pts), dtype=bool)
                for seg in speech:
                    if seg.start_ms >= at:
                        fresh |= hears(seg, pts)
                allowed &= ~late | fresh
        return allowed

    def _clipped(self, speech: Sequence[SpeechAudio]) -> list[SpeechAudio]:
        with self._lock:
            cuts = [at for _, at in self._cuts]
        return clip_speech(speech, cuts) if cuts else list(speech)

    def _on_stream(self):
        import contextlib

        import torch

        return torch.cuda.stream(self.stream) if self.stream is not None else contextlib.nullcontext()

    def _redraw(self, crops: np.ndarray, windows, picks: list[int]) -> _Work:
        import torch

        model, batch = self.model, self.settings.max_batch
        with torch.inference_mode(), self._on_stream():
            index = torch.as_tensor(picks)
            host = torch.from_numpy(crops)
            if self.stream is not None:
                # Through pinned memory: a copy from pageable memory would make this thread wait
                # for everything queued on the stage's stream (the previous chunk's work).
                index, host = index.pin_memory(), host.pin_memory()
            index = index.to(windows.device, non_blocking=True)
            images = host.to(self.device, non_blocking=True).permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)
            if self.device.type == "cuda":
                images = images.contiguous(memory_format=torch.channels_last)
            tokens = model.audio_tokens(windows.index_select(0, index))
            reference = images[:1] if self.settings.reference == "chunk" else None
            parts = [model.inpaint(images[s : s + batch], tokens[s : s + batch], reference)
                     for s in range(0, len(picks), batch)]
            redrawn = torch.cat(parts).add_(1.0).mul_(127.5).round_().clamp_(0, 255).to(torch.uint8)
            redrawn = redrawn.permute(0, 2, 3, 1).contiguous()
            if self.stream is None:
                return _Work(picks, [], redrawn.numpy())
            out = torch.empty(redrawn.shape, dtype=torch.uint8, pin_memory=True)
            out.copy_(redrawn, non_blocking=True)
            event = torch.cuda.Event()
            event.record(self.stream)
            return _Work(picks, [], out, event)


def _checked(frames: np.ndarray, pts_ms: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    if not isinstance(frames, np.ndarray) or frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        what = f"{frames.dtype} {frames.shape}" if isinstance(frames, np.ndarray) else type(frames).__name__
        raise LipSyncInputError(f"frames must be a uint8 numpy array (T, H, W, 3); got {what}")
    pts = np.asarray(pts_ms, dtype=np.float64).reshape(-1)
    if len(pts) != len(frames):
        raise LipSyncInputError(f"{len(frames)} frames but {len(pts)} timestamps")
    if not np.all(np.isfinite(pts)):
        raise LipSyncInputError("frame timestamps must be finite")
    return frames, pts


def _reaches(speech: Sequence[SpeechAudio], pts: np.ndarray) -> bool:
    """Whether any segment can touch any frame's audio window (no features needed)."""
    if not len(speech) or not len(pts):
        return False
    lo, hi = speech_window_ms(float(pts.min()))[0], speech_window_ms(float(pts.max()))[1]
    return any(seg.end_ms > lo and seg.start_ms <= hi for seg in speech)
