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
#: "<past>" (Japanese "-ました", "をした") opens the clause with a time word that makes it news.
_MARKERS = {"<not>": "don't", "<stop>": "stop", "<past>": "yesterday"}
_CLAUSE_BREAKS = {",", ".", "!", "?", ";", ":", "and", "then", "and then", "after", "before"}
_LETTER_HINTS = {
    "es": "ñ¿¡",
    "de": "ßäöü",
    "fr": "œèêëîïûùç",
    "pt": "ãõç",
    "it": "ìò",
}
_ROMANCE_ACCENTS = frozenset("áéíóúàèìòùâêîôû")
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
    # Formal and plural variants of familiar phrases, where the glossary has not listed them.
    for words, value in list(anywhere.items()):
        for variant in _formal_variants(words, language):
            anywhere.setdefault(variant, value)
    return anywhere, start, longest


def _formal_variants(words: tuple[str, ...], language: str) -> list[tuple[str, ...]]:
    """The usted/ustedes/vosotros (Lei/voi, vous, Sie/ihr, você) forms of a familiar phrase of
    two or more words: "mira a tu alrededor" → "mire a su alrededor", "mirad a vuestro
    alrededor", ...; a phrase without a familiar verb ending or pronoun has none."""
    if len(words) < 2:
        return []
    swaps = li.FORMAL_WORDS.get(language, {})
    verbs = [words[0]]
    for ending, others in li.IMPERATIVE_FORMS.get(language, ()):
        if words[0].endswith(ending) and len(words[0]) - len(ending) >= 3:
            verbs += [words[0][: -len(ending)] + other for other in others]
            break
    rests: list[tuple[str, ...]] = [words[1:]]
    n_alternatives = max((len(v) for v in swaps.values()), default=0)
    for k in range(n_alternatives):
        rest = tuple(swaps[w][min(k, len(swaps[w]) - 1)] if w in swaps else w for w in words[1:])
        if rest not in rests:
            rests.append(rest)
    return [(verb, *rest) for verb in verbs for rest in rests if (verb, *rest) != words]


@cache
def _cjk_table(language: str) -> tuple[dict[str, str], int]:
    table = dict(li.GLOSSES[language])
    if language == "ja":
        # A face said in the past form describes the face ("驚いた顔", "困った顔"): every
        # te-form of a face word also reads in its ta-form. Actions are left alone, since
        # "座った" (sat) is news, not a request.
        for key, value in li.GLOSSES[language].items():
            if value in _FACE_WORDS and key[-1:] in ("て", "で"):
                table.setdefault(key[:-1] + ("た" if key[-1] == "て" else "だ"), value)
    if language == "zh":
        # "四处看看" is normalised to "四处看" before lookup (`_zh_normalise`): keys too.
        for key, value in li.GLOSSES[language].items():
            table.setdefault(_ZH_DOUBLED_KEY.sub(r"\1", key), value)
    return table, max(len(k) for k in table)


_ZH_COUNT = "(?:了|过)?(?:[一二两三四五六七八九十几0-9]+[次下个遍]?|个|了)"
_ZH_SEPARATED = re.compile(
    "|".join(f"{re.escape(v[0])}({_ZH_COUNT}){re.escape(v[1:])}" for v in li.ZH_SEPARABLE)
)
_ZH_DOUBLED = re.compile("([" + "".join(sorted(li.ZH_REDUPLICABLE)) + "])(?:一|了)?\\1")
_VERB_AFTER_DIRECTION = frozenset({"look", "turn"})
_ZH_DOUBLED_KEY = re.compile("([" + "".join(sorted(li.ZH_REDUPLICABLE)) + "])(?:一|了)?\\1")


def _zh_normalise(text: str, table: dict[str, str]) -> str:
    """Chinese verbs back in their dictionary shape: a doubled verb read once ("向右看看" →
    "向右看", "点了点头" → "点头"), unless the glossary has the doubled form itself ("笑笑" is
    a smile); a count inside a verb–object compound moved after it ("点两次头" → "点头两次")."""

    def single(m: re.Match[str]) -> str:
        at = m.start()
        if any(text.startswith(k, at) for k in (text[at : at + n] for n in range(2, 6)) if k in table):
            return m.group(0)
        return m.group(1)

    text = _ZH_DOUBLED.sub(single, text)

    def joined(m: re.Match[str]) -> str:
        inside = next(g for g in m.groups() if g is not None)
        whole = m.group(0)
        verb = whole[: whole.index(inside)] + whole[whole.index(inside) + len(inside) :]
        return verb + ("" if inside in ("了", "个", "了个", "过") else inside)

    return _ZH_SEPARATED.sub(joined, text)


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
    lowered = text.lower()
    best, best_score, best_margin = ENGLISH, 0.0, 0.0
    for language in _LATIN:
        covered = _covered(words, language)
        score = float(len(covered)) + sum(0.5 for w in words if w in li.MARKERS.get(language, ()))
        score += sum(0.75 for c in _LETTER_HINTS[language] if c in lowered)
        if language != "de" and any(c in _ROMANCE_ACCENTS for c in lowered):
            score += 0.5  # "sofá", "à": accents English does not write
        # A shared word that this language has too ("la", "no", "piano") is half a vote for
        # English: "cammina piano" and "indica la porta" are Italian, "la la land" and
        # "wink at me" (German has no "me") stay English.
        anywhere, start, _ = _table(language)
        english = sum(
            0.5 if w in li.ENGLISH_SHARED and ((w,) in anywhere or (w,) in start) else 1.0
            for w in words
            if w in english_words or w in li.ENGLISH_SHARED
        )
        if score > best_score and score > english:
            best, best_score, best_margin = language, score, score - english
        elif score == best_score and score - english > best_margin:
            best, best_margin = language, score - english
    return best


def _coverage(words: list[str], language: str) -> float:
    """How many of `words` the language's glossary covers (shared-with-English words not counted)."""
    return float(len(_covered(words, language)))


def _covered(words: list[str], language: str) -> set[int]:
    """Positions of `words` the language's glossary covers, directly or through
    `_lemma` (shared-with-English single words not counted)."""
    anywhere, start, longest = _table(language)
    covered: set[int] = set()
    i = 0
    while i < len(words):
        for n in range(min(longest, len(words) - i), 0, -1):
            key = tuple(words[i : i + n])
            if key in anywhere or key in start:
                if not (n == 1 and key[0] in li.ENGLISH_SHARED):
                    covered.update(range(i, i + n))
                i += n
                break
        else:
            if _lemma(words[i], language) is not None:
                covered.add(i)
            i += 1
    return covered


@cache
def _lemma(word: str, language: str) -> str | None:
    """The gloss of an inflected form the glossary lacks, or None.

    Two regular inflections, tried in order: an object pronoun joined on ("salúdanos" →
    "saluda", "salutaci" → "saluta", "salue-nous" → "salue"), then the other endings of the
    same verb stem ("caminad" → "camina", "tournez" → "tourne"), on the bare word and on
    the word without its pronoun. Only single-word entries of four letters or more are
    reached this way, so a short word never turns into a verb by accident.
    """
    anywhere, start, _ = _table(language)

    def look(form: str) -> str | None:
        if len(form) < 4:
            return None
        value = anywhere.get((form,))
        return value if value is not None else start.get((form,))

    forms = [word]
    head, _, tail = word.partition("-")
    if tail and tail.split("-")[0] in li.CLITICS.get(language, ()):
        forms.append(head)
    for clitic in li.CLITICS.get(language, ()):
        if len(clitic) >= 2 and word.endswith(clitic) and len(word) - len(clitic) >= 4:
            forms.append(word[: -len(clitic)])
    for form in forms[1:]:
        value = look(form)
        if value:
            return value
    for ending in li.ADJECTIVE_ENDINGS.get(language, ()):
        if word.endswith(ending) and len(word) - len(ending) >= 4:
            value = look(word[: -len(ending)])
            if value:
                return value
    endings = li.VERB_ENDINGS.get(language, ())
    for form in forms:
        for ending in endings:
            if not form.endswith(ending) or len(form) - len(ending) < 3:
                continue
            stem = form[: -len(ending)]
            for other in endings:
                value = look(stem + other) if other != ending else None
                if value and value.split()[0] not in _NOT_VERBS:
                    return value
    return None


#: Degree suffixes on a word the glossary knows: superlatives ("arrabbiatissima" → "very
#: angry") and diminutives ("sorrisinho", "sorrisino", "sonrisita" → "smile slightly").
_DEGREE: dict[str, tuple[tuple[str, str], ...]] = {
    "es": (("isimo", "very"), ("isima", "very"), ("isimos", "very"), ("isimas", "very"),
           ("ito", "slightly"), ("ita", "slightly"), ("itos", "slightly"), ("itas", "slightly")),
    "it": (("issimo", "very"), ("issima", "very"), ("issimi", "very"), ("issime", "very"),
           ("ino", "slightly"), ("ina", "slightly"), ("etto", "slightly"), ("etta", "slightly")),
    "pt": (("issimo", "very"), ("issima", "very"), ("inho", "slightly"), ("inha", "slightly"),
           ("zinho", "slightly"), ("zinha", "slightly")),
}


def _degree(word: str, language: str) -> str | None:
    """`word` as a degree form of a glossary word ("very angry", "smile slightly"), or None.
    The base must be a glossary entry of four letters or more, so few real words reach it."""
    anywhere, start, _ = _table(language)
    for suffix, degree in _DEGREE.get(language, ()):
        if not word.endswith(suffix) or len(word) - len(suffix) < 4:
            continue
        root = word[: -len(suffix)]
        for ending in ("o", "a", "e", ""):
            value = anywhere.get((root + ending,)) or start.get((root + ending,))
            if value and value.split()[0] not in _NOT_VERBS:
                return f"very {value}" if degree == "very" else f"{value} {degree}"
    return None


#: Glosses an ending swap must not reach: function words and faces, not verbs.
_NOT_VERBS = frozenset(
    "i my your me you a the and then please very not don't to of in on with for left right".split()
)


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
    words = [w for w in _words(text) if w not in _OPENERS]
    if language == "de":
        words = _de_normalise(words, anywhere)
    words = _little_last(words, language)
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
            value = _lemma(word, language) if word[:1].isalpha() and word not in keep else None
            if value is None and word[:1].isalpha() and word not in keep:
                value = _degree(word, language)
            if value is not None:
                out.extend(value.split())
            elif not word[:1].isalnum() or word.isdigit() or word in keep:
                out.append(word)
            i += 1
    # Romance adjectives follow the noun: "cara triste" → "sad face".
    for j in range(len(out) - 1):
        if out[j] == "face" and out[j + 1] in _FACE_WORDS:
            out[j], out[j + 1] = out[j + 1], out[j]
        elif out[j] == "face" and out[j + 1] == "very" and j + 2 < len(out) and out[j + 2] in _FACE_WORDS:
            out[j : j + 3] = ["very", out[j + 2], "face"]  # "faccia arrabbiatissima": a very angry face
        elif out[j : j + 3] == ["face", "a", "little"] and j + 3 < len(out) and out[j + 3] in _FACE_WORDS:
            out[j : j + 4] = ["a", "little", out[j + 3], "face"]  # "cara un pelín triste"
    return out


#: "a little" said between a verb and its object ("scuoti un po' la testa", "hausse un peu
#: les épaules"): moved to the end of its clause before glossing, so the verb meets its object.
_LITTLE = {
    "it": (("un", "po'"), ("un", "po"), ("un", "pochino")), "es": (("un", "poco"), ("un", "poquito")),
    "fr": (("un", "peu"),), "pt": (("um", "pouco"), ("um", "pouquinho")), "de": (("ein", "bisschen"), ("ein", "wenig")),
}


def _little_last(words: list[str], language: str) -> list[str]:
    result: list[str] = []
    held: list[str] = []
    i = 0
    while i < len(words):
        seq = next((q for q in _LITTLE.get(language, ()) if tuple(words[i : i + len(q)]) == q), None)
        nxt = words[i + len(seq)] if seq and i + len(seq) < len(words) else None
        if seq and result and result[-1] not in _CLAUSE_BREAKS and nxt is not None and nxt[:1].isalpha():
            held += seq
            i += len(seq)
            continue
        if (words[i] in _CLAUSE_BREAKS or not words[i][:1].isalnum()) and held:
            result += held
            held = []
        result.append(words[i])
        i += 1
    return result + held


#: Spanish opening marks ("¡para ya!"): a clause starts after them, so they are dropped.
_OPENERS = frozenset("¡¿")


_DE_CONJUNCTIONS = frozenset("und aber oder dann danach sondern".split())
_DE_STOP_VERBS = frozenset("hor hort horen".split())


def _until_break(words: list[str], start: int) -> list[str]:
    out = []
    for w in words[start:]:
        if w in _CLAUSE_BREAKS or not w[:1].isalnum():
            break
        out.append(w)
    return out


def _de_normalise(words: list[str], anywhere: dict[tuple[str, ...], str]) -> list[str]:
    """German word order the glossary can read: modal particles dropped inside a clause
    ("nimm doch Platz" → "nimm Platz") and a separable particle that closes the clause moved
    back beside its verb and reflexive ("schau dich mal um" → "schau dich um")."""
    clauses: list[list[str]] = [[]]
    for i, w in enumerate(words):
        if w == "," and i > 1 and words[i - 1] == "auf" and words[i - 2] in _DE_STOP_VERBS and "zu" in _until_break(words, i + 1):
            continue  # "hör auf, so wütend zu gucken": the "zu" clause is what stops, not a clause of its own
        if w in _CLAUSE_BREAKS or not w[:1].isalnum():
            clauses.append([w])
            clauses.append([])
        else:
            clauses[-1].append(w)
    out: list[str] = []
    for clause in clauses:
        kept = [
            w
            for j, w in enumerate(clause)
            if not (j and w in li.DE_PARTICLES and (clause[j - 1], w) not in anywhere and len(clause) > 1)
        ]
        lead = 0  # "und hör auf": the verb comes after the conjunction
        while lead < len(kept) - 1 and kept[lead] in _DE_CONJUNCTIONS:
            lead += 1
        if (
            len(kept) - lead > 2 and kept[-1] in li.DE_SEPARABLE and kept[-2] not in ("dich", "sich", "euch", "mich")
            and (kept[-2], kept[-1]) not in anywhere  # "setz dich hin und hör auf": "hör auf" is already whole
        ):
            at = lead + (2 if kept[lead + 1] in ("dich", "sich", "euch", "mich", "sie") else 1)
            kept = kept[:at] + kept[-1:] + kept[at:-1]
        out.extend(kept)
    return out


_FACE_WORDS = frozenset(
    "sad happy angry surprised confused thoughtful shy excited smile laugh frown wink serious".split()
)


_CJK_PUNCT = {"、": ",", "，": ",", "。": ".", "！": "!", "？": "?", "；": ";", "：": ":", "～": "", "…": "."}


def _gloss_cjk(text: str, language: str) -> list[str]:
    table, longest = _cjk_table(language)
    text = unicodedata.normalize("NFKC", text)
    if language == "zh":
        text = _zh_normalise(text, table)
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
    # Both languages put the direction before the verb ("左を見て", "向左看"): "look left".
    for j in range(len(out) - 1):
        if out[j] in ("left", "right") and out[j + 1] in _VERB_AFTER_DIRECTION:
            out[j], out[j + 1] = out[j + 1], out[j]
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
        if ("<le>" in markers or "<mou>" in markers) and "<not>" in markers:
            markers = ["<stop>"]  # "别跳了", "もう踊らなくていい": no more of it
        lead = [_MARKERS[m] for m in dict.fromkeys(markers) if m in _MARKERS]
        out.extend(lead[:1] + words)
    return out
