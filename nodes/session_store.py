"""Per-session state that outlives node objects: conversation, state tracker, renderer.

ComfyUI may clone or re-create node objects between runs, and the headless runner runs
many sessions through one graph, so no node keeps state on `self`. Nodes take a
`session_id` input and ask the current `SessionStore` for that session's `Session`, whose
`resource(key, factory)` builds each stateful part once.

Which store is "current" is a context variable: the headless runner binds its own store
while it executes a tick (so a test or a server builds the executor with its own store,
house rule 9); inside ComfyUI nothing binds one and the process-wide default is used.

The host (server, ComfyUI panel) learns what happens inside a tick through
`Session.emit(kind, payload)`: the interpreter node emits `directives`/`reply`, the state
tracker `state`, the stream sink `chunk`. The default emitter records nothing.
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

__all__ = ["Session", "SessionStore", "bind_store", "current_store", "default_store"]

Emitter = Callable[[str, dict], None]


def _no_emit(kind: str, payload: dict) -> None:
    """Default event sink: a session nobody listens to (e.g. a one-off ComfyUI run)."""


class Session:
    """One viewer session's stateful parts, built lazily and closed together."""

    def __init__(self, session_id: str, emit: Emitter | None = None) -> None:
        self.id = session_id
        self.emit: Emitter = emit or _no_emit
        self.created = time.monotonic()
        # Re-entrant: a node may build one resource from inside another's factory.
        self.lock = threading.RLock()
        self._resources: dict[str, Any] = {}
        self._reset_hooks: list[Callable[[], None]] = []
        self._turn_counter = 0

    def now_ms(self) -> int:
        """Milliseconds since the session began: the clock the state tracker plans on."""
        return int((time.monotonic() - self.created) * 1000)

    def resource(self, key: str, factory: Callable[[], Any]) -> Any:
        """The session's `key` part, built by `factory` the first time it is asked for."""
        with self.lock:
            if key not in self._resources:
                self._resources[key] = factory()
            return self._resources[key]

    def peek(self, key: str) -> Any | None:
        """The part if it was built, else None (never builds)."""
        with self.lock:
            return self._resources.get(key)

    def as_performed(self, directives: list) -> list:
        """`directives` as the character will perform them (PROTOCOL.md: `directives` lists
        them "in the order they will be performed"): the session's state tracker plans them
        on a copy of itself, so a stand is inserted before walking while seated and a sit
        while seated is dropped, exactly as the tracker node does a moment later. Before the
        tracker exists they are returned as given."""
        import copy

        from ..persona.state import PlanError

        with self.lock:
            tracker = self._resources.get("tracker")
            if tracker is None:
                return list(directives)
            try:
                return copy.deepcopy(tracker).plan(list(directives), self.now_ms())
            except PlanError:
                return list(directives)

    def replace(self, key: str, value: Any) -> None:
        """Swap a part (e.g. a renderer restarted at another size), closing the old one."""
        with self.lock:
            old = self._resources.get(key)
            self._resources[key] = value
        if old is not None and old is not value:
            _close_quietly(old)

    def next_turn(self) -> int:
        """A fresh turn number for runs that were not given one (one ComfyUI queue = one turn)."""
        with self.lock:
            self._turn_counter += 1
            return self._turn_counter

    def note_turn(self, turn: int) -> None:
        """Keep `next_turn` above turn numbers the host assigned itself."""
        with self.lock:
            self._turn_counter = max(self._turn_counter, turn)

    def on_reset(self, hook: Callable[[], None]) -> None:
        """Run `hook` when the viewer asks for `reset` (back to idle, history kept)."""
        with self.lock:
            if hook not in self._reset_hooks:
                self._reset_hooks.append(hook)

    def reset(self) -> None:
        with self.lock:
            hooks = list(self._reset_hooks)
        for hook in hooks:
            hook()

    def close(self) -> None:
        """Close every part that can be closed (renderers may hold threads or GPU memory)."""
        with self.lock:
            parts = list(self._resources.values())
            self._resources.clear()
            self._reset_hooks.clear()
        for part in parts:
            _close_quietly(part)


def _close_quietly(part: Any) -> None:
    close = getattr(part, "close", None)
    if callable(close):
        close()


class SessionStore:
    """Sessions by id. Thread-safe: ticks of different sessions run in different threads."""

    def __init__(self) -> None:
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()

    def get(self, session_id: str) -> Session:
        """The session, created on first use (a ComfyUI run names its session in a widget)."""
        if not isinstance(session_id, str) or not session_id:
            raise ValueError("session_id must be a non-empty string")
        with self._lock:
            session = self._sessions.get(session_id)
            if session is None:
                session = self._sessions[session_id] = Session(session_id)
            return session

    def open(self, session_id: str, emit: Emitter | None = None) -> Session:
        """Create (or take over) a session and point its events at `emit`."""
        session = self.get(session_id)
        if emit is not None:
            session.emit = emit
        return session

    def find(self, session_id: str) -> Session | None:
        with self._lock:
            return self._sessions.get(session_id)

    def drop(self, session_id: str) -> None:
        """Forget a session and close its parts."""
        with self._lock:
            session = self._sessions.pop(session_id, None)
        if session is not None:
            session.close()

    def ids(self) -> list[str]:
        with self._lock:
            return list(self._sessions)

    def __len__(self) -> int:
        with self._lock:
            return len(self._sessions)

    def close(self) -> None:
        for session_id in self.ids():
            self.drop(session_id)


_DEFAULT = SessionStore()
_CURRENT: contextvars.ContextVar[SessionStore | None] = contextvars.ContextVar(
    "comfyui_persona_session_store", default=None
)


def default_store() -> SessionStore:
    """The process-wide store ComfyUI runs use (nothing binds another there)."""
    return _DEFAULT


def current_store() -> SessionStore:
    """The store bound by the running executor, else the process-wide default."""
    store = _CURRENT.get()  # not `or`: an empty store is falsy (it has __len__)
    return store if store is not None else _DEFAULT


@contextlib.contextmanager
def bind_store(store: SessionStore) -> Iterator[SessionStore]:
    """Make `store` current for node code run inside this block (this thread/context)."""
    token = _CURRENT.set(store)
    try:
        yield store
    finally:
        _CURRENT.reset(token)
