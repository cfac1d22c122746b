"""Scenes of several personas: who is addressed, who acts, who answers (issue 20's group chat).

A `Scene` is a small JSON object (persona ids and a layout), importable and exportable; cards
stay as they are. This module is the conversation side of a scene:

- `address(text, cast)` splits an utterance into parts by whom each part speaks to: a name
  (its id, or any word of it that no other cast member shares, so "the professor" finds
  "Professor Ada"; a whole name or id beats another's word) opening a clause makes that
  persona the addressee from there on ("Mira, wave; Bjorn, sit down"); group words
  ("everyone", "both of you", "todos") address the whole cast. A name inside a clause ("wave
  at Bjorn") is an object, not an addressee. An unaddressed opening goes to whoever was
  spoken to last (the scene's first persona at first). Words are compared transliterated
  (anyascii, lower case), so "Jose" finds "José" (`text.transliterate`); the greetings, "and"s and group words are
  those of the languages the interpreter reads (English, Spanish, German, French,
  Portuguese, Italian; Japanese and Chinese clause marks), and opening marks (¡ ¿) and
  invisible format characters are skipped.
- `SceneInterpreter` runs any `Interpreter` once per addressed part and persona, each with its
  own card and state, and stamps every directive with its performer (`character`, directive
  contract v1.1).
- `GroupTurns` orders the replies like a group chat: the addressed personas answer, in cast
  order; a reply that opens by addressing another cast member ("Bjorn, your turn!") gets that
  persona's answer, at most `max_exchanges` such hand-overs per user message, so two personas
  never talk to each other forever.

Written here rather than taken from a library: addressing is a few rules over our own
tokenizer and cast, and no dialogue library models it on structured directives.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..errors import PersonaError
from .card import Persona
from .interpreter.base import Interpretation, Interpreter, InterpretRequest, Turn
from .schema import PERSONA_ID_PATTERN, ActionDirective, CharacterState
from .state import StateTracker
from .text import transliterate

__all__ = ["MAX_CAST", "Addressed", "CastState", "GroupTurns", "Scene", "SceneChat", "SceneError", "SceneInterpreter",
           "SceneResponse", "SceneTracker", "address", "cast_problem", "in_scene"]

#: Most personas one scene holds (the preview draws them side by side).
MAX_CAST = 4

_WORD = re.compile(r"[\w'-]+", re.UNICODE)
_TOKEN = re.compile(r"[\w'-]+|[^\w\s]", re.UNICODE)


def _fold(word: str) -> str:
    """A word as names are compared: transliterated to ASCII, lower case ("José" -> "jose")."""
    return (transliterate(word) if _WORD.fullmatch(word) else word).lower()


#: Phrases that address the whole cast.
_EVERYONE_TEXT = (
    "everyone", "everybody", "all of you", "both of you", "you two", "you both", "you all", "y'all", "you guys",
    "all three of you", "all four of you",
    "todos", "todas", "todos ustedes", "ustedes", "vosotros", "vosotras", "ambos", "ambas", "los dos", "las dos",
    "alle", "ihr alle", "ihr beide", "ihr zwei", "tout le monde", "vous deux", "vous tous", "vous toutes",
    "vocês", "vocês dois", "vocês duas", "tutti", "tutte", "voi due", "entrambi", "みんな", "皆さん", "大家", "你们",
)
#: Words that may stand before a name without being part of what is asked ("hey Mira, ...").
_GREETINGS_TEXT = (
    "hey", "hi", "hello", "ok", "okay", "so", "now", "and", "then", "oh", "yo", "the",
    "hola", "oye", "bueno", "vale", "pues", "ahora", "y", "entonces", "hallo", "also", "und", "nun", "jetzt",
    "salut", "bonjour", "coucou", "eh", "et", "alors", "bon", "olá", "oi", "e", "então", "ciao", "ehi", "allora", "ora",
)
#: Words joining two names ("Mira and Bjorn") or two requests ("wave and | Bjorn, sit").
_AND_TEXT = ("and", "&", "y", "e", "und", "et", "ed")
_THEN_TEXT = ("then", "luego", "entonces", "dann", "puis", "depois", "poi")


@dataclass(frozen=True)
class _Vocabulary:
    """The words above, folded as the text is (`_fold`)."""

    everyone: tuple[tuple[str, ...], ...]
    greetings: frozenset[str]
    joining: frozenset[str]  # "and": between names
    chaining: frozenset[str]  # "and", "then": between requests


@functools.cache
def _vocabulary() -> _Vocabulary:
    """Folded on first use, not at import: transliterating reads tables from disk, and the
    server imports this module on its event loop."""
    def fold_all(texts: Sequence[str]) -> frozenset[str]:
        return frozenset(_fold(text) for text in texts)

    joining = fold_all(_AND_TEXT)
    return _Vocabulary(
        everyone=tuple(tuple(_fold(w) for w in _WORD.findall(text)) for text in _EVERYONE_TEXT),
        greetings=fold_all(_GREETINGS_TEXT), joining=joining, chaining=joining | fold_all(_THEN_TEXT),
    )


#: Marks that open a clause without ending one (Spanish ¡ ¿, quotes, brackets).
_OPENING_MARKS = frozenset("¡¿\"“‘«„(「『")
_CLAUSE_END = frozenset(".;!?,、，。！？；")
_AFTER_NAME = frozenset(",:、，：")


class SceneError(PersonaError, ValueError):
    """A scene that cannot be: an unknown or repeated persona, too many, a directive for a
    character who is not in it."""


def cast_problem(ids: Sequence[str]) -> str | None:
    """Why `ids` cannot be a scene's personas (one is not a persona id, one stands twice), or
    None: the words `Scene` and the scene node (nodes/scene_nodes.py) both refuse with."""
    for persona_id in ids:
        if not re.fullmatch(PERSONA_ID_PATTERN, persona_id):
            return f"{persona_id[:64]!r} is not a persona id (lower-case letters, digits, - and _)"
    repeated = sorted({p for p in ids if ids.count(p) > 1})
    if repeated:
        return f"a persona appears once per scene; repeated: {', '.join(repeated)}"
    return None


class Scene(BaseModel):
    """Who is on screen, left to right. `personas[0]` performs directives that name nobody."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    personas: tuple[str, ...] = Field(min_length=1, max_length=MAX_CAST,
                                      description="Persona ids, left to right on screen.")
    layout: str = Field(default="side_by_side", pattern=r"^side_by_side$",
                        description="How they stand: side by side (the only layout so far).")

    @field_validator("personas")
    @classmethod
    def _ids(cls, personas: tuple[str, ...]) -> tuple[str, ...]:
        problem = cast_problem(personas)
        if problem:
            raise ValueError(problem)
        return personas

    def performer(self, directive: ActionDirective) -> str:
        """Who performs `directive` (its `character`, else the first persona); `SceneError`
        for a character not in the scene."""
        if directive.character is None:
            return self.personas[0]
        if directive.character not in self.personas:
            raise SceneError(f"directive for {directive.character!r}, who is not in this scene "
                             f"({', '.join(self.personas)})")
        return directive.character


@dataclass(frozen=True)
class Addressed:
    """One part of an utterance and whom it speaks to."""

    personas: tuple[str, ...]
    text: str


@dataclass
class _Names:
    """Every cast member's words that name them alone (full names first, longest first)."""

    phrases: list[tuple[tuple[str, ...], str]]

    @classmethod
    def of(cls, cast: Sequence[Persona]) -> _Names:
        whole: dict[tuple[str, ...], set[str]] = {}  # a full name or an id
        part: dict[tuple[str, ...], set[str]] = {}  # one word of a name
        for persona in cast:
            words = tuple(_fold(w) for w in _WORD.findall(persona.name))
            for phrase in (words, (persona.id,)):
                whole.setdefault(phrase, set()).add(persona.id)
            for word in words:
                if len(word) >= 3:
                    part.setdefault((word,), set()).add(persona.id)
        unique = {phrase: next(iter(ids)) for phrase, ids in part.items() if len(ids) == 1}
        for phrase, ids in whole.items():  # "Bjorn" is Bjorn's, though "Bjorn Mira" holds the word too
            if len(ids) == 1:
                unique[phrase] = next(iter(ids))
            elif phrase in unique:
                del unique[phrase]
        return cls(sorted(unique.items(), key=lambda item: -len(item[0])))

    def at(self, words: list[str], i: int) -> tuple[str, int] | None:
        for phrase, persona_id in self.phrases:
            if tuple(words[i:i + len(phrase)]) == phrase:
                return persona_id, len(phrase)
        return None


def _everyone_at(words: list[str], i: int) -> int:
    for phrase in _vocabulary().everyone:
        if tuple(words[i:i + len(phrase)]) == phrase:
            return len(phrase)
    return 0


def _vocative(words: list[str], names: _Names, cast_ids: tuple[str, ...]) -> tuple[tuple[str, ...], int]:
    """Whom a clause opens by addressing, and how many words that takes: "Mira,", "Mira and
    Bjorn", "everyone", "hey professor". ((), 0) when it opens with no addressee."""
    vocabulary = _vocabulary()
    i = 0
    while i < len(words) and (words[i] in vocabulary.greetings or words[i] in _OPENING_MARKS):
        i += 1
    found: list[str] = []
    while i < len(words):
        group = _everyone_at(words, i)
        if group:
            return cast_ids, i + group
        named = names.at(words, i)
        if named is None:
            break
        found.append(named[0])
        i += named[1]
        if i < len(words) and words[i] in vocabulary.joining:
            i += 1
            continue
        break
    if not found:
        return (), 0
    return tuple(dict.fromkeys(found)), i


def address(text: str, cast: Sequence[Persona], *, default: str | None = None) -> list[Addressed]:
    """`text` in parts by addressee (see the module docstring); `default`: whom an opening
    with no name speaks to (the last addressee; the first persona when None)."""
    cast_ids = tuple(p.id for p in cast)
    if not cast_ids:
        raise SceneError("a scene needs at least one persona")
    names = _Names.of(cast)
    tokens = _TOKEN.findall("".join(c for c in text if unicodedata.category(c) != "Cf"))  # bidi marks, ZWJ...
    words = [_fold(t) for t in tokens]
    chaining = _vocabulary().chaining
    current: tuple[str, ...] = (default if default in cast_ids else cast_ids[0],)
    parts: list[Addressed] = []
    clause: list[str] = []
    clause_to: tuple[str, ...] | None = None  # a group word inside the clause: everyone

    def close() -> None:
        nonlocal clause, clause_to, current
        if clause_to is not None:
            current = clause_to
        if clause:
            piece = " ".join(clause)
            if parts and parts[-1].personas == current:
                parts[-1] = Addressed(current, f"{parts[-1].text} {piece}")
            else:
                parts.append(Addressed(current, piece))
        clause, clause_to = [], None

    i, opening, chosen = 0, "start", False  # chosen: someone was named (not inherited)
    while i < len(tokens):
        if opening:
            who, used = _vocative(words[i:], names, cast_ids)
            after = i + used
            while after < len(tokens) and tokens[after] in _AFTER_NAME:
                after += 1
            trailing = who and (after == len(tokens) or tokens[after] in _CLAUSE_END)
            # After "and"/"then" a name is an addressee only when something is asked of it
            # ("and Bjorn, sit down"), not when it ends an object ("wave at Mira and Bjorn").
            if who and not (opening == "weak" and trailing):
                while clause and _fold(clause[-1]) in chaining:
                    clause.pop()  # "wave and | Bjorn sit down": the "and" joined the two parts
                close()
                if trailing and parts and not chosen:  # "Could you wave, Mira?": that clause was hers
                    parts[-1] = Addressed(who, parts[-1].text)
                current, i, opening, chosen = who, after, False, True
                continue
        if _everyone_at(words, i):  # the words stay: "can you both wave" still asks
            clause_to, chosen = cast_ids, True
        token = tokens[i]
        clause.append(token)
        i += 1
        if token in _CLAUSE_END:
            close()
            opening = "strong"
        else:
            opening = "weak" if words[i - 1] in chaining else False
    close()
    return parts or [Addressed(current, "")]


def in_scene(persona: Persona, cast: Sequence[Persona]) -> Persona:
    """`persona` told who else is on screen, as one more rule of its card: an LLM backend then
    knows the group (its system prompt lists the card's rules), answers as this persona only,
    and hands the word on by name, which `GroupTurns` follows. The embedded backend reads no
    rules; a scene of one changes nothing."""
    others = [p for p in cast if p.id != persona.id]
    if not others:
        return persona
    who = "; ".join(f"{p.name}" + (f" ({p.description.strip()[:160]})" if p.description.strip() else "")
                    for p in others)
    rule = (f"You share this scene with {who}. The user may speak to several of you at once: answer only "
            f"as {persona.name}, only to what is asked of you. To speak to another character, begin with "
            "their name.")
    return persona.model_copy(update={"constraints": (*persona.constraints, rule)})


@dataclass
class SceneReading:
    """What the cast makes of one user message: each addressed persona's interpretation."""

    parts: list[tuple[str, Interpretation]] = field(default_factory=list)  # (persona id, its reading)

    @property
    def directives(self) -> list[ActionDirective]:
        """Every directive in the order given, each naming its performer."""
        return [d for _, reading in self.parts for d in reading.directives]


class SceneInterpreter:
    """Any `Interpreter`, run per addressed part and persona (see the module docstring)."""

    def __init__(self, interpreter: Interpreter, cast: Sequence[Persona]) -> None:
        ids = [p.id for p in cast]
        Scene(personas=tuple(ids))  # the same checks as a scene file (unknown ids are the caller's)
        self.interpreter = interpreter
        self.cast = {p.id: in_scene(p, cast) for p in cast}
        self.order = tuple(ids)
        self.last_addressed: str | None = None

    def interpret(self, text: str, states: dict[str, CharacterState] | None = None,
                  history: Sequence[Turn] = ()) -> SceneReading:
        states = states or {}
        reading = SceneReading()
        # One interpreter call per persona, whatever the text (each an LLM call, maybe): the
        # parts addressed to one persona are joined in order, personas in order of address.
        asked: dict[str, list[str]] = {}
        for part in address(text, list(self.cast.values()), default=self.last_addressed):
            for persona_id in part.personas:
                asked.setdefault(persona_id, []).append(part.text)
            if len(part.personas) == 1:
                self.last_addressed = part.personas[0]
        for persona_id, texts in asked.items():
            request = InterpretRequest(text=" ".join(_sentence(t) for t in texts), persona=self.cast[persona_id],
                                       state=states.get(persona_id, CharacterState()), history=tuple(history))
            result = self.interpreter.interpret(request)
            stamped = [d.model_copy(update={"character": persona_id}) for d in result.directives]
            reading.parts.append((persona_id, result.model_copy(update={"directives": stamped})))
        return reading


@dataclass
class GroupTurns:
    """Who speaks after a user message, in order (see the module docstring)."""

    cast: Sequence[Persona]
    max_exchanges: int = 2

    def replies(self, reading: SceneReading, answer) -> Iterator[tuple[str, str]]:
        """(persona id, reply text) in speaking order. `answer(persona_id, addressed_by_text)`
        makes a persona's reply to another persona's line (an interpreter's reply, an LLM's)."""
        spoken: list[str] = []
        for persona_id, interpretation in reading.parts:
            if interpretation.reply and persona_id not in spoken:
                spoken.append(persona_id)
                yield persona_id, interpretation.reply
        if not spoken:
            return
        speaker = spoken[-1]
        line = next(r.reply for p, r in reversed(reading.parts) if p == speaker and r.reply)
        for _ in range(self.max_exchanges):
            others = [p for p in self.cast if p.id != speaker]
            parts = address(line, [*others, *(p for p in self.cast if p.id == speaker)], default=speaker)
            addressed = [pid for part in parts[:1] for pid in part.personas if pid != speaker]
            if not addressed:
                return
            listener = addressed[0]
            line = answer(listener, line)
            if not line:
                return
            yield listener, line
            speaker = listener


@dataclass(frozen=True)
class SceneResponse:
    """What a scene makes of one user message: every directive (each naming its performer), in
    the order given, and the spoken lines in speaking order."""

    directives: list[ActionDirective]
    replies: list[tuple[str, str]]  # (persona id, line)


class SceneChat:
    """One user message through a scene: `SceneInterpreter` for who does what, `GroupTurns`
    for who says what, in order. A persona answering another (a hand-over) is interpreted like
    a message to it, so its directives join the turn's too (Bjorn may wave back)."""

    def __init__(self, interpreter: Interpreter, cast: Sequence[Persona], max_exchanges: int = 2) -> None:
        self.scene = SceneInterpreter(interpreter, cast)
        self.turns = GroupTurns(list(cast), max_exchanges=max_exchanges)

    @property
    def cast(self) -> dict[str, Persona]:
        return self.scene.cast

    def respond(self, text: str, states: dict[str, CharacterState] | None = None,
                history: Sequence[Turn] = ()) -> SceneResponse:
        states = states or {}
        reading = self.scene.interpret(text, states, history)
        directives = list(reading.directives)

        def answer(persona_id: str, line: str) -> str:
            request = InterpretRequest(text=line, persona=self.cast[persona_id],
                                       state=states.get(persona_id, CharacterState()), history=tuple(history))
            result = self.scene.interpreter.interpret(request)
            directives.extend(d.model_copy(update={"character": persona_id}) for d in result.directives)
            return result.reply

        replies = list(self.turns.replies(reading, answer))
        return SceneResponse(directives=directives, replies=replies)


@dataclass(frozen=True)
class CastState:
    """One character's state change in a scene: the `state` message's payload with `character`
    (protocol v1.1), dumped like a `CharacterState` so a listener takes either."""

    character: str
    state: CharacterState

    def model_dump(self, **kwargs) -> dict:
        return {**self.state.model_dump(**kwargs), "character": self.character}


class SceneTracker:
    """A `StateTracker` per cast member behind the tracker's own calls, so the tracker node
    drives a scene as it drives one character: `plan` sends each directive to its performer's
    tracker (a submission re-plans only the characters it names), `advance` reports each
    character's changes as `CastState`s, `state_at` is the first persona's (the scene's lead)."""

    def __init__(self, cast: Sequence[Persona], clock_ms: int = 0) -> None:
        self.scene = Scene(personas=tuple(p.id for p in cast))
        self.trackers = {p.id: StateTracker(p.vocabulary(), clock_ms=clock_ms) for p in cast}
        self.notes: list[str] = []

    def reset(self, now_ms: int) -> None:
        for tracker in self.trackers.values():
            tracker.reset(now_ms)

    def set_speaking(self, speaking: bool, now_ms: int, character: str | None = None) -> None:
        """`character` starts or stops talking (None: the first persona starts; everyone stops)."""
        if character is None and not speaking:
            for tracker in self.trackers.values():
                tracker.set_speaking(False, now_ms)
            return
        who = character or self.scene.personas[0]
        if speaking:  # one speech track: a new speaker means the last one has finished
            for other, tracker in self.trackers.items():
                if other != who and tracker.state_at(now_ms).speaking:
                    tracker.set_speaking(False, now_ms)
        self.trackers[who].set_speaking(speaking, now_ms)

    def plan(self, directives: list[ActionDirective], now_ms: int, *, interrupt: bool = True) -> list[ActionDirective]:
        shares: dict[str, list[ActionDirective]] = {}
        for directive in directives:
            shares.setdefault(self.scene.performer(directive), []).append(directive)
        planned: list[ActionDirective] = []
        self.notes = []
        for who, share in shares.items():
            tracker = self.trackers[who]
            planned.extend(d.model_copy(update={"character": who})
                           for d in tracker.plan(share, now_ms, interrupt=interrupt))
            self.notes.extend(f"{who}: {note}" for note in tracker.notes)
        return planned

    def busy_until_ms(self) -> int:
        return max(t.busy_until_ms() for t in self.trackers.values())

    def state_at(self, now_ms: int) -> CharacterState:
        return self.trackers[self.scene.personas[0]].state_at(now_ms)

    def states_at(self, now_ms: int) -> dict[str, CharacterState]:
        return {who: tracker.state_at(now_ms) for who, tracker in self.trackers.items()}

    def advance(self, now_ms: int) -> list[CastState]:
        """Every character's changes since the last call, in the order they happened."""
        changes = [CastState(who, state) for who, tracker in self.trackers.items() for state in tracker.advance(now_ms)]
        # At one instant, who stops talking comes before who starts (one voice at a time).
        return sorted(changes, key=lambda change: (change.state.since_ms, change.state.speaking))


def _sentence(text: str) -> str:
    """`text` ending like a sentence, so parts joined for one persona stay apart."""
    text = text.strip()
    return text if not text or text[-1] in ".!?;" else text + "."
