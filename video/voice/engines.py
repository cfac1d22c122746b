"""Engine name → one shared `Synthesizer` per process (engines load models or global C state)."""

from __future__ import annotations

import threading
from collections.abc import Mapping

from .base import Synthesizer, VoiceError, VoiceSpec

__all__ = ["ENGINES", "checked_voice", "get_synthesizer"]

ENGINES = ("espeak", "piper")
_cache: dict[str, Synthesizer] = {}
_lock = threading.Lock()


def get_synthesizer(engine: str = "espeak") -> Synthesizer:
    """The synthesizer for a card's `voice.engine`; raises `VoiceError` for an unknown
    engine and `EngineUnavailableError` when its optional package is missing."""
    with _lock:
        if engine not in _cache:
            if engine == "espeak":
                from .espeak import EspeakSynthesizer

                _cache[engine] = EspeakSynthesizer()
            elif engine == "piper":
                from .piper import PiperSynthesizer

                _cache[engine] = PiperSynthesizer()
            else:
                raise VoiceError(f"unknown voice engine {engine!r}; known: {', '.join(ENGINES)}")
        return _cache[engine]


def checked_voice(card_voice: Mapping[str, object] | None) -> tuple[VoiceSpec, str | None]:
    """A card's `voice` block as a voice the engine has, checked by name against the engine's
    own list before any native call (a card is user input: its voice must never reach
    libespeak-ng or onnxruntime as a path or an over-long name). Anything else falls back to
    the default voice (also when the card's engine is not installed), keeping the card's
    rate and pitch where they are valid; the second value then says why (for a warning).

    Raises `VoiceError` only when the default engine itself cannot run."""
    data = dict(card_voice or {})
    try:
        spec = VoiceSpec.from_dict(data)
        get_synthesizer(spec.engine).check_voice(spec.voice)
        return spec, None
    except (VoiceError, TypeError, ValueError) as exc:
        why = str(exc)
    try:
        fallback = VoiceSpec(rate=float(data.get("rate", 1.0)), pitch=float(data.get("pitch", 1.0)))  # type: ignore[arg-type]
    except (VoiceError, TypeError, ValueError):
        fallback = VoiceSpec()
    get_synthesizer(fallback.engine)
    return fallback, f"{why}; speaking with the default voice ({fallback.engine} {fallback.voice}) instead"
