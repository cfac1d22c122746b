"""A scene (2–4 characters, issue 20) → one LongLive prompt that names each with its directive.

LongLive (Wan2.1) takes one text per chunk, so a scene is one prompt, left to right:

    "Two people side by side. On the left, Mira: <her appearance>, <her action phrase>, <her
    expression phrase>[, talking ...]. On the right, Bjorn: <his ...>. <framing>"

- each character's clause is what its own `PromptComposer` makes of its directive (its card's
  look, its vocabulary, the intensity word, the speaking cue), so a scene of one is exactly the
  one-persona prompt, and a change for one character changes only that character's clause (the
  others' words stay as they were, so the prompt switch is about that character alone);
- positions are fixed words by cast size (left/right; left/middle/right; far left … far right),
  and the framing sentence asks for a wide shot with everyone in frame.

Same token budget, same speed: the text encoder pads every prompt to `text_len` (512) tokens
and the DiT's cross-attention always reads all of them, so a scene prompt costs a chunk what a
one-persona prompt costs as long as it fits. `compose` keeps it inside the budget when given a
token counter: over it, appearances are cut to their first clause ("a young woman with short
red hair"); still over, it raises `PromptBudgetError` with the counts (never a silent cut of
the last character, which the encoder's truncation would do).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

from ...errors import PersonaError
from ...persona.schema import ActionDirective
from .prompt import DEFAULT_APPEARANCE, PromptComposer

__all__ = ["POSITIONS", "SCENE_FRAMING", "TEXT_LEN", "PromptBudgetError", "ScenePromptComposer", "UnknownCharacterError",
           "umt5_token_counter"]

#: The text encoder's fixed length (Wan's `text_len`): every prompt becomes this many rows.
TEXT_LEN = 512
#: Where each character stands, by cast size, left to right.
POSITIONS: dict[int, tuple[str, ...]] = {
    2: ("On the left", "On the right"),
    3: ("On the left", "In the middle", "On the right"),
    4: ("On the far left", "Centre left", "Centre right", "On the far right"),
}
_COUNT = {2: "Two", 3: "Three", 4: "Four"}
SCENE_FRAMING = "Wide shot, static camera, everyone in frame, plain softly lit background."


class PromptBudgetError(PersonaError, ValueError):
    """A scene prompt that does not fit the text encoder's tokens even with short appearances."""

    code = "prompt_too_long"


class UnknownCharacterError(PersonaError, KeyError):
    """A directive for a character who is not in the scene."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


@dataclass(frozen=True)
class ScenePromptComposer:
    """Composes one prompt for a scene's characters, left to right (module docstring)."""

    ids: tuple[str, ...]
    names: tuple[str, ...]
    composers: tuple[PromptComposer, ...]  # each character's, with no scene sentence of its own
    framing: str = SCENE_FRAMING
    single_scene: str = ""  # a scene of one: the one-persona composer's own scene sentence

    @classmethod
    def from_specs(cls, specs: Sequence, framing: str = SCENE_FRAMING) -> ScenePromptComposer:
        """From each character's `video.backend.SessionSpec` (its look and vocabulary), left to right."""
        if not 1 <= len(specs) <= max(POSITIONS):
            raise ValueError(f"a scene prompt names 1 to {max(POSITIONS)} characters; got {len(specs)}")
        ids = tuple(spec.persona_id for spec in specs)
        if len(set(ids)) != len(ids):
            raise ValueError(f"a character appears once per scene; got {', '.join(ids)}")
        composers = tuple(PromptComposer.from_session(spec) for spec in specs)
        return cls(ids=ids, names=tuple(spec.persona_name for spec in specs),
                   composers=tuple(replace(c, scene="") for c in composers), framing=framing,
                   single_scene=composers[0].scene)

    def compose(self, directives: Mapping[str, ActionDirective | None] | Sequence[ActionDirective] = (),
                speaking: str | None = None, count_tokens: Callable[[str], int] | None = None,
                budget: int = TEXT_LEN) -> str:
        """The prompt for what each character does now: `directives` by character id (None or
        absent: at rest), or a list of directives each naming its `character` (none: the
        first); `speaking`: the id of who talks. With `count_tokens` (text → tokens, no `</s>`),
        the prompt plus `</s>` fits `budget` or `PromptBudgetError` says by how much."""
        doing = self._by_character(directives)
        if speaking is not None and speaking not in self.ids:
            raise UnknownCharacterError(f"{speaking!r} speaks but is not in this scene ({', '.join(self.ids)})")
        text = self._text(doing, speaking, short=False)
        if count_tokens is None or count_tokens(text) + 1 <= budget:
            return text
        short = self._text(doing, speaking, short=True)
        used = count_tokens(short) + 1
        if used > budget:
            raise PromptBudgetError(f"the scene prompt needs {used} tokens with short appearances "
                                    f"({count_tokens(text) + 1} in full); the text encoder takes {budget}")
        return short

    def _by_character(self, directives) -> dict[str, ActionDirective | None]:
        if isinstance(directives, Mapping):
            doing = dict(directives)
        else:  # the last directive of each performer is what it does now
            doing = {(d.character or self.ids[0]): d for d in directives}
        unknown = sorted(set(doing) - set(self.ids))
        if unknown:
            raise UnknownCharacterError(f"directive for {', '.join(map(repr, unknown))}, who is not in this "
                                        f"scene ({', '.join(self.ids)})")
        return doing

    def _text(self, doing: dict, speaking: str | None, short: bool) -> str:
        clauses = []
        for persona_id, composer in zip(self.ids, self.composers, strict=True):
            if short:
                composer = replace(composer, appearance=_first_clause(composer.appearance))
            clauses.append(composer.compose(doing.get(persona_id), speaking=persona_id == speaking).rstrip("."))
        if len(self.ids) == 1:
            return f"{clauses[0]}. {self.single_scene}".strip() if self.single_scene else f"{clauses[0]}."
        where = POSITIONS[len(self.ids)]
        people = " ".join(f"{place}, {name}: {clause}." for place, name, clause in zip(where, self.names, clauses,
                                                                                      strict=True))
        return f"{_COUNT[len(self.ids)]} people side by side. {people} {self.framing}".strip()


def _first_clause(appearance: str) -> str:
    """"a young woman with short red hair, freckles and …" → "a young woman with short red hair"."""
    head = appearance.split(",")[0].strip()
    return head or DEFAULT_APPEARANCE


def umt5_token_counter(tokenizer) -> Callable[[str], int]:
    """`compose`'s `count_tokens` from the engine's `video.text.umt5.TextTokenizer`: the pieces
    the encoder would read, cleaned as it cleans them, before `</s>` and uncapped."""
    from .umt5 import clean_prompt  # torch: only where an encoder exists anyway

    return lambda text: len(tokenizer.tokenizer.encode(clean_prompt(text), add_special_tokens=False).ids)
