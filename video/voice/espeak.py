"""espeak-ng through its C API (ctypes), from the library and data `espeakng-loader` ships.

Why the C API and not the `espeak-ng` command: with `espeakINITIALIZE_PHONEME_EVENTS` the
synth callback hands over each phoneme with its audio offset together with the PCM, in
one pass, in-process (no fork per sentence: ~2 ms for a short sentence). The bindings are
our own, written from espeak-ng's public `speak_lib.h` (API revision 12).

espeak-ng keeps global state and is not thread-safe: every call goes through one
process-wide `_Engine` under one lock. Some of that state outlives a message (the pitch
flutter's position in wavegen.c, the wave generator's counters), so a sentence's samples
and phoneme times can differ by a millisecond with what the process said before; nothing
downstream depends on that (the lip-sync measurement is built to be insensitive to it,
docs/voice.md). The library is GPL-3.0 (see docs/voice.md).
"""

from __future__ import annotations

import ctypes
import threading
from pathlib import Path

import numpy as np

from .base import VOICE_NAME, EngineUnavailableError, UnknownVoiceError, Utterance, VoiceError, VoiceSpec
from .visemes import phonemes_to_visemes

__all__ = ["EspeakSynthesizer", "espeak_voices"]

# speak_lib.h constants
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_PHONEME_EVENTS = 0x0001
_CHARS_UTF8 = 1
_ENDPAUSE = 0x1000  # keep the sentence-final pause: streamed sentences then sound natural
_POS_CHARACTER = 1
_EVENT_LIST_TERMINATED = 0
_EVENT_PHONEME = 7
_PARAM_RATE = 1
_PARAM_PITCH = 3
_RATE_NORMAL, _RATE_MIN, _RATE_MAX = 175, 80, 450
_PITCH_NORMAL = 50
#: espeak-ng seeds the noise of breathy and Klatt voices from the clock at start-up; any
#: constant makes a fresh process say the same things with the same samples, run after run.
_RAND_SEED = 1


class _EventId(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]


class _Event(ctypes.Structure):
    """`espeak_EVENT`: audio_position is the event's time in ms from the message start."""

    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),
        ("sample", ctypes.c_int),
        ("user_data", ctypes.c_void_p),
        ("id", _EventId),
    ]


_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event)
)


class _Engine:
    """The one initialised espeak-ng of this process (global C state: one lock)."""

    _instance: _Engine | None = None
    _create_lock = threading.Lock()

    def __init__(self) -> None:
        try:
            import espeakng_loader
        except ImportError as exc:  # pragma: no cover - base dependency
            raise EngineUnavailableError(
                "the espeak voice needs the `espeakng-loader` package (pip install espeakng-loader)"
            ) from exc
        self.data_dir = Path(espeakng_loader.get_data_path())
        lib = ctypes.CDLL(espeakng_loader.get_library_path())
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_SetSynthCallback.argtypes = [_CALLBACK]
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetVoiceByName.restype = ctypes.c_int
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_SetParameter.restype = ctypes.c_int
        lib.espeak_Synth.argtypes = [
            ctypes.c_char_p,
            ctypes.c_size_t,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.c_void_p,
            ctypes.c_void_p,
        ]
        lib.espeak_Synth.restype = ctypes.c_int
        # `path` is the directory that *contains* espeak-ng-data.
        rate = lib.espeak_Initialize(
            _AUDIO_OUTPUT_SYNCHRONOUS, 0, str(self.data_dir.parent).encode(), _INITIALIZE_PHONEME_EVENTS
        )
        if rate <= 0:
            raise EngineUnavailableError(f"espeak_Initialize failed (data at {self.data_dir})")
        self.sample_rate = int(rate)
        if hasattr(lib, "espeak_ng_SetRandSeed"):  # espeak_ng.h, espeak-ng >= 1.51
            lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
            lib.espeak_ng_SetRandSeed.restype = ctypes.c_int
            lib.espeak_ng_SetRandSeed(_RAND_SEED)
        self.lib = lib
        self.lock = threading.Lock()
        self._chunks: list[bytes] = []
        self._phonemes: list[tuple[int, str]] = []
        self._callback = _CALLBACK(self._on_synth)  # kept referenced: C holds the pointer
        lib.espeak_SetSynthCallback(self._callback)
        self.aliases = _voice_aliases(self.data_dir)
        # Variants by name, from espeak's own list: never a path (`..`, `/`), and never longer
        # than its names (libespeak-ng aborts on a 37-character variant: a fixed buffer).
        self.variants = frozenset(
            p.name for p in (self.data_dir / "voices" / "!v").iterdir() if p.is_file() and VOICE_NAME.match(p.name)
        )

    @classmethod
    def get(cls) -> _Engine:
        with cls._create_lock:
            if cls._instance is None:
                cls._instance = cls()
            return cls._instance

    def _on_synth(self, wav: ctypes.Array, n: int, events: ctypes.Array) -> int:
        if wav and n > 0:
            self._chunks.append(ctypes.string_at(wav, n * 2))
        i = 0
        while events[i].type != _EVENT_LIST_TERMINATED:
            event = events[i]
            if event.type == _EVENT_PHONEME:
                name = bytes(event.id.string).split(b"\0", 1)[0].decode("utf-8", "replace")
                self._phonemes.append((int(event.audio_position), name))
            i += 1
        return 0

    def synthesize(self, text: str, voice: VoiceSpec) -> tuple[np.ndarray, list[tuple[int, str]]]:
        data = text.encode("utf-8")
        with self.lock:
            self._select(voice)
            self._chunks, self._phonemes = [], []
            status = self.lib.espeak_Synth(
                data, len(data) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8 | _ENDPAUSE, None, None
            )
            if status != 0:
                raise VoiceError(f"espeak_Synth failed with status {status}")
            pcm = np.frombuffer(b"".join(self._chunks), dtype="<i2").astype(np.int16)
            return pcm, list(self._phonemes)

    def _select(self, voice: VoiceSpec) -> None:
        name = self.resolve(voice.voice)
        if self.lib.espeak_SetVoiceByName(name.encode()) != 0:
            raise UnknownVoiceError(f"espeak has no voice {voice.voice!r}; known: {self.known_names()}")
        rate = int(round(min(max(_RATE_NORMAL * voice.rate, _RATE_MIN), _RATE_MAX)))
        pitch = int(round(min(max(_PITCH_NORMAL * voice.pitch, 0), 100)))
        self.lib.espeak_SetParameter(_PARAM_RATE, rate, 0)
        self.lib.espeak_SetParameter(_PARAM_PITCH, pitch, 0)

    def resolve(self, name: str) -> str:
        """`language[+variant]` → a voice file name espeak_SetVoiceByName accepts.

        SetVoiceByName matches voice *file* names; `en-gb` is only a language code of the
        file `en`, so language codes are mapped through the `language` lines of the files.
        """
        base, _, variant = name.strip().partition("+")
        key = base.lower()
        if key not in self.aliases:
            raise UnknownVoiceError(f"espeak has no voice {name[:60]!r}; known: {self.known_names()}")
        if variant and variant not in self.variants:
            raise UnknownVoiceError(f"espeak has no voice variant {variant[:40]!r}; known: {' '.join(sorted(self.variants))}")
        return self.aliases[key] + (f"+{variant}" if variant else "")

    def known_names(self) -> str:
        english = sorted(k for k in self.aliases if k.startswith("en"))
        return f"{' '.join(english)} (and {len(self.aliases) - len(english)} other languages)"


def _voice_aliases(data_dir: Path) -> dict[str, str]:
    """lowercase name or language code → voice file name, from espeak-ng-data/lang."""
    aliases: dict[str, str] = {}
    codes: list[tuple[int, str, str]] = []
    for path in sorted((data_dir / "lang").rglob("*")):
        if not path.is_file():
            continue
        aliases[path.name.lower()] = path.name
        for line in path.read_text("utf-8", "replace").splitlines():
            parts = line.split()
            if len(parts) >= 2 and parts[0] == "language":
                priority = int(parts[2]) if len(parts) > 2 and parts[2].isdigit() else 5
                codes.append((priority, parts[1].lower(), path.name))
    for _, code, file_name in sorted(codes):  # the file that claims a code most strongly wins
        aliases.setdefault(code, file_name)
    return aliases


def espeak_voices() -> list[str]:
    """Every voice/language name `VoiceSpec.voice` may use with the espeak engine."""
    return sorted(_Engine.get().aliases)


class EspeakSynthesizer:
    """espeak-ng with real phoneme timings (`Synthesizer`)."""

    engine = "espeak"

    def __init__(self) -> None:
        self._engine = _Engine.get()
        self.sample_rate = self._engine.sample_rate

    def check_voice(self, name: str) -> None:
        """Raise `UnknownVoiceError` unless espeak has a voice (and variant) of that name."""
        self._engine.resolve(name)

    def synthesize(self, text: str, voice: VoiceSpec) -> Utterance:
        if voice.engine != self.engine:
            raise VoiceError(f"EspeakSynthesizer cannot speak with engine {voice.engine!r}")
        pcm, phonemes = self._engine.synthesize(text, voice)
        duration_ms = int(round(1000.0 * len(pcm) / self.sample_rate))
        return Utterance(
            text=text,
            pcm=pcm,
            sample_rate=self.sample_rate,
            phonemes=phonemes,
            visemes=phonemes_to_visemes(phonemes, duration_ms, "espeak") if pcm.size else [],
        )
