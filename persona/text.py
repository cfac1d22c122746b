"""Small text helpers for the embedded interpreter: cleaning, tokens, stems, typo distance;
and the one check every JSON boundary (the protocol, card files) makes on decoded text.

Kept separate from the parser so each rule is testable on its own and the parser reads as
a sequence of steps. Pure stdlib; nothing here knows about the vocabulary.
"""

from __future__ import annotations

import re
import unicodedata

__all__ = [
    "COMMON_WORDS",
    "Token",
    "clean_text",
    "holds_lone_surrogate",
    "printable_text",
    "is_shouted",
    "osa_distance",
    "stem",
    "tokenize",
    "transliterate",
    "well_formed",
]

_KEEP_CONTROL = {"\n", "\t"}
#: Zero-width and direction-control characters: dropped (not spaced), so "w\u200bave" is "wave".
_INVISIBLE = frozenset("\u200b\u200c\u200d\u2060\ufeff\u200e\u200f\u202a\u202b\u202c\u202d\u202e"
                       "\u2066\u2067\u2068\u2069\u00ad")
_TOKEN_RE = re.compile(r"[A-Za-z]+(?:'[A-Za-z]+)?|\d+|[,;.!?:]+|[^\sA-Za-z\d]")
#: Irregular forms the suffix stemmer cannot reach.
_IRREGULAR = {
    "sat": "sit",
    "seated": "seat",
    "stood": "stand",
    "thought": "think",
    "went": "go",
    "danced": "danc",
    "waved": "wav",
    "bowed": "bow",
    "laughed": "laugh",
    "smiled": "smil",
}


class Token(str):
    """A lower-case word that remembers how it was written (for SHOUTING detection)."""

    original: str

    def __new__(cls, original: str) -> Token:
        token = super().__new__(cls, original.lower())
        token.original = original
        return token

    @property
    def is_punct(self) -> bool:
        return not (self[:1].isalnum())


def holds_lone_surrogate(obj: object) -> bool:
    """Whether a key or string anywhere in decoded JSON is not encodable as UTF-8. JSON may
    escape half of a UTF-16 pair (`JSON.stringify` of a string cut inside an emoji does);
    no UTF-8 file, log line or reply can hold it."""
    pending = [obj]
    while pending:
        value = pending.pop()
        if isinstance(value, str):
            if not value.isascii():
                try:
                    value.encode("utf-8")
                except UnicodeEncodeError:
                    return True
        elif isinstance(value, dict):
            pending.extend(value.keys())
            pending.extend(value.values())
        elif isinstance(value, list):
            pending.extend(value)
    return False


def transliterate(text: str) -> str:
    """`text` in ASCII letters: as it is when it already is, else transliterated by anyascii
    ("José Ñúñez" → "Jose Nunez", "ミラ" → "mira", "Łukasz" → "Lukasz"). The first use of each
    Unicode block reads anyascii's table for it from disk."""
    if text.isascii():
        return text
    from anyascii import anyascii

    return anyascii(text)


def well_formed(text: str) -> str:
    """`text` with any lone surrogate made U+FFFD (a model's broken `\\ud83d` escape, decoded
    by `json.loads`): what a reply must be before it reaches speech, the history or a file."""
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


#: Characters that act on a terminal or reorder the text around them: C0 and C1 controls (ESC
#: sequences, BEL, NUL...) and the bidi embeddings, overrides and isolates.
_UNPRINTABLE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def printable_text(text: str, *, one_line: bool = False) -> str:
    """`text` without `_UNPRINTABLE` characters (tab and newline kept; with `one_line` they and
    carriage returns become spaces). A card from the web reaches terminals (`persona personas
    list`), logs and pages: its name must not set a window title or clear a screen."""
    if one_line:
        text = text.replace("\r", " ").replace("\n", " ").replace("\t", " ")
    return _UNPRINTABLE.sub("", text)


def clean_text(text: object, limit: int) -> tuple[str, bool]:
    """Text safe to parse: NFKC-normalised, control and format characters replaced by
    spaces, whitespace collapsed, at most `limit` characters. Returns (text, truncated).

    Non-string input becomes "" rather than an exception: the interpreter's contract is to
    answer any input with schema-valid output.
    """
    if not isinstance(text, str):
        return "", False
    truncated = len(text) > limit
    # Normalising a huge string is wasted work; cut first (with slack for NFKC expansion).
    text = unicodedata.normalize("NFKC", text[: limit * 2] if truncated else text)
    chars = [
        ""
        if c in _INVISIBLE
        else " "
        if (unicodedata.category(c) in ("Cc", "Cf", "Cs", "Co", "Cn") and c not in _KEEP_CONTROL)
        else c
        for c in text
    ]
    cleaned = " ".join("".join(chars).split())
    if len(cleaned) > limit:
        cleaned, truncated = cleaned[:limit], True
    return cleaned, truncated


def tokenize(text: str) -> list[Token]:
    """Words (with an inner apostrophe kept: "don't"), numbers and punctuation runs."""
    return [Token(m.group(0).replace("\u2019", "'")) for m in _TOKEN_RE.finditer(text.replace("\u2019", "'"))]


def is_shouted(tokens: list[Token]) -> bool:
    """True when a word of 2+ letters is written in capitals ("WAVE", "do NOT walk").

    A lone "I" or "OK" is not shouting; an all-caps word of three letters or more is.
    """
    for token in tokens:
        word = token.original
        if len(word) >= 3 and word.isalpha() and word.isupper():
            return True
    return False


def stem(word: str) -> str:
    """Crude suffix stemmer that maps a word's inflections onto one key:
    wave/waves/waving/waved → "wav", nod/nodding/nodded → "nod", sit/sitting → "sit".

    Applied to both the vocabulary and the user's words, so the key need not be a word.
    """
    if word in _IRREGULAR:
        return _IRREGULAR[word]
    base = word
    for suffix in ("ing", "ed"):
        if base.endswith(suffix) and len(base) - len(suffix) >= 3:
            base = base[: -len(suffix)]
            break
    else:
        if base.endswith("ies") and len(base) > 4:
            base = base[:-3] + "y"
        elif base.endswith("es") and len(base) > 4 and base[-3] in "sxz":
            base = base[:-2]
        elif base.endswith("s") and len(base) > 3 and not base.endswith(("ss", "us", "is")):
            base = base[:-1]
    if len(base) >= 4 and base[-1] == base[-2] and base[-1] not in "aeiouls":
        base = base[:-1]  # nodd → nod, clapp → clap, sitt → sit
    if len(base) >= 4 and base.endswith("e"):
        base = base[:-1]  # wave → wav, dance → danc, smile → smil
    return base


def osa_distance(a: str, b: str, limit: int = 3) -> int:
    """Optimal string alignment distance (edits plus adjacent transpositions), capped at
    `limit + 1` so typical typo checks stay cheap."""
    if abs(len(a) - len(b)) > limit:
        return limit + 1
    prev2: list[int] = []
    prev = list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        cur = [i] + [0] * len(b)
        row_min = cur[0]
        for j in range(1, len(b) + 1):
            cost = 0 if a[i - 1] == b[j - 1] else 1
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost)
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                cur[j] = min(cur[j], prev2[j - 2] + 1)
            row_min = min(row_min, cur[j])
        if row_min > limit:
            return limit + 1
        prev2, prev = prev, cur
    return prev[-1]


#: Everyday words never "corrected" into a vocabulary word (talk is not walk, ride is not
#: rise). Used on top of the embedding model's word list when that is installed.
COMMON_WORDS = frozenset(
    """
    a about above after again all also am an and any are around as ask at away back bad be
    because been before being best better big bit book both but buy by call came can car care
    case cat change city close cold come cook could cry cup cut day did die do does dog done
    door down draw dream drink drive each eat else end even ever every eye face fact fall far
    fast feel few find fine fire first fish fly food for friend from fun game gave get give go
    god good got great had hair half hand hard has hat have he head hear heart help her here
    hide high him his hold home hot house how hug i if in into is it its job joke just keep
    kick kid kind kiss know lake last late lay lead leave left less let lie life like line
    list little live long look lose lost lot love low made make man many may me mean meet
    might mind more most move much must my name near need never new next nice night no nod
    none nose not note now of off often oh ok okay old on once one only open or other our out
    over own page paint part pay people pick place plan play point post put quit rain ran read
    ready real red rest ride right ring rise road rock room round rule run sad said same save
    saw say sea see seem seen set she shop short shot should show shut side sign sing sit six
    size sky sleep slow so some son song soon sort stay step still stop such sun sure take
    talk tall team tell ten than that the their them then there these they thing think this
    those though time to too took top toy tree true try turn two type under up us use very
    wait wake walk wall want war was watch water way we wear week well went were what when
    where which while who why will win wind wish with word work world would write yard year
    yes yet you young your wane wade wage wire vote sir site mode node note rode wide wise
    clip clay flap slap snap cap lap nap map tap rap sap gap sport spot
    """.split()
)
