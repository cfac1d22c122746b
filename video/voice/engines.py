"""Engine name → one shared `Synthesizer` per process (engines load models or global C state)."""

from __future__ import annotations

import threading

from .base import Synthesizer, VoiceError

__all__ = ["ENGINES", "get_synthesizer"]

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
