"""Audio for the wire (PROTOCOL.md media kind 2) and for the recorder: slicing an utterance
into packets stamped on the session clock, resampling, and the binary frame header."""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

from .base import STREAM_RATE

__all__ = ["MEDIA_AUDIO", "MEDIA_JPEG", "AudioPacket", "encode_media_frame", "packetize", "resample"]

MEDIA_JPEG = 1
MEDIA_AUDIO = 2
_HEADER = struct.Struct(">BIQ")  # kind u8, frame_index u32, pts_ms u64 (big-endian)


@dataclass(frozen=True)
class AudioPacket:
    """`pcm` (int16 mono at `sample_rate`) whose first sample plays at `pts_ms`."""

    pts_ms: int
    pcm: np.ndarray
    sample_rate: int

    @property
    def end_ms(self) -> float:
        """Where the packet stops sounding, on the same clock as `pts_ms`."""
        return self.pts_ms + 1000.0 * len(self.pcm) / self.sample_rate

    def payload(self) -> bytes:
        """16-bit little-endian mono PCM, as PROTOCOL.md kind 2 carries it."""
        return self.pcm.astype("<i2", copy=False).tobytes()


def packetize(
    pcm: np.ndarray, sample_rate: int, start_pts_ms: int, packet_ms: int = 100
) -> list[AudioPacket]:
    """Cut `pcm` into packets of `packet_ms` whose pts continue `start_pts_ms` without
    drift: each pts is computed from its first sample's index, not summed."""
    if packet_ms <= 0:
        raise ValueError(f"packet_ms={packet_ms} must be positive")
    size = max(1, int(round(sample_rate * packet_ms / 1000.0)))
    out = []
    for first in range(0, len(pcm), size):
        pts = start_pts_ms + int(round(first * 1000.0 / sample_rate))
        out.append(
            AudioPacket(pts, np.ascontiguousarray(pcm[first : first + size], dtype=np.int16), sample_rate)
        )
    return out


def resample(pcm: np.ndarray, from_rate: int, to_rate: int = STREAM_RATE) -> np.ndarray:
    """int16 mono from `from_rate` to `to_rate` with FFmpeg's resampler (PyAV's swr)."""
    if from_rate == to_rate or pcm.size == 0:
        return pcm.astype(np.int16, copy=False)
    import av

    frame = av.AudioFrame.from_ndarray(
        np.ascontiguousarray(pcm, dtype=np.int16).reshape(1, -1), format="s16", layout="mono"
    )
    frame.sample_rate = from_rate
    resampler = av.AudioResampler(format="s16", layout="mono", rate=to_rate)
    parts = [f.to_ndarray().reshape(-1) for f in resampler.resample(frame)]
    parts += [f.to_ndarray().reshape(-1) for f in resampler.resample(None)]
    return np.concatenate(parts).astype(np.int16) if parts else np.zeros(0, np.int16)


def encode_media_frame(kind: int, index: int, pts_ms: int, payload: bytes) -> bytes:
    """A binary WebSocket frame: `[u8 kind][u32 frame_index][u64 pts_ms][payload]`."""
    return _HEADER.pack(kind, index & 0xFFFFFFFF, max(0, int(pts_ms))) + payload
