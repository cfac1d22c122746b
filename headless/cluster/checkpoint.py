"""A session's conversation and character state, kept outside the replica that serves it.

Why outside: a replica process can die at any moment (a node lost, an OOM, a deploy), and a
viewer must not lose the conversation with it. After every turn and every state change the
replica sends a `SessionCheckpoint` (headless/server/conversations.py) to one detached Ray
actor (`CheckpointStore`); when a client resumes a session its replica no longer holds, the
replica that takes it restores the
visible history (`ready.history`), the interpreter's conversation and the character's pose
from the checkpoint, under the same session id. Video restarts from the persona's identity
anchor (a renderer's frame history is not worth checkpointing: it is re-drawn in one chunk).

The store is also the session directory: which replica (and its internal address) holds
each session, so any ingress instance routes a resumed session to its replica (affinity).

A detached actor rather than Redis: it is part of every Ray cluster (nothing else to run),
holds a few KB per session, and calls from one replica run in order. It lives in memory: the
Ray head going away loses it, like the rest of the cluster (docs/scaling.md).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from ..server.conversations import SessionCheckpoint

__all__ = ["CheckpointStore", "Placement", "RayConversationStore", "SessionCheckpoint", "STORE_NAME"]

#: The store actor's name in the deployment's namespace.
STORE_NAME = "persona-checkpoints"
#: Recording parts remembered per session (the newest kept).
MAX_PARTS = 64


@dataclass(frozen=True)
class Placement:
    """Where a session is served: the replica's name and its internal WebSocket address."""

    replica: str
    url: str
    actor: str = ""  # the replica's Ray actor name (operators and tests find it by this)


class CheckpointStore:
    """The detached actor's class (wrapped with `ray.remote` by `store_actor`).

    Bounded: at most `max_sessions` checkpoints; a checkpoint not written for `max_age_s`
    (its session ended on a replica that died and nobody resumed it) is dropped first."""

    def __init__(self, max_sessions: int = 100_000, max_age_s: float = 24 * 3600.0) -> None:
        self.max_sessions = max_sessions
        self.max_age_s = max_age_s
        self._checkpoints: dict[str, SessionCheckpoint] = {}
        self._placements: dict[str, Placement] = {}
        # session → its recording parts, oldest first: {"token", "folder", "state"}, the state
        # "recording" (being written, or its replica died), "cut" (its replica stopped under
        # the live session) or "ended" (the viewer stopped it, or the session ended).
        self._recordings: dict[str, list[dict]] = {}

    def put(self, checkpoint: SessionCheckpoint) -> int:
        """Keep `checkpoint` unless a newer one of its session is there; returns the kept version."""
        old = self._checkpoints.get(checkpoint.session_id)
        if old is not None and old.version > checkpoint.version:
            return old.version
        self._checkpoints[checkpoint.session_id] = checkpoint
        self._evict()
        return checkpoint.version

    def get(self, session_id: str) -> SessionCheckpoint | None:
        return self._checkpoints.get(session_id)

    def place(self, session_id: str, placement: Placement) -> None:
        self._placements[session_id] = placement

    def where(self, session_id: str) -> Placement | None:
        return self._placements.get(session_id)

    def drop(self, session_id: str, replica: str | None = None) -> None:
        """The session ended for good (expired, replaced): forget it. With `replica`, only
        while the session is still placed there: a replica ending a session another replica
        has since restored (it was thought lost) must not delete the live copy's checkpoint."""
        placed = self._placements.get(session_id)
        if replica is not None and placed is not None and placed.replica != replica:
            return
        self._checkpoints.pop(session_id, None)
        self._placements.pop(session_id, None)
        self._recordings.pop(session_id, None)

    def recording_started(self, session_id: str, token: str, folder: str) -> None:
        parts = self._recordings.setdefault(session_id, [])
        parts.append({"token": token, "folder": folder, "state": "recording"})
        del parts[:-MAX_PARTS]

    def recording_finished(self, session_id: str, token: str, ended: bool) -> None:
        for part in self._recordings.get(session_id, []):
            if part["token"] == token:
                part["state"] = "ended" if ended else "cut"

    def recording_parts(self, session_id: str) -> list[dict]:
        return [dict(part) for part in self._recordings.get(session_id, [])]

    def sessions(self) -> dict[str, Placement]:
        return dict(self._placements)

    def count(self) -> int:
        return len(self._checkpoints)

    def _evict(self) -> None:
        now = time.time()
        stale = [sid for sid, c in self._checkpoints.items() if now - c.saved_at > self.max_age_s]
        for sid in stale:
            self.drop(sid)
        while len(self._checkpoints) > self.max_sessions:
            oldest = min(self._checkpoints.values(), key=lambda c: c.saved_at)
            self.drop(oldest.session_id)


class RayConversationStore:
    """`PersonaService`'s `ConversationStore` on the store actor (calls queue in order)."""

    def __init__(self, actor: Any) -> None:
        self.actor = actor

    async def get(self, session_id: str) -> SessionCheckpoint | None:
        return await self.actor.get.remote(session_id)

    def put(self, checkpoint: SessionCheckpoint) -> None:
        self.actor.put.remote(checkpoint)

    def drop(self, session_id: str) -> None:
        self.actor.drop.remote(session_id)


def store_actor(namespace: str):
    """The running store of `namespace`, created (detached) when there is none yet."""
    import ray

    actor_class = ray.remote(num_cpus=0, max_restarts=0)(CheckpointStore)
    return actor_class.options(name=STORE_NAME, namespace=namespace, lifetime="detached",
                               get_if_exists=True).remote()
