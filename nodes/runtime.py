"""A session's typed runtime: what outlives node objects, and what a host plugs into it.

ComfyUI may clone or re-create node objects between runs, and a host runs many sessions
through one graph, so no node keeps state on `self`. Nodes take a `session_id` input and ask
the current `SessionStore` for that session's `Session`: a dataclass whose fields are the
stateful parts (conversation, state tracker, renderer, recorder files), each typed.

What a node needs from the host is declared here as protocols, so nodes import them without
importing `headless` (and a host is any object that fits):
- `SessionListener`: what happens inside a run (directives, reply text, state changes,
  rendered chunks) goes to it; the headless server's viewer session and the ComfyUI panel's
  session implement it; without one, nothing listens (a one-off ComfyUI run).
- `SpeechTrack`: a host that speaks (the server's `SessionSpeech`) hands the renderer the
  mouth timeline of queued speech before each chunk, and the recorder the sentences
  sounding during it.

Which store is "current" is a context variable: a host binds its own store while it runs
node code (`bind_store`; a test or a server builds the executor with its own store, house
rule 9); inside ComfyUI nothing binds one and the process-wide default is used.
"""

from __future__ import annotations

import collections
import contextlib
import contextvars
import copy
import itertools
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from ..persona.conversation import Conversation
    from ..persona.state import StateTracker
    from .types import DirectivePlan, FramesValue

__all__ = [
    "CallbackListener",
    "every_run",
    "per_turn",
    "RendererSlot",
    "Session",
    "SessionListener",
    "SessionStore",
    "SpeechTrack",
    "bind_store",
    "current_store",
    "default_store",
]


_RUNS = itertools.count(1)


def every_run(**_: Any) -> str:
    """An `IS_CHANGED` value that is new on every call: the node runs on every queued prompt.

    Not NaN: ComfyUI's cache key is a tuple, and tuples compare an element with itself by
    identity first, so the one `math.nan` object matched itself and a second Run of an
    unchanged workflow was fully cached (no new turn, the same frames)."""
    return f"run-{next(_RUNS)}"


def per_turn(turn: int) -> int | str:
    """`IS_CHANGED` for per-turn nodes: a host-assigned turn (> 0) or "no message" (-1) is
    stable, so ticks between messages hit the cache; 0 (a queued ComfyUI run with no host)
    is a new turn on every run."""
    return turn if turn else every_run()


@runtime_checkable
class SessionListener(Protocol):
    """Receives what a session's runs produce. Called on the thread that runs the node:
    an implementation hands the event on (e.g. `loop.call_soon_threadsafe`), it does no work."""

    def on_directives(self, turn: int, directives: Sequence[Any]) -> None:
        """The directives interpreted for `turn`, as they will be performed (ActionDirective)."""

    def on_reply(self, turn: int, text: str, done: bool) -> None:
        """The persona's reply to `turn`: partial text (`done` False), then the whole."""

    def on_state(self, state: dict) -> None:
        """The character state changed (CharacterState, JSON-dumped)."""

    def on_chunk(self, frames: FramesValue) -> None:
        """A chunk was rendered for the viewer (the stream sink)."""


@runtime_checkable
class SpeechTrack(Protocol):
    """What the renderer and recorder nodes need from a host that speaks."""

    def render(self, backend: Any, fps: float) -> Any:
        """The backend's next chunk, with the mouth timeline of queued speech applied."""

    def scheduled(self) -> list:
        """The queued sentences (`ScheduledUtterance`s on the session clock), oldest first."""


class _Quiet:
    """The listener of a session nobody watches (a one-off ComfyUI run, a test)."""

    def on_directives(self, turn: int, directives: Sequence[Any]) -> None:
        pass

    def on_reply(self, turn: int, text: str, done: bool) -> None:
        pass

    def on_state(self, state: dict) -> None:
        pass

    def on_chunk(self, frames: FramesValue) -> None:
        pass


QUIET = _Quiet()


class CallbackListener:
    """A `SessionListener` that hands every event to one `emit(kind, payload)` callback
    (`directives` {turn, directives}, `reply` {turn, text, done}, `state` {state}, `chunk`
    {frames}): for hosts and tools that record or forward events as they come."""

    def __init__(self, emit: Callable[[str, dict], None]) -> None:
        self.emit = emit

    def on_directives(self, turn: int, directives: Sequence[Any]) -> None:
        self.emit("directives", {"turn": turn, "directives": list(directives)})

    def on_reply(self, turn: int, text: str, done: bool) -> None:
        self.emit("reply", {"turn": turn, "text": text, "done": done})

    def on_state(self, state: dict) -> None:
        self.emit("state", {"state": state})

    def on_chunk(self, frames: FramesValue) -> None:
        self.emit("chunk", {"frames": frames})


class RendererSlot(Protocol):
    """A session's renderer backend and the settings it was started with (`key`): the
    renderer nodes restart it when the key changes."""

    key: tuple
    backend: Any
    submitted_turn: int

    def close(self) -> None: ...


@dataclass
class TrackerMemory:
    """What the state tracker node remembers between runs of one session."""

    applied_turn: int = 0
    plan: DirectivePlan | None = None


class TurnMemo:
    """What each per-turn node produced for the last turns of a session, by (node kind, turn).

    A host may run a turn's nodes more than once: ComfyUI evicts cached outputs when another
    workflow runs in between, and then runs the turn's nodes again with the same turn number.
    A message must not join the history twice, nor be interpreted (and replied to) twice, so
    the per-turn nodes answer a turn they already did from here. Bounded: the newest turns."""

    LIMIT = 32

    def __init__(self) -> None:
        self._done: collections.OrderedDict[tuple[str, int], Any] = collections.OrderedDict()

    def get(self, kind: str, turn: int) -> Any | None:
        return self._done.get((kind, turn))

    def put(self, kind: str, turn: int, value: Any) -> None:
        self._done[(kind, turn)] = value
        while len(self._done) > self.LIMIT:
            self._done.popitem(last=False)


@dataclass
class Session:
    """One session's stateful parts, built lazily by the nodes and closed together.

    Fields are set under `lock` (re-entrant: a node may build one part inside another's
    construction); ticks and turns of one session run on different threads."""

    id: str
    listener: SessionListener = QUIET
    speech: SpeechTrack | None = None
    #: A host streams this session chunk after chunk (the headless server, the Persona tab);
    #: False: every queued run stands alone (a ComfyUI Run), so a run's files are finished with it.
    streamed: bool = False
    created: float = field(default_factory=time.monotonic)
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False)
    conversation: Conversation | None = None
    tracker: StateTracker | None = None
    tracker_memory: TrackerMemory = field(default_factory=TrackerMemory)
    renderer: RendererSlot | None = None
    #: The stream lip-sync node's stage (`nodes.lipsync_nodes.StreamLipSync`): its face track
    #: and audio features run across chunks; rebuilt when its files or load settings change.
    lipsync: Any = None
    #: The recorder node's open files, by (path, width, height), and the paths used so far.
    recordings: dict[tuple, Any] = field(default_factory=dict)
    recorded_paths: set[Path] = field(default_factory=set)
    turn_memo: TurnMemo = field(default_factory=TurnMemo)
    #: A scene's personas (protocol 1.1, persona.scene), left to right, set by the host before
    #: any node runs; empty: the workflow's one persona. The nodes build a scene's interpreter,
    #: tracker and renderer from it.
    cast: tuple = ()
    scene_chat: Any = None  # persona.scene.SceneChat, built on the scene's first turn
    #: Without a cast: the card the tracker and the conversation were built for (another card,
    #: or this one edited, starts them afresh; see nodes.scene_nodes.lead_persona).
    card: Any = None
    last_used: float = field(default_factory=time.monotonic)  # the last time a node asked for it
    _turns: int = 0

    def scheduled_speech(self) -> list:
        """The sentences the speech track has queued (`ScheduledUtterance`s on the session
        clock), oldest first; empty when nothing speaks in this session.

        The track (`SpeechTrack`; the server's `SessionSpeech`) keeps each sentence until its
        last sample has sounded, and holds a cut-off one shortened to the cut (later ones
        dropped). Nodes after the renderer run on every chunk, and a cut lands no earlier than
        the next frame to render, so what they read for the chunk just rendered is what the
        viewer hears during it."""
        return list(self.speech.scheduled()) if self.speech is not None else []

    def now_ms(self) -> int:
        """Milliseconds since the session began: the clock the state tracker plans on."""
        return int((time.monotonic() - self.created) * 1000)

    def next_turn(self) -> int:
        """A fresh turn number for runs that were not given one (one ComfyUI run = one turn)."""
        with self.lock:
            self._turns += 1
            return self._turns

    def note_turn(self, turn: int) -> None:
        """Keep `next_turn` above turn numbers the host assigned itself."""
        with self.lock:
            self._turns = max(self._turns, turn)

    def as_performed(self, directives: list) -> list:
        """`directives` as the character will perform them (PROTOCOL.md: `directives` lists
        them "in the order they will be performed"): the tracker plans them on a copy of
        itself, so a stand is inserted before walking while seated and a sit while seated is
        dropped, exactly as the tracker node does a moment later. Before the tracker exists
        they are returned as given."""
        from ..persona.state import PlanError

        with self.lock:
            if self.tracker is None:
                return list(directives)
            try:
                return copy.deepcopy(self.tracker).plan(list(directives), self.now_ms())
            except PlanError:
                return list(directives)

    def set_renderer(self, slot: RendererSlot | None) -> None:
        """Swap the renderer (e.g. restarted at another size), closing the old one."""
        with self.lock:
            old, self.renderer = self.renderer, slot
        if old is not None and old is not slot:
            old.close()

    def reset(self) -> None:
        """Back to idle (`reset`): the character and the renderer; history kept."""
        with self.lock:
            if self.tracker is not None:
                self.tracker.reset(self.now_ms())
            if self.renderer is not None:
                self.renderer.backend.reset()
            if self.lipsync is not None:
                self.lipsync.stage.reset()

    def close(self) -> None:
        """Close every part that holds something (renderers hold threads or GPU memory,
        recorder files must be finished)."""
        with self.lock:
            renderer, self.renderer = self.renderer, None
            recordings, self.recordings = list(self.recordings.values()), {}
        for part in (*recordings, renderer):
            if part is not None:
                part.close()


class SessionStore:
    """Sessions by id. Thread-safe: runs of different sessions go on different threads.

    `idle_s`: a session no host streams (a ComfyUI Run's) that no node has asked for in this
    long is closed (its renderer, its open files), checked at most once a minute: queued runs
    never say when they are done. None: sessions live until dropped."""

    SWEEP_EVERY_S = 60.0

    def __init__(self, idle_s: float | None = None) -> None:
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()
        self.idle_s = idle_s
        self._swept = time.monotonic()

    def get(self, session_id: str) -> Session:
        """The session, created on first use (a ComfyUI run names its session in a widget)."""
        if not isinstance(session_id, str) or not session_id:
            raise ValueError("session_id must be a non-empty string")
        now = time.monotonic()
        with self._lock:
            session = self._sessions.get(session_id)
            if session is None:
                session = self._sessions[session_id] = Session(session_id)
            session.last_used = now
            idle = self._take_idle(now)
        for stale in idle:
            stale.close()
        return session

    def _take_idle(self, now: float) -> list[Session]:
        if self.idle_s is None or now - self._swept < self.SWEEP_EVERY_S:
            return []
        self._swept = now
        stale = [s for s in self._sessions.values() if not s.streamed and now - s.last_used > self.idle_s]
        for session in stale:
            del self._sessions[session.id]
        return stale

    def open(self, session_id: str, listener: SessionListener | None = None,
             speech: SpeechTrack | None = None, streamed: bool = False) -> Session:
        """Create (or take over) a session, pointing its events at `listener`; `streamed`: a
        host streams it (see `Session.streamed`)."""
        session = self.get(session_id)
        with session.lock:
            if listener is not None:
                session.listener = listener
            if speech is not None:
                session.speech = speech
            session.streamed = session.streamed or streamed
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


#: How long a ComfyUI Run's session (nobody streams it) lives after its last run.
QUEUED_SESSION_IDLE_S = 15 * 60.0
_DEFAULT = SessionStore(idle_s=QUEUED_SESSION_IDLE_S)
_CURRENT: contextvars.ContextVar[SessionStore | None] = contextvars.ContextVar(
    "comfyui_persona_session_store", default=None
)


def default_store() -> SessionStore:
    """The process-wide store ComfyUI runs use (nothing binds another there)."""
    return _DEFAULT


def current_store() -> SessionStore:
    """The store bound by the running host, else the process-wide default."""
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
