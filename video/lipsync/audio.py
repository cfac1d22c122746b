"""The audio a frame is lip-synced to: speech segments on the frames' clock, Whisper features.

A host hands the stage the speech the viewer hears around a chunk as `SpeechAudio`
segments (mono PCM and the session time of its first sample; `speech_from_schedule` makes
them from `SpeechQueue.scheduled()`). Each segment is resampled to 16 kHz (FFmpeg's
resampler through PyAV, `voice.packets.resample`) and encoded once, like MuseTalk encodes a
whole audio file: 30-second log-mel windows from the segment's start (transformers'
`WhisperFeatureExtractor`), every Whisper hidden state at 50 positions per second, trimmed
to the segment's length. Features are cached by the segment's content and start, so a
sentence is encoded once however many chunks it spans; a cut sentence is a new segment.

A frame at time t reads the 10 positions from t − 80 ms to t + 120 ms (`config.AUDIO_FRAMES_*`).
Positions outside every segment are zeros, as MuseTalk pads a file's ends: silence before
and after speech looks like the model's training padding, and audio after a cut is simply
not there. A frame none of whose positions touches a segment is not speaking.
"""

from __future__ import annotations

import hashlib
import math
import threading
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from .config import AUDIO_FRAMES_AFTER, AUDIO_FRAMES_BEFORE, WHISPER_FRAME_MS, WHISPER_RATE
from .errors import LipSyncInputError

__all__ = [
    "AudioFeatureCache",
    "FrameAudio",
    "SpeechAudio",
    "clip_speech",
    "frame_audio",
    "hears",
    "speech_from_schedule",
    "speech_window_ms",
    "to_whisper_rate",
]

#: Whisper's window: 30 s of 16 kHz audio per encoder pass.
_WINDOW_SAMPLES = 30 * WHISPER_RATE


@dataclass(frozen=True, eq=False)
class SpeechAudio:
    """Mono int16 PCM whose first sample sounds at `start_ms` on the frames' clock (pts)."""

    pcm: np.ndarray
    sample_rate: int
    start_ms: float

    def __post_init__(self) -> None:
        pcm = np.asarray(self.pcm)
        if pcm.ndim != 1 or pcm.dtype != np.int16:
            raise LipSyncInputError(f"speech PCM must be 1-D int16 (mono); got {pcm.dtype} {pcm.shape}")
        if not 1000 <= int(self.sample_rate) <= 384_000:
            raise LipSyncInputError(f"speech sample rate {self.sample_rate} Hz is not an audio rate")
        if not math.isfinite(float(self.start_ms)):
            raise LipSyncInputError(f"speech start {self.start_ms!r} ms is not a time")
        object.__setattr__(self, "pcm", pcm)

    @classmethod
    def from_float(cls, samples: np.ndarray, sample_rate: int, start_ms: float = 0.0) -> SpeechAudio:
        """From float samples in [-1, 1]: (n,) mono, or (channels, n) averaged to mono."""
        data = np.asarray(samples, dtype=np.float64)
        if data.ndim == 2:
            data = data.mean(axis=0)
        if data.ndim != 1:
            raise LipSyncInputError(f"audio must be (samples,) or (channels, samples); got shape {data.shape}")
        pcm = np.rint(np.clip(data, -1.0, 1.0) * 32767.0).astype(np.int16)
        return cls(pcm, int(sample_rate), float(start_ms))

    @property
    def end_ms(self) -> float:
        return self.start_ms + 1000.0 * len(self.pcm) / self.sample_rate

    @property
    def key(self) -> tuple:
        """Identity for the feature cache: where it starts and what it holds."""
        digest = hashlib.blake2b(self.pcm.tobytes(), digest_size=16).hexdigest()
        return (round(float(self.start_ms), 3), int(self.sample_rate), len(self.pcm), digest)

    def until(self, end_ms: float) -> SpeechAudio | None:
        """The part that sounds before `end_ms` (None when nothing does)."""
        if end_ms >= self.end_ms:
            return self
        keep = int(math.floor((end_ms - self.start_ms) * self.sample_rate / 1000.0))
        if keep <= 0:
            return None
        return SpeechAudio(self.pcm[:keep], self.sample_rate, self.start_ms)


def speech_from_schedule(scheduled: Iterable) -> list[SpeechAudio]:
    """`SpeechQueue.scheduled()` items (utterance + start_ms) as segments; no copy of the PCM."""
    return [
        SpeechAudio(np.asarray(item.utterance.pcm, dtype=np.int16), int(item.utterance.sample_rate),
                    float(item.start_ms))
        for item in scheduled
        if len(item.utterance.pcm)
    ]


def clip_speech(speech: Iterable[SpeechAudio], cuts: Sequence[float]) -> list[SpeechAudio]:
    """Each segment ended at the first cut that falls inside it (a cut is where audio stops)."""
    out = []
    for seg in speech:
        for at in sorted(cuts):
            if seg.start_ms < at:
                seg = seg.until(at)
                if seg is None:
                    break
        if seg is not None:
            out.append(seg)
    return out


def speech_window_ms(pts_ms: float) -> tuple[float, float]:
    """The span of audio a frame at `pts_ms` reads: [t − 80 ms, t + 120 ms)."""
    return (pts_ms - (AUDIO_FRAMES_BEFORE + 0.5) * WHISPER_FRAME_MS,
            pts_ms + (AUDIO_FRAMES_AFTER - 0.5) * WHISPER_FRAME_MS)


def to_whisper_rate(seg: SpeechAudio) -> np.ndarray:
    """The segment as float32 in [-1, 1] at 16 kHz (FFmpeg's resampler for other rates)."""
    from ..voice.packets import resample

    pcm = resample(seg.pcm, seg.sample_rate, WHISPER_RATE)
    return pcm.astype(np.float32) / 32768.0


class AudioFeatureCache:
    """Whisper hidden states per segment (positions, layers, d), computed once per content.

    `model` is a `MuseTalk` (its Whisper encoder and device). Entries beyond `capacity`
    are dropped oldest first: a conversation's sentences are used once, in order.
    Thread-safe: the TTS thread may encode a sentence while the render loop reads others.
    """

    def __init__(self, model, capacity: int = 32) -> None:
        from transformers import WhisperFeatureExtractor

        self.model = model
        n_mels = int(model.whisper.config.num_mel_bins)
        self.extractor = WhisperFeatureExtractor(feature_size=n_mels, sampling_rate=WHISPER_RATE)
        self.capacity = capacity
        self._entries: OrderedDict[tuple, object] = OrderedDict()
        self._lock = threading.Lock()
        self.encoded = 0  # segments encoded so far (the tests check the cache works)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def features(self, seg: SpeechAudio):
        """(positions, layers, d) on the model's device: position j is at start + 20 ms · j."""
        key = seg.key
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                return self._entries[key]
            feats = self._encode(seg)
            self._entries[key] = feats
            while len(self._entries) > self.capacity:
                self._entries.popitem(last=False)
            self.encoded += 1
            return feats

    def _encode(self, seg: SpeechAudio):
        import torch

        audio = to_whisper_rate(seg)
        positions = _count(seg)
        device = self.model.device
        windows = [audio[i : i + _WINDOW_SAMPLES] for i in range(0, max(len(audio), 1), _WINDOW_SAMPLES)]
        mel = torch.cat([
            self.extractor(w, sampling_rate=WHISPER_RATE, return_tensors="pt",
                           device="cuda" if device.type == "cuda" else "cpu").input_features
            for w in windows
        ])
        states = self.model.audio_features(mel)  # (windows, 1500, layers, d)
        return states.reshape(-1, *states.shape[2:])[:positions]


@dataclass
class FrameAudio:
    """Per frame of a chunk: its (10, layers, d) feature window and whether it hears speech."""

    windows: object  # torch.Tensor (T, 10, layers, d)
    speaking: np.ndarray  # (T,) bool


def _count(seg: SpeechAudio) -> int:
    """Whisper positions of a segment: one per whole 20 ms (MuseTalk's trim of the padding)."""
    return int(math.floor(len(seg.pcm) / seg.sample_rate * 1000.0 / WHISPER_FRAME_MS))


def _positions(seg: SpeechAudio, pts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(T, 10) Whisper positions of `seg` each frame's window reads, and which exist."""
    count = _count(seg)
    centre = np.floor((pts - seg.start_ms) / WHISPER_FRAME_MS + 0.5).astype(np.int64)
    index = centre[:, None] + (np.arange(AUDIO_FRAMES_BEFORE + AUDIO_FRAMES_AFTER) - AUDIO_FRAMES_BEFORE)[None, :]
    return index, (index >= 0) & (index < count)


def hears(seg: SpeechAudio, pts_ms) -> np.ndarray:
    """(T,) bool: which frames' windows read at least one position of `seg`."""
    return _positions(seg, np.asarray(pts_ms, dtype=np.float64))[1].any(axis=1)


def frame_audio(cache: AudioFeatureCache, speech: Sequence[SpeechAudio], pts_ms: Sequence[float]) -> FrameAudio:
    """Assemble each frame's window from whichever segment covers each position (zeros
    elsewhere). Segments that no frame's window reaches are not encoded at all."""
    import torch

    model = cache.model
    layers, dim = model.cfg.audio_layers, model.cfg.audio_dim
    pts = np.asarray(pts_ms, dtype=np.float64)
    span = AUDIO_FRAMES_BEFORE + AUDIO_FRAMES_AFTER
    windows = torch.zeros(len(pts), span, layers, dim, device=model.device, dtype=model.whisper.conv1.weight.dtype)
    speaking = np.zeros(len(pts), dtype=bool)
    if not len(pts):
        return FrameAudio(windows, speaking)
    lo, hi = speech_window_ms(float(pts.min()))[0], speech_window_ms(float(pts.max()))[1]
    for seg in speech:
        if seg.end_ms <= lo or seg.start_ms > hi:
            continue
        index, inside = _positions(seg, pts)
        if not inside.any():
            continue
        feats = cache.features(seg)
        frames, slots = np.nonzero(inside)
        windows[torch.from_numpy(frames), torch.from_numpy(slots)] = feats[torch.from_numpy(index[inside])].to(windows.dtype)
        speaking |= inside.any(axis=1)
    return FrameAudio(windows, speaking)
