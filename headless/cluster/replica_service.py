"""The persona service as one replica of a cluster: the unchanged `PersonaService`, plus
checkpoints after every turn, restore on resume, and session leases.

Everything a client sees is `PersonaService`'s own protocol handling (one handler set, so
the cluster never diverges from `persona serve`). This subclass adds only what a replica
needs beyond one process:

- *Checkpoints and restore*: `PersonaService`'s own (headless/server/conversations.py), kept
  in the cluster's detached store (checkpoint.py) instead of files: a `hello` naming a
  session whose replica died resumes it here under the same id, history, conversation and
  pose included; a session that ends for good is dropped from the store.
- *Recordings*: each replica records into its own folder, and a session that was recording
  when its replica was lost goes on recording in a new part on the replica that restores it
  (recordings.py).
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
from pathlib import Path
from typing import Any

from aiohttp import web

from ..server.protocol import Hello, ProtocolError
from ..server.recording import STILL_RECORDING
from ..server.service import PersonaService
from .checkpoint import Placement, RayConversationStore
from .recordings import ClusterRecordingDesk

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


class ReplicaService(PersonaService):
    """See module docstring. `checkpoints`: the store actor's handle; `placement`: this
    replica's name and address, set once its port is known."""

    def __init__(self, *args: Any, checkpoints: Any, **kwargs: Any) -> None:
        super().__init__(*args, conversations=RayConversationStore(checkpoints), **kwargs)
        self.checkpoints = checkpoints
        self.placement = Placement("", "")
        self.leases: dict[str, Lease] = {}
        self._continue_recording: set[str] = set()  # restored sessions whose recording goes on
        self._tasks: set[asyncio.Task] = set()

    def place(self, placement: Placement) -> None:
        """This replica's name and address, known once its port is; from then on it records
        into its own folder (recordings.py says why)."""
        self.placement = placement
        desk = ClusterRecordingDesk(self.recordings, Path(self.recordings.folder), placement.replica, self.checkpoints)
        # The one desk every part of the service uses (sessions' context, downloads); no
        # session exists yet (this runs before the replica serves).
        self.recordings = self.gallery.recordings = desk
        self.context = dataclasses.replace(self.context, recordings=desk)

    @property
    def restored_total(self) -> int:
        return self.checkpointer.restored_total if self.checkpointer else 0

    @property
    def checkpoints_total(self) -> int:
        return self.checkpointer.checkpoints_total if self.checkpointer else 0

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
        restoring = session_id is None and bool(hello.session) and hello.session not in self.sessions
        session, resumed = await super().open_session(hello, connection, session_id=session_id)
        if restoring and resumed and isinstance(self.recordings, ClusterRecordingDesk):
            await self._after_restore(session.id)
        lease = _LEASE.get()
        if lease is not None and lease.session_id is None:
            if any(other.session_id == session.id for other in self.leases.values()):
                # the session already holds a slot here (two tabs resuming it after a failover,
                # both leased here): this connection's slot goes back, or one session held two
                lease.done.set()
            else:
                lease.session_id = session.id
        if self.placement.url:  # recorded before `ready` goes out: a quick reconnect finds it
            await self.checkpoints.place.remote(session.id, self.placement)
        return session, resumed

    async def _after_restore(self, session_id: str) -> None:
        """A session restored from its checkpoint: if it was recording, close the part its lost
        replica left (when reachable) and go on recording in a new part once `ready` is sent."""
        desk = self.recordings
        try:
            parts = await self.checkpoints.recording_parts.remote(session_id)
        except Exception as exc:  # noqa: BLE001 - the store unreachable: the session goes on unrecorded
            log.warning("session %s: its recording parts are unknown (%s)", session_id[:8], type(exc).__name__)
            return
        if not parts or parts[-1]["state"] == "ended":
            return
        last = parts[-1]
        if last["state"] == "recording":
            await asyncio.get_running_loop().run_in_executor(self.pool, desk.repair_part, last["folder"], last["token"])
        self._continue_recording.add(session_id)

    async def _dispatch(self, connection, message) -> bool:
        done = await super()._dispatch(connection, message)
        session = connection.session
        if isinstance(message, Hello) and session is not None and session.id in self._continue_recording:
            self._continue_recording.discard(session.id)
            task = asyncio.get_running_loop().create_task(self._record_on(session))  # after `ready`
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return done

    async def _record_on(self, session) -> None:
        try:
            await session.set_recording(True, None)  # announced unasked: `recording`, reply_to null
        except ProtocolError as exc:
            log.warning("session %s: the recording could not go on: %s", session.id[:8], exc.message)

    async def handle_recording(self, request: web.Request) -> web.StreamResponse:
        """A recording from this replica's folder or another replica's (a session's earlier
        parts), when the folders are on this machine or a shared volume."""
        desk = self.recordings
        if not isinstance(desk, ClusterRecordingDesk):
            return await super().handle_recording(request)
        token = request.match_info["token"]
        loop = asyncio.get_running_loop()
        path = await loop.run_in_executor(self.pool, desk.locate, token)
        written = path is not None and await loop.run_in_executor(self.pool, desk.being_written, token, path)
        if written or token in desk.active:
            return web.json_response(STILL_RECORDING, status=409)  # here, or another replica's part still being written
        if path is None:
            raise web.HTTPNotFound(text="no such recording")
        return web.FileResponse(path, headers={"Content-Type": "video/mp4",
                                               "Content-Disposition": f'attachment; filename="persona-{token[:8]}.mp4"'})

    async def close(self) -> None:
        if isinstance(self.recordings, ClusterRecordingDesk):
            self.recordings.stopping = True  # parts cut now are continued by the sessions' next replica
        await super().close()

    async def end_session(self, session_id: str, why: str, *, instance=None) -> bool:
        ended = await super().end_session(session_id, why, instance=instance)
        if ended:
            if not self.closing:  # stopping: the checkpoint stays, another replica may resume it
                self.checkpoints.drop.remote(session_id, self.placement.replica or None)
            self._end_leases(session_id)
        return ended

    def session_ids(self) -> list[str]:
        return sorted(self.sessions)
