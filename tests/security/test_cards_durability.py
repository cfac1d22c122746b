"""Card writes are atomic and never silently replace a card (issue 18).

Before: an upload with an existing id deleted the user's card (a CHARX with pictures) or
replaced the built-in default for every new session, and SIGKILL or a full disk mid-write
left a truncated file, so the persona was lost after a restart. Now every card file goes
through `durable.open_atomic` (temporary, fsync, rename), a taken id gets a new one unless
`overwrite=True`, and these tests replay the failures against real processes and disks:

- SIGKILL: a real child process is killed while it is inside an overwrite (it says so on
  stdout from inside the write, then blocks), and in a loop of overwrites at whatever point
  the kill lands;
- full disk: a 1 MiB tmpfs mounted for the test (needs root, as CI runs; skipped elsewhere),
  and, runnable anywhere, RLIMIT_FSIZE in a child process. Why that stand-in is faithful: a
  write past RLIMIT_FSIZE fails in write(2) with EFBIG part-way through the file, exactly
  where a full disk fails with ENOSPC, so the same path runs (the zip writer's error, the
  temporary removed, no rename); it needs no privileges and touches no real disk quota.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from comfyui_persona.durable import TEMP_PREFIX, sweep_temporaries
from comfyui_persona.persona.card import Persona
from comfyui_persona.persona.cards import (
    BytesAsset,
    CardStorageError,
    LoadedCard,
    read_card_bytes,
    read_card_file,
)
from comfyui_persona.persona.library import DEFAULT_PERSONA_ID, PersonaLibrary, load_persona

MiB = 1024 * 1024
TIMEOUT = 120


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PERSONA_CACHE_DIR", str(tmp_path / "cache"))


def _picture_card(name: str, payload: bytes) -> LoadedCard:
    """A CHARX-bound persona carrying one file (its pictures, as far as durability goes)."""
    persona = Persona(id=name.lower(), name=name, description="the committed one")
    return LoadedCard(persona, "charx", {"assets/other/images/album.bin": BytesAsset(payload)})


def _child(script: str, *args: str, **popen) -> subprocess.Popen:
    env = {**os.environ}
    env.pop("PERSONA_DIR", None)
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(script), *args], text=True, env=env, **popen
    )


def _temporaries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(TEMP_PREFIX))


# --------------------------------------------------------------------------- no silent replacement


def test_an_upload_with_a_taken_id_replaces_neither_the_builtin_nor_the_users_card(tmp_path):
    """The issue's two losses, through what the server's upload calls (read_card_bytes + add)."""
    library = PersonaLibrary([tmp_path / "user"])
    pictures = os.urandom(64 * 1024)
    library.add(_picture_card("Vera", pictures))
    planted = {"spec": "chara_card_v2", "data": {"name": "Planted", "extensions": {"comfyui_persona": {"id": "mira"}}}}
    stored = library.add(read_card_bytes(json.dumps(planted).encode(), filename="mira.json"))
    assert stored.id == f"{DEFAULT_PERSONA_ID}-2" and stored.renamed and "'mira-2'" in stored.warnings[-1]
    assert library.get(DEFAULT_PERSONA_ID).name == load_persona(DEFAULT_PERSONA_ID).name != "Planted"
    again = library.add(read_card_bytes(json.dumps({"spec": "chara_card_v2", "data": {"name": "Vera"}}).encode()))
    assert again.id == "vera-2"
    kept = PersonaLibrary([tmp_path / "user"]).get_card("vera")
    assert kept.format == "charx" and kept.assets["assets/other/images/album.bin"].read() == pictures


# --------------------------------------------------------------------------- SIGKILL

_STALLING_OVERWRITE = """
    import io, sys
    from pathlib import Path
    from comfyui_persona.persona.cards import Asset, LoadedCard
    from comfyui_persona.persona.library import PersonaLibrary

    class Stalling(Asset):
        '''4 MiB that stop after the first MiB: the child says so, then waits to be killed.'''
        size = 4 * 1024 * 1024

        def open(self):
            class Stream(io.RawIOBase):
                sent = 0
                def readable(self):
                    return True
                def readinto(self, buffer):
                    if self.sent >= 1024 * 1024:
                        print("mid-write", flush=True)
                        sys.stdin.read()  # never returns: the parent kills us
                    buffer[:] = b"\\x01" * len(buffer)
                    self.sent += len(buffer)
                    return len(buffer)
            return io.BufferedReader(Stream())

    library = PersonaLibrary([Path(sys.argv[1])], include_builtin=False)
    persona = library.get("vera").model_copy(update={"name": "Half Written"})
    library.add(LoadedCard(persona, "charx", {"assets/other/big.bin": Stalling()}), overwrite=True)
    print("finished", flush=True)
"""


@pytest.mark.parametrize("committed_as", ["charx", "json"])
def test_sigkill_during_a_card_overwrite_keeps_the_committed_card(tmp_path, committed_as):
    folder = tmp_path / "user"
    library = PersonaLibrary([folder], include_builtin=False)
    if committed_as == "charx":
        committed = library.add(_picture_card("Vera", os.urandom(256 * 1024)))
    else:
        committed = library.add(Persona(id="vera", name="Vera", description="the committed one"))
    before = committed.path.read_bytes()
    child = _child(_STALLING_OVERWRITE, str(folder), stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert child.stdout.readline().strip() == "mid-write"  # inside the overwrite, 1 MiB written
        child.send_signal(signal.SIGKILL)
        assert child.wait(timeout=TIMEOUT) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        child.stdin.close()
        child.stdout.close()
    assert committed.path.read_bytes() == before
    assert len(_temporaries(folder)) == 1  # the killed writer's partial file, never renamed
    fresh = PersonaLibrary([folder], include_builtin=False)
    assert fresh.ids() == ["vera"] and fresh.errors == {}
    assert fresh.get("vera").name == "Vera" and fresh.path_of("vera") == committed.path
    assert sweep_temporaries(folder, older_than_s=0) == 1 and _temporaries(folder) == []


_OVERWRITE_LOOP = """
    import sys
    from pathlib import Path
    from comfyui_persona.persona.card import Persona
    from comfyui_persona.persona.cards import BytesAsset, LoadedCard
    from comfyui_persona.persona.library import PersonaLibrary

    library = PersonaLibrary([Path(sys.argv[1])], include_builtin=False)
    version = 0
    while True:
        version += 1
        persona = Persona(id="vera", name="Vera", description=f"version {version}")
        assets = {"assets/other/blob.bin": BytesAsset(bytes([version % 251]) * (256 * 1024))}
        library.add(LoadedCard(persona, "charx", assets) if version % 2 else persona, overwrite=True)
        print(version, flush=True)
"""


def test_sigkill_anywhere_in_a_loop_of_overwrites_loses_no_committed_version(tmp_path):
    """Alternating CHARX and JSON, so a kill can also land between writing the new container
    and removing the old one: the newest committed version must be what loads."""
    folder = tmp_path / "user"
    child = _child(_OVERWRITE_LOOP, str(folder), stdout=subprocess.PIPE)
    try:
        committed = 0
        while committed < 12:
            line = child.stdout.readline()
            assert line, "the writer died on its own"
            committed = int(line)
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=TIMEOUT)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        child.stdout.close()
    fresh = PersonaLibrary([folder], include_builtin=False)
    assert fresh.errors == {}
    version = int(fresh.get("vera").description.split()[-1])
    assert version >= committed  # the kill may have landed after a later commit, never before ours


# --------------------------------------------------------------------------- a full disk


def _assert_refused_and_intact(library: PersonaLibrary, folder: Path, committed: Path, before: bytes) -> None:
    big = _picture_card("Vera", os.urandom(2 * MiB))  # incompressible: more than the disk holds
    with pytest.raises(CardStorageError, match="cannot store the card"):
        library.add(big, overwrite=True)
    with pytest.raises(CardStorageError):
        library.add(_picture_card("Newcomer", os.urandom(2 * MiB)))
    assert committed.read_bytes() == before
    assert sorted(p.name for p in folder.iterdir()) == [committed.name]  # no partial file left
    assert PersonaLibrary([folder], include_builtin=False).get("vera").description == "the committed one"


@pytest.fixture
def small_disk(tmp_path):
    """A 1 MiB tmpfs: a real filesystem that fills up."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs as root); the RLIMIT_FSIZE test stands in")
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m,mode=0755", "tmpfs", str(mount)], capture_output=True, text=True
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({result.stderr.strip()}); the RLIMIT_FSIZE test stands in")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def test_a_full_disk_mid_write_loses_nothing_committed(small_disk):
    folder = small_disk / "user"
    library = PersonaLibrary([folder], include_builtin=False)
    committed = library.add(Persona(id="vera", name="Vera", description="the committed one")).path
    _assert_refused_and_intact(library, folder, committed, committed.read_bytes())


_FILE_SIZE_LIMITED = """
    import resource, signal, sys
    from pathlib import Path
    sys.path.insert(0, sys.argv[2])
    from test_cards_durability import _assert_refused_and_intact
    from comfyui_persona.persona.library import PersonaLibrary

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
    resource.setrlimit(resource.RLIMIT_FSIZE, (1024 * 1024, 1024 * 1024))
    folder = Path(sys.argv[1])
    library = PersonaLibrary([folder], include_builtin=False)
    committed = library.path_of("vera")
    _assert_refused_and_intact(library, folder, committed, committed.read_bytes())
    print("intact", flush=True)
"""


def test_a_write_cut_off_by_the_file_size_limit_loses_nothing_committed(tmp_path):
    folder = tmp_path / "user"
    PersonaLibrary([folder], include_builtin=False).add(Persona(id="vera", name="Vera", description="the committed one"))
    child = _child(_FILE_SIZE_LIMITED, str(folder), str(Path(__file__).parent), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = child.communicate(timeout=TIMEOUT)
    assert child.returncode == 0 and out.strip() == "intact", err[-3000:]
    assert read_card_file(folder / "vera.json").persona.description == "the committed one"
