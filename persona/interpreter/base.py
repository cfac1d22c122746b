"""The interpreter interface: free text in, an ordered list of directives and a reply out.

Every backend (`embedded`, `openai`, `llamacpp`) implements `Interpreter`; the server,
the CLI and the nodes only ever see this interface, so backends swap by name.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

from ..card import Persona
from ..schema import ActionDirective, CharacterState

#: Longest user utterance accepted (PROTOCOL.md `chat.text`).
MAX_UTTERANCE_CHARS = 4000


class Turn(BaseModel):
    """One line of the conversation history."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    role: str = Field(pattern=r"^(user|persona|system)$")
    text: str


class InterpretRequest(BaseModel):
    """Everything an interpreter may use to understand one utterance."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    text: str
    persona: Persona
    state: CharacterState = Field(default_factory=CharacterState)
    history: tuple[Turn, ...] = ()


class Interpretation(BaseModel):
    """What an interpreter made of one utterance."""

    model_config = ConfigDict(extra="forbid")

    directives: list[ActionDirective] = Field(
        default_factory=list, description="In the order they will be performed; may be empty."
    )
    reply: str = ""
    note: str = Field(
        default="", description="Why an action was changed or dropped (unsupported, negated...)."
    )
    backend: str = ""


@runtime_checkable
class Interpreter(Protocol):
    """A backend that maps an utterance to directives and an in-character reply."""

    name: str

    def interpret(self, request: InterpretRequest) -> Interpretation:
        """Directives and the whole reply. Never raises on odd text; raises only on bugs."""
        ...

    def stream_reply(self, request: InterpretRequest) -> Iterator[list[ActionDirective] | str | Interpretation]:
        """The directives, each new piece of the reply text as it is produced (not the text
        so far: the turn node joins them), then the final `Interpretation` last.

        A `list[ActionDirective]` may be yielded first, before any text, as soon as the
        directives are known: PROTOCOL.md sends `directives` before any reply text, so a
        listener can forward text at once after it. A backend that yields no list (or
        text first) makes the listener hold the text back until the final Interpretation,
        whose `directives` are then the ones to send. When a list was yielded, the final
        Interpretation's `directives` equal it. Backends without streaming may yield the
        final Interpretation only.
        """
        ...
