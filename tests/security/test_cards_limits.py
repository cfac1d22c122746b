"""Resource bounds on cards (issue 18): PNG chunk count, zip ratio, folder quotas, settings.

Before: a PNG card with 1.5 M empty chunks cost 8.5-10 s of CPU (a CRC each) and starved
other streams; cards had no count or size quota. The limits are one pydantic model
(`CardLimits`), overridable by `PERSONA_CARDS_<FIELD>`.
"""

from __future__ import annotations

import base64
import importlib
import inspect
import io
import json
import os
import pkgutil
import struct
import zipfile
import zlib

import pytest

import comfyui_persona.persona.cards as cards_package
from comfyui_persona.errors import PersonaError
from comfyui_persona.persona import library as library_module
from comfyui_persona.persona.card import Persona
from comfyui_persona.persona.cards import (
    MAX_PNG_CHUNKS,
    CardArchiveError,
    CardLimits,
    CardLimitsError,
    CardQuotaError,
    CardTooLargeError,
    current_limits,
    dump_card,
    read_card_bytes,
)
from comfyui_persona.persona.library import PersonaLibrary

CARD = {"spec": "chara_card_v2", "spec_version": "2.0", "data": {"name": "Chunky"}}


def _chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def _png_card(empty_chunks: int) -> bytes:
    """A 1×1 PNG card with `empty_chunks` zero-length private chunks before its image data."""
    header = _chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0))
    text = _chunk(b"tEXt", b"chara\0" + base64.b64encode(json.dumps(CARD).encode()))
    filler = _chunk(b"xFIL", b"") * empty_chunks
    idat = _chunk(b"IDAT", zlib.compress(b"\x00\x00"))
    return b"\x89PNG\r\n\x1a\n" + header + text + filler + idat + _chunk(b"IEND", b"")


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("PERSONA_CACHE_DIR", str(tmp_path / "cache"))
    for name in CardLimits.model_fields:
        monkeypatch.delenv("PERSONA_CARDS_" + name.upper(), raising=False)


def test_a_png_of_a_million_and_a_half_empty_chunks_is_refused_at_the_chunk_limit():
    blob = _png_card(1_500_000)  # the file: 18 MB, under the PNG size limit
    assert len(blob) < CardLimits().max_png_bytes
    with pytest.raises(CardTooLargeError, match=f"more than {MAX_PNG_CHUNKS} chunks"):
        read_card_bytes(blob, filename="chunky.png")


def test_a_png_card_within_the_chunk_limit_reads_and_the_limit_is_configurable(monkeypatch):
    blob = _png_card(MAX_PNG_CHUNKS - 10)
    assert read_card_bytes(blob, filename="ok.png").persona.name == "Chunky"
    monkeypatch.setenv("PERSONA_CARDS_MAX_PNG_CHUNKS", "100")
    with pytest.raises(CardTooLargeError, match="more than 100 chunks"):
        read_card_bytes(blob, filename="ok.png")


@pytest.mark.parametrize("value", ["-1", "lots", "3"])
def test_a_bad_limit_in_the_environment_names_its_variable(monkeypatch, value):
    monkeypatch.setenv("PERSONA_CARDS_MAX_PNG_CHUNKS", value)
    with pytest.raises(CardLimitsError, match=f"PERSONA_CARDS_MAX_PNG_CHUNKS={value!r}"):
        current_limits()


def test_limits_refuse_unknown_fields():
    with pytest.raises(ValueError, match="extra"):
        CardLimits(max_pngs=3)


def _charx(entries: dict[str, bytes], level: int = 6) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=level) as archive:
        archive.writestr("card.json", json.dumps({**CARD, "spec": "chara_card_v3", "spec_version": "3.0"}))
        for name, data in entries.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def test_an_entry_past_the_compression_ratio_is_refused_before_inflating():
    blob = _charx({"assets/other/zeros.bin": bytes(8 * 1024 * 1024)})  # ~1000:1
    with pytest.raises(CardTooLargeError, match="ratio limit .*zip bomb"):
        read_card_bytes(blob, filename="ratio.charx")
    # text that compresses well but within reason stays welcome
    lorebook = json.dumps([{"key": f"entry {i}", "text": f"lore number {i} " * 8} for i in range(40_000)]).encode()
    assert len(lorebook) > 1024 * 1024
    assert read_card_bytes(_charx({"assets/other/lore.json": lorebook}), filename="lore.charx").assets


def test_two_entries_with_one_name_are_refused():
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("card.json", json.dumps({**CARD, "spec": "chara_card_v3"}))
        archive.writestr("assets/a.png", b"one")
        with pytest.warns(UserWarning, match="Duplicate name"):
            archive.writestr("assets/a.png", b"two")
    with pytest.raises(CardArchiveError, match="two entries named 'assets/a.png'"):
        read_card_bytes(buffer.getvalue(), filename="twins.charx")


# --------------------------------------------------------------------------- folder quotas


def test_the_card_count_quota_refuses_a_new_card_and_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("PERSONA_CARDS_MAX_CARDS", "3")
    folder = tmp_path / "user"
    library = PersonaLibrary([folder], include_builtin=False)
    for name in ("Ann", "Bo", "Cy"):
        library.add(Persona(id=name.lower(), name=name))
    with pytest.raises(CardQuotaError, match="PERSONA_CARDS_MAX_CARDS=3"):
        library.add(Persona(id="dee", name="Dee"))
    with pytest.raises(CardQuotaError):  # a taken id would be a fourth card too
        library.add(Persona(id="ann", name="Ann Again"))
    assert sorted(p.name for p in folder.iterdir()) == ["ann.json", "bo.json", "cy.json"]
    assert library.add(Persona(id="ann", name="Ann Again"), overwrite=True).replaced  # replacing adds none


def test_the_total_size_quota_refuses_a_card_that_would_not_fit(tmp_path, monkeypatch):
    monkeypatch.setenv("PERSONA_CARDS_MAX_TOTAL_MB", "0.25")
    folder = tmp_path / "user"
    library = PersonaLibrary([folder], include_builtin=False)
    library.add(Persona(id="small", name="Small"))
    noise = os.urandom(300 * 1024)  # incompressible: the stored CHARX is over 0.25 MiB
    card = read_card_bytes(dump_card(Persona(id="big", name="Big"), "charx", {"assets/other/noise.bin": noise}))
    with pytest.raises(CardQuotaError, match="0.25 MiB quota"):
        library.add(card)
    assert sorted(p.name for p in folder.iterdir()) == ["small.json"]  # the temporary went too


def test_quotas_default_to_bounds_and_zero_turns_them_off(tmp_path, monkeypatch):
    limits = CardLimits()
    assert 0 < limits.max_cards <= 10_000 and 0 < limits.max_total_mb <= 10_240
    monkeypatch.setenv("PERSONA_CARDS_MAX_CARDS", "0")
    library = PersonaLibrary([tmp_path], include_builtin=False, limits=CardLimits(max_cards=0))
    for i in range(5):
        library.add(Persona(id=f"p{i}", name=f"P{i}"))
    assert len(library.ids()) == 5


# --------------------------------------------------------------------------- one error root


def _classes(module):
    return [obj for _, obj in inspect.getmembers(module, inspect.isclass) if obj.__module__ == module.__name__]


def test_every_exception_of_the_card_code_is_a_persona_error():
    modules = [library_module] + [
        importlib.import_module(f"{cards_package.__name__}.{info.name}")
        for info in pkgutil.iter_modules(cards_package.__path__)
    ]
    errors = [cls for module in modules for cls in _classes(module) if issubclass(cls, BaseException)]
    assert len(errors) >= 14
    assert [cls.__name__ for cls in errors if not issubclass(cls, PersonaError)] == []
    assert all(issubclass(cls, ValueError) for cls in errors if cls.__name__.startswith("Card"))


def test_a_thousand_entry_charx_parses_its_central_directory_once(monkeypatch):
    """Opening the zip per entry made a 1000-entry upload cost a million header parses (CPU
    from a small file); entries share one parsed archive per card."""
    entries = {f"assets/other/{i}.txt": f"entry {i}".encode() for i in range(998)}
    blob = _charx(entries)
    parses = []
    real = zipfile.ZipFile._RealGetContents

    def counting(self):
        parses.append(1)
        return real(self)

    monkeypatch.setattr(zipfile.ZipFile, "_RealGetContents", counting)
    loaded = read_card_bytes(blob, filename="many.charx")  # headers, card.json, every entry verified
    assert len(loaded.assets) == 998
    dump_card(loaded.persona, "charx", loaded.assets)  # every entry read again, to be copied
    assert len(parses) == 1
