"""Where a clause rules a face out without opening with a negation.

"nod but don't smile" opens its clause with the negation and is read by the clause parser's
negation step. Many ways of excluding a face do not: the face sits inside a verb frame
("keep that smile off your face", "wipe the sad look off", "put that grin away", "save the
laughing for later", "spare me the pout", "drop the sad face"), or the negation comes in the
middle of the clause ("turn right with no surprised face", "give me a nod, but not an angry
one", "stand up, but not with that angry look"). Read as a request, each of these named the
very face the user wanted gone.

`face_exclusion` finds such a frame and says which words of the clause it spans and where the
face phrase inside it starts. The caller (the embedded parser) matches the face words against
the vocabulary: only when they name a face is the span an exclusion ("keep your hands off the
cake" names none and is read as before), and the span is cut from the clause, so what is left
("bow, and wipe that excited look off your face" → "bow") is read as the request it is.

Why patterns: the frames are a handful of verbs and particles around a determiner and a face
phrase; each pattern is one such frame over the clause's lower-case words, and stays under a
microsecond per clause.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

__all__ = ["FACE_NOUNS", "face_exclusion"]

#: Determiners between the excluding verb and the face ("that", "the", "all that").
_DET = r"(?:(?:all|any|of|that|the|this|those|these|your|ur|yer|ya|a|an|some|such|more|one|those|them)\s)"
#: A word of a face phrase: no preposition or conjunction ("cut the cake with a smile" names a cake).
_WORD = r"(?!(?:with|and|at|to|for|in|on|if|when|while|because|but|or|like|as|into|from|then|so|before|after)\b)[\w'-]+"
#: A face phrase: one to four words, the face among them ("excited look", "goofy grin", "sad puppy look").
_PHRASE = rf"(?P<face>(?:{_WORD}\s){{0,3}}?{_WORD})"
#: Where a face is worn ("off your face", "off of that face of yours").
_WHERE = r"(?:\s(?:of\s)?(?:your|ur|yer|the|that|my)\s(?:face|mug|lips|features|expression)(?:\s(?:of\s)?yours)?)?"

_FRAMES: tuple[re.Pattern[str], ...] = tuple(
    re.compile(p)
    for p in (
        # "keep that smile off your face", "wipe the sad look off", "get that grin off your face"
        rf"\b(?:keep|get|wipe|take|knock|wash|scrub|slap|rub|clear)\s{_DET}*{_PHRASE}\soff{_WHERE}\b",
        # "put that smile away", "tuck the grin away"
        rf"\b(?:put|tuck|pack|stash|stow)\s{_DET}*{_PHRASE}\saway\b",
        # "leave the angry face at home", "leave that grin behind"
        rf"\bleave\s{_DET}+{_PHRASE}\s(?:at\shome|behind|at\sthe\sdoor|outside|aside|out\sof\sit|out)\b",
        # "save the laughing for later", "keep the tears for another time"
        rf"\b(?:save|keep|hold|leave)\s{_DET}*{_PHRASE}\sfor\s(?:later|another\stime|afterwards|after|another\sday|now)\b",
        # "spare me the pout", "spare us that confused look"
        rf"\bspare\s(?:me|us|them|everyone|everybody|him|her)\s{_DET}*{_PHRASE}$",
        # a verb that drops what follows: "drop the sad face", "lose the smirk", "enough with the confused face"
        rf"\b(?:drop|lose|ditch|scrap|nix|kill|cut|skip|shelve|remove|erase|bin|banish|"
        rf"(?:get|do)\srid\sof|do\saway\swith|away\swith|enough\swith|enough\sof|no\smore\sof|no\smore|"
        rf"can\sit\swith|cut\sit\swith|quit\sit\swith|cut\sout|take\saway|take\soff|wipe\saway|wipe\soff)"
        rf"\s{_DET}+{_PHRASE}{_WHERE}$",
        # a negation inside the clause: "with no surprised face", "but not an angry one",
        # "not with that look", "minus the grin", "sans the frown", "without the pout"
        rf"(?<!why\s)\b(?:with\sno|with\snone\sof|without\sany|without|minus|sans|not\swith|not|none\sof|no|nor|never\swith|nothing)"
        rf"\s(?!(?:too|so|overly|very|as|that\smuch|much|more|quite|really|terribly|super)\b){_DET}*{_PHRASE}{_WHERE}$",
    )
)

#: Face words the vocabulary has no synonym for, as the faces they rule out ("hold the laughter").
#: A smirk is a half smile and a sly wink at once: ruling it out rules out both.
FACE_NOUNS: dict[str, tuple[str, ...]] = {
    "laughter": ("laugh",),
    "laughs": ("laugh",),
    "giggling": ("laugh",),
    "cackling": ("laugh",),
    "smirk": ("smile", "wink"),
    "smirking": ("smile", "wink"),
    "smirks": ("smile", "wink"),
    "smiles": ("smile",),
    "grins": ("smile",),
    "beaming": ("smile",),
    "puppy": ("sad",),
    "sulk": ("sad",),
    "sulking": ("sad",),
    "moping": ("sad",),
    "weepy": ("sad",),
    "squealing": ("excited",),
    "glaring": ("angry",),
    "glare": ("angry",),
    "bafflement": ("confused",),
    "puzzled": ("confused",),
    "blushing": ("shy",),
    "shock": ("surprised",),
}


def face_exclusion(words: Sequence[str]) -> tuple[int, int, int] | None:
    """(start, face_start, end) word positions of a frame that rules a face out, or None.

    words[start:end] is the whole frame (cut from the clause when it names a face);
    words[face_start:end] holds the face phrase the caller matches against the vocabulary.
    """
    if not words:
        return None
    text = " ".join(map(str, words))
    for frame in _FRAMES:
        m = frame.search(text)
        if m is None:
            continue
        start = text.count(" ", 0, m.start())
        face_start = text.count(" ", 0, m.start("face"))
        end = text.count(" ", 0, m.end()) + 1
        return start, face_start, end
    return None
