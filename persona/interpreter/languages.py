"""Which language an utterance is in, and its English gloss for the embedded parser.

Why glossing rather than a multilingual sentence model: everything the embedded parser
does beyond naming an action (clause order, "before"/"after", negation, "stop X",
intensity, repeats) is read from function words, so another language needs its function
words mapped whatever else is used, and Japanese and Chinese need segmenting first. A
glossary per language (`lexicon_intl.GLOSSES`) does both: "levántate y luego saluda"
becomes "stand up and then wave", "立ってから手を振って" becomes "stand up then wave",
and the English parser does the rest, in well under a millisecond. What it cannot do is
paraphrase: a phrasing the glossary lacks is not understood (docs/interpreter.md gives the
per-language numbers and names the multilingual models found in registry packages).

Detection: the script decides first (kana → Japanese, Han → Chinese, other non-Latin
scripts → `OTHER`); Latin text is scored per language by glossary and marker words that
are not English, with the letters only one language uses (ñ, ß, ã, ...) as a tie-break.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from functools import cache

from . import lexicon_intl as li

__all__ = ["ENGLISH", "OTHER", "SUPPORTED", "Gloss", "detect_language", "gloss"]

ENGLISH = "en"
#: A script none of the glossaries reads (Cyrillic, Arabic, Hangul, ...).
OTHER = "other"
SUPPORTED = (ENGLISH, *li.GLOSSES)
_CJK = ("ja", "zh")
_LATIN = tuple(code for code in li.GLOSSES if code not in _CJK)
_WORD_RE = re.compile(r"\w+(?:-\w+)*'?|[^\w\s]")
_MARKERS = {"<not>": "don't", "<stop>": "stop"}
_CLAUSE_BREAKS = {",", ".", "!", "?", ";", ":", "and", "then", "and then", "after", "before"}
_LETTER_HINTS = {
    "es": "ñ¿¡",
    "de": "ßäöü",
    "fr": "œèêëîïûùç",
    "pt": "ãõç",
    "it": "ìò",
}
_ASCII_WORD = re.compile(r"[A-Za-z][A-Za-z']*")


@dataclass(frozen=True)
class Gloss:
    """An utterance as the English parser should read it."""

    language: str
    text: str


def _fold(text: str) -> str:
    """Lower case without accents (users often leave them out): "Levántate" → "levantate"."""
    text = text.lower().replace("’", "'").replace("œ", "oe").replace("æ", "ae").replace("ß", "ss")
    text = unicodedata.normalize("NFKD", text)
    return "".join(c for c in text if not unicodedata.combining(c))


def _words(text: str) -> list[str]:
    return _WORD_RE.findall(_fold(text))


@cache
def _table(language: str) -> tuple[dict[tuple[str, ...], str], dict[tuple[str, ...], str], int]:
    """(phrases anywhere, phrases only at a clause start, longest key) for a Latin language."""
    anywhere: dict[tuple[str, ...], str] = {}
    start: dict[tuple[str, ...], str] = {}
    longest = 1
    for key, value in li.GLOSSES[language].items():
        target = start if key.startswith("^") else anywhere
        words = tuple(_words(key.lstrip("^")))
        target[words] = value
        longest = max(longest, len(words))
    return anywhere, start, longest


@cache
def _cjk_table(language: str) -> tuple[dict[str, str], int]:
    table = dict(li.GLOSSES[language])
    return table, max(len(k) for k in table)


def _script_counts(text: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for c in text:
        if not c.isalpha():
            continue
        code = ord(c)
        if 0x3040 <= code <= 0x30FF or 0x31F0 <= code <= 0x31FF or 0xFF66 <= code <= 0xFF9F:
            script = "kana"
        elif 0x4E00 <= code <= 0x9FFF or 0x3400 <= code <= 0x4DBF or 0xF900 <= code <= 0xFAFF:
            script = "han"
        elif code < 0x250 or 0x1E00 <= code <= 0x1EFF:
            script = "latin"
        else:
            script = "other"
        counts[script] = counts.get(script, 0) + 1
    return counts


def detect_language(text: str, english_words: frozenset[str] = frozenset()) -> str:
    """The language code of `text`: "en", one of the glossed languages, or `OTHER`.

    `english_words` are words to count as English (the parser's own vocabulary and word
    list); a Latin-script utterance is English unless another language has more words in it.
    """
    scripts = _script_counts(text)
    if not scripts:
        return ENGLISH
    dominant = max(scripts, key=lambda s: scripts[s])
    cjk = scripts.get("kana", 0) + scripts.get("han", 0)
    if cjk and cjk >= scripts.get("latin", 0) and cjk >= scripts.get("other", 0):
        return "ja" if scripts.get("kana", 0) else "zh"
    if dominant == "other":
        return OTHER
    words = [w for w in _words(text) if w[:1].isalnum()]
    if not words:
        return ENGLISH
    english = sum(1 for w in words if w in english_words or w in li.ENGLISH_SHARED)
    lowered = text.lower()
    best, best_score = ENGLISH, 0.0
    for language in _LATIN:
        score = _coverage(words, language) + sum(0.5 for w in words if w in li.MARKERS.get(language, ()))
        score += sum(0.75 for c in _LETTER_HINTS[language] if c in lowered)
        if score > best_score:
            best, best_score = language, score
    return best if best_score > english else ENGLISH


def _coverage(words: list[str], language: str) -> float:
    """How many of `words` the language's glossary covers (shared-with-English words not counted)."""
    anywhere, start, longest = _table(language)
    covered, i = 0.0, 0
    while i < len(words):
        for n in range(min(longest, len(words) - i), 0, -1):
            key = tuple(words[i : i + n])
            if key in anywhere or key in start:
                if not (n == 1 and key[0] in li.ENGLISH_SHARED):
                    covered += n
                i += n
                break
        else:
            i += 1
    return covered


def gloss(text: str, language: str, keep: frozenset[str] = frozenset()) -> Gloss:
    """`text` (in `language`) rewritten as English words the embedded parser reads.

    Words the glossary does not know are dropped, except those in `keep` (the persona's
    name) and English words written into the sentence (`_ASCII_WORD` runs in CJK text)."""
    if language in _CJK:
        tokens = _gloss_cjk(text, language)
    elif language in li.GLOSSES:
        tokens = _gloss_latin(text, language, keep)
    else:
        return Gloss(language, text)
    return Gloss(language, " ".join(_place_markers(tokens)))


def _gloss_latin(text: str, language: str, keep: frozenset[str]) -> list[str]:
    anywhere, start, longest = _table(language)
    words = _words(text)
    out: list[str] = []
    i = 0
    while i < len(words):
        at_start = not out or out[-1] in _CLAUSE_BREAKS
        for n in range(min(longest, len(words) - i), 0, -1):
            key = tuple(words[i : i + n])
            value = start.get(key) if at_start else None
            if value is None:
                value = anywhere.get(key)
            if value is not None:
                out.extend(value.split())
                i += n
                break
        else:
            word = words[i]
            if not word[:1].isalnum() or word.isdigit() or word in keep:
                out.append(word)
            i += 1
    # Romance adjectives follow the noun: "cara triste" → "sad face".
    for j in range(len(out) - 1):
        if out[j] == "face" and out[j + 1] in _FACE_WORDS:
            out[j], out[j + 1] = out[j + 1], out[j]
    return out


_FACE_WORDS = frozenset(
    "sad happy angry surprised confused thoughtful shy excited smile laugh frown wink serious".split()
)


_CJK_PUNCT = {"、": ",", "，": ",", "。": ".", "！": "!", "？": "?", "；": ";", "：": ":", "～": "", "…": "."}


def _gloss_cjk(text: str, language: str) -> list[str]:
    table, longest = _cjk_table(language)
    text = unicodedata.normalize("NFKC", text)
    out: list[str] = []
    i = 0
    while i < len(text):
        for n in range(min(longest, len(text) - i), 0, -1):
            value = table.get(text[i : i + n])
            if value is not None:
                if value:
                    out.append(value)
                i += n
                break
        else:
            c = text[i]
            ascii_word = _ASCII_WORD.match(text, i)
            if ascii_word:
                out.append(ascii_word.group(0))
                i = ascii_word.end()
                continue
            if c in _CJK_PUNCT:
                if _CJK_PUNCT[c]:
                    out.append(_CJK_PUNCT[c])
            elif c in ",.!?;:":
                out.append(c)
            i += 1
    return out


def _place_markers(tokens: list[str]) -> list[str]:
    """Move negation and stop markers written after the verb to the front of their clause:
    "dance <not>" → "don't dance"; Chinese "<not> dance <le>" (别跳了) → "stop dance"."""
    clauses: list[list[str]] = [[]]
    for token in tokens:
        if token in _CLAUSE_BREAKS:
            clauses.append([token])
            clauses.append([])
        else:
            clauses[-1].append(token)
    out: list[str] = []
    for clause in clauses:
        markers = [t for t in clause if t.startswith("<")]
        words = [t for t in clause if not t.startswith("<")]
        if "<le>" in markers and "<not>" in markers:
            markers = ["<stop>"]
        lead = [_MARKERS[m] for m in dict.fromkeys(markers) if m in _MARKERS]
        out.extend(lead[:1] + words)
    return out
