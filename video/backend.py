"""The renderer-backend interface that `preview` (CPU) and `longlive` (GPU) implement.

The runner, the nodes and the server talk to a backend only through `RendererBackend`,
so no caller special-cases one. A backend renders in chunks, the way LongLive does
(3 latent frames = 12 video frames at 16 fps); the preview renderer picks a chunk size
that keeps latency low. Directives come in through `submit`; the backend keeps its own
animation/conditioning state and blends from wherever the character is.

Only `persona.schema` is imported from the conversation side (ARCHITECTURE.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

from ..errors import PersonaError

if TYPE_CHECKING:  # annotations only: the engine (host, runtime) then imports without pydantic
    from ..persona.schema import ActionDirective


class RenderError(PersonaError, ValueError):
    """A caller asked a backend for something it cannot do (bad size, fps, unknown word)."""


@dataclass(frozen=True)
class SessionSpec:
    """What a render session is for: who, at what size and rate, from which seed.

    `look` is the persona's appearance as plain data (the `Appearance` model dumped to a
    dict) so that the video side never imports persona cards.
    """

    persona_id: str
    persona_name: str
    look: dict
    width: int = 512
    height: int = 512
    fps: float = 16.0
    seed: int = 0
    vocabulary: dict = field(default_factory=dict)  # {"actions": [...], "expressions": [...]}


@dataclass
class Chunk:
    """A run of consecutive frames and where they sit on the session clock."""

    frames: np.ndarray  # uint8, (N, H, W, 3), RGB
    first_index: int  # index of frames[0] since the session started
    pts_ms: list[int]  # presentation time of each frame on the session clock
    # Directive sequence numbers whose effect first shows in this chunk (for latency metrics).
    shows_directives: list[int] = field(default_factory=list)


@runtime_checkable
class RendererBackend(Protocol):
    """One small protocol for every renderer (ARCHITECTURE.md, "Contracts")."""

    name: str

    def start_session(self, spec: SessionSpec) -> None:
        """Begin (or restart) a session; raises `RenderError` for unusable settings."""
        ...

    def submit(self, directives: list[ActionDirective], seq: int) -> None:
        """Queue directives to perform in order, replacing whatever was still pending.

        The current motion is not cut: the next frames blend from where the character is.
        `seq` identifies this submission in `Chunk.shows_directives`.
        """
        ...

    def set_speech(self, visemes: list[tuple[int, str]] | None, duration_ms: int = 0) -> None:
        """Mouth shapes to play: (offset_ms from now, viseme) pairs, or a talking cycle of
        `duration_ms` when `visemes` is None and duration_ms > 0. Empty stops speaking."""
        ...

    def next_chunk(self) -> Chunk:
        """Render the next chunk of frames."""
        ...

    def reset(self) -> None:
        """Back to the persona's idle state, keeping the session (clock goes on)."""
        ...
