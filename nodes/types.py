"""Values that travel along the persona nodes' links, and their ComfyUI type names.

ComfyUI matches sockets by type name only; these plain dataclasses are what flows.
Every value carries the `turn` it belongs to so stateful downstream nodes (state
tracker, renderer) can tell a new plan from the same plan seen again on the next tick.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

#: ComfyUI socket type names used by the persona nodes.
PERSONA = "PERSONA"
TURN = "PERSONA_TURN"
DIRECTIVES = "PERSONA_DIRECTIVES"
STATE = "PERSONA_STATE"
FRAMES = "PERSONA_FRAMES"
SCENE = "PERSONA_SCENE"
#: What the conversation and stream nodes take as `persona`: one card, or a scene of several
#: (ComfyUI matches a comma-separated input type against either output type).
PERSONA_OR_SCENE = f"{PERSONA},{SCENE}"


@dataclass(frozen=True)
class SceneValue:
    """A scene of 2–4 personas (persona.card.Persona items, left to right on screen): what the
    Persona Scene node gives the nodes that take `persona`. The first one leads."""

    cast: tuple
    layout: str = "side_by_side"

    @property
    def lead(self) -> Any:
        return self.cast[0]

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(p.id for p in self.cast)


@dataclass(frozen=True)
class TurnValue:
    """One user utterance in context: what the interpreter reads."""

    session_id: str
    turn: int
    text: str
    history: tuple = ()  # persona.interpreter.base.Turn items, oldest first


@dataclass(frozen=True)
class DirectivePlan:
    """Directives for one turn, in the order they will be performed.

    `turn` 0 means "nothing new" (an empty utterance, the first tick of a session):
    stateful consumers ignore it.
    """

    turn: int
    directives: tuple = ()  # persona.schema.ActionDirective items
    source: str = "chat"  # "chat" (interpreted), "action" (manual), "plan" (state tracker)
    reply: str = ""


@dataclass
class FramesValue:
    """The chunk a renderer produced on this tick, plus who rendered it."""

    session_id: str
    backend: str
    chunk: Any  # video.backend.Chunk
    fps: float
    extra: dict = field(default_factory=dict)
