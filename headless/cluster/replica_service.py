"""The persona service as one replica of a cluster: the unchanged `PersonaService`, plus
checkpoints after every turn, restore on resume, and session leases.

Everything a client sees is `PersonaService`'s own protocol handling (one handler set, so
the cluster never diverges from `persona serve`). This subclass adds only what a replica
needs beyond one process:

- *Checkpoints*: the session's listener is wrapped, so every finished reply, directive list
  and state change sends a `SessionCheckpoint` to the detached store (checkpoint.py), in
  order, from the event loop after the session has recorded the event.
- *Restore*: a `hello` naming a session this replica does not hold, whose checkpoint exists
  (its replica died), opens the session under the same id with the checkpoint's history,
  conversation and character pose; `ready.resumed` is true.
- *Leases*: Ray Serve admits a session by a long-running `lease` request (replica.py) that
  lasts as long as the session, so Serve's `max_ongoing_requests` is the replica's session
  limit and its autoscaler sees queued sessions. The ingress opens its upstream WebSocket
  with `?lease=ID`; the session that connection opens is bound to the lease, and the lease
  ends when the session ends (or the connection closes without one).
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import logging
from collections.abc import Sequence
from typing import Any

from aiohttp import web

from ..server.history import HistoryEntry
from ..server.service import PersonaService
from .checkpoint import Placement, SessionCheckpoint

log = logging.getLogger("comfyui_persona.cluster")

__all__ = ["Lease", "ReplicaService"]

#: How long a granted lease waits for its WebSocket before it is given back.
LEASE_BIND_TIMEOUT_S = 30.0

_LEASE: contextvars.ContextVar[Lease | None] = contextvars.ContextVar("persona_cluster_lease", default=None)


@dataclasses.dataclass
class Lease:
    """One admitted session slot: granted by Serve, bound to the session its socket opens."""

    id: str
    session_id: str | None = None
    done: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    connected: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)


class _CheckpointingListener:
    """The session's own listener, plus a checkpoint queued after each event that changes
    what must survive (called on worker threads, like every `SessionListener`)."""

    def __init__(self, inner: Any, save: Any, loop: asyncio.AbstractEventLoop) -> None:
        self.inner = inner
        self._save = save
        self._loop = loop

    def _after(self) -> None:
        # FIFO after the session's own call_soon_threadsafe: the session has the event by then.
        self._loop.call_soon_threadsafe(self._save, self.inner)

    def on_directives(self, turn: int, directives: Sequence[Any]) -> None:
        self.inner.on_directives(turn, directives)
        self._after()

    def on_reply(self, turn: int, text: str, done: bool) -> None:
        self.inner.on_reply(turn, text, done)
        if done:
            self._after()

    def on_state(self, state: dict) -> None:
        self.inner.on_state(state)
        self._after()

    def on_chunk(self, frames: Any) -> None:
        self.inner.on_chunk(frames)


class ReplicaService(PersonaService):
    """See module docstring. `checkpoints`: the store actor's handle; `placement`: this
    replica's name and address, set once its port is known."""

    def __init__(self, *args: Any, checkpoints: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.checkpoints = checkpoints
        self.placement = Placement("", "")
        self.leases: dict[str, Lease] = {}
        self._versions: dict[str, int] = {}
        self.restored_total = 0
        self.checkpoints_total = 0

    # -- leases -------------------------------------------------------------------------------

    def open_lease(self, lease_id: str) -> Lease:
        lease = self.leases[lease_id] = Lease(lease_id)
        return lease

    async def hold_lease(self, lease: Lease) -> None:
        """Return when the lease's session has ended (or no socket came to use it)."""
        try:
            await asyncio.wait_for(lease.connected.wait(), LEASE_BIND_TIMEOUT_S)
            await lease.done.wait()
        except asyncio.TimeoutError:
            log.warning("lease %s: no connection came within %.0f s", lease.id[:8], LEASE_BIND_TIMEOUT_S)
        finally:
            self.leases.pop(lease.id, None)

    def _end_leases(self, session_id: str) -> None:
        for lease in list(self.leases.values()):
            if lease.session_id == session_id:
                lease.done.set()

    async def handle_ws(self, request: web.Request) -> web.StreamResponse:
        lease = self.leases.get(request.query.get("lease", ""))
        if lease is not None:
            lease.connected.set()
        token = _LEASE.set(lease)
        try:
            return await super().handle_ws(request)
        finally:
            _LEASE.reset(token)
            if lease is not None and lease.session_id is None:
                lease.done.set()  # the connection ended without opening a session

    # -- sessions -----------------------------------------------------------------------------

    async def open_session(self, hello, connection, session_id: str | None = None):
        checkpoint = None
        if hello.session and hello.session not in self.sessions:
            checkpoint = await self._fetch(hello.session)
            if checkpoint is not None and hello.persona not in (None, checkpoint.persona_id):
                checkpoint = None  # another persona: a new session, as PersonaService does
        if checkpoint is not None:
            hello = dataclasses.replace(hello, session=None, persona=checkpoint.persona_id)
            session, _ = await super().open_session(hello, connection, session_id=checkpoint.session_id)
            self._restore(session, checkpoint)
            resumed = True
            self.restored_total += 1
            log.info("session %s restored from checkpoint %d", session.id[:8], checkpoint.version)
        else:
            session, resumed = await super().open_session(hello, connection, session_id=session_id)
        self._watch(session)
        lease = _LEASE.get()
        if lease is not None and lease.session_id is None:
            lease.session_id = session.id
        if self.placement.url:
            self.checkpoints.place.remote(session.id, self.placement)
        if not resumed:
            self._save(session)
        return session, resumed

    async def end_session(self, session_id: str, why: str) -> None:
        known = session_id in self.sessions
        await super().end_session(session_id, why)
        if known:
            if not self.closing:  # stopping: the checkpoint stays, another replica may resume it
                self.checkpoints.drop.remote(session_id)
            self._versions.pop(session_id, None)
            self._end_leases(session_id)

    async def _fetch(self, session_id: str) -> SessionCheckpoint | None:
        try:
            return await asyncio.wait_for(self.checkpoints.get.remote(session_id), 10.0)
        except Exception as exc:  # the store unreachable: a new session, said in the log
            log.warning("checkpoint of %s unavailable: %s", session_id[:8], exc)
            return None

    def _watch(self, session) -> None:
        runtime = session.runtime
        with runtime.lock:
            if not isinstance(runtime.listener, _CheckpointingListener):
                runtime.listener = _CheckpointingListener(session, self._save, session.loop)

    def _save(self, session) -> None:
        """Send the session's checkpoint to the store (on the loop; the call is queued in order)."""
        if session.closed or session.id not in self.sessions:
            return
        runtime = session.runtime
        with runtime.lock:
            conversation = runtime.conversation
            turns = [(t.role, t.text) for t in conversation.history] if conversation is not None else []
        version = self._versions[session.id] = self._versions.get(session.id, 0) + 1
        checkpoint = SessionCheckpoint(
            session_id=session.id, persona_id=session.persona.id,
            history=[dataclasses.asdict(entry) for entry in session.history.entries],
            conversation=turns, state=session.state, version=version,
        )
        self.checkpoints.put.remote(checkpoint)
        self.checkpoints_total += 1

    def _restore(self, session, checkpoint: SessionCheckpoint) -> None:
        """The checkpoint's visible history, conversation and pose into a just-opened session."""
        from ...persona.conversation import Conversation
        from ...persona.schema import CharacterState
        from ...persona.state import StateTracker

        for fields in checkpoint.history:
            session.history.entries.append(HistoryEntry(**fields))
        conversation = Conversation(session.persona)
        for role, text in checkpoint.conversation:
            (conversation.add_user if role == "user" else conversation.add_persona)(text)
        runtime = session.runtime
        with runtime.lock:
            runtime.conversation = conversation
            if checkpoint.state is not None:
                now = runtime.now_ms()
                if runtime.tracker is None:
                    runtime.tracker = StateTracker(session.persona.vocabulary(), clock_ms=now)
                runtime.tracker.resume_from(CharacterState.model_validate(checkpoint.state), now)
                session.state = runtime.tracker.state_at(now).model_dump(mode="json")
        self._versions[session.id] = checkpoint.version

    def session_ids(self) -> list[str]:
        return sorted(self.sessions)
