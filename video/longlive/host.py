"""`EngineHost`: one loaded LongLive engine serving several real-time sessions of one frame size.

Why batch: one session at a time leaves most of a GPU idle at real-time pacing (a 480×832 chunk
takes a fraction of its 0.75 s of video), and separate engine processes share neither weights,
compiled code nor CUDA graphs. Here every session is a row of the engine's KV store
(`runtime.KVStore`) and a queue of passes (`stream.SessionStream`); each pass of the host
(`_tick`) runs one pass of every session that has work in one batched forward
(`EngineRuntime.run`). Sessions at different points (one starting, one re-caching, the rest in
steady state) share it, and a session joins or leaves between passes without recompiling
(dynamic batch size in the compiled code; one CUDA graph per row range).

Who drives: there is no scheduler thread. A caller that wants its next chunk
(`HostedSession.next_frames`) registers the request, and whichever waiting caller finds the host
idle runs one tick for everyone, then hands over (leader/follower). So a single session behaves
exactly like a plain loop, a paused session costs nothing, and a session joining mid-chunk of the
others starts its own chunk at the very next pass (continuous batching, with per-row timesteps).

Scheduling, in order:
1. real time: every session with a chunk wanted runs in every pass (one batched forward costs
   less than separate ones), each with its own deadline (`next_frames(deadline=...)`);
2. latency: a session whose chunk carries a new directive (`notify_directive`) is urgent; sessions
   whose deadline leaves room for the urgent chunk's remaining passes sit those passes out, so
   the batch is smaller and the directive's frames come sooner; work no caller waits for yet
   (a pass owed from the last chunk, a chunk begun early: point 4) always sits out;
3. preemption: a directive that arrives while that session's chunk is being denoised restarts the
   chunk under the new prompt (from the same noise) when it can still meet its deadline, instead
   of finishing a chunk nobody asked for and making the new one after it;
4. joining (`prefetch`, off by default; the sampler node's `fill_batches`): a streaming session with no passes queued starts its
   next chunk as soon as another session has passes to run, so it rides in that batch instead
   of running alone a moment later. Without it, callers that come back for their next chunk a
   little after the others (a thread waking and taking the lock, a paced player) each get
   passes of their own, and the batch stays near one row (measured on an H100: 1.25 rows a
   pass with 3-10 sessions asking back to back). A session is at most one chunk ahead of its
   caller beyond the one waiting for it; its next request takes the chunk begun for it. The
   price: a directive that comes while such a chunk is already made shows one chunk later (one
   in flight is restarted, point 3). Why off: batching adds little throughput on an H100
   (one stream already fills it), while that price is paid by every viewer: two paced sessions
   at 480x832 got directive → frames p50 515 / p95 1,112 ms with it and 303 / 535 ms without,
   at the same frame rate (longlive-serving-h100-2026-12-07-wave7-fixes-paced-480.json).
   Only for sessions whose prompts come from hooks (`LongLiveBackend`), and not while a
   directive's chunk is awaited; see `_join_batch`.
An interrupt callback (ComfyUI's cancel) is checked between passes: the session's chunk is
restarted from its first pass later, so the next request continues the stream without a gap.

Failure isolation: if a batched pass raises, each of its rows is run alone (passes rewrite the
same cache rows, so a retry is harmless) and only the sessions whose own pass fails are failed;
a session whose decode fails is failed alone. A session of another frame size, or one more than
`max_sessions`, is refused with `EngineBusyError` (load another engine for another size).

Frames leave through a decode per session on a high-priority side stream, copied to pinned host
memory; the caller waits for its own copy only, never for the passes queued behind it. On a
GPU, before a lone session's caller gets its frames, the chunk's refresh pass is queued (one
graph replay), so it runs while the caller works on the frames (`_queue_owed`).
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from ...errors import PersonaError
from ..backend import RenderError
from .runtime import DENSE, EngineRuntime
from .stream import PromptSwitch, RecacheMode, RecacheTiming, SessionStream

log = logging.getLogger(__name__)


class EngineBusyError(RenderError):
    """The engine cannot take this session: another frame size is streaming, or it is full."""

    code = "engine_busy"


class ChunkInterrupted(PersonaError, RuntimeError):
    """The caller's interrupt callback fired: the chunk was stopped between two passes; the next
    request continues the stream from that chunk (no frame is skipped)."""

    code = "interrupted"


class SessionFailedError(RenderError):
    """This session failed (its pass or its decode raised); the engine's other sessions go on."""

    code = "session_failed"


@dataclass
class _Ready:
    frames: torch.Tensor  # uint8 (T, H, W, 3) on the CPU (pinned and filled asynchronously on a GPU)
    event: torch.cuda.Event | None
    switched: bool


@dataclass
class HostStats:
    """What the host did, for benchmarks and logs."""

    ticks: int = 0
    passes: int = 0
    rows: int = 0
    preempted: int = 0
    preempt_declined: int = 0
    interrupts: int = 0
    failures: int = 0
    sat_out: int = 0  # rows left out of a pass for an urgent session
    prefetched: int = 0  # chunks begun for a session to join a batch before it asked
    pass_gpu_s: float = 0.0  # GPU time of the timed passes (CUDA events; graph captures left out)
    batch_sizes: dict[int, int] = field(default_factory=dict)


class HostedSession:
    """One session's handle on an `EngineHost` (see the module docstring). Thread-safe."""

    def __init__(self, host: EngineHost, stream: SessionStream, decoder_stream, name: str) -> None:
        self.host = host
        self.stream = stream
        self.decode = decoder_stream
        self.name = name
        self.ready: deque[_Ready] = deque()
        self.wanted = 0  # chunks asked for (or begun to join a batch) and not yet handed out
        self.prefetched = 0  # of those, begun before the caller asked (0 or 1)
        self.claimed = 0  # chunks handed out so far (a session that never asked is not streaming)
        self.deadline: float | None = None  # when the next wanted chunk is due (time.monotonic)
        self.interrupt: Callable[[], bool] | None = None
        self.error: BaseException | None = None
        self.closed = False
        self.urgent = False  # the next chunk carries a new directive
        self._urgent_after = False  # the chunk in flight went on under the old prompt: the next one is
        self._directive = False  # set by notify_directive (no lock: read by the driver)
        self._interrupted: bool | BaseException = False  # True, or the progress callback's exception
        #: Called by the driver after each of this session's passes: (passes done, passes in all,
        #: the latest x0 estimate or None). An exception from it stops the chunk like an interrupt.
        self.progress: Callable[[int, int, torch.Tensor | None], None] | None = None
        self._passes_done = 0
        #: Called (by the driver) when a chunk in flight is restarted for a new directive: the
        #: prompt embedding to restart it with, or None to keep its own.
        self.restart_hook: Callable[[], torch.Tensor | PromptSwitch | None] | None = None

    @property
    def row(self) -> int:
        return self.stream.row

    # ---- what a caller does ---------------------------------------------------------------

    def next_frames(self, *, deadline: float | None = None, interrupt: Callable[[], bool] | None = None,
                    progress: Callable[[int, int, torch.Tensor | None], None] | None = None) -> torch.Tensor:
        """The session's next chunk of frames, uint8 (T, H, W, 3) on the CPU; blocks until then.

        `deadline` (time.monotonic seconds): when the caller must have it to stay real time.
        `interrupt`: polled between passes; when it returns True this raises `ChunkInterrupted`
        within one pass, and the next call continues the stream from the stopped chunk.
        `progress`: see `HostedSession.progress` (called from whichever thread drives)."""
        self.progress = progress
        return self.host._produce(self, deadline, interrupt)

    def notify_directive(self) -> None:
        """A new prompt target was set (the begin/restart hooks will give it): make the next
        chunk urgent and, when enabled, restart the chunk in flight under it."""
        self._directive = True
        self.urgent = True

    def set_prompt(self, context: torch.Tensor, *, recache: bool = True, timing: RecacheTiming | None = None) -> None:
        """Switch the prompt for the chunks not begun yet (see `SessionStream.set_prompt`)."""
        with self.host._lock:
            self.stream.set_prompt(context, recache=recache, timing=timing)

    def prime_sink(self, latents: torch.Tensor) -> None:
        """Write `latents` as the session's first (sink) chunk; runs with the next pass."""
        with self.host._lock:
            self.stream.prime_sink(latents)

    def configure(self, *, timing: RecacheTiming | None = None, recache_mode: RecacheMode | None = None,
                  router=None, steps: int | None = None) -> None:
        """Live settings, applied from the next chunk on (no restart)."""
        from .stream import checked_recache_mode, checked_recache_timing

        with self.host._lock:
            if timing is not None:
                self.stream.timing = checked_recache_timing(timing)
            if recache_mode is not None:
                self.stream.recache_mode = checked_recache_mode(recache_mode)
            if router is not None:
                self.stream.router = router
            if steps is not None and len(self.stream.timesteps) != steps:
                self.stream.set_steps(steps)

    def kv(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Views of this session's KV window, (layers, heads, window tokens, head_dim) each."""
        store = self.host.runtime.store
        return store.cache_k[:, self.row], store.cache_v[:, self.row]

    def restart(self, seed: int | None = None) -> None:
        """Start the session again from an empty window (same row, same size). A caller waiting
        in `next_frames` (another thread) gets the restarted stream's first chunk."""
        with self.host._lock:
            waiting = max(0, self.wanted - self.prefetched - len(self.ready))
            self.stream.reset(seed)
            self.decode.reset()
            self.ready.clear()
            self.wanted, self.urgent, self._directive, self._interrupted, self.error = waiting, False, False, False, None
            self._urgent_after = False
            self.prefetched = 0
            for _ in range(waiting):
                self.stream.request_chunk()
            self.host._cond.notify_all()

    def close(self) -> None:
        """Leave the engine; the row goes to the next session."""
        self.host._close(self)


class EngineHost:
    """Serves sessions of one frame size on one loaded engine (see the module docstring)."""

    def __init__(self, runtime: EngineRuntime, decoder, *, max_sessions: int = 4, preempt: bool = True,
                 prefetch: bool = False, policy: str = "deadline", queue_owed: bool | None = None,
                 queue_ahead: int = 1, clock: Callable[[], float] = time.monotonic) -> None:
        if policy not in ("deadline", "all"):
            raise ValueError(f"policy must be 'deadline' or 'all', got {policy!r}")
        if queue_ahead < 1:
            raise ValueError(f"queue_ahead must be at least 1, got {queue_ahead}")
        self.runtime = runtime
        self.decoder = decoder
        self.max_sessions = max_sessions
        self.preempt = preempt
        self.prefetch = prefetch
        self.policy = policy
        #: Queue a lone session's refresh before handing its frames out (`_queue_owed`). Default: on
        #: a GPU, where the queued pass runs while the caller works; on a CPU it would delay it.
        self.queue_owed = runtime.device.type == "cuda" if queue_owed is None else queue_owed
        #: Ticks the host queues on the GPU behind the one running (`_throttle`).
        self.queue_ahead = queue_ahead
        self.clock = clock
        self.sessions: list[HostedSession] = []
        self.stats = HostStats()
        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        self._driving = False
        self._delivered = False
        self._inflight: deque[torch.cuda.Event] = deque()
        self._pass_s: dict[int, float] = {}  # EMA of a tick's own duration by batch size (_note_pass)
        self._timing: deque[tuple[torch.cuda.Event, torch.cuda.Event, int]] = deque()  # passes on the GPU
        self._counter = 0

    @property
    def device(self) -> torch.device:
        return self.runtime.device

    @property
    def latent_hw(self) -> tuple[int, int] | None:
        return self.runtime.store.latent_hw if self.runtime.store is not None else None

    # ---- sessions -------------------------------------------------------------------------

    def open_session(self, latent_h: int, latent_w: int, *, seed: int = 0, steps: int | None = None,
                     recache_mode: RecacheMode = "stock", timing: RecacheTiming = "after", router=None,
                     begin_hook: Callable[[], torch.Tensor | None] | None = None, name: str = "") -> HostedSession:
        """A new session of this latent size in the next free row (`EngineBusyError` when the
        engine streams another size or holds `max_sessions` sessions)."""
        from ..decoders.streaming import open_stream

        with self._lock:
            if self.latent_hw not in (None, (latent_h, latent_w)) and self.sessions:
                h, w = self.latent_hw
                raise EngineBusyError(
                    f"this LongLive engine is streaming {len(self.sessions)} session(s) at {h * 8}x{w * 8}; "
                    f"a session at {latent_h * 8}x{latent_w * 8} needs its own engine (load another, or wait)"
                )
            if len(self.sessions) >= self.max_sessions:
                raise EngineBusyError(f"this LongLive engine already serves its {self.max_sessions} sessions "
                                      "(max_sessions); load another engine or wait for one to end")
            row = len(self.sessions)  # rows stay packed 0..n-1: the common pass is one contiguous range
            self.runtime.setup(max(row + 1, self.runtime.store.capacity if self.latent_hw == (latent_h, latent_w) else 0),
                               latent_h, latent_w)
            stream = SessionStream(self.runtime, row, steps=steps, seed=seed, recache_mode=recache_mode,
                                   router=router or DENSE, begin_hook=begin_hook, timing=timing)
            self._counter += 1
            session = HostedSession(self, stream, open_stream(self.decoder), name or f"session-{self._counter}")
            self.sessions.append(session)
            return session

    def _close(self, session: HostedSession) -> None:
        with self._lock:
            if session.closed:
                return
            session.closed = True
            index = self.sessions.index(session)
            self.sessions.pop(index)
            # Keep rows packed: every session after the one that left moves up a row (a copy of
            # its window and prompt, stream-ordered after the passes already queued).
            for moved in self.sessions[index:]:
                self.runtime.store.move_row(moved.row, moved.row - 1)
                moved.stream.row -= 1
            self._cond.notify_all()

    # ---- producing --------------------------------------------------------------------------

    def _produce(self, session: HostedSession, deadline, interrupt) -> torch.Tensor:
        with self._lock:
            if session.closed:
                raise RenderError(f"{session.name} is closed")
            if session.error is not None:
                raise SessionFailedError(f"{session.name} failed: {session.error}") from session.error
            self._request(session, deadline, interrupt)
            while True:
                if session._interrupted is not False:  # a Cancel beats frames made meanwhile
                    self._raise_if_stopped(session)
                if session.ready:
                    item = self._claim(session)
                    break
                self._raise_if_stopped(session)
                self._drive_or_wait()
            if self.queue_owed:
                self._queue_owed(session)
        if item.event is not None:
            item.event.synchronize()  # this session's copy only
        return item.frames

    def _queue_owed(self, session: HostedSession) -> None:
        """Queue the pass `session` owes for the chunk being handed out (its refresh, or after a
        prompt switch the window's re-cache) before the caller gets the frames (lock held).

        Why: nobody drives the host while a lone session's caller works on its frames (converts,
        lip-syncs, encodes, sends them), so the pass would wait for its next request and the GPU
        would idle meanwhile; a directive arriving then waited for it too. Queuing it costs the
        caller one tick's host time, not the pass's GPU time (no pass waits for the GPU), and the
        frames, the cache and what any later directive sees are the same: the pass ran first in
        the next request anyway. Only a pass that replays a CUDA graph (one launch), and only with
        no other session working: passes launched kernel by kernel cost about their GPU time in
        host time, which the frames would wait for (the first chunk came measurably later when
        every owed pass was queued: benchmarks/results/longlive-h100-2026-12-06-wave3-queue-owed.json),
        and other sessions' callers drive the host anyway."""
        stream = session.stream
        if not stream.owes_work or self._driving or session.error is not None or session.closed:
            return
        if any(s is not session and not s.closed and (s.wanted > 0 or s.stream.queue) for s in self.sessions):
            return
        with torch.inference_mode():  # as in a tick: the session's tensors may be inference tensors
            row = stream.next_pass()  # the instant work in front (a commit, prompt text) is done, as a tick would
        if row is None or (self.device.type == "cuda" and not self.runtime.replays(row.plan, row.router)):
            return
        self._tick_as_driver()

    def _request(self, session: HostedSession, deadline, interrupt) -> None:
        if session.prefetched:  # begun already, to join a batch: this request is its owner
            session.prefetched -= 1
        else:
            session.wanted += 1
        session.deadline, session.interrupt = deadline, interrupt
        if session.stream.chunks_queued + len(session.ready) < session.wanted:
            session.stream.request_chunk()

    @staticmethod
    def _claim(session: HostedSession) -> _Ready:
        session.wanted -= 1
        session.claimed += 1
        return session.ready.popleft()

    def _join_batch(self) -> None:
        """Begin the next chunk of every streaming session with no passes queued (and at most one
        chunk waiting for its caller) while another session has passes to run: see the module
        docstring, point 4. Only sessions whose prompt comes from hooks (`LongLiveBackend`'s):
        the begin hook gives the early chunk the prompt of the moment, and a directive after it
        restarts the chunk through the restart hook. A caller that sets prompts between chunks
        itself (`set_prompt`, `step_all`) gets exactly the chunks it asks for."""
        live = [s for s in self.sessions if s.error is None and not s.closed]
        if not any(s.stream.queue for s in live) or any(s.urgent and _awaited(s) for s in live):
            return  # nothing to join, or a directive's chunk is awaited: it runs without early chunks
        for session in live:
            stream = session.stream
            if (not stream.queue and session.claimed and session.prefetched == 0 and len(session.ready) <= 1
                    and session._interrupted is False and stream.begin_hook is not None
                    and session.restart_hook is not None):
                session.wanted += 1
                session.prefetched += 1
                if not session.ready:  # the caller's callbacks belong to a request already served
                    session.deadline = session.interrupt = session.progress = None
                stream.request_chunk()
                self.stats.prefetched += 1

    @staticmethod
    def _raise_if_stopped(session: HostedSession) -> None:
        if session.error is not None:
            raise SessionFailedError(f"{session.name} failed: {session.error}") from session.error
        if session._interrupted is not False:
            cause, session._interrupted = session._interrupted, False
            if isinstance(cause, BaseException):
                raise cause  # the progress callback's own (e.g. ComfyUI's interrupt exception)
            raise ChunkInterrupted(f"{session.name}: interrupted between two passes")
        if session.closed:
            raise RenderError(f"{session.name} was closed")

    def _drive_or_wait(self) -> None:
        """Run one tick for everyone if nobody is, else wait for the one running (lock held)."""
        if self._driving:
            self._cond.wait(timeout=0.5)
            return
        progressed = self._tick_as_driver()
        if not progressed:
            self._cond.wait(timeout=0.05)  # nothing runnable now (e.g. sitting out): let others in
        elif self._delivered:
            # Sessions just handed frames ask for their next chunk within a millisecond or two:
            # let them in before the next pass, so they stay in the batch.
            self._delivered = False
            self._cond.wait(timeout=0.002)
        self._throttle()

    def settle(self, session: HostedSession) -> None:
        """Run the passes `session` owes now (a deferred refresh, a re-cache, a primed sink)."""
        with self._lock:
            while session.stream.owes_work and session.error is None and not session.closed:
                self._drive_or_wait()

    def step_all(self, sessions: list[HostedSession], deadline: float | None = None) -> list[torch.Tensor]:
        """One chunk for each of `sessions`, batched, driven from this thread (tests, benchmarks,
        warm-up): the frames in the order given."""
        frames: dict[int, torch.Tensor] = {}
        with self._lock:
            for session in sessions:
                self._request(session, deadline, None)
            while len(frames) < len(sessions):
                for i, session in enumerate(sessions):
                    if i not in frames and session.ready:
                        item = self._claim(session)
                        if item.event is not None:
                            item.event.synchronize()
                        frames[i] = item.frames
                    elif i not in frames:
                        self._raise_if_stopped(session)
                if len(frames) < len(sessions):
                    self._drive_or_wait()
        return [frames[i] for i in range(len(sessions))]

    def _tick_as_driver(self) -> bool:
        """One tick with this thread as the driver (lock held, nobody else driving); wakes the
        waiters after it. False when no session had work."""
        self._driving = True
        try:
            return self._tick()
        finally:
            self._driving = False
            self._cond.notify_all()

    def _throttle(self) -> None:
        """Keep at most `queue_ahead` ticks queued on the GPU behind the one running, so
        scheduling decisions (who runs, whether a directive restarts a chunk) are made a pass
        ahead, not a chunk ahead. Why one: with CUDA graphs a tick is queued in a millisecond or
        two, so the GPU never waits for the next; but every tick queued is a pass a directive
        cannot stop. With two, a lone session's chunk had all its passes queued once its first
        pass ended, so a directive arriving later in the chunk could not restart it and waited
        for the whole chunk and the next (side by side:
        benchmarks/results/longlive-serving-h100-2026-12-06-wave4-queue-ahead-paced-480.json).
        Called without work in hand."""
        while len(self._inflight) > self.queue_ahead:
            event = self._inflight.popleft()
            self._lock.release()
            try:
                event.synchronize()
            finally:
                self._lock.acquire()

    # ---- one tick ---------------------------------------------------------------------------

    def _tick(self) -> bool:
        """One pass for every session that has work (grouped by input length). False when no
        session had any. Under inference mode: the driver may be any caller's thread."""
        with torch.inference_mode():
            return self._tick_inner()

    def _tick_inner(self) -> bool:
        now = self.clock()
        self._note_finished_passes()
        self._check_interrupts_and_directives(now)
        if self.prefetch:
            self._join_batch()
        candidates = []
        for session in self.sessions:
            if session.error is not None or session.closed:
                continue
            stream = session.stream
            if session.wanted <= 0 and not stream.owes_work:
                continue  # nothing asked for: do not begin a chunk (its prompt is decided late)
            try:
                row = stream.next_pass()
            except Exception as exc:  # the session's own hook or state failed
                self._fail(session, exc)
                continue
            if row is not None:
                candidates.append((session, row))
        if not candidates:
            return False
        chosen = self._choose(candidates, now)
        groups: dict[int, list] = {}
        for session, row in chosen:
            groups.setdefault(row.x.shape[2], []).append((session, row))
        for members in sorted(groups.values(), key=lambda m: not any(s.urgent for s, _ in m)):
            outs = self._timed_run(members)
            for (session, _), out in zip(members, outs, strict=True):
                if isinstance(out, BaseException):
                    self._fail(session, out)
                    continue
                self._deliver(session, out)
        self.stats.ticks += 1
        if self.device.type == "cuda":
            event = torch.cuda.Event()
            event.record()
            self._inflight.append(event)
        return True

    def _timed_run(self, members: list) -> list:
        """`_run`, noting the pass's own time: CUDA events around its kernels alone (read once
        they have passed, `_note_finished_passes`), or the synchronous run on CPU. The decode,
        progress hooks and hand-over come after and are not pass time."""
        if self.device.type != "cuda":
            started = self.clock()  # the clock deadlines are in
            outs = self._run(members)
            self._note_pass(len(members), self.clock() - started)
            return outs
        begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        captured = self.runtime.graphs_captured
        begin.record()
        outs = self._run(members)
        end.record()
        # A pass that captured a graph also ran once more and waited for the GPU: not the time
        # a pass takes (it would make deadlines decline restarts for a while).
        if self.runtime.graphs_captured == captured:
            self._timing.append((begin, end, len(members)))
        return outs

    def _check_interrupts_and_directives(self, now: float) -> None:
        for session in self.sessions:
            if session.error is not None or session.closed:
                continue
            stream = session.stream
            try:
                # Only while its caller waits for a chunk not made yet: a Cancel then is for the
                # frames being made, not for a chunk already waiting to be handed out.
                if session.interrupt is not None and _awaited(session) and session.interrupt():
                    self._stop(session, True)
                    continue
                if session._directive:
                    session._directive = False
                    chunk = stream.chunk_in_flight
                    if chunk is None:
                        continue
                    if self.preempt and self._can_restart(session, now):
                        context = session.restart_hook() if session.restart_hook is not None else None
                        stream.restart_chunk(context)
                        self.stats.preempted += 1
                        continue
                    if self.preempt:
                        self.stats.preempt_declined += 1
                    session._urgent_after = True  # the directive's chunk is the next one
            except Exception as exc:  # the session's own callback: it fails alone, not the driver
                self._fail(session, exc)

    def _stop(self, session: HostedSession, cause: bool | BaseException, *, made: bool = False) -> None:
        """Stop the session's chunk between passes: it restarts from its first pass when asked
        again, so no frame is skipped; the waiter raises. `made`: the chunk was finished (its
        frames wait in `ready` for the next request), only the request is stopped."""
        if not made:
            session.stream.restart_chunk()
        session.wanted -= 1
        session._interrupted = cause
        session.interrupt = session.progress = None
        session._passes_done = 0
        self.stats.interrupts += 1
        self._cond.notify_all()

    def _can_restart(self, session: HostedSession, now: float) -> bool:
        """Restarting costs the passes already done; allowed when the deadline still holds."""
        if session.deadline is None:
            return True
        need = (len(session.stream.timesteps) + 1) * self._estimate(len(self.sessions))
        return now + need <= session.deadline

    def _choose(self, candidates: list, now: float) -> list:
        """All candidates, or with an urgent session and the "deadline" policy, the urgent ones
        plus every other whose deadline cannot wait for the urgent chunk's remaining passes.
        Work no caller waits for yet (see `_awaited`) always waits. Before, it rode along: early
        chunks have no deadline, and in a paced two-session run on an H100 a directive's 4-7
        passes took batched pass times (p50 611 ms; longlive-serving-h100-2026-12-07-wave7-*)."""
        urgent = [c for c in candidates if c[0].urgent]
        if not urgent or self.policy != "deadline" or len(urgent) == len(candidates):
            return candidates
        urgent_left = max(s.stream.passes_to_latents() for s, _ in urgent)
        alone, together = self._estimate(len(urgent)), self._estimate(len(candidates))
        chosen = []
        for session, row in candidates:
            if session.urgent:
                chosen.append((session, row))
                continue
            if not _awaited(session):  # work nobody waits for yet: an owed pass, a chunk begun early
                self.stats.sat_out += 1
                continue
            if session.deadline is None:
                chosen.append((session, row))
                continue
            # One pass more than its latents need: its frames still wait for the decode, the copy
            # to the host and maybe an owed refresh, which the estimate (GPU time of passes) leaves out.
            own_left = (session.stream.passes_to_latents() if session.wanted > 0 else 1) + 1
            if now + urgent_left * alone + own_left * together <= session.deadline:
                self.stats.sat_out += 1
            else:
                chosen.append((session, row))
        return chosen

    def _run(self, members: list) -> list:
        """One batched pass; on an error, each row alone, so one session's failure stays its own."""
        rows = [row for _, row in members]
        self.stats.passes += 1
        self.stats.rows += len(rows)
        self.stats.batch_sizes[len(rows)] = self.stats.batch_sizes.get(len(rows), 0) + 1
        try:
            return self.runtime.run(rows)
        except Exception as exc:
            if len(rows) == 1:  # its own failure: not run a second time
                log.warning("a session's pass failed", exc_info=True)
                return [exc]
            log.warning("a batched pass of %d sessions failed; running each alone", len(rows), exc_info=True)
        outs = []
        for row in rows:
            try:
                outs.append(self.runtime.run([row])[0])
            except Exception as exc:  # noqa: PERF203 - one try per session is the point
                outs.append(exc)
        return outs

    def _deliver(self, session: HostedSession, out) -> None:
        stream = session.stream
        latents = stream.pass_done(out)
        stopped: BaseException | None = None
        if session.progress is not None and session.wanted > 0:
            session._passes_done += 1
            total = session._passes_done + (0 if latents is not None else stream.passes_to_latents())
            try:
                session.progress(session._passes_done, total, latents if latents is not None else stream.last_estimate)
            except BaseException as exc:  # e.g. ComfyUI's interrupt, raised from its progress hook
                if latents is None:
                    self._stop(session, exc)
                    return
                # After the chunk's last pass: ComfyUI has already cleared its flag, so this is
                # the only sign of the Cancel. The frames are kept for the next request.
                stopped = exc
        if latents is None:
            return
        session._passes_done = 0
        switched = stream.last_switched
        try:
            session.ready.append(self._decode(session, latents, switched or session.urgent))
        except Exception as exc:
            self._fail(session, exc)
            return
        session.urgent, session._urgent_after = session._urgent_after, False
        if stopped is not None:
            self._stop(session, stopped, made=True)
        self._delivered = True
        self._cond.notify_all()

    def _decode(self, session: HostedSession, latents: torch.Tensor, first: bool) -> _Ready:
        if latents.device.type != "cuda":
            return _Ready(session.decode.decode_uint8(latents)[0].cpu(), None, first)
        side = _decode_stream(latents.device)
        side.wait_stream(torch.cuda.current_stream(latents.device))
        with torch.cuda.stream(side):
            latents.record_stream(side)  # the main stream may free it while the side stream reads
            frames = session.decode.decode_uint8(latents)[0]
            host = torch.empty(frames.shape, dtype=frames.dtype, pin_memory=True)
            host.copy_(frames, non_blocking=True)
            event = torch.cuda.Event()
            event.record(side)
        if first:
            # The chunk a directive waits for: work queued beside its decode slows it, so the
            # driver lets the decode finish before it queues more passes.
            event.synchronize()
        return _Ready(host, event, first)

    def _fail(self, session: HostedSession, exc: BaseException) -> None:
        log.warning("LongLive %s failed; the engine's other sessions go on: %s", session.name, exc)
        session.error = exc
        self.stats.failures += 1
        self._cond.notify_all()

    # ---- pass-time estimates (for deadlines) --------------------------------------------------

    def _note_finished_passes(self) -> None:
        """Note the GPU time of every pass that has finished since the last call.

        Why the pass's own time (events around its kernels), not the interval between tick
        starts: at real-time pacing a lone session's GPU idles between chunks, and intervals that
        included that idle time made a pass look twice as long, so the deadline check declined
        restarts that would have been on time."""
        while self._timing and self._timing[0][1].query():
            begin, end, batch = self._timing.popleft()
            self._note_pass(batch, begin.elapsed_time(end) / 1000.0)

    def _note_pass(self, batch: int, seconds: float) -> None:
        self.stats.pass_gpu_s += seconds
        if 0 < seconds < 2.0:
            old = self._pass_s.get(batch)
            self._pass_s[batch] = seconds if old is None else 0.8 * old + 0.2 * seconds

    def _estimate(self, batch: int) -> float:
        """Seconds a pass of `batch` rows takes (measured; scaled from the nearest size known)."""
        if batch in self._pass_s:
            return self._pass_s[batch]
        if not self._pass_s:
            return 0.05
        size, seconds = min(self._pass_s.items(), key=lambda kv: abs(kv[0] - batch))
        return seconds * batch / size

    # ---- warm-up ------------------------------------------------------------------------------

    def _warm_up_joiner(self, sessions: list[HostedSession], row: int, latent_h: int, latent_w: int,
                        text: torch.Tensor, chunks: int) -> HostedSession:
        """A session joining `row` (the sessions after it leave first: rows stay packed, so a
        joiner always takes the next row) and filling its window alone with a prompt switch
        every chunk, so the re-cache pass of each fill stage in that row is captured."""
        while len(sessions) > row:
            sessions.pop().close()
        joined = self.open_session(latent_h, latent_w, seed=row, name=f"warm-up joiner {row}")
        joined.set_prompt(text)
        for step in range(chunks):
            joined.set_prompt(text + 1e-3 * (step + 2), timing="after")
            self.step_all([joined])
        self.settle(joined)
        return joined

    def warm_up(self, latent_h: int, latent_w: int, *, batch_sizes: tuple[int, ...] = (1, 2),
                progress: Callable[[int, int], None] | None = None) -> float:
        """Run dummy sessions of this size once per batch size (window fill, ring shifts, a stock
        re-cache, decodes), so every compiled shape exists before a real session; returns the
        seconds it took. Sessions of another size must not be streaming.

        With several sessions, the first begins a chunk ahead of the others, as real sessions
        do: rows at different points of filling their windows rotate by a table each, a shape
        of its own that would otherwise compile in the middle of the first real batch (seconds
        on a GPU, every session stalled).

        Then the largest batch's sessions, their windows full, run every run of consecutive
        rows alone for a chunk and its refresh pass: the CUDA graph of each row range a steady
        pass can meet is captured here, not while sessions wait. Why: a capture
        runs the pass twice and waits for the GPU; three paced sessions at 480x832 on an H100
        met 11 new ranges in 20 s and fell behind real time
        (longlive-serving-h100-2026-12-07-wave10-paced-3-480.json).

        Last, a session joins each row in turn and fills its window alone with a prompt switch
        every chunk: a viewer's first message often comes while its window fills, and each
        fill stage's re-cache pass (in each row) is a shape of its own; after the range
        warm-up, paced runs still captured 6 graphs (3 sessions) and 3 (1 session) while
        streaming (longlive-serving-h100-2026-12-07-wave11-paced-3-480.json). Throughout, a
        partial row range is captured the first time it comes (`capturing_every_range`), not
        after the sightings serving waits for: two rows filling in step beside a full one were
        still captured while streaming (…-wave11-joiners-paced-3-480.json).

        On a GPU, a batch larger than the card's free memory holds is lowered to what fits
        (`rows_that_fit`, from the batch of one's measured peak), with a warning: the loader
        warms up to `max_sessions`, and its default must not fail a load on a 24 GB card."""
        cfg = self.runtime.model.cfg
        geometry_chunks = cfg.local_attn_size // cfg.num_frame_per_block + 1
        per_batch = geometry_chunks + 2
        batch_sizes = tuple(sorted(set(batch_sizes)))
        largest = max(batch_sizes)
        ranges = _row_ranges(largest)
        fill_chunks = geometry_chunks + 1  # the window's fill stages, then one switch with it full
        total = sum(int(size > 1) + per_batch for size in batch_sizes) + len(ranges) + largest
        done = 0
        cuda = self.device.type == "cuda"
        held = torch.cuda.memory_allocated(self.device) if cuda else 0

        def advanced() -> None:
            nonlocal done
            done += 1
            if progress is not None:
                progress(done, total)

        started = time.perf_counter()
        text = torch.zeros(1, 1, cfg.text_dim, device=self.device)
        with self.runtime.capturing_every_range():  # a partial range seen once here is captured
            for size in batch_sizes:
                if cuda and size == 1:
                    torch.cuda.reset_peak_memory_stats(self.device)
                elif cuda and 1 in batch_sizes:
                    fits = rows_that_fit(torch.cuda.max_memory_allocated(self.device) - held, _spare_bytes(self.device))
                    if fits < size:
                        log.warning("LongLive warm-up: %d sessions at %dx%d would not fit this GPU's free memory, "
                                    "so it warms up %d; a larger batch captures its graphs while its sessions wait "
                                    "(lower max_sessions to what fits)", size, latent_h * 8, latent_w * 8, fits)
                        if fits == 1:
                            break
                        size = largest = fits
                        ranges = _row_ranges(largest)
                        total = done + 1 + per_batch + len(ranges) + largest
                sessions = [self.open_session(latent_h, latent_w, seed=i, name=f"warm-up {i}") for i in range(size)]
                try:
                    for s in sessions:
                        s.set_prompt(text)
                    ahead = int(size > 1)  # chunks the first session makes alone: see the docstring
                    for step in range(ahead + per_batch):
                        if step == ahead + geometry_chunks:  # a prompt switch: the stock re-cache pass
                            for s in sessions:
                                s.set_prompt(text + 1e-3, timing="after")
                        self.step_all(sessions[:1] if step < ahead else sessions)
                        advanced()
                    for a, b in ranges if size == largest else ():
                        self.step_all(sessions[a:b])
                        self.settle(sessions[a])  # the range's refresh pass, alone
                        advanced()
                    for row in range(size) if size == largest else ():
                        joined = self._warm_up_joiner(sessions, row, latent_h, latent_w, text, fill_chunks)
                        sessions.append(joined)
                        advanced()
                finally:
                    for s in sessions:
                        s.close()
                if size == largest:
                    break
        if cuda:
            torch.cuda.synchronize()
        return time.perf_counter() - started


def _row_ranges(rows: int) -> list[tuple[int, int]]:
    """Every run of consecutive rows of `rows` sessions, as (first, end)."""
    return [(a, b) for a in range(rows) for b in range(a + 1, rows + 1)]


def rows_that_fit(one_session_bytes: int, spare_bytes: int) -> int:
    """How many sessions a warm-up batch can hold: one session's measured peak (its KV row, a
    pass's activations, a decode) is the cost of each, an upper bound since a batch's passes
    share their workspace; at least 1 (one session is already running)."""
    return max(1, spare_bytes // one_session_bytes) if one_session_bytes > 0 else 1 << 30


def _spare_bytes(device: torch.device) -> int:
    """Memory a warm-up batch can still take: the card's free bytes and the allocator's
    reserved-but-unused ones (the batch of one's sessions are closed, but their KV row stays)."""
    free, _ = torch.cuda.mem_get_info(device)
    return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)


def _awaited(session: HostedSession) -> bool:
    """Whether a caller is waiting for a chunk of this session not made yet (not only for work
    owed from its last chunk, or a chunk the host began early for it: `_join_batch`)."""
    return session.wanted - session.prefetched > len(session.ready)


@functools.cache
def _decode_stream(device: torch.device) -> torch.cuda.Stream:
    """One high-priority stream per GPU for every session's decode: the allocator keeps freed
    blocks per stream, so a stream per session would hold its decode memory after it ends."""
    return torch.cuda.Stream(device=device, priority=-1)
