"""Recordings on a cluster: one folder per replica, and a recording that survives failover
as parts.

Why one folder per replica (`<recordings_dir>/replica-<id>/`): a `RecordingDesk` owns its
folder's index and repairs files its index marks `recording` when it first opens one (they
were left by a dead process). Two replicas sharing a folder (`--cluster local`, or a
shared volume) would rewrite each other's index and "repair" each other's files while they
are being written. In its own folder each replica is the only writer. (The writer's file lock,
`server.recording.live_lock`, also keeps a part still being written from being repaired or
downloaded from another replica, where the volume's locks reach across machines.)

Why parts: a recording's file is written by the replica that renders the session. When that
replica dies, the file stops at its last whole fragment (fragmented MP4), and the session
resumes elsewhere. The replica that restores it then (1) repairs the dead replica's part
(its writer is gone, so it is safe) when the folder is reachable (one machine, or a shared
volume), and (2) starts a new part in its own folder, announced by an unasked `recording`
message (`on: true`, the new URL). `ready.recordings` lists every part of the session from
every replica folder it can read, oldest first, so the gallery links them all. The store
actor remembers each session's parts (`CheckpointStore.recording_*`), which is how the new
replica knows the session was recording.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from ..server.recording import (
    TOKEN_PATTERN,
    ActiveRecording,
    RecordingDesk,
    RecordingEntry,
    RecordingsFolder,
    written_elsewhere,
)

log = logging.getLogger("comfyui_persona.cluster")

__all__ = ["ClusterRecordingDesk", "replica_folder"]

#: How long a lost replica's process may take to exit (and drop its file lock) before its part
#: is taken for still being written.
LOST_WRITER_EXIT_S = 10.0

#: Prefix of each replica's folder under the recordings folder.
FOLDER_PREFIX = "replica-"


def replica_folder(base: Path, replica: str) -> Path:
    return Path(base) / f"{FOLDER_PREFIX}{replica}"


class ClusterRecordingDesk(RecordingDesk):
    """`RecordingDesk` in this replica's own folder, telling the store of each part, and
    reading every replica's folder for downloads and `ready.recordings` (see module doc)."""

    def __init__(self, desk: RecordingDesk, base: Path, replica: str, store: Any) -> None:
        super().__init__(replica_folder(base, replica), max_days=desk.max_days, max_mb=desk.max_mb,
                         min_free_mb=desk.min_free_mb, max_minutes=desk.max_minutes, on_started=desk._on_started)
        self.base = Path(base)
        self.replica = replica
        self.store = store
        self.sessions: dict[str, str] = {}  # token → session, for the parts being written here
        self.stopping = False  # the replica is stopping: a part it finishes is continued elsewhere

    def open(self, session_id: str, width: int, height: int, fps: float, audio_rate: int) -> ActiveRecording:
        self.folder.mkdir(parents=True, exist_ok=True)
        recording = super().open(session_id, width, height, fps, audio_rate)
        self.sessions[recording.token] = session_id
        self.store.recording_started.remote(session_id, recording.token, self.folder.name)
        return recording

    def finish(self, recording: ActiveRecording, *, index_it: bool = True):
        try:
            return super().finish(recording, index_it=index_it)
        finally:
            session_id = self.sessions.pop(recording.token, None)
            if session_id is not None:
                # A viewer's `record off` (or the session ending) ends the recording; a replica
                # stopping under a live session only cuts it: the session's next replica goes on.
                self.store.recording_finished.remote(session_id, recording.token, not self.stopping)

    def of_session(self, session_id: str) -> list[RecordingEntry]:
        """The session's parts in every replica folder this machine can read, oldest first."""
        entries = list(super().of_session(session_id))
        for folder in self._other_folders():
            entries.extend(RecordingsFolder(folder).of_session(session_id))
        return sorted(entries, key=lambda e: e.started)

    def locate(self, token: str) -> Path | None:
        """The file of `token` in this replica's folder or another's (None: not here)."""
        if not TOKEN_PATTERN.match(token):
            return None
        for folder in (self.folder, *self._other_folders()):
            path = folder / f"{token}.mp4"
            if path.is_file():
                return path
        return None

    def repair_part(self, folder_name: str, token: str) -> bool:
        """Close the part a lost replica left in `folder_name` (cut to its last whole fragment,
        marked finished in that folder's index). Only called for a replica taken for dead:
        nothing writes there any more. False when the folder is not reachable from here."""
        folder = self.base / folder_name
        path = folder / f"{token}.mp4"
        if not folder_name.startswith(FOLDER_PREFIX) or folder == self.folder or not path.is_file():
            return False
        # Ray reports the replica dead while its process may still be exiting: the kernel drops
        # the file's lock when it is gone. A lock held longer is a replica still writing (cut
        # off, not dead): its part is left alone.
        deadline = time.monotonic() + LOST_WRITER_EXIT_S
        while written_elsewhere(path) and time.monotonic() < deadline:
            time.sleep(0.05)
        repaired = RecordingsFolder(folder).recover(active=set())
        log.info("replica %s: repaired %d recording(s) the lost replica left in %s", self.replica, repaired, folder_name)
        return True

    def _other_folders(self) -> list[Path]:
        if not self.base.is_dir():
            return []
        return sorted(p for p in self.base.glob(f"{FOLDER_PREFIX}*") if p.is_dir() and p != self.folder)
