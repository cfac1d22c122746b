"""Speech for the persona: text → 16-bit PCM + timed phonemes → visemes for the mouth.

Why this lives on the video side (`video/voice/`) and not in `persona/`: the audio is
produced *for the stream*. Its phoneme timings drive the renderer's mouth
(`RendererBackend.set_speech`), its samples travel as PROTOCOL.md media kind 2 next to the
frames, and both must sit on the one session clock (`pts_ms`) that the renderer and the
recorder own. The conversation side only decides *what* is said (the reply text) and *how*
the persona sounds (the card's voice, handed over as plain data: `VoiceSpec.from_dict`),
so `persona/` stays free of native libraries and audio, and the video side never imports
`persona.card` (ARCHITECTURE.md layer rules).

Engines: `espeak` (default, offline, espeak-ng through `espeakng-loader`, real phoneme
timings) and `piper` (optional extra, neural voice, timings from the model's alignment
output). See docs/voice.md.
"""

from __future__ import annotations

from .base import (
    STREAM_RATE,
    EngineUnavailableError,
    Synthesizer,
    UnknownVoiceError,
    Utterance,
    VoiceError,
    VoiceSpec,
)
from .driver import SpeechDriver
from .engines import checked_voice, get_synthesizer
from .packets import MEDIA_AUDIO, MEDIA_JPEG, AudioPacket, encode_media_frame, packetize, resample
from .schedule import ScheduledUtterance, SpeechQueue
from .sentences import split_sentences, stream_utterances
from .visemes import phoneme_to_viseme, phonemes_to_visemes

__all__ = [
    "MEDIA_AUDIO",
    "MEDIA_JPEG",
    "STREAM_RATE",
    "AudioPacket",
    "ScheduledUtterance",
    "SpeechDriver",
    "SpeechQueue",
    "EngineUnavailableError",
    "Synthesizer",
    "UnknownVoiceError",
    "Utterance",
    "VoiceError",
    "VoiceSpec",
    "checked_voice",
    "encode_media_frame",
    "get_synthesizer",
    "packetize",
    "phoneme_to_viseme",
    "phonemes_to_visemes",
    "resample",
    "split_sentences",
    "stream_utterances",
]
