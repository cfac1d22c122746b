"""A card's voice, checked when the card is read: a voice is a name, never a path.

The engines check the name again against their own lists before any native call
(`video.voice.checked_voice`); this check is for the user: a card whose voice is not even a
voice name (a path, control characters, an over-long string, an engine we do not have) is
still a persona, with the default voice and a warning on `LoadedCard.warnings`, so the import
says what was dropped instead of the session falling silent later.
"""

from __future__ import annotations

import re
from dataclasses import replace

from ..card import Voice
from .loaded import LoadedCard

__all__ = ["ENGINES", "VOICE_NAME", "checked_card_voice"]

ENGINES = ("espeak", "piper")
#: The shape of a voice name (`en-us`, `en-us+m3`, `joe`): the engines' own lists decide the rest.
VOICE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,39}(\+[A-Za-z0-9][A-Za-z0-9_-]{0,31})?$")


def checked_card_voice(loaded: LoadedCard, filename: str = "card") -> LoadedCard:
    """`loaded` with a voice that is a voice name, else the default one and a warning."""
    voice = loaded.persona.voice
    if voice.engine in ENGINES and VOICE_NAME.match(voice.voice) and ".." not in voice.voice:
        return loaded
    default = Voice()
    kept = voice.model_copy(update={"engine": default.engine, "voice": default.voice})
    shown = voice.voice if len(voice.voice) <= 60 else voice.voice[:57] + "..."
    warning = (
        f"{filename}: voice {voice.engine} {shown!r} is not a voice name (a name from the engine's list, never a "
        f"path); the default voice ({default.engine} {default.voice}) is used"
    )
    return replace(loaded, persona=loaded.persona.model_copy(update={"voice": kept}),
                   warnings=[*loaded.warnings, warning])
