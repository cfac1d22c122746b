"""The TTS contract: `VoiceSpec` in, `Utterance` out, through a `Synthesizer`.

Kept as plain dataclasses so the conversation side can hand a persona's voice over as a
dict (the card's `voice` block dumped) without the video side importing `persona.card`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

from ...errors import PersonaError

__all__ = [
    "STREAM_RATE",
    "EngineUnavailableError",
    "Synthesizer",
    "UnknownVoiceError",
    "Utterance",
    "VOICE_NAME",
    "VoiceError",
    "VoiceSpec",
]

#: The one audio rate of the stream (`ready.audio_rate`) and of recordings. 22050 Hz is
#: what both engines produce natively (espeak-ng always; piper "medium" voices such as
#: joe), so the common path never resamples; it is a standard AAC rate, Web Audio plays
#: any rate from 8 kHz up, and speech has nothing worth keeping above 11 kHz.
STREAM_RATE = 22050


#: What a voice name may look like before any engine sees it: a name from the engine's own
#: list (`en-us`, `en-us+m3`, `joe`), never a path. Checked again by name against the
#: engine's list (`EspeakSynthesizer.resolve`, `piper._model_path`); this pattern only keeps
#: path separators, control characters and long strings away from native code.
VOICE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,39}(\+[A-Za-z0-9][A-Za-z0-9_-]{0,31})?$")


class VoiceError(PersonaError, ValueError):
    """A voice request that cannot be honoured (bad engine, voice, rate or pitch)."""

    code = "voice"


class UnknownVoiceError(VoiceError):
    """The engine has no voice of that name; the message lists what it has."""


class EngineUnavailableError(VoiceError):
    """The engine's package is not installed (e.g. piper without the `piper` extra)."""


@dataclass(frozen=True)
class VoiceSpec:
    """How a persona sounds. `rate` and `pitch` are multipliers of the engine's normal
    (1.0 = normal), the same units as the card's `voice` block."""

    engine: str = "espeak"
    voice: str = "en-us"
    rate: float = 1.0
    pitch: float = 1.0

    def __post_init__(self) -> None:
        for name in ("rate", "pitch"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or not 0.25 <= value <= 4.0:
                raise VoiceError(f"voice {name}={value!r} must be a number in [0.25, 4.0]")
        if not isinstance(self.voice, str) or not VOICE_NAME.match(self.voice) or ".." in self.voice:
            raise UnknownVoiceError(
                f"voice name {str(self.voice)[:60]!r} is not a voice name (letters, digits, '-', '_', '.', "
                "an optional '+variant'; never a path)"
            )

    @classmethod
    def from_dict(cls, data: Mapping[str, object] | None) -> VoiceSpec:
        """From a card's `voice` block (extra keys such as `style` are ignored)."""
        data = dict(data or {})
        return cls(
            engine=str(data.get("engine", "espeak")),
            voice=str(data.get("voice", "en-us")),
            rate=float(data.get("rate", 1.0)),  # type: ignore[arg-type]
            pitch=float(data.get("pitch", 1.0)),  # type: ignore[arg-type]
        )


@dataclass
class Utterance:
    """Synthesised speech: mono int16 PCM plus phoneme and viseme timings in ms from the
    utterance's first sample. The viseme list ends with a rest (`X`) at the audio's end,
    ready for `RendererBackend.set_speech(visemes, duration_ms)`."""

    text: str
    pcm: np.ndarray  # int16, shape (n,)
    sample_rate: int
    phonemes: list[tuple[int, str]] = field(default_factory=list)
    visemes: list[tuple[int, str]] = field(default_factory=list)

    @property
    def duration_ms(self) -> int:
        return int(round(1000.0 * len(self.pcm) / self.sample_rate))


@runtime_checkable
class Synthesizer(Protocol):
    """One TTS engine. Implementations serialise their own native calls (thread-safe)."""

    engine: str

    def check_voice(self, name: str) -> None:
        """Raise `UnknownVoiceError` unless the engine has a voice of that name (by name,
        from its own list: never a path). Called before any synthesis with a card's voice."""
        ...

    def synthesize(self, text: str, voice: VoiceSpec) -> Utterance:
        """Speak `text` (one sentence or a whole reply) with `voice`."""
        ...
