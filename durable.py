"""Durable file writes: every file the pack writes for the user goes through here.

A write either lands whole or not at all: the bytes go to a temporary file in the same
folder, are flushed and fsync'd, then renamed over the target (atomic on POSIX and on
Windows through `os.replace`), and the folder is fsync'd so the rename survives a power
cut. A SIGKILL or a full disk mid-write leaves the previous file (or none) and at most a
`.tmp-*` file that `sweep_temporaries` removes. Why not a library: `atomicwrites` is
unmaintained, and the few lines below are the whole algorithm.

`exclusive=True` refuses to replace an existing file (`FileExistsError`), for callers that
must not overwrite a user's file silently; the check and the rename are one `os.link`
(atomic: two writers racing for one name cannot both win). A regular file is replaced keeping
its permission bits (a 0600 file stayed 0600); a symlink is replaced by the file, never written
through (a link planted in a cache folder must not redirect the write); a device, a pipe or a
folder is refused (`persona personas export -o /dev/null` as root replaced the device node).

Sits at the package root: the persona library, recordings and the server all use it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

__all__ = ["TEMP_PREFIX", "atomic_write_bytes", "atomic_write_text", "open_atomic", "sweep_temporaries"]

#: Temporary files are named `.tmp-<name>-<random>` beside their target.
TEMP_PREFIX = ".tmp-"


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # not supported (Windows) or not permitted: the rename is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _replaceable_mode(target: Path) -> int | None:
    """The permission bits of the regular file at `target` (None: nothing there, or a link)."""
    try:
        info = os.lstat(target)
    except FileNotFoundError:
        return None
    if stat.S_ISLNK(info.st_mode):
        return None
    if not stat.S_ISREG(info.st_mode):
        raise OSError(errno.EEXIST, "exists and is not a regular file (a device, a pipe or a folder); "
                      "not replaced", str(target))
    return stat.S_IMODE(info.st_mode)


@contextlib.contextmanager
def open_atomic(path: str | os.PathLike, *, exclusive: bool = False, mode: int | None = None) -> Iterator[BinaryIO]:
    """Write `path` through a binary file object; it appears only if the block ends cleanly.
    `mode`: the new file's permission bits (default: the replaced file's, else 0o644)."""
    target = Path(path)
    folder = target.parent
    existing = None if exclusive else _replaceable_mode(target)
    mode = mode if mode is not None else existing if existing is not None else 0o644
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f"{TEMP_PREFIX}{target.name[:40]}-", dir=folder)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        if exclusive:
            os.link(tmp, target)  # FileExistsError when the name is taken: nothing replaced
            tmp.unlink()
        else:
            os.replace(tmp, target)
        _fsync_dir(folder)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes, *, exclusive: bool = False) -> Path:
    """Write `data` to `path` atomically and durably; returns the path."""
    with open_atomic(path, exclusive=exclusive) as handle:
        handle.write(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str, *, exclusive: bool = False) -> Path:
    """`atomic_write_bytes` for UTF-8 text."""
    return atomic_write_bytes(path, text.encode("utf-8"), exclusive=exclusive)


def sweep_temporaries(folder: str | os.PathLike, older_than_s: float = 3600.0) -> int:
    """Remove `.tmp-*` files a killed writer left in `folder`; returns how many went.

    Only files older than `older_than_s` go, so a write in progress is never touched."""
    root = Path(folder)
    if not root.is_dir():
        return 0
    removed = 0
    cutoff = time.time() - older_than_s
    for entry in root.iterdir():
        if not entry.name.startswith(TEMP_PREFIX) or entry.is_symlink() or not entry.is_file():
            continue
        with contextlib.suppress(OSError):
            if entry.stat().st_mtime < cutoff:
                entry.unlink()
                removed += 1
    return removed
