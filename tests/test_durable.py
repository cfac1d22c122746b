"""Atomic, durable writes (durable.py): whole or nothing, never a half file."""

import os
import subprocess
import sys
import textwrap

import pytest

from comfyui_persona.durable import (
    TEMP_PREFIX,
    atomic_write_bytes,
    atomic_write_text,
    open_atomic,
    sweep_temporaries,
)


def test_a_write_replaces_the_file_whole(tmp_path):
    target = tmp_path / "card.json"
    atomic_write_text(target, "one")
    atomic_write_text(target, "two")
    assert target.read_text() == "two"
    assert [p.name for p in tmp_path.iterdir()] == ["card.json"]


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "card.json"
    atomic_write_text(target, "committed")
    with pytest.raises(RuntimeError), open_atomic(target) as handle:
        handle.write(b"half")
        raise RuntimeError("disk full")
    assert target.read_text() == "committed"
    assert [p.name for p in tmp_path.iterdir()] == ["card.json"]


def test_exclusive_refuses_to_replace(tmp_path):
    target = tmp_path / "mira.json"
    atomic_write_bytes(target, b"user's card")
    with pytest.raises(FileExistsError):
        atomic_write_bytes(target, b"planted", exclusive=True)
    assert target.read_bytes() == b"user's card"
    assert [p.name for p in tmp_path.iterdir()] == ["mira.json"]


def test_a_device_pipe_or_folder_is_never_replaced_and_a_file_keeps_its_permissions(tmp_path):
    """`persona personas export -o /dev/null` as root replaced the device node; a 0600 file
    became 0644. A symlink is replaced by the file, never written through."""
    private = tmp_path / "private.json"
    atomic_write_text(private, "mine")
    os.chmod(private, 0o600)
    atomic_write_text(private, "still mine")
    assert private.read_text() == "still mine" and (private.stat().st_mode & 0o777) == 0o600
    assert (atomic_write_text(tmp_path / "new.json", "x").stat().st_mode & 0o777) == 0o644
    fifo, link = tmp_path / "pipe", tmp_path / "link.json"
    os.mkfifo(fifo)
    link.symlink_to(private)
    (tmp_path / "folder").mkdir()
    for target in (fifo, tmp_path / "folder"):
        with pytest.raises(OSError, match="not a regular file"):
            atomic_write_text(target, "planted")
    atomic_write_text(link, "the link's own file")
    assert not link.is_symlink() and link.read_text() == "the link's own file"
    assert private.read_text() == "still mine" and fifo.is_fifo()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(TEMP_PREFIX)]


def test_sigkill_mid_write_loses_nothing_committed(tmp_path):
    """A writer killed between write and rename leaves the committed file intact."""
    target = tmp_path / "card.json"
    atomic_write_text(target, "committed")
    code = textwrap.dedent(
        f"""
        import os, signal
        from comfyui_persona.durable import open_atomic
        with open_atomic({str(target)!r}) as handle:
            handle.write(b"x" * 1_000_000)
            handle.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    done = subprocess.run([sys.executable, "-c", code], timeout=60)
    assert done.returncode == -9
    assert target.read_text() == "committed"
    leftovers = [p for p in tmp_path.iterdir() if p.name.startswith(TEMP_PREFIX)]
    assert len(leftovers) == 1
    os.utime(leftovers[0], (0, 0))
    assert sweep_temporaries(tmp_path) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["card.json"]


def test_sweep_leaves_a_write_in_progress(tmp_path):
    (tmp_path / f"{TEMP_PREFIX}card.json-abc").write_bytes(b"in progress")
    assert sweep_temporaries(tmp_path) == 0
