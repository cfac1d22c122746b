"""Server-side session recording (`record` messages): where files go and how they are named.

Each recording is a fragmented MP4 (`video.recording.SessionRecorder`: H.264 + AAC,
written as it is produced, so a killed server leaves a playable file) named by an
unguessable token; the download URL is `/persona/recordings/<token>.mp4` and the token is
the only way to name it. Frames come from the stream sink (every backend), audio from the
session's speech packets, both with `pts_ms` on the session clock.

What audio a file holds: exactly what sounds during its frames, from the first frame's pts
to the end of the last one (pts + one frame). Speech is released to the viewer up to
`AUDIO_AHEAD_MS` ahead of the render clock (headless/server/speech.py), so a recording
started mid-sentence needs audio released *before* `record` came, and one stopped
mid-sentence has audio released past its last frame that it must leave out. So released
packets are not written as they come: the session keeps the ones not yet sounded
(`RecentAudio`, bounded), and each chunk is written with the slice of them sounding during
it (`ActiveRecording.push_chunk`, `SessionRecorder.push_sounding`); a packet straddling either end is cut at the
sample. A cut (reset, barge-in) only ever shortens what is released next, so the file
holds what the viewer was sent, nothing a cut removed.

Several processes may share one folder (a ComfyUI and a `persona serve` on one machine, both
with the default folder). A file being written is held by an OS file lock beside it
(`<token>.mp4.lock`, `filelock`: flock/LockFileEx, released by the kernel when the writer
dies), so another process's crash repair and retention leave it alone, and the index is
edited under a lock of its own, re-read each time, so no process writes back a stale copy.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import re
import secrets
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from filelock import FileLock, Timeout

from ...errors import PersonaError

log = logging.getLogger("comfyui_persona.serve")

TOKEN_PATTERN = re.compile(r"^[A-Za-z0-9_-]{32}$")


def new_token() -> str:
    return secrets.token_urlsafe(24)  # 32 characters, 192 bits


def recording_url(token: str) -> str:
    return f"/persona/recordings/{token}.mp4"


class RecordingRefused(PersonaError):
    """A recording cannot start now (the disk is nearly full); the message says why."""

    code = "recording"


@dataclass(frozen=True)
class RecordingResult:
    token: str
    path: Path
    frames: int
    duration_ms: int
    problem: str | None = None  # why it ended early or incomplete (a full disk), else None
    kept: bool = True  # False: it held no frame (stopped before the first chunk), so it was deleted


def why(exc: BaseException) -> str:
    """What went wrong, in words a viewer may read: the OS's reason ("No space left on
    device") without the server's paths, which the log keeps."""
    cause = exc.__cause__ or exc
    if isinstance(cause, OSError) and cause.strerror:
        return cause.strerror
    return type(cause).__name__


def _lock_path(path: Path) -> Path:
    return path.with_name(path.name + ".lock")


def live_lock(path: Path) -> FileLock:
    """The lock a recording's writer holds while it writes `path` (see the module docstring)."""
    return FileLock(_lock_path(path))


def written_elsewhere(path: Path) -> bool:
    """Whether another writer (another process, or another desk in this one) holds `path`'s lock.
    Without a lock file nobody writes it; checking creates none (a download of any token would)."""
    if not _lock_path(path).exists():
        return False
    lock = live_lock(path)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        return True
    lock.release()
    return False


#: The download route's answer (409) for a file still being written, by this process or another.
STILL_RECORDING = {"code": "recording", "message": "still being recorded: send record off, then download"}


def free_bytes(folder: Path) -> int:
    """Free space on the disk holding `folder` (its nearest existing parent)."""
    import shutil

    folder = Path(folder)
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return shutil.disk_usage(folder).free


def _pieces(packets: Sequence[Any], rate: int) -> list[tuple[int, np.ndarray]]:
    """`(pts_ms, pcm)` of released `AudioPacket`s, all at `rate` (else a `RecordingError`
    naming both rates)."""
    from ...video.recording import RecordingError

    for packet in packets:
        if packet.sample_rate != rate:
            raise RecordingError(f"audio packet at {packet.sample_rate} Hz; the recording takes {rate} Hz")
    return [(p.pts_ms, p.pcm) for p in packets]


def packets_sounding(packets: Sequence[Any], origin_ms: float, start: int, end: int, rate: int) -> np.ndarray:
    """`video.recording.sounding` for released `AudioPacket`s (see `_pieces`)."""
    from ...video.recording import sounding

    return sounding(_pieces(packets, rate), origin_ms, start, end, rate)


class RecentAudio:
    """The speech packets released to the viewer that have not sounded yet by the end of
    the last rendered chunk: what a recording starting with the next chunk must begin with.

    Bounded: `through(end)` forgets what has sounded by a chunk's end, and `add` keeps at
    most `keep_ms` before the newest packet's end (a backstop should chunks stop coming).
    Both run on the render thread (speech is released, then the chunk emitted, in one tick);
    the lock keeps that sound when consecutive ticks run on different pool threads."""

    def __init__(self, keep_ms: float) -> None:
        self.keep_ms = float(keep_ms)
        self._lock = threading.Lock()
        self._packets: collections.deque = collections.deque()

    def add(self, packets: Sequence[Any]) -> None:
        """Packets just released, in pts order."""
        if not packets:
            return
        with self._lock:
            held = self._packets
            while held and held[-1].pts_ms >= packets[0].pts_ms:  # the clock restarted: stale
                held.pop()
            held.extend(packets)
            horizon = packets[-1].end_ms - self.keep_ms
            while held and held[0].end_ms <= horizon:
                held.popleft()

    def through(self, end_ms: float) -> list:
        """The packets held (those that may sound in the chunk ending at `end_ms`); then
        those over by `end_ms` are forgotten: a recording started later begins after it."""
        with self._lock:
            held = list(self._packets)
            while self._packets and self._packets[0].end_ms <= end_ms:
                self._packets.popleft()
        return held

    def __len__(self) -> int:
        return len(self._packets)


class ActiveRecording:
    """One recording in progress. Thread-safe: the render thread pushes chunks (frames with
    their audio), the event loop stops it (through a worker thread: the flush blocks).

    It never takes the stream down: a chunk it cannot write (a full disk) ends the file at
    its last whole fragment, and `stop_reason` says why, for the session to tell the viewer.
    It also asks to be stopped (`stop_reason`) at `max_ms` of video, when the disk has less
    than `min_free_bytes` left, and when the file reaches `max_bytes` (the folder's retention
    cap: a bigger file could only be deleted as it finished), the last two checked about
    once a second of video."""

    def __init__(
        self, folder: Path, width: int, height: int, fps: float, audio_rate: int, *,
        max_ms: float = float("inf"), min_free_bytes: int = 0, max_bytes: int = 0,
    ) -> None:
        from ...video.recording import SessionRecorder

        self.token = new_token()
        self.path = folder / f"{self.token}.mp4"
        self.max_ms = float(max_ms)
        self.min_free_bytes = int(min_free_bytes)
        self.max_bytes = int(max_bytes)
        self.stop_reason: str | None = None
        self.stop_is_failure = False  # stopped by the disk (full, or nearly), not by a limit
        self._next_space_check = 0.0
        self.fps = float(fps)
        self.audio_rate = int(audio_rate)
        # The audio is written here, up to the end of each chunk and before its frames, so
        # the recorder never pads silence ahead of them (it would hide speech: overlaps drop).
        self.recorder = SessionRecorder(self.path, width, height, fps, audio_rate, audio_lag_ms=0)
        self._lock = threading.Lock()
        self._first_pts: float | None = None  # the file's time zero, on the session clock
        self._last_pts: float | None = None
        self.failed: str | None = None
        self._live: FileLock | None = None  # held from start to stop (see the module docstring)

    def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._live = live_lock(self.path)
        self._live.acquire(timeout=0)  # a new token: nobody else holds it
        try:
            self.recorder.start()
        except BaseException:
            self._unlock()
            raise

    def _unlock(self) -> None:
        live, self._live = self._live, None
        if live is not None:
            live.release()
            Path(live.lock_file).unlink(missing_ok=True)  # after the release: nobody waits on it

    def push_chunk(self, frames: np.ndarray, pts_ms: Sequence[int], audio: Sequence[Any]) -> None:
        """A rendered chunk and the released packets that may sound during it (`RecentAudio`):
        first the audio sounding from where the written audio ends to the end of the chunk's
        last new frame, then the frames. Frames at or before the last one written (a
        restarted clock) are skipped."""
        from ...video.recording import RecordingError, RecordingWriteError

        with self._lock:
            if self.failed or self.stop_reason or not self.recorder.recording:
                return
            new, last = [], self._last_pts
            for rgb, pts in zip(frames, pts_ms, strict=True):
                if last is None or pts > last:
                    new.append((rgb, pts))
                    last = pts
            if not new:
                return
            try:
                if self._first_pts is None:
                    self._first_pts = float(new[0][1])
                until = float(new[-1][1]) + 1000.0 / self.fps
                self.recorder.push_sounding(_pieces(audio, self.audio_rate), until, self._first_pts)
                for rgb, pts in new:
                    self.recorder.push_frame(rgb, pts)
                    self._last_pts = float(pts)
            except RecordingWriteError as exc:  # a full disk: the file ends at its last whole fragment
                self.failed = self.stop_reason = f"the recording could not be written ({why(exc)})"
                self.stop_is_failure = True
                log.warning("recording %s stopped: %s (%s)", self.token[:6], exc, exc.__cause__)
                return
            except RecordingError as exc:  # e.g. the renderer restarted at another size
                self.failed = self.stop_reason = f"the recording stopped: {exc}"
                log.warning("recording %s stopped taking frames: %s", self.token[:6], exc)
                return
            elapsed = self._last_pts - self._first_pts
            if elapsed >= self.max_ms:
                self.stop_reason = f"the recording reached its limit of {self.max_ms / 60000:g} minutes"
            elif (self.min_free_bytes or self.max_bytes) and elapsed >= self._next_space_check:
                self._next_space_check = elapsed + 1000.0
                if self.min_free_bytes and free_bytes(self.path.parent) < self.min_free_bytes:
                    self.stop_reason = "the recording stopped: the disk is nearly full"
                    self.stop_is_failure = True
                elif self.max_bytes and self.path.stat().st_size >= self.max_bytes:
                    self.stop_reason = (f"the recording reached the recordings folder's size limit "
                                        f"of {self.max_bytes / 2**20:g} MB")

    def stop(self) -> RecordingResult:
        """Flush and close the file (blocks: call on a worker thread). A file that cannot be
        finished (a full disk) is kept up to its last whole fragment; its result says so."""
        from ...video.recording import RecordingWriteError

        with self._lock:
            try:
                if self.recorder.recording:
                    self.recorder.stop()
            except RecordingWriteError as exc:
                self.failed = self.stop_reason = f"the recording could not be finished ({why(exc)})"
                log.warning("recording %s could not be finished: %s (%s)", self.token[:6], exc, exc.__cause__)
            finally:
                self._unlock()
            frames = self.recorder.frames_written
            if self._first_pts is None or self._last_pts is None:
                duration = 0
            else:
                duration = int(round(self._last_pts - self._first_pts + 1000.0 / self.fps))
            if self.failed:  # the file ends at its last whole fragment: say what it holds
                frames, duration = _frames_in(self.path)
        return RecordingResult(self.token, self.path, frames, duration, self.failed)


def _frames_in(path: Path) -> tuple[int, int]:
    """(video frames, duration ms) a recording file holds, by demuxing (no decode)."""
    import av

    frames, end = 0, 0
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            time_base = stream.time_base  # read while open: PyAV 18.1.1 refuses a closed container's streams
            for packet in container.demux(stream):
                if packet.size:
                    frames += 1
                    if packet.pts is not None:
                        end = max(end, packet.pts + (packet.duration or 0))
    except (av.error.FFmpegError, OSError, IndexError):
        return 0, 0
    return frames, int(round(float(end * time_base) * 1000.0))


@dataclass
class RecordingEntry:
    """One recording in the folder's index."""

    token: str
    session: str
    started: float  # epoch seconds
    state: str = "recording"  # recording | finished
    frames: int = 0
    duration_ms: int = 0
    problem: str | None = None

    @property
    def url(self) -> str:
        return recording_url(self.token)

    def public(self) -> dict:
        """What a client is told (PROTOCOL.md `ready.recordings`)."""
        return {"url": self.url, "state": self.state, "frames": self.frames, "duration_ms": self.duration_ms}


class RecordingsFolder:
    """The recordings folder: its index (`index.json`, written atomically), crash repair and
    retention. Thread-safe (called on worker threads: it does file I/O).

    The index is what lets a viewer find a recording that never got its `record off` (a
    crash, a SIGTERM): the URL is announced when recording starts, and `ready` lists the
    session's recordings on resume. At start-up, files the index still marks `recording`
    (the process died) are cut back to their last whole fragment and marked finished.
    Retention deletes finished files older than `max_days`, then the oldest beyond `max_mb`
    in all; a file being recorded is never deleted."""

    INDEX = "index.json"

    def __init__(self, folder: Path, max_days: float = 0.0, max_mb: int = 0) -> None:
        self.folder = Path(folder)
        self.max_days = max_days
        self.max_mb = max_mb
        self._lock = threading.Lock()
        self._entries: dict[str, RecordingEntry] | None = None

    @contextlib.contextmanager
    def _editing(self):
        """The entries as on disk now, saved back after the edit; other processes' edits wait."""
        import dataclasses

        with self._lock, FileLock(self.folder / (self.INDEX + ".lock")):
            self._entries = None
            entries = self._load()
            before = {t: dataclasses.asdict(e) for t, e in entries.items()}
            yield entries
            if {t: dataclasses.asdict(e) for t, e in entries.items()} != before:
                self._save()

    def _load(self) -> dict[str, RecordingEntry]:
        if self._entries is None:
            import json

            entries: dict[str, RecordingEntry] = {}
            try:
                raw = json.loads((self.folder / self.INDEX).read_text("utf-8"))
                for token, fields in (raw.get("recordings") or {}).items():
                    if TOKEN_PATTERN.match(token) and isinstance(fields, dict):
                        entries[token] = RecordingEntry(token=token, **{
                            k: fields[k] for k in ("session", "started", "state", "frames", "duration_ms", "problem")
                            if k in fields
                        })
            except (OSError, ValueError, TypeError):
                pass  # no index yet, or unreadable: rebuilt as recordings come
            self._entries = entries
        return self._entries

    def _save(self) -> None:
        import dataclasses
        import json

        from ...durable import atomic_write_text

        data = {"recordings": {t: {k: v for k, v in dataclasses.asdict(e).items() if k != "token"}
                               for t, e in self._load().items()}}
        atomic_write_text(self.folder / self.INDEX, json.dumps(data, indent=1))

    def started(self, token: str, session: str) -> RecordingEntry:
        import time

        with self._editing() as entries:
            entry = entries[token] = RecordingEntry(token=token, session=session, started=time.time())
            return entry

    def finished(self, result: RecordingResult) -> None:
        with self._editing() as entries:
            entry = entries.get(result.token)
            if entry is not None:
                entry.state, entry.frames, entry.duration_ms, entry.problem = (
                    "finished", result.frames, result.duration_ms, result.problem)

    def forget(self, token: str) -> None:
        with self._editing() as entries:
            entries.pop(token, None)

    def of_session(self, session: str) -> list[RecordingEntry]:
        with self._lock:
            self._entries = None  # another process may have added some
            return [e for e in self._load().values() if e.session == session]

    def recover(self, active: set[str], *, sweep: bool = True) -> int:
        """Repair files a dead process left marked `recording` (and, with `sweep`, the
        temporary files of its interrupted atomic writes); returns how many."""
        from ...durable import sweep_temporaries
        from ...video.recording import repair_fragments

        repaired = 0
        if not self.folder.is_dir():
            return 0
        if sweep:
            sweep_temporaries(self.folder)
        with self._editing() as entries:
            for entry in entries.values():
                path = self.folder / f"{entry.token}.mp4"
                if entry.state != "recording" or entry.token in active or written_elsewhere(path):
                    continue
                if path.is_file():
                    repair_fragments(path)
                    entry.frames, entry.duration_ms = _frames_in(path)
                _lock_path(path).unlink(missing_ok=True)  # its writer died: the lock file stayed
                entry.state, entry.problem = "finished", "the server stopped while recording"
                repaired += 1
        return repaired

    def prune(self, active: set[str], keep: frozenset[str] = frozenset()) -> list[str]:
        """Apply retention; returns the tokens deleted. Files of other programs are left alone,
        and those in `keep` (the one just finished: the viewer was told it is there) count
        toward `max_mb` but are not deleted."""
        import time

        deleted: list[str] = []
        if not self.folder.is_dir():
            return deleted
        with self._editing() as entries:
            files = []
            for path in self.folder.glob("*.mp4"):
                token = path.stem
                if not TOKEN_PATTERN.match(token) or token in active or path.is_symlink() or written_elsewhere(path):
                    continue
                try:
                    stat = path.stat()
                except OSError:
                    continue
                files.append((stat.st_mtime, stat.st_size, token, path))
            files.sort()
            now = time.time()
            total = sum(size for _, size, _, _ in files)
            for mtime, size, token, path in files:
                too_old = self.max_days > 0 and now - mtime > self.max_days * 86400
                too_big = self.max_mb > 0 and total > self.max_mb * 2**20
                if not (too_old or too_big) or token in keep:
                    continue
                try:
                    path.unlink()
                except OSError:
                    continue
                total -= size
                deleted.append(token)
                entries.pop(token, None)
        return deleted



class RecordingDesk:
    """The service's recordings: where they go, which are being written, and the open,
    finish and retention steps a session's `record` goes through (worker threads: file I/O).

    `folder` may be changed (tests point it at a temporary folder) before recordings start."""

    def __init__(self, folder: Path, *, max_days: float, max_mb: int, min_free_mb: int, max_minutes: float,
                 on_started: Any = None) -> None:
        self.folder = Path(folder)
        self.max_days, self.max_mb = max_days, max_mb
        self.min_free_mb, self.max_minutes = min_free_mb, max_minutes
        self.active: set[str] = set()
        self._on_started = on_started
        self._index: RecordingsFolder | None = None
        self._recovered: set[Path] = set()
        self._lock = threading.Lock()

    @property
    def index(self) -> RecordingsFolder:
        """The folder's index (`RecordingsFolder`) for the current `folder`."""
        with self._lock:
            if self._index is None or self._index.folder != self.folder:
                self._index = RecordingsFolder(self.folder, self.max_days, self.max_mb)
            return self._index

    def open(self, session_id: str, width: int, height: int, fps: float, audio_rate: int) -> ActiveRecording:
        """Repair what a dead process left (once per folder), apply retention, refuse on a
        nearly full disk, then open the file and put its URL in the index."""
        self.recover()
        index = self.index
        index.prune(set(self.active))
        minimum = self.min_free_mb * 2**20
        if minimum and free_bytes(self.folder) < minimum:
            raise RecordingRefused(f"the disk holding the recordings has less than {self.min_free_mb} MB free")
        recording = ActiveRecording(self.folder, width, height, fps, audio_rate,
                                    max_ms=self.max_minutes * 60_000.0, min_free_bytes=minimum,
                                    max_bytes=int(self.max_mb * 2**20))
        recording.start()
        self.active.add(recording.token)
        try:
            index.started(recording.token, session_id)
            if self._on_started is not None:
                self._on_started()
        except BaseException:  # the index could not be written (a quota, a full disk): no recording
            self.finish(recording, index_it=False)
            (self.folder / f"{recording.token}.mp4").unlink(missing_ok=True)
            raise
        return recording

    def finish(self, recording: ActiveRecording, *, index_it: bool = True) -> RecordingResult:
        """Close the file (a full disk keeps it to its last whole fragment), index it, and apply
        retention (the finished file now counts, and is kept; a server that records rarely
        still prunes). A file with no frame (stopped before the first chunk came) is no video
        a player opens: it is deleted and forgotten (`kept` False)."""
        import dataclasses

        result = None
        try:
            result = recording.stop()
            if result.frames == 0:
                recording.path.unlink(missing_ok=True)
                result = dataclasses.replace(result, kept=False)
            return result
        finally:
            self.active.discard(recording.token)
            if result is not None and index_it:
                index = self.index
                if result.kept:
                    index.finished(result)
                else:
                    index.forget(result.token)
                index.prune(set(self.active), keep=frozenset({result.token}))

    def being_written(self, token: str, path: Path) -> bool:
        """Whether `path` (`token`'s file) is still being written: here, or by another process
        or replica holding its lock. The download route answers 409 (STILL_RECORDING) then."""
        return token in self.active or written_elsewhere(path)

    def recover(self) -> None:
        """Repair what a dead process left in the folder, so a resumed session's list and the
        downloads never show a killed file as being written: before every listing, download
        and new recording, since a process sharing the folder may die after this one started
        (entries marked `recording` whose lock nobody holds; the temporaries once per folder)."""
        index = self.index
        index.recover(set(self.active), sweep=index.folder not in self._recovered)
        self._recovered.add(index.folder)

    def of_session(self, session_id: str) -> list[RecordingEntry]:
        self.recover()
        return self.index.of_session(session_id)
