"""Memory amplification through card files (issue 18), replayed against the real readers.

Before: the library kept every card's assets in RAM, so one 101 KB CHARX upload with 99 MiB
of zeros inside peaked at +294 MB and kept +100 MB, six at once reached 2.1 GB, and after a
restart 30 cards cost 2 GB. Each case here runs in a fresh Python process (memory is a
process-wide figure), which measures its own peak resident set (VmHWM, reset through
/proc/self/clear_refs after warming up) and what it still holds afterwards (VmRSS), and
prints them; the test asserts the bounds below.

Bounds, generous for a loaded CI box and far below what the old code took:
- six concurrent CHARX bombs (each kind below): peak +96 MiB, kept +32 MiB;
- 30 CHARX cards of 2 MiB pictures each, listed and each portrait drawn after a restart:
  kept +48 MiB (the pictures alone are 60 MiB; the old library held them all).
"""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
import textwrap
import zipfile
import zlib
from pathlib import Path

import pytest

MiB = 1024 * 1024
BOMB_PEAK_BOUND = 96 * MiB
BOMB_KEPT_BOUND = 32 * MiB
LIBRARY_KEPT_BOUND = 48 * MiB

pytestmark = pytest.mark.skipif(
    not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc to read a process's peak memory"
)


def _card(name: str, assets: list[dict] | None = None) -> dict:
    data = {"name": name, "description": "a test card", "first_mes": "Hi."}
    if assets is not None:
        data["assets"] = assets
    return {"spec": "chara_card_v3", "spec_version": "3.0", "data": data}


def zeros_bomb() -> bytes:
    """The issue's upload: ~100 KB of CHARX holding 99 MiB of zeros in one entry."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        archive.writestr("card.json", json.dumps(_card("Bomb")))
        archive.writestr("assets/other/zeros.bin", bytes(99 * MiB))
    return buffer.getvalue()


def lying_bomb() -> bytes:
    """The same zeros behind headers that declare 1000 bytes: only reading can tell."""
    blob = bytearray(zeros_bomb())
    name = b"assets/other/zeros.bin"
    for signature, size_offset in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
        start = 0
        while (at := blob.find(signature, start)) >= 0:
            name_offset = at + (30 if signature == b"PK\x03\x04" else 46)
            if blob[name_offset : name_offset + len(name)] == name:
                struct.pack_into("<I", blob, at + size_offset, 1000)
            start = at + 4
    return bytes(blob)


def spread_bomb() -> bytes:
    """99 entries of just under 1 MiB of zeros: each under the ratio check's floor, together
    under the 100 MiB inflated total, so it is accepted, inflated once to verify, and stored."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        archive.writestr("card.json", json.dumps(_card("Spread")))
        for i in range(99):
            archive.writestr(f"assets/other/z{i}.bin", bytes(MiB - 64))
    return buffer.getvalue()


def png_bomb(side: int = 20_000) -> bytes:
    """A 1-bit PNG of side × side pixels (400 megapixels at the default), all zeros: a few
    tens of KB that decode to gigabytes."""
    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    row = b"\x00" * (1 + (side + 7) // 8)
    compressor = zlib.compressobj(9)
    idat = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


_MEASURE = textwrap.dedent(
    """
    import json, os, sys, threading

    def status(field):
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
        raise RuntimeError(field)

    def reset_peak():
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")

    def report(**extra):
        print(json.dumps({"peak": status("VmHWM"), "rss": status("VmRSS"), **extra}))
    """
)


def _run(script: str, tmp_path: Path, *args: str) -> dict:
    env = {**os.environ, "PERSONA_CACHE_DIR": str(tmp_path / "cache"), "XDG_DATA_HOME": str(tmp_path / "data")}
    env.pop("PERSONA_DIR", None)
    result = subprocess.run(
        [sys.executable, "-c", _MEASURE + textwrap.dedent(script), *args],
        capture_output=True, text=True, timeout=240, env=env, check=False,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


_BOMBS = """
    from pathlib import Path
    from comfyui_persona.persona.cards import CardError, read_card_bytes
    from comfyui_persona.persona.library import PersonaLibrary

    folder, bombs = Path(sys.argv[1]), [Path(p).read_bytes() for p in sys.argv[2:]]
    library = PersonaLibrary([folder], include_builtin=False)
    library.add(read_card_bytes(b'{"spec":"chara_card_v2","data":{"name":"Warm"}}'))  # imports, caches
    library.portrait("warm")
    reset_peak()
    base = status("VmRSS")
    outcomes = []

    def upload(blob):
        try:
            stored = library.add(read_card_bytes(blob, filename="bomb.charx"))
            library.portrait(stored.id)
            outcomes.append("stored")
        except CardError as error:
            outcomes.append(type(error).__name__)

    threads = [threading.Thread(target=upload, args=(blob,)) for blob in bombs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    library.list()
    report(base=base, outcomes=outcomes)
"""


@pytest.mark.parametrize(
    ("make", "outcome"),
    [(zeros_bomb, "CardTooLargeError"), (lying_bomb, "CardFormatError"), (spread_bomb, "stored")],
    ids=["zeros", "lying-header", "spread"],
)
def test_six_concurrent_charx_bombs_stay_within_the_memory_bound(tmp_path, make, outcome):
    blob = make()
    assert len(blob) < 200 * 1024  # a small upload...
    bomb = tmp_path / "bomb.charx"
    bomb.write_bytes(blob)
    measured = _run(_BOMBS, tmp_path, str(tmp_path / "user"), *[str(bomb)] * 6)
    assert measured["outcomes"] == [outcome] * 6
    peak, kept = measured["peak"] - measured["base"], measured["rss"] - measured["base"]
    assert peak < BOMB_PEAK_BOUND, f"peak +{peak / MiB:.0f} MiB"  # ...that used to cost +294 MB each
    assert kept < BOMB_KEPT_BOUND, f"kept +{kept / MiB:.0f} MiB"


_LIBRARY = """
    from comfyui_persona.persona.library import PersonaLibrary
    from PIL import Image  # the portrait code's import, before the baseline

    base = status("VmRSS")
    reset_peak()
    library = PersonaLibrary([sys.argv[1]], include_builtin=False)
    personas = library.list()
    sides = []
    for persona in personas:
        portrait = library.portrait(persona.id)
        import io
        sides.append(max(Image.open(io.BytesIO(portrait)).size))
    library.list()
    report(base=base, count=len(personas), sides=sorted(set(sides)))
"""


def test_a_restarted_library_of_thirty_picture_cards_keeps_only_their_text(tmp_path):
    from PIL import Image

    folder = tmp_path / "cards"
    folder.mkdir()
    noise = Image.frombytes("RGB", (840, 840), os.urandom(840 * 840 * 3))  # ~2 MiB as PNG: incompressible
    picture = io.BytesIO()
    noise.save(picture, format="PNG", compress_level=0)
    icon = [{"type": "icon", "uri": "embeded://assets/icon/images/main.png", "name": "main", "ext": "png"}]
    for i in range(30):
        with zipfile.ZipFile(folder / f"card{i}.charx", "w", zipfile.ZIP_STORED) as archive:
            archive.writestr("card.json", json.dumps(_card(f"Card {i}", icon)))
            archive.writestr("assets/icon/images/main.png", picture.getvalue())
    measured = _run(_LIBRARY, tmp_path, str(folder))
    assert measured["count"] == 30 and measured["sides"] == [512]  # re-encoded, never the original
    kept = measured["rss"] - measured["base"]
    assert kept < LIBRARY_KEPT_BOUND, f"kept +{kept / MiB:.0f} MiB for {30 * len(picture.getvalue()) / MiB:.0f} MiB of pictures"


_PORTRAIT = """
    from comfyui_persona.persona.cards import read_card_bytes, portrait_png
    from PIL import Image
    import io

    blob = open(sys.argv[1], "rb").read()
    reset_peak()
    base = status("VmRSS")
    loaded = read_card_bytes(blob, filename="bomb.charx")
    portrait = portrait_png(loaded.persona, loaded.assets)
    report(base=base, size=list(Image.open(io.BytesIO(portrait)).size))
"""


def test_a_decompression_bomb_picture_is_never_decoded_for_the_gallery(tmp_path):
    """A 400-megapixel PNG icon (tens of KB in the card) gets the drawn portrait, not a decode."""
    bomb = png_bomb()
    assert len(bomb) < 1024 * 1024
    icon = [{"type": "icon", "uri": "embeded://assets/icon/images/main.png", "name": "main", "ext": "png"}]
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("card.json", json.dumps(_card("Pixel Bomb", icon)))
        archive.writestr("assets/icon/images/main.png", bomb)
    (tmp_path / "bomb.charx").write_bytes(buffer.getvalue())
    measured = _run(_PORTRAIT, tmp_path, str(tmp_path / "bomb.charx"))
    assert measured["size"] == [256, 256]  # the bust drawn from the card's look
    assert measured["peak"] - measured["base"] < BOMB_PEAK_BOUND
