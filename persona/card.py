"""A persona: who the character is, how it looks, what it may do.

Stored as a Character Card V2/V3 (the community format SillyTavern, chub.ai and others
share) with our own fields under `data.extensions.comfyui_persona`; see `persona.cards`
for reading and writing the files. This module is the in-memory model only.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator

from .schema import PERSONA_ID_PATTERN, Vocabulary, VocabularyEntry, core_vocabulary
from .text import printable_text

_HEX_COLOUR = r"^#[0-9a-fA-F]{6}$"
#: What a persona id may be (lower-case letters, digits, `_`, `-`; at most 64): safe in paths and URLs.
ID_PATTERN = PERSONA_ID_PATTERN
ID_RE = re.compile(ID_PATTERN)
#: Longest free text (description, personality, backstory, first message) a persona keeps.
MAX_TEXT_CHARS = 50_000


class Appearance(BaseModel):
    """How the persona looks: drawn by the preview renderer, described to LongLive."""

    model_config = ConfigDict(extra="forbid")

    description: str = Field(
        default="a friendly young adult",
        max_length=1000,
        description="Free-text look, put at the start of every LongLive prompt.",
    )
    skin_colour: str = Field(default="#f1c9a5", pattern=_HEX_COLOUR)
    hair_colour: str = Field(default="#3b2a20", pattern=_HEX_COLOUR)
    hair_style: str = Field(default="short", description="short | long | bun | bald | ponytail | curly")
    eye_colour: str = Field(default="#3a5f8a", pattern=_HEX_COLOUR)
    outfit_colour: str = Field(default="#4a7bd1", pattern=_HEX_COLOUR)
    outfit_accent_colour: str = Field(default="#f4f4f4", pattern=_HEX_COLOUR)
    trousers_colour: str = Field(default="#2f3542", pattern=_HEX_COLOUR)
    background_colour: str = Field(default="#dfe8f1", pattern=_HEX_COLOUR)
    name_tag: bool = True
    reference_image: str | None = Field(
        default=None,
        description="Face/body reference for identity anchoring. In a card: a CHARX asset "
        "(`embeded://assets/...`, its archive path or its `assets[].name`), `ccdefault:` (the "
        "card's own picture), or a file path (relative: to the card's folder). Once a card is "
        "loaded it is the absolute path of that file, or None if it found no usable image "
        "(dropped with a warning: `cards.resolve_reference`).",
    )
    # (as the card wrote it, the file it resolved to): export writes the former back while
    # reference_image still holds the latter, so a load never rewrites the card's own value.
    _reference_origin: tuple[str, str] | None = PrivateAttr(default=None)

    def card_reference(self) -> str | None:
        """`reference_image` as a card should store it: the card's own spelling (an asset
        name, a relative path) while `reference_image` is still the file that resolved to,
        else `reference_image` itself (changed since, or never resolved)."""
        origin = self._reference_origin
        if origin is not None and origin[1] == self.reference_image:
            return origin[0]
        return self.reference_image

    def with_resolved_reference(self, written: str, path: str) -> Appearance:
        """A copy whose `reference_image` is the file `path`, remembering that the card
        wrote it as `written` (pass `written == path` to make the card store the path)."""
        resolved = self.model_copy(update={"reference_image": path})
        resolved._reference_origin = (written, path)
        return resolved


class Voice(BaseModel):
    """How the persona sounds (used by the voice issue's TTS)."""

    model_config = ConfigDict(extra="forbid")

    engine: str = "espeak"
    voice: str = "en-us"
    rate: Annotated[float, Field(ge=0.25, le=4.0)] = 1.0
    pitch: Annotated[float, Field(ge=0.25, le=4.0)] = 1.0
    style: str = Field(default="", max_length=500, description="Speaking style, in words.")


class Lines(BaseModel):
    """In-character reply templates the embedded interpreter picks from (LLM backends
    generate their own). Placeholders: {action} the action being done in words,
    {request} what the user asked for, {alternative} the closest supported action."""

    model_config = ConfigDict(extra="forbid")

    acknowledge: tuple[str, ...] = ("Sure, {action}!", "Okay, {action}.")
    cannot: tuple[str, ...] = (
        "I can't {request}, but I can {alternative}.",
        "That's beyond me, sorry!",
    )
    chitchat: tuple[str, ...] = ("I see.", "Tell me more!")
    greeting: tuple[str, ...] = ("Hello there!",)
    #: A greeting when the user has already spoken (said again, or a resumed session);
    #: empty (the default, so a card's own `greeting` keeps its voice): `greeting` is used.
    greeting_again: tuple[str, ...] = ()
    farewell: tuple[str, ...] = ("Goodbye!",)
    thanks: tuple[str, ...] = ("You're welcome!",)
    refusal: tuple[str, ...] = ("I'd rather not do that.",)


class Persona(BaseModel):
    """Our persona config: everything the product needs about one character."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=ID_PATTERN)
    name: Annotated[str, Field(min_length=1, max_length=100)]
    # Limits are generous because cards from other tools often carry long texts; the card
    # file itself is bounded by `cards.CardLimits.max_card_json_bytes`.
    description: str = Field(default="", max_length=MAX_TEXT_CHARS)
    personality: str = Field(default="", max_length=MAX_TEXT_CHARS)
    backstory: str = Field(
        default="", max_length=MAX_TEXT_CHARS, description="Stored as the card's `scenario`."
    )
    first_message: str = Field(default="", max_length=MAX_TEXT_CHARS, description="The card's `first_mes`.")
    lines: Lines = Field(default_factory=Lines, description="In-character lines for the embedded backend.")
    constraints: tuple[str, ...] = Field(default=(), description="Behavioural rules the persona keeps.")
    appearance: Appearance = Field(default_factory=Appearance)
    voice: Voice = Field(default_factory=Voice)
    allowed_actions: tuple[str, ...] | None = Field(
        default=None, description="Limit to these actions (None: every known action)."
    )
    extra_actions: tuple[VocabularyEntry, ...] = ()
    extra_expressions: tuple[VocabularyEntry, ...] = ()
    card: dict[str, Any] = Field(
        default_factory=dict,
        description="The card object this persona was read from, verbatim (unknown fields "
        "included), so that exporting it again loses nothing. Empty for personas built in code.",
    )

    @field_validator("name")
    @classmethod
    def _printable_name(cls, name: str) -> str:
        """One printable line: terminal escapes and bidi overrides from a card are dropped."""
        name = printable_text(name, one_line=True).strip()
        if not name:
            raise ValueError("a name needs at least one printable character")
        return name

    @field_validator("description", "personality", "backstory", "first_message")
    @classmethod
    def _printable(cls, text: str) -> str:
        return printable_text(text)

    def vocabulary(self) -> Vocabulary:
        """The core vocabulary plus this persona's own words, limited to what it allows."""
        return core_vocabulary().extended(
            actions=self.extra_actions,
            expressions=self.extra_expressions,
            allowed_actions=self.allowed_actions,
        )
