"""Conversations that outlive the process serving them: a session's checkpoint, saved after
every turn and state change, restored when a client resumes a session this process does not
hold (after a server restart, or on another cluster replica).

A checkpoint is what the viewer would miss: the visible history (`ready.history`), the
interpreter's conversation and the character's state, under the session's id and persona
(and scene cast). Video is not in it: the renderer re-draws from the persona's identity
anchor in one chunk. Where it is kept is a `ConversationStore`:

- `FileConversationStore` (`persona serve`): one JSON file per session in the user's data
  folder, written atomically off the event loop, bounded in count and age. Files rather than
  SQLite: one small document per session, read only by id, never queried; an atomic rename
  is all the consistency it needs.
- the cluster's store (headless/cluster/): one detached Ray actor shared by the replicas.

`Checkpointer` glues a store to `PersonaService`: it wraps each session's listener so every
event that changes what must survive queues a save, and restores a checkpoint into a new
session with the old id.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import re
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol

from ...durable import atomic_write_text
from .history import HistoryEntry

__all__ = ["Checkpointer", "ConversationStore", "FileConversationStore", "SessionCheckpoint"]

log = logging.getLogger(__name__)

_SESSION_ID = re.compile(r"^[A-Za-z0-9_-]{8,64}$")
#: A checkpoint file larger than this is not read (history is bounded far below it).
MAX_FILE_BYTES = 4 * 1024 * 1024


@dataclasses.dataclass
class SessionCheckpoint:
    """What a session needs to go on elsewhere: plain data (JSON on disk, pickled by Ray)."""

    session_id: str
    persona_id: str
    #: `ready.history` entries as the server keeps them (`HistoryEntry` fields).
    history: list[dict] = dataclasses.field(default_factory=list)
    #: The interpreter's conversation, oldest first: (role, text).
    conversation: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    #: The last `state` message's state (CharacterState, JSON), None before the first.
    state: dict | None = None
    #: A scene's persona ids in order (1.1), empty for a one-persona session.
    cast: list[str] = dataclasses.field(default_factory=list)
    #: How many checkpoints of this session were saved (each turn and state change adds one).
    version: int = 0
    saved_at: float = dataclasses.field(default_factory=time.time)

    def public(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> SessionCheckpoint:
        fields = {f.name for f in dataclasses.fields(cls)}
        data = {k: v for k, v in data.items() if k in fields}
        data["conversation"] = [(str(role), str(text)) for role, text in data.get("conversation", [])]
        return cls(**data)


class ConversationStore(Protocol):
    """Where checkpoints live. `put` and `drop` return at once and apply in call order."""

    async def get(self, session_id: str) -> SessionCheckpoint | None: ...

    def put(self, checkpoint: SessionCheckpoint) -> None: ...

    def drop(self, session_id: str) -> None: ...


class FileConversationStore:
    """One `<session id>.json` per session under `folder`; at most `max_sessions` files and
    none older than `max_age_s` (the oldest go first, checked when a file is added, on the
    writer's thread; `get` refuses an older checkpoint whatever is on disk)."""

    def __init__(self, folder: Path, *, max_sessions: int = 1000, max_age_s: float = 30 * 24 * 3600.0) -> None:
        self.folder = folder
        self.max_sessions = max_sessions
        self.max_age_s = max_age_s
        # One thread: writes land in call order, and none blocks the event loop.
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="persona-conversations")

    def _path(self, session_id: str) -> Path | None:
        return self.folder / f"{session_id}.json" if _SESSION_ID.match(session_id) else None

    async def get(self, session_id: str) -> SessionCheckpoint | None:
        path = self._path(session_id)
        if path is None:
            return None
        return await asyncio.get_running_loop().run_in_executor(self._writer, self._read, path)

    def _read(self, path: Path) -> SessionCheckpoint | None:
        try:
            if path.stat().st_size > MAX_FILE_BYTES:
                return None
            checkpoint = SessionCheckpoint.from_json(json.loads(path.read_text(encoding="utf-8")))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, TypeError) as exc:  # a damaged file: a new session, said in the log
            log.warning("conversation %s unreadable: %s", path.name, exc)
            return None
        if time.time() - checkpoint.saved_at > self.max_age_s:
            return None
        return checkpoint

    def put(self, checkpoint: SessionCheckpoint) -> None:
        path = self._path(checkpoint.session_id)
        if path is not None:
            self._writer.submit(self._write, path, json.dumps(checkpoint.public(), ensure_ascii=False))

    def _write(self, path: Path, text: str) -> None:
        new = not path.exists()
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            atomic_write_text(path, text)
        except (OSError, ValueError) as exc:  # a full disk, text UTF-8 cannot hold: the conversation
            log.warning("conversation %s not saved: %s", path.name, exc)  # goes on, unsaved, said in the log
            return
        if new:  # only a new file can take the folder past its bound
            self._evict()

    def drop(self, session_id: str) -> None:
        path = self._path(session_id)
        if path is not None:
            self._writer.submit(path.unlink, missing_ok=True)

    def _evict(self) -> None:
        try:
            files = sorted(self.folder.glob("*.json"), key=lambda p: (p.stat().st_mtime_ns, p.name))
        except OSError:
            return
        now = time.time()
        for i, path in enumerate(files):
            try:
                if len(files) - i > self.max_sessions or now - path.stat().st_mtime > self.max_age_s:
                    path.unlink(missing_ok=True)
            except OSError:
                continue

    def flush(self) -> None:
        """Wait for the writes queued so far (tests; shutdown)."""
        self._writer.submit(lambda: None).result()

    def close(self) -> None:
        self._writer.shutdown(wait=True)


class _CheckpointingListener:
    """The session's own listener, plus a save queued after each event that changes what
    must survive (called on worker threads, like every `SessionListener`)."""

    def __init__(self, inner: Any, save: Any, loop: asyncio.AbstractEventLoop) -> None:
        self.inner = inner
        self._save = save
        self._loop = loop

    def _after(self, now: bool = False) -> None:
        # FIFO after the session's own call_soon_threadsafe: the session has the event by then.
        self._loop.call_soon_threadsafe(self._save, self.inner, now)

    def on_directives(self, turn: int, directives: Sequence[Any]) -> None:
        self.inner.on_directives(turn, directives)
        self._after()

    def on_reply(self, turn: int, text: str, done: bool) -> None:
        self.inner.on_reply(turn, text, done)
        if done:
            self._after(now=True)

    def on_state(self, state: dict) -> None:
        self.inner.on_state(state)
        self._after()

    def on_cast_reply(self, turn: int, character: str, text: str) -> None:
        self.inner.on_cast_reply(turn, character, text)
        self._after(now=True)

    def on_chunk(self, frames: Any) -> None:
        self.inner.on_chunk(frames)

    def __getattr__(self, name: str) -> Any:  # anything else a node asks the session's listener
        return getattr(self.inner, name)


class Checkpointer:
    """Saves sessions to `store` and restores them from it (see the module docstring)."""

    def __init__(self, store: ConversationStore, *, min_interval_s: float = 1.0) -> None:
        self.store = store
        self.min_interval_s = min_interval_s
        self._versions: dict[str, int] = {}
        self._last: dict[str, float] = {}  # session id -> when its last checkpoint went out
        self._pending: dict[str, asyncio.TimerHandle] = {}
        self.restored_total = 0
        self.checkpoints_total = 0

    async def fetch(self, session_id: str) -> SessionCheckpoint | None:
        try:
            return await asyncio.wait_for(self.store.get(session_id), 10.0)
        except Exception as exc:  # the store unreachable: a new session, said in the log
            log.warning("checkpoint of %s unavailable: %s", session_id[:8], exc)
            return None

    def watch(self, session) -> None:
        """Save `session` after every turn and state change from now on."""
        runtime = session.runtime
        with runtime.lock:
            if not isinstance(runtime.listener, _CheckpointingListener):
                runtime.listener = _CheckpointingListener(session, self.save, session.loop)

    def save(self, session, now: bool = False) -> None:
        """Queue the session's checkpoint (on the loop): at once, or, within `min_interval_s`
        of the last one, once at the end of that interval (a client sending actions many
        times a second costs one write a second, and the last change is never lost).
        `now`: a finished reply, written at once (turns are rate-limited upstream), so a
        failover right after a reply does not lose it."""
        if now:
            pending = self._pending.pop(session.id, None)
            if pending is not None:
                pending.cancel()
            self._write(session)
            return
        if session.closed or session.id in self._pending:
            return
        wait = self._last.get(session.id, -1e9) + self.min_interval_s - session.loop.time()
        if wait > 0:
            def later() -> None:
                self._pending.pop(session.id, None)
                self._write(session)

            self._pending[session.id] = session.loop.call_later(wait, later)
            return
        self._write(session)

    def flush(self, session) -> None:
        """The session is ending: write its checkpoint now, held back or not. Always, because
        the save queued after an event can come later than the event itself (the worker
        thread queues the session's handler, then the save; a busy box may run the session's
        end in between), so the last change may have no save of its own yet."""
        pending = self._pending.pop(session.id, None)
        if pending is not None:
            pending.cancel()
        self._write(session)

    def _write(self, session) -> None:
        if session.closed:
            return
        self._last[session.id] = session.loop.time()
        runtime = session.runtime
        with runtime.lock:
            conversation = runtime.conversation
            turns = [(t.role, t.text) for t in conversation.history] if conversation is not None else []
        version = self._versions[session.id] = self._versions.get(session.id, 0) + 1
        self.store.put(SessionCheckpoint(
            session_id=session.id, persona_id=session.persona.id,
            history=[dataclasses.asdict(entry) for entry in session.history.entries],
            conversation=turns, state=session.state, cast=[p.id for p in session.cast], version=version,
        ))
        self.checkpoints_total += 1

    def restore(self, session, checkpoint: SessionCheckpoint) -> None:
        """The checkpoint's visible history, conversation and pose into a just-opened session."""
        from ...persona.conversation import Conversation
        from ...persona.schema import CharacterState
        from ...persona.state import StateTracker

        for fields in checkpoint.history:
            entry = HistoryEntry(**fields)
            if entry.role == "persona":
                # A reply still arriving when the old process stopped will never finish: it is
                # shown as it was cut, not as still streaming (the message is not answered again).
                entry.done = True
            session.history.entries.append(entry)
        conversation = Conversation(session.persona)
        for role, text in checkpoint.conversation:
            (conversation.add_user if role == "user" else conversation.add_persona)(text)
        runtime = session.runtime
        with runtime.lock:
            runtime.conversation = conversation
            if checkpoint.state is not None and not checkpoint.cast:
                now = runtime.now_ms()
                if runtime.tracker is None:
                    runtime.tracker = StateTracker(session.persona.vocabulary(), clock_ms=now)
                runtime.tracker.resume_from(CharacterState.model_validate(checkpoint.state), now)
                session.state = runtime.tracker.state_at(now).model_dump(mode="json")
        self._versions[session.id] = checkpoint.version
        self.restored_total += 1

    def close(self) -> None:
        """Wait for the saves queued so far, where the store queues them itself."""
        close = getattr(self.store, "close", None)
        if close is not None:
            close()

    def forget(self, session_id: str, *, drop: bool) -> None:
        self._versions.pop(session_id, None)
        self._last.pop(session_id, None)
        pending = self._pending.pop(session_id, None)
        if pending is not None:
            pending.cancel()
        if drop:
            self.store.drop(session_id)
