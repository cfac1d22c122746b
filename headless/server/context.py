"""What a viewer session is given by the service that owns it: narrow collaborators.

A session gets its settings, the metrics it bumps, the two executors it runs work on, the
frame encoder, the recordings desk and a way to be ended later; never the service itself
(STYLE.md rule 18: the service ↔ session import cycle is gone, `.importlinter` keeps it so).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Protocol

from .config import ServerConfig
from .metrics import ServerMetrics
from .recording import RecordingDesk

__all__ = ["SessionContext", "SessionLifecycle"]


class SessionLifecycle(Protocol):
    """The owner's side of a session's life."""

    @property
    def closing(self) -> bool:
        """The owner is shutting down: it ends every session itself (no resume grace)."""

    def expire_later(self, session_id: str, delay_s: float) -> asyncio.TimerHandle:
        """End the session `delay_s` from now, unless the handle is cancelled (a resume)."""


@dataclass(frozen=True)
class SessionContext:
    """A session's collaborators (see module docstring)."""

    config: ServerConfig
    metrics: ServerMetrics
    pool: Executor  # turns, ticks, file I/O
    speech_pool: Executor  # synthesis: a long reply never holds back a render tick
    encoder: Callable  # (rgb uint8 HxWx3, quality) -> JPEG bytes
    recordings: RecordingDesk
    lifecycle: SessionLifecycle
