"""Phonemes → Rhubarb mouth shapes (A–H, X), for espeak mnemonics and for IPA (piper).

The shapes (video/preview/visemes.py): A closed (P B M), B slightly open with teeth (most
consonants, EE), C open (EH, AE, schwa), D wide open (AA), E slightly rounded (AO, ER),
F puckered (UW, OW, W), G teeth on lip (F V), H tongue up (L), X rest (pauses).
A diphthong takes the shape of its first, more open part; the mouth moves on with the
next phoneme anyway.
"""

from __future__ import annotations

__all__ = ["phoneme_to_viseme", "phonemes_to_visemes"]

# espeak-ng English mnemonics (stress marks ' , and length : stripped before lookup,
# longest prefix wins).
_ESPEAK: dict[str, str] = {
    "p": "A", "b": "A", "m": "A",
    "f": "G", "v": "G",
    "l": "H", "@L": "H",
    "w": "F", "u": "F", "U": "F", "oU": "F", "o@": "E",
    "O": "E", "OI": "E", "Q": "E", "0": "E", "3": "E", "@5": "F",
    "A": "D", "aa": "D", "aI": "D", "aU": "D", "a#": "D", "A@": "D",
    "a": "C", "e": "C", "E": "C", "@": "C", "V": "C", "eI": "C", "e@": "C",
    "i": "B", "I": "B", "j": "B",
    "_": "X",
}  # fmt: skip

_IPA: dict[str, str] = {
    "p": "A", "b": "A", "m": "A",
    "f": "G", "v": "G",
    "l": "H", "ɫ": "H",
    "w": "F", "u": "F", "ʊ": "F", "o": "F",
    "ɔ": "E", "ɜ": "E", "ɚ": "E", "ɝ": "E", "ɒ": "E",
    "ɑ": "D", "a": "D", "ɐ": "D",
    "ɛ": "C", "æ": "C", "ə": "C", "ʌ": "C", "e": "C",
    "i": "B", "ɪ": "B", "j": "B",
    "^": "X", "$": "X", ".": "X", ",": "X", "!": "X", "?": "X", ";": "X", ":": "X", "_": "X",
}  # fmt: skip

_STRIP = "'ˈˌːˑ%="


def phoneme_to_viseme(phoneme: str, alphabet: str = "espeak") -> str:
    """The mouth shape for one phoneme; anything unknown but audible is `B`. An empty
    string means "no shape of its own" (IPA stress/length marks, word spaces): the mouth
    keeps moving with the neighbouring phonemes."""
    table = _ESPEAK if alphabet == "espeak" else _IPA
    if alphabet == "espeak":
        if phoneme.startswith("_"):
            return "X"
        core = phoneme.lstrip("',%=").replace(":", "")
    else:
        core = "".join(ch for ch in phoneme if ch not in _STRIP and not ch.isspace())
        if not core:
            return ""
    for length in (3, 2, 1):
        if len(core) >= length and core[:length] in table:
            return table[core[:length]]
    return "B"


def phonemes_to_visemes(
    phonemes: list[tuple[int, str]], duration_ms: int, alphabet: str = "espeak"
) -> list[tuple[int, str]]:
    """Timed visemes for timed phonemes: repeats merged, a rest (`X`) at `duration_ms`."""
    out: list[tuple[int, str]] = []
    for offset, phoneme in sorted(phonemes, key=lambda p: p[0]):
        shape = phoneme_to_viseme(phoneme, alphabet)
        if not shape:
            continue
        if out and out[-1][0] == offset:
            out[-1] = (offset, shape)  # zero-length phoneme: the later one wins
        elif not out or out[-1][1] != shape:
            out.append((int(offset), shape))
    while out and out[-1][0] > duration_ms:
        out.pop()
    if not out or out[-1][1] != "X":
        out.append((int(duration_ms), "X"))
    return out
