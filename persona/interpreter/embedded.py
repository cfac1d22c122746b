"""The `embedded` interpreter: rules plus sentence embeddings, no LLM, no network.

How an utterance is read, step by step:

1. Clean it (`text.clean_text`): control characters out, at most MAX_UTTERANCE_CHARS
   (longer input is cut there and the note says so; the server rejects over-long chat
   with `too_large` before it gets here).
2. Split it into ordered clauses at punctuation and at "and", "then", "but", "before",
   "after" ("sit after you wave" puts the wave first), "instead of".
3. Per clause: strip politeness ("could you please"), find negation ("don't", "never",
   "no dancing", "instead of waving"), "stop X" (→ idle), repeats ("twice"), intensity
   words and SHOUTING, correct typos (edit distance against the vocabulary's own words,
   never "correcting" a real English word), then match the vocabulary's names and
   synonyms (stemmed, longest phrase first).
4. Decide whether the clause asks for something: imperatives and polite requests do,
   statements and questions about the world ("I went for a walk") do not.
5. A request that matched nothing is either a paraphrase (embedding similarity to an
   action's synonyms and description above `map_threshold` → that action) or an
   unsupported request ("do a backflip"): no directive, a note naming the nearest
   supported action, and the card's `cannot` line offering it.
6. Expressions come from explicit words ("smile", "look sad", "dance happily"), otherwise
   from `emotion.infer_expression`.
7. The reply comes from `replies.compose_reply`: the card's lines (chosen by a hash of the
   text, so deterministic), small talk answered from the card, feelings acknowledged, in the
   user's language.

Before step 2, a non-English utterance is glossed into English (`languages.py`: Spanish,
German, French, Portuguese, Italian, Japanese, Chinese) and chat spelling and emoji are
respelled ("u" → you, 👋 → wave). Within step 3, phrases that only look like actions ("bow
tie") are dropped, stop phrasing ("that's enough X", "cut it out", "can we stop with the
bowing") rests, indirect requests ("take a load off", "grab the stool", "you look worn out")
come from a phrase table and the cue patterns of `cues.py`, and faces the user ruled out ("nod
but don't smile") are never shown. In step 4, `cues.py` also marks what is told rather than
asked: an activity as the subject ("dancing is my hobby"), an action in the past tense.

Greetings ("hi", "good morning", "bye") wave, because the core vocabulary lists them as
wave synonyms; a bare "yes"/"no" nods / shakes the head for the same reason.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from ..card import Persona
from ..embedding import load_encoder, switched_off
from ..emotion import infer_expression
from ..schema import ActionDirective, Vocabulary, VocabularyEntry, core_vocabulary
from ..text import COMMON_WORDS, Token, clean_text, is_shouted, osa_distance, stem, tokenize
from . import cues, exclusions, frames
from . import lexicon as lx
from .base import MAX_UTTERANCE_CHARS, Interpretation, InterpretRequest
from .languages import ENGLISH, OTHER, detect_language, gloss
from .replies import ReplyContext, compose_reply
from .structured import MAX_ACTIONS

if TYPE_CHECKING:
    from ..embedding import SentenceEncoder

__all__ = ["EmbeddedInterpreter"]

BASE_INTENSITY = 0.5
HIGH = 0.85
LOW = 0.25


@dataclass(frozen=True)
class _Phrase:
    keys: tuple[str, ...]
    name: str
    kind: str  # "action" | "expression"
    first_word: str


@dataclass
class _Clause:
    words: list[Token]
    exclaims: int = 0
    reorder: bool = False  # came after "after": goes before the previous clause
    continuation: bool = False
    lead_before: bool = False  # opened the utterance with "before": goes after the next clause
    opens: bool = False  # the utterance's first clause
    last: bool = False  # ended with "last" ("sit down last"): goes after every other clause
    first: bool = False  # "wave to start", "start with a wave": goes before every other clause
    shouted: bool = False  # glossed from a message with a word in capitals ("¡¡BAILA!!"): the gloss is lower case


@dataclass
class _Reading:
    """What one clause asks for."""

    actions: list[str] = field(default_factory=list)
    mentioned: list[str] = field(default_factory=list)
    expression: str | None = None
    negated: bool = False
    negated_names: list[str] = field(default_factory=list)
    stop: bool = False
    request: bool = False
    greeting: str | None = None  # "greeting" | "farewell"
    thanks: bool = False
    unsupported: str | None = None
    suggestion: str | None = None
    similarity: float | None = None
    anaphora: bool = False
    intensity: float = BASE_INTENSITY
    repeat: int = 1
    disallowed: list[str] = field(default_factory=list)
    paraphrase: bool = False
    ruled_out_faces: list[str] = field(default_factory=list)  # "nod but don't smile"
    direction: str | None = None  # a bare "left"/"right" that repeats the previous turn
    indirect: bool = False  # asked for without naming it ("take a load off")
    loose_move: bool = False  # "walk" read from a bare "move" (a dance when music is about)
    small_talk: bool = False
    go: str | None = None  # "go for it" / "go wild": a sit or a dance when a seat or music was named
    attention: bool = False  # a bare "hey" that only calls for attention
    emoji: bool = False  # read from an emoji ("👏")


def _phrase_keys(words: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    return tuple(stem(w) for w in words if w not in lx.FILLER)


def _words_of(text: str) -> list[str]:
    return [t for t in tokenize(text.replace("_", " ")) if not t.is_punct]


class _Index:
    """Everything precomputed for one persona's vocabulary (built once, cached)."""

    def __init__(self, persona: Persona, encoder: SentenceEncoder | None):
        self.vocabulary: Vocabulary = persona.vocabulary()
        # Matching uses every known action, so a disallowed one can be refused by name.
        full = core_vocabulary().extended(
            actions=persona.extra_actions, expressions=persona.extra_expressions
        )
        self.allowed = set(self.vocabulary.action_names)
        self.expressions = set(self.vocabulary.expression_names)
        phrases: dict[tuple[str, ...], _Phrase] = {}
        self.vocab_words: set[str] = set()

        def add(entries: tuple[VocabularyEntry, ...], extra: dict[str, tuple[str, ...]], kind: str) -> None:
            for entry in entries:
                texts = [entry.name.replace("_", " "), *entry.synonyms, *extra.get(entry.name, ())]
                for text in texts:
                    words = [w for w in _words_of(text)]
                    keys = _phrase_keys(words)
                    if not keys or keys in phrases:
                        continue
                    phrases[keys] = _Phrase(keys, entry.name, kind, words[0] if words else "")
                    self.vocab_words.update(w for w in words if w.isalpha() and len(w) >= 3)

        add(full.actions, lx.EXTRA_ACTION_PHRASES, "action")
        moods: dict[str, tuple[str, ...]] = {
            name: (*lx.EXTRA_EXPRESSION_PHRASES.get(name, ()), *(w.replace("-", " ") for w in lx.MOOD_WORDS.get(name, "").split()))
            for name in {*lx.EXTRA_EXPRESSION_PHRASES, *lx.MOOD_WORDS}
        }
        add(self.vocabulary.expressions, moods, "expression")
        self.vocab_words.update(w for w in lx.EXPRESSION_ADVERBS)
        self._by_length: dict[int, list[str]] = {}
        for w in sorted(self.vocab_words):
            self._by_length.setdefault(len(w), []).append(w)
        self.corrections: dict[tuple[str, bool], str] = {}
        self.phrases = sorted(phrases.values(), key=lambda p: (-len(p.keys), p.kind != "action"))
        self.by_first: dict[str, list[_Phrase]] = {}
        for phrase in self.phrases:
            self.by_first.setdefault(phrase.keys[0], []).append(phrase)
        self.key_set = {k for p in self.phrases for k in p.keys}
        self.face_keys = {p.keys[0] for p in self.phrases if p.kind == "expression" and len(p.keys) == 1}
        self.encoder = encoder
        self.known_words = set(COMMON_WORDS) | _encoder_words(encoder)
        # Words that make a Latin-script utterance English (language detection).
        self.english_words = frozenset(
            self.vocab_words | set(COMMON_WORDS) | lx.REQUEST_VERBS | lx.CHAT_VERBS | lx.VERY
            | {w for seq in lx.LEADING_FILLERS for w in seq}
        )
        # Multi-word phrases written as one word ("sitdown", "lookaround").
        self.joined: dict[str, str] = {}
        for phrase_text in [*(t for e in full.actions for t in (e.name.replace("_", " "), *e.synonyms)),
                            *(t for e in self.vocabulary.expressions for t in e.synonyms)]:
            words = phrase_text.split()
            if 2 <= len(words) <= 3:
                self.joined.setdefault("".join(words), phrase_text)
        self.action_matrix: np.ndarray | None = None
        self.action_rows: list[str] = []
        self.indirect_matrix: np.ndarray | None = None
        self.indirect_rows: list[str] = []
        if encoder is not None:
            rows, texts = [], []
            for entry in self.vocabulary.actions:
                if entry.name == "idle":
                    continue
                for text in (
                    entry.description,
                    entry.name.replace("_", " "),
                    *entry.synonyms,
                    *lx.EXTRA_ACTION_PHRASES.get(entry.name, ()),
                ):
                    rows.append(entry.name)
                    texts.append(text)
            self.action_rows = rows
            self.action_matrix = encoder.encode_table(texts)
            pairs = [(" ".join(k), v) for k, v in lx.INDIRECT.items()]
            pairs += [(p, a) for a, phrases in lx.INDIRECT_PROTOTYPES.items() for p in phrases]
            pairs = [(p, a) for p, a in pairs if a in self.allowed]
            if pairs:
                self.indirect_rows = [a for _, a in pairs]
                self.indirect_matrix = encoder.encode_table([p for p, _ in pairs])

    def vocab_by_length(self, length: int, limit: int) -> list[str]:
        """Vocabulary words whose length is within `limit` of `length`, in sorted order."""
        words: list[str] = []
        for n in range(length - limit, length + limit + 1):
            words.extend(self._by_length.get(n, ()))
        return sorted(words)

    def indirect_action(self, text: str) -> tuple[str | None, float]:
        """The action an indirect phrasing most resembles, and the cosine."""
        if self.encoder is None or self.indirect_matrix is None:
            return None, 0.0
        sims = self.indirect_matrix @ self.encoder.encode_one(text[:200])
        best = int(np.argmax(sims))
        return self.indirect_rows[best], float(sims[best])

    def nearest_action(self, text: str) -> tuple[str | None, float]:
        if self.encoder is None or self.action_matrix is None or not self.action_rows:
            return None, 0.0
        sims = self.action_matrix @ self.encoder.encode_one(text[:200])
        best = int(np.argmax(sims))
        return self.action_rows[best], float(sims[best])


_INDEXES: dict[tuple[int, str], _Index] = {}
_INDEX_LOCK = threading.Lock()
_MAX_INDEXES = 64
_WORDS_CACHE: dict[int, set[str]] = {}


def _encoder_words(encoder: SentenceEncoder | None) -> set[str]:
    """Whole words of the embedding model's WordPiece vocabulary: a 20k-word English list
    that keeps the typo corrector away from real words."""
    if encoder is None:
        return set()
    key = id(encoder)
    if key not in _WORDS_CACHE:
        path = encoder.model_dir / "vocab.txt"
        words: set[str] = set()
        if path.is_file():
            for line in path.read_text(encoding="utf-8").splitlines():
                if line.isalpha() and line.islower() and len(line) >= 2:
                    words.add(line)
        _WORDS_CACHE[key] = words
    return _WORDS_CACHE[key]


def _dropped_letter(word: str, candidate: str) -> bool:
    """`word` is `candidate` with one inner or final letter left out ("hed" ← "head");
    the first letter is kept, as typists rarely drop it."""
    return word[0] == candidate[0] and any(candidate[:i] + candidate[i + 1 :] == word for i in range(1, len(candidate)))


def _safe_format(template: str, **values: str) -> str:
    """Fill the known placeholders ({action}, {request}, {alternative}) of a card's line.

    Plain replacement rather than `str.format`: card lines come from user files, and a
    stray brace or an unknown {name} must not break the reply.
    """
    for name, value in values.items():
        template = template.replace("{" + name + "}", value)
    return template


class EmbeddedInterpreter:
    """Rule-based parser with embedding similarity (see the module docstring)."""

    name = "embedded"

    def __init__(
        self,
        *,
        use_embedding: bool | str | None = None,
        model_dir: str | None = None,
        map_threshold: float | str = 0.75,
        suggest_threshold: float | str = 0.25,
        indirect_by_embedding: bool | str = False,
    ) -> None:
        """`use_embedding=False` (or `PERSONA_EMBEDDING=off`) runs without the model:
        no paraphrase mapping, no nearest-action suggestions, lexical emotion only.

        Options may come as text (`persona interpret --option map_threshold=0.6`)."""
        if isinstance(use_embedding, str):
            use_embedding = not switched_off(use_embedding)
        if use_embedding is False:
            self.encoder = None
        else:
            self.encoder = load_encoder(model_dir, disabled=None if use_embedding is None else False)
        self.map_threshold = float(map_threshold)
        # Off by default: on the held-out split holdout3 it found one more indirect request
        # and acted on two more statements than the phrase table alone (docs/interpreter.md).
        self.indirect_by_embedding = (
            not switched_off(indirect_by_embedding)
            if isinstance(indirect_by_embedding, str)
            else bool(indirect_by_embedding)
        )
        self.suggest_threshold = float(suggest_threshold)

    # -- public interface -------------------------------------------------------------

    def interpret(self, request: InterpretRequest) -> Interpretation:
        persona = request.persona
        index = self._index(persona)
        text, truncated = clean_text(request.text, MAX_UTTERANCE_CHARS)
        notes: list[str] = []
        if truncated:
            notes.append(f"input truncated to {MAX_UTTERANCE_CHARS} characters")
        name_words = frozenset(w.lower() for w in _words_of(persona.name))
        language = detect_language(text[:400], index.english_words) if text else ENGLISH
        parse_text = text
        if language != ENGLISH:
            # English words the glossary does not know pass through: "bitte setz dich and then
            # wave" asks for both (they were dropped with every other unknown word)
            parse_text = gloss(text, language, name_words | index.english_words).text if language != OTHER else ""
            notes.append(f"read as {language}" + (f": '{parse_text[:200]}'" if parse_text else ""))
        parse_text = frames.rewrite(parse_text)
        clauses = _split(tokenize(_respell(parse_text, index)), persona)
        if clauses:
            clauses[0].opens = True
        if language != ENGLISH and is_shouted(tokenize(text)):
            for clause in clauses:
                clause.shouted = True
        for before, clause in zip(clauses, clauses[1:], strict=False):
            if (
                clause.continuation and len(clause.words) == 1 and stem(clause.words[0]) in index.face_keys
                and before.words and before.words[0] in lx.LOOK_WORDS
            ):
                clause.words.insert(0, before.words[0])  # "go all red and bashful": "go bashful"
        whole = len([c for c in clauses if c.words]) == 1
        readings: list[_Reading] = []
        prev_request = False
        for clause in clauses:
            reading = self._read(clause, index, persona, whole, prev_request)
            prev_request = reading.request or (prev_request and clause.continuation)
            readings.append(reading)
        for before_clause, before, clause, r in zip(clauses, readings, clauses[1:], readings[1:], strict=False):
            looked = before.ruled_out_faces or any(w in _LOOK_FORMS for w in before_clause.words)
            if before.negated and looked and clause.continuation and not r.actions:
                # "dance without looking so serious and sad": the face joined on is ruled out too
                rest = [w for w in clause.words if w not in lx.FILLER and w not in _EXCLUSION_GLUE
                        and w not in lx.VERY and w not in ("or", "nor")]
                faces = self._faces_in(rest, index)
                if faces and len(rest) <= 2:
                    r.expression, r.request = None, False
                    r.ruled_out_faces += faces
        _repeat_turns(readings, index)
        _degree_afterwards(clauses, readings, index)
        for before, r in zip(readings, readings[1:], strict=False):
            if before.actions[-1:] == ["sit"] and r.actions == ["idle"] and not r.stop and not r.negated:
                r.actions = []  # "sit down and relax", "座って休んで": the rest is how to sit
        for r in readings:
            if not r.stop and "sit" in r.actions and r.actions[r.actions.index("sit") + 1 :][:1] == ["idle"]:
                r.actions.remove("idle")  # one clause: "坐下休息" glossed "sit down relax"
        for before, clause, r in zip(readings, clauses[1:], readings[1:], strict=False):
            if before.stop and r.actions and not r.stop and clause.words[:1] and clause.words[0] in _STOP_OBJECT:
                r.actions, r.request = [], False  # "ça suffit, les applaudissements": what stops
        for before, r in zip(readings, readings[1:], strict=False):
            if r.emoji and r.actions and before.actions[-1:] == r.actions[:1]:
                r.actions = []  # "bow pls 🙇", "lemme see u clap 👏": the emoji restates the request
            elif before.emoji and before.actions and r.actions[:1] == before.actions[-1:] and not r.stop:
                before.actions = []  # "👋👋 wave back!!": the emoji announces the request
        music = cues.music_context(parse_text)
        if "dance" in index.allowed and music:
            for r in readings:  # "the beat dropped, move those feet": a dance, not a walk
                if r.loose_move and r.actions == ["walk"]:
                    r.actions = r.mentioned = ["dance"]
        acting = any(r.actions or r.disallowed for r in readings)
        for r in readings:
            # "the DJ is playing your favourite, go wild"; "that armchair looks comfy, go for it";
            # beside another request ("go on, get up off that couch") it only urges that one on.
            go = None if acting else "dance" if r.go and music else "sit" if r.go == "ahead" and cues.seat_context(parse_text) else None
            if go:
                r.request = r.indirect = True
                r.mentioned = [go]
                if go in index.allowed:
                    r.actions = [go]
                else:
                    r.disallowed = [go]
        for r, following in zip(readings, readings[1:], strict=False):
            if (r.indirect or r.paraphrase) and r.actions and following.actions[:1] == r.actions[-1:]:
                r.actions = []  # "pull up a chair and sit": one sit; "turn and face your right": one turn
                r.paraphrase = False
        acting_before: _Reading | None = None
        for r in readings:
            if r.indirect and r.actions and acting_before is not None and not acting_before.stop and (
                acting_before.actions[-1:] == r.actions[:1]
            ):
                r.actions = []  # "rise and shine, sleepyhead, up you get": the idiom restates the stand
            if r.actions:
                acting_before = r
        # "sit down after you wave": the clause after "after" happens first; "before you
        # sit, wave": the clause that opened with "before" happens after the next one.
        ordered: list[_Reading] = []
        for clause, reading in zip(clauses, readings, strict=True):
            if clause.reorder and ordered:
                ordered.insert(len(ordered) - 1, reading)
            else:
                ordered.append(reading)
        if clauses and clauses[0].lead_before and len(ordered) > 1:
            ordered.insert(1, ordered.pop(0))
        last = [r for c, r in zip(clauses, readings, strict=True) if c.last]
        if last and len(ordered) > len(last):  # "sit down last; first dance, then clap"
            ordered = [r for r in ordered if all(r is not x for x in last)] + last
        first = [r for c, r in zip(clauses, readings, strict=True) if c.first]
        if first and len(ordered) > len(first):  # "clap at the end, but wave to start"
            ordered = first + [r for r in ordered if all(r is not x for x in first)]
        if self.indirect_by_embedding and language == ENGLISH and not any(_asked_anything(r) for r in ordered):
            ordered.extend(self._indirect_by_embedding(text, index, notes))
        return self._compose(text, ordered, index, request, notes, language, parse_text)

    def prepare(self, persona: Persona) -> None:
        """Build the persona's vocabulary index now (about a second with the embedding
        model) rather than on its first utterance; the server calls this on `hello`."""
        self._index(persona)

    def stream_reply(self, request: InterpretRequest) -> Iterator[str | Interpretation]:
        result = self.interpret(request)
        if result.reply:
            yield result.reply
        yield result

    # -- steps ------------------------------------------------------------------------

    def _index(self, persona: Persona) -> _Index:
        """The persona's vocabulary index, shared by every interpreter using the same
        encoder (vocabulary embeddings are computed once per vocabulary)."""
        key = (
            id(self.encoder),
            persona.model_dump_json(include={"allowed_actions", "extra_actions", "extra_expressions"}),
        )
        with _INDEX_LOCK:
            index = _INDEXES.get(key)
            if index is None:
                if len(_INDEXES) >= _MAX_INDEXES:
                    _INDEXES.pop(next(iter(_INDEXES)))
                index = _INDEXES[key] = _Index(persona, self.encoder)
            return index

    def _indirect_by_embedding(self, text: str, index: _Index, notes: list[str]) -> list[_Reading]:
        """An utterance that asked for nothing, read as an indirect request when it is close
        to one ("your feet must be sore, grab a chair"); never a question."""
        words = [w for w in tokenize(text) if not w.is_punct]
        if len(words) < 3 or words[0] in lx.QUESTION_WORDS or text.rstrip().endswith("?"):
            return []  # indirect phrasings take a few words; questions are never requests
        action, similarity = index.indirect_action(text)
        if action is None or similarity < lx.INDIRECT_THRESHOLD:
            return []
        notes.append(f"read '{action}' from an indirect request (similarity {similarity:.2f})")
        return [_Reading(actions=[action], mentioned=[action], request=True, indirect=True)]

    def _faces_in(self, words: list[Token], index: _Index) -> list[str]:
        """The faces `words` name: the vocabulary's expressions, manner adverbs ("angrily") and
        face nouns it has no synonym for ("laughter", "smirk")."""
        matches, _ = self._match(words, index, False, aggressive=False)
        faces = [p.name for _, p in matches if p.kind == "expression"]
        for w in words:
            faces.extend(exclusions.FACE_NOUNS.get(w, ()))
            adverb = lx.EXPRESSION_ADVERBS.get(w)
            if adverb:
                faces.append(adverb)
        return [f for i, f in enumerate(faces) if f in index.expressions and f not in faces[:i]]

    def _correct(self, word: str, index: _Index, aggressive: bool) -> str:
        """The vocabulary word `word` is a typo of, or `word` itself (cached per index)."""
        if not word.isalpha() or len(word) < 3 or word in lx.FILLER or word in _DEGREE_KEEP:
            return word  # "look hella excited": a degree word is never a typo of a vocabulary word
        key = (str(word), aggressive)
        hit = index.corrections.get(key)
        if hit is None:
            hit = self._find_correction(str(word), index, aggressive)
            if len(index.corrections) > 20_000:
                index.corrections.clear()
            index.corrections[key] = hit
        return hit

    @staticmethod
    def _find_correction(word: str, index: _Index, aggressive: bool) -> str:
        if len(word) > 20 or stem(word) in index.key_set:
            return word
        if word in COMMON_WORDS or (word in index.known_words and (not aggressive or len(word) > 4)):
            return word  # a known word of five letters or more is meant ("movie" is no "move")
        limit = 1 if len(word) < 7 else 2
        best, best_d = word, limit + 1
        for candidate in index.vocab_by_length(len(word), limit):
            d = osa_distance(word, candidate, limit)
            if len(word) == 3 and d == 1 and sorted(word) != sorted(candidate) and not (
                len(candidate) == 4 and word not in index.known_words and _dropped_letter(word, candidate)
            ):
                # three letters: only a swap ("sti" → "sit"), or a letter dropped from a
                # four-letter word when the three are no English word ("wve", "hed")
                continue
            if d < best_d or (d == best_d and sorted(word) == sorted(candidate) != sorted(best)):
                best, best_d = candidate, d  # on a tie a swap beats a changed letter ("calp" → clap, not calm)
        return best if best_d <= limit else word

    def _read(
        self, clause: _Clause, index: _Index, persona: Persona, whole: bool, prev_request: bool
    ) -> _Reading:
        r = _Reading()
        words = list(clause.words)
        shouted = clause.shouted or is_shouted(words)
        name_words = {w.lower() for w in _words_of(persona.name)}
        while words and words[0] in name_words:
            words = words[1:]
        if words[:1] == [_EMOJI_MARK]:
            r.emoji, words = True, words[1:]
        # Indirect cue patterns read the words before not-actions are dropped ("hit the dance floor").
        raw = _strip_fillers(words)[1]
        words = _drop_not_actions(words)
        # After "what if / suppose / if you", a past tense the rewrite left alone is a condition
        # about what the listener did ("suppose you sat in traffic for hours, how would you feel?").
        framed = bool(words) and words[0] in _HYPOTHESIS_LEADS
        polite, words = _strip_fillers(words)
        if len(words) > 2 and (words[0],) in _ATTENTION and (
            _strip_stop(words[1:])[0] or cues.stop_phrasing(words[1:]) is not None
        ):
            words = words[1:]  # "yo, quit dancing": the call for attention only opens the stop
        stop, words = _strip_stop(words)
        if not stop:
            n = cues.stop_phrasing(words)
            if n is not None:
                stop, words = True, words[n:]
        if stop:
            # "that's enough waving", "cut it out", "no more clapping": rest, whatever was named.
            r.stop = r.request = True
            r.actions = ["idle"] if "idle" in index.allowed else []
            rest, _ = self._match(words, index, whole, aggressive=False) if words else ([], [])
            r.ruled_out_faces = [p.name for _, p in rest if p.kind == "expression"]
            return r
        excluded = exclusions.face_exclusion(words)
        if excluded is not None:
            start, face_start, end = excluded
            faces = self._faces_in(words[face_start:end], index)
            if faces:
                # "bow, and wipe that excited look off your face", "a nod, but not an angry one":
                # the face is ruled out, and the rest of the clause is read as it stands.
                r.ruled_out_faces = faces
                words = words[:start] + words[end:]
                if not [w for w in words if w not in lx.FILLER and w not in _EXCLUSION_GLUE]:
                    return r
        words = _drop_adjuncts(words)
        negated, words = _strip_negation(words)
        if negated and words and words[0] in ("keep", "continue", "carry") and len(words) > 1:
            # "don't keep clapping", "no need to keep nodding": stop what is going on.
            r.stop = r.request = True
            r.actions = ["idle"] if "idle" in index.allowed else []
            return r
        if negated:
            r.negated = True
            more_polite, words = _strip_fillers(words)
            polite = polite or more_polite
        if (clause.continuation or clause.lead_before) and words and words[0] in ("you", "u") and len(words) > 1:
            words = words[1:]
        if (clause.continuation or clause.lead_before) and len(words) > 1 and words[0] in ("have", "you've"):
            words = words[1:]  # "after you have waved, sit": the wave is asked for too
        if clause.lead_before:
            polite = True  # "before you sit, ...": the sit is asked for too
        if not words:
            return r
        content = [w for w in words if w not in lx.GREETING_TAIL and w not in name_words]
        if not r.negated and tuple(content) in lx.GREETINGS:
            r.greeting = "greeting"
            r.attention = tuple(content) in _ATTENTION
            return r
        if not r.negated and tuple(content) in lx.FAREWELLS:
            r.greeting = "farewell"
            return r
        if words[0] in lx.THANKS and "with" not in words[1:] and cues.indirect_action(raw) is None:
            # "thank the crowd with a bow", "thank the audience properly" ask for a bow
            r.thanks = True
            return r
        if not r.negated:
            r.go = cues.go_ahead(words)
            if r.go:
                return r  # resolved by the whole utterance (a seat or music named elsewhere)
        direction = [w for w in words if w not in lx.DIRECTION_FILLER]
        if not r.negated and len(direction) == 1 and direction[0] in lx.DIRECTIONS:
            r.direction = lx.DIRECTIONS[direction[0]]  # "... then left": resolved by _repeat_turns
        indirect = None
        if not r.negated and not cues.is_question(words) and not cues.is_narrated(words):
            indirect = _find_indirect(words) or cues.indirect_action(raw)
        if indirect is not None:
            r.request = r.indirect = True
            words, r.repeat = _take_repeat(words)
            r.intensity = _intensity(words, shouted, clause.exclaims)
            if indirect in index.allowed:
                r.actions = [indirect]
            else:
                r.disallowed = [indirect]
            r.mentioned.append(indirect)
            return r
        if len(words) > 1 and words[0] in lx.VOCATIVES and (
            stem(words[1]) in index.key_set or words[1] in lx.REQUEST_VERBS or words[1] in ("please", "now")
        ):
            words = words[1:]  # "everybody clap": the group is addressed, the clap is asked for
        if (
            len(words) > 1 and words[0] in _SOFT_LEADS and words[1] not in _SUBJECT_WORDS
            and (stem(words[1]) in index.key_set or words[1] in lx.REQUEST_VERBS)
            and not any(w in _FINITE_AUX for w in words[2:])
        ):
            words, polite = words[1:], True  # "maybe sit down?", "perhaps take a moment to ponder it": softened asks
        # Repeats and intensity.
        words, r.repeat = _take_repeat(words)
        r.intensity = _intensity(words, shouted, clause.exclaims)
        words, superlative = _superlatives(words, index)
        if superlative:  # "your grumpiest face": that face, at its strongest
            r.intensity = max(r.intensity, HIGH)
        first = words[0] if words else ""
        effort = cues.best_effort(words)  # "the happiest face you can make": asked, at full strength
        if effort:
            r.intensity = max(r.intensity, HIGH)
        starts_statement = not effort and (
            first in lx.NON_REQUEST_STARTERS or (not polite and cues.gerund_subject(words))
        )
        if first == "do" and len(words) > 1 and words[1] not in ("you", "u", "we", "they", "i", "he", "she"):
            starts_statement = False
        if (words[:1] == ["if"] or words[:2] == ["mind", "if"]) and any(w in ("i", "we", "me") for w in words[1:3]):
            starts_statement, polite = True, False  # "mind if I think out loud?": the speaker's own doing
        if cues.asks_about_others(words) or (
            len(words) > 2 and words[0] == "let" and words[1] in ("me", "us") and words[2] not in _LET_ME_WATCH
        ):
            # "can cats be trained to sit?"; "let me think about it": the speaker's own doing
            starts_statement, polite = True, False
        if first in lx.OPINION_VERBS and len(words) > 1 and words[1] in lx.OPINION_OBJECTS:
            starts_statement = True  # "love your dancing": a compliment, not a request
        if first == "have" and len(words) > 1 and words[1] in ("a", "an", "another", "some", "one", "your", "my"):
            starts_statement = False  # "have a ponder", "have another go": an imperative
        r.request = polite or (not starts_statement) or (clause.continuation and prev_request)
        if not words:
            return r
        matches, keys = self._match(words, index, whole, aggressive=False)
        if r.request and not matches:
            matches, keys = self._match(words, index, whole, aggressive=True)
        if not r.request and matches and len(matches) == 1 and _only_phrase(matches[0][1].keys, keys):
            # the whole clause is one vocabulary phrase ("who knows?", "a small smile please")
            r.request = True
        news_goes_on = clause.continuation and not prev_request and not clause.opens
        if r.request and (not polite or framed) and (not clause.continuation or news_goes_on) and any(
            p.kind == "action" and cues.past_tense(words[pos]) and not (pos and words[pos - 1] in _PERFECT)
            for pos, p in matches
        ):
            # "up until now I never danced": told about, not asked for ("clap once you've stood
            # up", "sit when you have clapped": a perfect inside a request stays one; "he shrugged
            # and walked away": a clause that continues news is news too).
            r.request = False
        if r.request and polite and any(
            p.kind == "action" and cues.past_tense(words[pos]) and any(w in _TOLD_SUBJECTS for w in words[max(0, pos - 3) : pos])
            for pos, p in matches
        ):
            r.request = False  # "can you believe he bowed to the cat?": someone's past, asked about
        corrected = [self._correct(w, index, aggressive=False) for w in words]
        if "while" in words or "whilst" in words:
            # "pace about while you think": what goes on meanwhile is not a second action.
            cut = next(i for i, w in enumerate(words) if w in ("while", "whilst"))
            if any(pos < cut and p.kind == "action" for pos, p in matches):
                matches = [(pos, p) for pos, p in matches if pos < cut or p.kind != "action"]
        for pos, phrase in matches:
            if phrase.kind == "action":
                r.loose_move = r.loose_move or phrase.keys == _MOVE_KEYS
                r.mentioned.append(phrase.name)
                if phrase.name in index.allowed:
                    r.actions.append(phrase.name)
                else:
                    r.disallowed.append(phrase.name)
            elif phrase.name in index.expressions and r.expression is None:
                if _expression_asked(phrase, pos, corrected):
                    r.expression = phrase.name
        if r.expression is None:
            for w in corrected:
                name = lx.EXPRESSION_ADVERBS.get(w)
                if name in index.expressions:
                    r.expression = name
                    break
        if r.negated:
            r.negated_names = r.actions + r.disallowed + ([r.expression] if r.expression else [])
            # every face the negated clause names ("without looking bored or angry")
            r.ruled_out_faces += [f for f in [r.expression, *self._faces_in(words, index)] if f]
            r.actions, r.disallowed, r.expression = [], [], None
            return r
        if not r.request:
            r.actions, r.disallowed, r.expression = [], [], None
            return r
        if r.stop:
            r.actions = ["idle"] if "idle" in index.allowed else []
            return r
        if r.actions or r.disallowed or r.expression:
            return r
        # A request that matched nothing: "do it again", a paraphrase, or unsupported.
        if first == "do" and len(words) > 1 and words[1] in lx.ANAPHORA or "again" in words[-1:]:
            r.anaphora = True
            return r
        verb = corrected[0] if corrected else ""
        if verb in lx.CHAT_VERBS or (verb not in lx.REQUEST_VERBS and not polite):
            r.request = False
            return r
        request_text = " ".join(w.original for w in words)
        nearest, similarity = index.nearest_action(request_text)
        if nearest is not None and similarity >= self.map_threshold and verb not in _OTHER_POSTURES:
            r.actions = [nearest]
            r.paraphrase = True
            r.similarity = similarity
            return r
        r.unsupported = request_text
        r.similarity = similarity if nearest is not None else None
        if nearest is not None and similarity >= self.suggest_threshold:
            r.suggestion = nearest
        return r

    def _match(
        self, words: list[Token], index: _Index, whole: bool, aggressive: bool
    ) -> tuple[list[tuple[int, _Phrase]], list[str]]:
        """Greedy longest-phrase matches over the clause's stemmed keys, in order."""
        keys: list[str] = []
        positions: list[int] = []
        for i, w in enumerate(words):
            c = self._correct(w, index, aggressive)
            if c in lx.FILLER or not c[:1].isalnum():
                continue
            keys.append(stem(c))
            positions.append(i)
        found: list[tuple[int, _Phrase]] = []
        i = 0
        while i < len(keys):
            hit = None
            for phrase in index.by_first.get(keys[i], ()):
                n = len(phrase.keys)
                if tuple(keys[i : i + n]) == phrase.keys:
                    if n == 1 and phrase.first_word in lx.STANDALONE_ONLY and not (whole and len(keys) == 1) and not (
                        phrase.first_word in _FACE_ADJECTIVES and i and keys[i - 1] in _LOOK_STEMS
                    ):
                        continue  # "cross" alone is no face; "be cross with me", "look cross" are
                    hit = phrase
                    break
            if hit is None:
                i += 1
                continue
            found.append((positions[i], hit))
            i += len(hit.keys)
        # Loose phrases ("show me", "move") give way to anything else in the clause.
        if len(found) > 1:
            weak_keys = {_phrase_keys(list(p)) for p in lx.WEAK_PHRASES}
            weak = [m for m in found if m[1].kind == "action" and m[1].keys in weak_keys]
            if len(weak) < len(found):
                found = [m for m in found if m not in weak]
        # Two phrasings of one action side by side ("explore your surroundings") are one.
        deduped: list[tuple[int, _Phrase]] = []
        for m in found:
            if deduped and deduped[-1][1].kind == m[1].kind == "action" and deduped[-1][1].name == m[1].name:
                continue
            deduped.append(m)
        return deduped, keys

    def _compose(
        self,
        text: str,
        readings: list[_Reading],
        index: _Index,
        request: InterpretRequest,
        notes: list[str],
        language: str = ENGLISH,
        parse_text: str = "",
    ) -> Interpretation:
        persona = request.persona
        vocab = index.vocabulary
        plan: list[dict] = []  # {"action", "expression"|None, "intensity"}
        pending_expression: str | None = None
        pending_intensity = BASE_INTENSITY
        ruled_out = {face for r in readings for face in r.ruled_out_faces}
        greeted: str | None = None
        unsupported: list[_Reading] = []
        refused: list[str] = []
        negated: list[str] = []
        thanks = False
        mentioned: list[str] = []

        def add(action: str, expression: str | None, intensity: float) -> None:
            nonlocal pending_expression
            if expression is None and pending_expression is not None:
                expression, pending_expression = pending_expression, None
            plan.append({"action": action, "expression": expression, "intensity": intensity})

        stopped = False
        for r in readings:
            if r.stop and stopped and plan and plan[-1]["action"] == "idle":
                continue  # "alright, that's it, no more bowing": one stop
            stopped = stopped or r.stop
            if r.greeting:
                if r.attention and any(x.stop for x in readings):
                    continue  # "hey, stop it": a call for attention, not a hello
                if greeted is None and "wave" in index.allowed:
                    add("wave", None, r.intensity)
                greeted = greeted or r.greeting
                continue
            thanks = thanks or r.thanks
            if r.negated:
                negated.extend(r.negated_names)
                continue
            refused.extend(r.disallowed)
            if r.anaphora:
                last = (mentioned or [a for a in [request.state.action] if a != "idle"])[-1:]
                if last and last[0] in index.allowed:
                    add(last[0], r.expression, r.intensity)
                continue
            mentioned.extend(r.mentioned)
            if r.unsupported is not None:
                unsupported.append(r)
                continue
            if r.paraphrase and r.similarity is not None:
                notes.append(
                    f"read '{' '.join(r.actions)}' from a paraphrase (similarity {r.similarity:.2f})"
                )
            for action in r.actions:
                for _ in range(min(r.repeat, lx.MAX_REPEAT)):
                    add(action, r.expression, r.intensity)
            if r.expression and not r.actions:
                if plan and plan[-1]["expression"] is None:
                    plan[-1]["expression"] = r.expression
                else:
                    pending_expression, pending_intensity = r.expression, r.intensity
        if pending_expression is not None:
            plan.append({"action": "idle", "expression": pending_expression, "intensity": pending_intensity})
        # "freeze, right there, don't budge": one rest, however many clauses asked for it.
        plan = [p for i, p in enumerate(plan) if not (i and p["action"] == "idle" == plan[i - 1]["action"]
                                                      and p["expression"] == plan[i - 1]["expression"])]
        if len(plan) > MAX_ACTIONS:
            notes.append(f"kept the first {MAX_ACTIONS} of {len(plan)} actions")
            plan = plan[:MAX_ACTIONS]

        for name in negated:
            notes.append(f"not doing '{name}': the request was negated")
        for name in refused:
            notes.append(f"'{name}' is not among this persona's allowed actions")
        for r in unsupported:
            hint = (
                f"; nearest supported: {r.suggestion} (similarity {r.similarity:.2f})" if r.suggestion else ""
            )
            notes.append(f"no supported action for '{r.unsupported}'{hint}")

        if greeted == "greeting" and any(turn.role == "user" for turn in request.history):
            # The user has talked before (this conversation, or a resumed one); the persona's
            # own opening line (the CLI puts it in the history) does not count.
            greeted = "greeting_again"
        reply = compose_reply(
            ReplyContext(
                text=text,
                gloss=parse_text,
                language=language,
                persona=persona,
                history=request.history,
                acted=[p["action"] if p["action"] != "idle" or stopped else f"face:{p['expression']}" for p in plan],
                greeted=greeted,
                unsupported=[(r.unsupported or "", r.suggestion) for r in unsupported],
                refused=refused,
                negated=negated,
                thanks=thanks,
                stopped=stopped,
            )
        )
        acted = [p["action"] for p in plan]
        explicit = any(p["expression"] for p in plan)
        if not explicit:
            # The embedding fallback only for small talk: a planned action has its own default face.
            small_talk = not plan and not unsupported
            guess = infer_expression(
                text if language == ENGLISH else parse_text, reply if language == ENGLISH else "", acted, vocab,
                self.encoder if small_talk and language == ENGLISH else None,
            )
            face = "neutral" if guess.expression in ruled_out else guess.expression
            if stopped and not ruled_out:
                face = "neutral"
            for p in plan:
                p["expression"] = face
            if not plan and face != "neutral":
                plan.append({"action": "idle", "expression": face, "intensity": BASE_INTENSITY})
        else:
            for p in plan:
                # a face ruled out anywhere in the utterance is never shown ("smile-free nod")
                p["expression"] = p["expression"] if p["expression"] and p["expression"] not in ruled_out else "neutral"
        directives = [self._directive(p, vocab) for p in plan]
        return Interpretation(directives=directives, reply=reply, note="; ".join(notes), backend=self.name)

    @staticmethod
    def _directive(p: dict, vocab: Vocabulary) -> ActionDirective:
        expression = p["expression"] if p["expression"] in vocab.expression_names else "neutral"
        if p["action"] == "idle":
            duration = vocab.expression(expression).default_duration_s if expression != "neutral" else None
        else:
            duration = vocab.action(p["action"]).default_duration_s
        return ActionDirective(
            action=p["action"],
            expression=expression,
            intensity=round(min(1.0, max(0.0, p["intensity"])), 3),
            duration_s=duration,
        )


# -- helpers ------------------------------------------------------------------------------

def _expression_asked(phrase: _Phrase, pos: int, words: list[str]) -> bool:
    """Verb-like expressions count when named ("smile"); adjectives need a look-word
    before them or "face" after ("look sad", "make a sad face")."""
    if phrase.first_word in lx.EXPRESSION_VERBS or len(phrase.keys) > 1:
        return True
    skip = lx.FILLER | lx.VERY | lx.LOW_INTENSITY | lx.HIGH_INTENSITY | _LOOK_PADDING
    # Any "-ly" adverb sits between a look-word and its adjective too ("look genuinely happy").
    before = [w for w in words[:pos] if w not in skip and not (len(w) > 4 and w.endswith("ly"))][-1:]
    after = words[pos + 1 : pos + 2]
    # "a sad face", "not with that confused look", "a disapproving look"
    return bool(before and (before[0] in lx.LOOK_WORDS or stem(before[0]) in _LOOK_STEMS)) or after in (
        ["face"], ["look"], ["expression"]
    )


#: Words between a look-word and its adjective ("act all mopey", "be kind of sulky").
_LOOK_PADDING = frozenset("all kind kinda sort sorta of rather quite pretty somewhat more less".split())
_MOVE_KEYS = (stem("move"),)
#: Standalone-only words that are a face after a look-word ("be cross with me", "look serious");
#: others stay out ("look down" is a gaze, "look lost" keeps its own reading).
_FACE_ADJECTIVES = frozenset("cross serious blank".split())
_PERFECT = frozenset("have has had having you've i've we've they've 've".split())
_LOOK_STEMS = frozenset(stem(w) for w in lx.LOOK_WORDS)
_PHRASE_PADDING = frozenset(
    stem(w) for w in (*lx.FILLER, *lx.VERY, *lx.LOW_INTENSITY, *lx.HIGH_INTENSITY, "a", "an", "one", "please", "now", "just")
) | frozenset(stem(w + tail) for w in cues.DEGREE_BASES for tail in ("", "ly"))  # "just a subtle wink"


def _only_phrase(phrase_keys: tuple[str, ...], keys: list[str]) -> bool:
    """True when `keys` are the phrase plus only articles, intensity words and "please"."""
    rest = list(keys)
    for k in phrase_keys:
        if k in rest:
            rest.remove(k)
    return all(k in _PHRASE_PADDING for k in rest)


def _startswith(words: list[Token], seq: tuple[str, ...], at: int = 0) -> bool:
    """`words[at:]` starts with `seq` (without copying the list: clauses can be long)."""
    n = len(seq)
    if len(words) - at < n:
        return False
    return all(words[at + k] == seq[k] for k in range(n))


#: "let me see you dance" asks; "let me think about it" tells what the speaker will do.
_LET_ME_WATCH = frozenset("see watch hear catch get".split())
#: First words of a hypothetical put to the listener ("what if you", "suppose you", "if you").
_HYPOTHESIS_LEADS = frozenset("what suppose supposing if imagine".split())
#: Subjects whose past action a polite question only asks about ("could you tell me if she danced").
_TOLD_SUBJECTS = frozenset("he she they i we someone somebody everyone everybody nobody it".split())
_DEGREE_KEEP = lx.VERY | lx.LOW_INTENSITY | lx.HIGH_INTENSITY
_FACE_NAMES = frozenset(core_vocabulary().expression_names) | frozenset(lx.MOOD_WORDS)
_STATE_VERBS = frozenset("be been have had feel look seem".split())


def _strip_fillers(words: list[Token]) -> tuple[bool, list[Token]]:
    polite = False
    changed = True
    while changed and words:
        changed = False
        frame = cues.request_frame(words) or frames.suggestion_prefix(words)
        if frame:  # "I'd love to see you", "are you able to", "any chance you could"
            polite, words, changed = True, words[frame:], True
            continue
        for filler in lx.LEADING_FILLERS:
            if _startswith(words, filler) and len(words) > len(filler):
                if filler[0] == "you" and words[len(filler)] in _STATE_VERBS:
                    continue  # "you must be tired" describes; "you must sit" asks
                polite = polite or filler[0] in lx.POLITE_REQUEST
                words = words[len(filler) :]
                changed = True
                break
    return polite, words


#: Verbs of a posture the core vocabulary lacks: "lie down on the floor" is near "sit down" in
#: the sentence model, but a persona that sits was not asked for what it was asked for.
_OTHER_POSTURES = frozenset("lie lay kneel crouch squat sleep nap crawl".split())
#: Softeners in front of an imperative ("maybe sit down", "perhaps wave at them").
_SOFT_LEADS = frozenset("maybe perhaps possibly".split())
_SUBJECT_WORDS = frozenset("i i'll i'd we we'll we'd you you'll you'd he she they it it's that this there not".split())
#: A finite verb later in the clause makes "maybe dance lessons would help" a statement.
_FINITE_AUX = frozenset("would will is are was were could might may should can did does do has have had 's".split())
_LOOK_FORMS = frozenset("look looks looking seem seems seeming appear appears appearing act acting".split())
#: Words left of a clause whose face frame was cut that ask for nothing ("and ... please").
_EXCLUSION_GLUE = frozenset("and but or just also too though either please then now okay ok so".split())


def _strip_negation(words: list[Token]) -> tuple[bool, list[Token]]:
    for prefix in lx.NEGATING_PREFIXES:
        if _startswith(words, prefix) and len(words) > len(prefix):
            rest = words[len(prefix) :]
            # "i don't want you to X", "you don't need to X": skip to the verb.
            for glue in (("you", "to"), ("to",), ("need", "to"), ("have", "to"), ("want", "to")):
                if _startswith(rest, glue) and len(rest) > len(glue):
                    rest = rest[len(glue) :]
                    break
            return True, rest
    if words and words[0] in lx.NEGATORS and len(words) > 1:
        return True, words[1:]
    # "do NOT walk", "please do not": a "not" right after the first word.
    if len(words) > 2 and words[1] in ("not", "never"):
        return True, words[2:]
    return False, words


def _take_repeat(words: list[Token]) -> tuple[list[Token], int]:
    for seq, count in lx.REPEATS.items():
        n = len(seq)
        for i in range(len(words) - n + 1):
            if tuple(words[i : i + n]) == seq:
                return words[:i] + words[i + n :], count
    return words, 1


def _intensity(words: list[Token], shouted: bool, exclaims: int) -> float:
    level = BASE_INTENSITY
    very = any(w in lx.VERY for w in words)
    if any(w in lx.HIGH_INTENSITY for w in words) or any(
        _startswith(words, seq, i) for seq in lx.MEAN_IT for i in range(len(words))
    ):
        level = min(1.0, HIGH + (0.1 if very else 0.0))
    elif any(w in lx.LOW_INTENSITY for w in words):
        level = max(0.0, LOW - (0.1 if very else 0.0))
    elif any(cues.intensity_word(w) == "high" for w in words) or cues.best_effort(words):
        level = min(1.0, HIGH + (0.1 if very else 0.0))  # "vigorously", "laugh your head off"
    elif any(
        cues.intensity_word(w) == "low" and not (w in _FACE_NAMES and i and words[i - 1] in lx.VERY)
        for i, w in enumerate(words)
    ):
        # "look incredibly shy": the face asked for, made stronger, not a manner ("a shy smile")
        level = max(0.0, LOW - (0.1 if very else 0.0))  # "tentatively", "the faintest smile"
    elif very:
        level = 0.75
    if shouted:
        level = min(1.0, max(level, 0.8) + 0.1)
    if exclaims >= 2:
        level = min(1.0, level + 0.1)
    return level


#: Words a clause that only says how much may carry ("..., but like, really really sad", "..., hard").
_DEGREE_GLUE = frozenset("but like only just and please so too a an bit little lot even more way kinda ever".split())


def _degree_afterwards(clauses: list[_Clause], readings: list[_Reading], index: _Index) -> None:
    """A clause that only says how much ("crack up laughing, hard", "wink, but subtly", "make an
    angry face, but very angry", glossed "sonríe apenas, casi nada") sets the degree of the request
    before it, and asks for nothing of its own."""
    for at in range(1, len(clauses)):
        words = [str(w) for w in clauses[at].words]
        before = next((r for r in reversed(readings[:at]) if r.actions or r.expression), None)
        if before is None or not words or readings[at].actions[:1] not in ([], ["idle"]):
            continue
        names = {before.expression, *before.actions}
        degree = [w for w in words if w in lx.VERY or w in lx.HIGH_INTENSITY or w in lx.LOW_INTENSITY
                  or cues.intensity_word(w) is not None]
        rest = [w for w in words if w not in degree and w not in _DEGREE_GLUE and stem(w) not in names
                and w not in names and w not in lx.FILLER]
        if not degree or rest:
            continue
        level = _intensity(clauses[at].words, False, 0)
        if level != BASE_INTENSITY:
            before.intensity = level
            readings[at].actions, readings[at].expression = [], None


def _split(tokens: list[Token], persona: Persona) -> list[_Clause]:
    """Ordered clauses: punctuation and connective words end a clause."""
    clauses: list[_Clause] = []
    current = _Clause(words=[])
    splitters = sorted(lx.SPLITTERS, key=lambda s: -len(s[0]))
    i = 0

    def close(next_clause: _Clause) -> _Clause:
        if len(current.words) > 1 and current.words[-1] in ("last", "lastly"):
            current.words.pop()
            current.last = True
        for edge, place in _EDGE_MARKERS:
            n = len(edge)
            if len(current.words) > n and tuple(current.words[-n:]) == edge:
                del current.words[-n:]
                current.last, current.first = place == "last", place == "first"
                break
            if len(current.words) > n and tuple(current.words[:n]) == edge and edge[0] in ("end", "start", "begin", "finish"):
                del current.words[:n]
                current.last, current.first = place == "last", place == "first"
                break
        if current.words:
            clauses.append(current)
        elif clauses and current.exclaims:
            clauses[-1].exclaims += current.exclaims
        return next_clause

    while i < len(tokens):
        tok = tokens[i]
        if tok.is_punct:
            if tok.startswith("'"):
                i += 1
                continue
            current.exclaims += tok.count("!")
            if current.reorder and all(w in ("but", "and", "then") for w in current.words):
                i += 1  # "and before that, look around", "but first, bow": the comma does not end the reordering
                continue
            current = close(_Clause(words=[]))
            i += 1
            continue
        if not current.words:
            # Leading fillers ("go ahead and", "try and") are not splitters.
            for filler in lx.LEADING_FILLERS:
                if _startswith(tokens, filler, i) and filler[-1] == "and":
                    current.words.extend(tokens[i : i + len(filler)])
                    i += len(filler)
                    break
            else:
                filler = None
            if filler:
                continue
        if i == 0 and tok == "before":
            current.lead_before = True  # "before you sit, wave": wave first
            i += 1
            continue
        before_that = next((s for s in _BEFORE_THAT if _startswith(tokens, s, i)), None)
        if before_that and clauses and not any(w not in ("and", "but") for w in current.words):
            # "point at the map, and before that, look around": the next clause goes first
            current = _Clause(words=[], reorder=True, continuation=True)
            i += len(before_that)
            continue
        again = next((s for s in lx.REORDER_SPLITTERS if _startswith(tokens, s, i)), None)
        if again and current.words:
            current = close(_Clause(words=[], reorder=True, continuation=True))
            i += len(again)
            continue
        if tok == "first" and clauses and i + 1 < len(tokens) and all(w in ("but", "and", "then") for w in current.words):
            current.reorder = True  # "sit down, but first wave": the wave goes first
            i += 1
            continue
        if (
            tok == "while" and i + 2 < len(tokens) and tokens[i + 1] in ("you", "u")
            and current.words and current.words[0] in lx.NEGATORS
        ):
            # "don't smile while you clap": the face is ruled out, the clap is asked for
            current = close(_Clause(words=[], continuation=True))
            i += 1
            continue
        kept = next((s for s in lx.KEEP_SPLITTERS if _startswith(tokens, s, i)), None)
        if kept and current.words:
            current = close(_Clause(words=[], continuation=True))
            current.words.extend(tokens[i : i + len(kept)])
            i += len(kept)
            continue
        split = next((s for s in splitters if _startswith(tokens, s[0], i)), None)
        if split is not None and split[0] in (("after",), ("before",)) and _adjunct_follows(tokens, i + 1):
            split = None  # "exhausted after all that dancing", "we clapped after the show"
        if split is not None and (current.words or split[1]):
            seq, reorder = split
            # "after" that opens the utterance ("after waving, sit") keeps the order.
            reorder = reorder and bool(current.words)
            current = close(_Clause(words=[], reorder=reorder, continuation=True))
            i += len(seq)
            continue
        current.words.append(tok)
        i += 1
    close(_Clause(words=[]))
    return clauses


# -- second-round helpers (issue 16) -------------------------------------------------------

_SLANG_RE = re.compile(r"(?<![\w'])(" + "|".join(sorted(map(re.escape, lx.SLANG), key=len, reverse=True)) + r")(?![\w'])", re.I)
_DIGIT_RE = re.compile(r"(?<![\w.])([24])(?!\s*(?:times|x\b|\.\d|\d))(?![\w])", re.I)
_ELONGATED = re.compile(r"([A-Za-z])\1{2,}")
_THOUSANDS = re.compile(r"(\d),(\d{3})\b")
_EMOJI_RE = re.compile("|".join(sorted(map(re.escape, lx.EMOJI), key=len, reverse=True)))
_EMOJI_RUN = re.compile("(" + _EMOJI_RE.pattern + r")(?:\s*\1)+")
_EMOJI_JUNK = re.compile("[\ufe0f\U0001f3fb-\U0001f3ff\u200d\u2640\u2642]")


#: Opens the clause an emoji became, so that one restating the request before it ("bow pls
#: 🙇") is read as emphasis rather than a second directive.
_EMOJI_MARK = "emojiclause"
_PRIOR_TO = re.compile(r"\bprior to\b", re.I)
_CHAT_BREAK = re.compile(r"\b(lol|lmao|lmfao|rofl|haha+|hehe+|ha ha|omg|omfg|ngl|tbh|fr fr)\b(?=\s+[A-Za-z])", re.I)
_THANKS_THEN = re.compile(r"\b(ty|thx|thanks|thank you|tysm)\s+(?=(?:now|next|then|ok|okay|so)\b)", re.I)
_CHAT_BE = re.compile(r"\b(pls|plz|please|don't|dont|to|u|you|will|can|cn|gonna|wanna|just|gotta)\s+b\b", re.I)
_CHAT_SEE = re.compile(r"\bc (?=(?:u|you|ya)\b)", re.I)
_REDUPLICATED = re.compile(r"\b([A-Za-z]+)-\1\b", re.I)
#: Degree phrases written as one word or as an idiom, respelled as the word the intensity
#: lists hold ("barely-there smile", "look a touch surprised", "go full-on excited").
_DEGREE_WORDS = {
    "barely-there": "barely", "a-touch": "a bit", "a-tad": "a bit", "a-hint-of": "a hint", "full-on": "totally",
    "all-out": "totally", "over-the-top": "wildly", "a-smidge": "a bit", "a-smidgen-of": "a bit",
    "itty-bitty": "tiny", "teeny-weeny": "tiny", "teeny-tiny": "tiny", "teensy-weensy": "tiny", "eensy-weensy": "tiny",
    "itsy-bitsy": "tiny", "teensy": "tiny", "eensy": "tiny",
}
_DEGREE_PHRASES = re.compile(
    r"\b(?:" + "|".join(k.replace("-", "[- ]") for k in sorted(_DEGREE_WORDS, key=len, reverse=True)) + r")\b", re.I
)
_DROPPED_G = re.compile(r"\b([A-Za-z]{2,}in)(?:'|\b)")


def _restore_g(m: re.Match[str], index: _Index) -> str:
    """A dropped "g" put back on a vocabulary gerund ("quit dancin'" → "quit dancing"),
    never on a real word ("cabin", "begin")."""
    word = m.group(1)
    if word.lower() in index.known_words or stem(word.lower() + "g") not in index.key_set:
        return m.group(0)
    return word + "g"


def _respell(text: str, index: _Index) -> str:
    """Chat spelling and emoji into the words the parser reads: "u" → "you", "wave 2 me" →
    "wave to me", "sitdown" → "sit down", "😊" → "smile" (its own clause)."""
    if not text:
        return text
    if not text.isascii():
        text = _EMOJI_JUNK.sub("", text)
        text = _EMOJI_RUN.sub(r"\1", text)  # "👏👏👏" is one clap, said warmly, not three
        text = _EMOJI_RE.sub(lambda m: f" . {_EMOJI_MARK} {lx.EMOJI[m.group(0)]} . ", text)
    text = _ELONGATED.sub(r"\1", text)  # "sooo", "pleeease"
    text = _PRIOR_TO.sub("before", text)  # "prior to dancing, clap"
    text = _REDUPLICATED.sub(r"\1", text)  # "say bye-bye": one farewell, not two clauses
    text = _CHAT_BREAK.sub(r"\1 . ", text)  # "ur so funny lol clap 4 me": "lol" ends a clause
    text = _THANKS_THEN.sub(r"\1 . ", text)  # "ty now bow": the thanks, then a request
    text = _CHAT_BE.sub(r"\1 be", text)  # "pls b happy"
    text = _CHAT_SEE.sub("see ", text)  # "lemme c u dance"
    text = _DEGREE_PHRASES.sub(lambda m: _DEGREE_WORDS[m.group(0).lower().replace(" ", "-")], text)
    text = _THOUSANDS.sub(r"\1\2", text)  # "20,000 steps" is one number, not two clauses
    text = _SLANG_RE.sub(lambda m: lx.SLANG[m.group(1).lower()], text)
    text = _DIGIT_RE.sub(lambda m: lx.SLANG_DIGITS[m.group(1)], text)
    text = _DROPPED_G.sub(lambda m: _restore_g(m, index), text)
    if index.joined:
        text = re.sub(
            r"[A-Za-z]{6,}", lambda m: index.joined.get(m.group(0).lower(), m.group(0)), text
        )
    return text


def _superlatives(words: list[Token], index: _Index) -> tuple[list[Token], bool]:
    """Superlatives and comparatives of face words read as the face ("grumpiest" → grumpy,
    "saddest" → sad, "happier" → happy); True when one was found."""
    out, found = list(words), False
    for i, w in enumerate(words):
        if len(w) < 5 or not w.isalpha() or not w.endswith(("est", "er")) or stem(w) in index.face_keys:
            continue
        cut = 3 if w.endswith("est") else 2
        core = w[:-cut]
        candidates = [core[:-1] + "y"] if core.endswith("i") else [core, core + "e"]
        if len(core) > 2 and core[-1] == core[-2]:
            candidates.append(core[:-1])  # "saddest" → sad
        for base in candidates:
            if stem(base) in index.face_keys:
                out[i], found = Token(base), True
                break
    return out, found


def _drop_not_actions(words: list[Token]) -> list[Token]:
    """`words` without phrases that only look like actions ("nice bow tie", "point of view")."""
    for seq in lx.NOT_ACTIONS:
        n = len(seq)
        plural = (*seq[:-1], seq[-1] + "s")  # "bow ties", "dance floors"
        i = 0
        while i + n <= len(words):
            if (_startswith(words, seq, i) or _startswith(words, plural, i)) and not (
                seq == _STAND_UP_FOR and (
                    all(w in _FOR_ME for w in words[i + n :]) or any(w in _SPAN for w in words[i + n : i + n + 3])
                )
            ):  # "stand up for yourself" is an idiom; "stand up for me", "for a second" ask to stand
                words = words[:i] + words[i + n :]
            else:
                i += 1
    return words


def _strip_stop(words: list[Token]) -> tuple[bool, list[Token]]:
    """(True, the rest) when the clause opens with a stop phrase ("cut it out with the", "no more")."""
    for seq in lx.STOP_PHRASES:
        if _startswith(words, seq):
            rest = words[len(seq) :]
            if seq == ("enough",) and rest and rest[0] not in ("with", "of", "already", "now") and not rest[0].endswith("ing"):
                return False, words  # "enough time to..." is not a request to stop
            if seq in (("no", "more"),) and not rest:
                return False, words
            return True, rest
    return False, words


#: Where a clause goes in the sequence, said at its end or (end/start/begin/finish) its start.
_EDGE_MARKERS: tuple[tuple[tuple[str, ...], str], ...] = (
    (("at", "the", "end"), "last"), (("to", "finish"), "last"), (("to", "end"), "last"), (("end", "with"), "last"),
    (("finish", "with"), "last"), (("to", "start"), "first"), (("to", "begin"), "first"),
    (("at", "the", "start"), "first"), (("at", "the", "beginning"), "first"), (("start", "with"), "first"),
    (("begin", "with"), "first"),
)
_STAND_UP_FOR = ("stand", "up", "for")
_FOR_ME = frozenset("me us please now".split())
#: A stretch of time after "stand up for": how long, not whom ("stand up for a second").
_SPAN = frozenset("second sec seconds moment minute minutes mo bit while tick jiffy".split())
#: Openers of a clause that only names what a stop before it ends ("enough, the clapping").
_STOP_OBJECT = frozenset("the all your ur those that this with".split())
_ATTENTION = frozenset({("hey",), ("oi",), ("yo",), ("hey", "you")})
_BEFORE_THAT = (("and", "before", "that"), ("but", "before", "that"), ("before", "that"), ("before", "this"))
#: Words after "after"/"before" that start a noun phrase, not a clause ("after the show").
_ADJUNCT_DETS = frozenset("the a an my your our his her their this these those all so lunch dinner breakfast work school class".split())
_ACTION_NOUNS = frozenset(
    "wave waves nod nods bow bows clap claps dance dances walk walks point shrug turn spin".split()
)


def _adjunct_follows(tokens: list[Token], at: int) -> bool:
    """Whether the words from `at` are a time phrase ("the show", "all that dancing") up to
    the clause's end, rather than a clause ("you sit", "the wave" as an action)."""
    phrase: list[str] = []
    for tok in tokens[at:]:
        if tok.is_punct or tok in ("and", "then", "but"):
            break
        phrase.append(str(tok))
    span = cues.activity_adjuncts(["after", *phrase, "."])
    if span is not None and span[0] == 0:
        return True  # "after all that walking (I need a nap)"
    if not phrase or phrase[0] not in _ADJUNCT_DETS or len(phrase) > 5:
        return False
    if any(w in ("you", "u", "i", "we", "they", "he", "she") for w in phrase):
        return False  # "before you sit" is a clause
    return not any(w in _ACTION_NOUNS for w in phrase)


def _drop_adjuncts(words: list[Token]) -> list[Token]:
    """`words` without a time or cause phrase naming an activity ("after all that dancing",
    "from all the standing", "after the show"): the activity is not asked for."""
    span = cues.activity_adjuncts(words)
    if span is not None:
        words = words[: span[0]] + words[span[1] :]
    for i, w in enumerate(words):
        if i and w in ("after", "before") and _adjunct_follows(words, i + 1):
            return words[:i]
    return words


def _find_indirect(words: list[Token]) -> str | None:
    """The action an indirect phrasing asks for ("take a load off" → sit), or None."""
    for seq, action in sorted(lx.INDIRECT.items(), key=lambda kv: -len(kv[0])):
        n = len(seq)
        for i in range(len(words) - n + 1):
            if _startswith(words, seq, i):
                return action
    return None


def _asked_anything(r: _Reading) -> bool:
    """Whether a clause asked for, refused or said something the reply must answer."""
    return bool(
        r.actions or r.expression or r.greeting or r.thanks or r.negated or r.stop or r.unsupported
        or r.disallowed or r.anaphora or r.ruled_out_faces
    )


def _repeat_turns(readings: list[_Reading], index: _Index) -> None:
    """A bare direction after a turn ("look right, then left") turns again, that way; after
    a point ("point left, then right") it points again."""
    last_turn = None
    corrected = False
    for r in readings:
        if r.actions:
            last = r.actions[-1]
            last_turn = last if last in ("turn_left", "turn_right", "point") else None
            corrected = False
            continue
        if r.negated and last_turn is not None:
            corrected = True  # "turn left. not right, left!": the bare "left" restates the turn made
            continue
        if r.direction and corrected and r.direction == last_turn:
            continue
        if r.direction and last_turn is not None and not r.negated:
            # "point left, then right": point again, the other way.
            again = "point" if last_turn == "point" else r.direction
            if again in index.allowed:
                r.actions, r.request, r.unsupported, r.suggestion = [again], True, None, None
