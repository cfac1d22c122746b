"""Fuzzing the card readers (JSON, PNG, CHARX) with Hypothesis (issue 18).

The property: whatever bytes arrive, `read_card_bytes` returns a card or raises a
`CardError` (a `PersonaError`), never anything else; a card it returns can be drawn for the
gallery and written back (or refused with a `CardError`); and each input is handled within
bounded memory (traced by tracemalloc) and time (a 10 s deadline per input: a hang guard for
inputs of a few KB that take milliseconds, not a performance figure).

Inputs: mutations (bit flips, inserted/deleted/duplicated runs, truncation, splices of two
seeds) of the committed seed cards in `corpus/cards/seeds/` (every container and spec; see
`make_seeds.py`), well-formed containers holding hostile card objects (any JSON value in any
field), and CHARX zips with hostile names and card.json. Regressions found by fuzzing are
kept as files in `corpus/cards/regressions/` and replayed first.

Deterministic and bounded in CI: `derandomize=True` (the same inputs every run, no example
database) and a fixed example count (`PERSONA_FUZZ_EXAMPLES`, default 150 per strategy: a
few seconds); the committed corpus is the seeds and the regressions. To fuzz longer:
`PERSONA_FUZZ_EXAMPLES=20000 PERSONA_FUZZ_SAVE=1 .venv/bin/python -m pytest tests/security/test_cards_fuzz.py`
(random inputs; failures are kept in `corpus/cards/hypothesis/`, git-ignored scratch: copy
the failing input Hypothesis prints into regressions/ once it is fixed).
"""

from __future__ import annotations

import base64
import io
import json
import os
import struct
import tracemalloc
import zipfile
import zlib
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.database import DirectoryBasedExampleDatabase

from comfyui_persona.persona.cards import CardError, dump_card, portrait_png, read_card_bytes

CORPUS = Path(__file__).resolve().parent / "corpus" / "cards"
SEEDS = [p.read_bytes() for p in sorted((CORPUS / "seeds").iterdir())]
REGRESSIONS = sorted((CORPUS / "regressions").glob("*")) if (CORPUS / "regressions").is_dir() else []
EXAMPLES = int(os.environ.get("PERSONA_FUZZ_EXAMPLES", "150"))
SAVE = os.environ.get("PERSONA_FUZZ_SAVE") == "1"
#: Memory one input may allocate while read, drawn and written (tracemalloc's peak).
MEMORY_BOUND = 64 * 1024 * 1024

FUZZ = settings(
    max_examples=EXAMPLES,
    derandomize=not SAVE,
    database=DirectoryBasedExampleDatabase(str(CORPUS / "hypothesis")) if SAVE else None,
    deadline=timedelta(seconds=10),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@pytest.fixture(scope="module", autouse=True)
def _cache(tmp_path_factory):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PERSONA_CACHE_DIR", str(tmp_path_factory.mktemp("fuzz-cache")))
        yield


def _exercise(data: bytes) -> None:
    """The property, for one input. With PERSONA_FUZZ_DUMP=DIR, an input that breaks it is
    also written to DIR (named by its hash), ready to be copied into regressions/."""
    try:
        _check(data)
    except BaseException:
        if os.environ.get("PERSONA_FUZZ_DUMP"):
            import hashlib

            folder = Path(os.environ["PERSONA_FUZZ_DUMP"])
            folder.mkdir(parents=True, exist_ok=True)
            (folder / hashlib.sha256(data).hexdigest()[:16]).write_bytes(data)
        raise


def _check(data: bytes) -> None:
    tracemalloc.start()
    try:
        try:
            loaded = read_card_bytes(data, filename="fuzz")
        except CardError:
            return
        assert portrait_png(loaded.persona, loaded.assets).startswith(b"\x89PNG")
        for fmt in ("json", "png", "charx"):
            try:
                dump_card(loaded.persona, fmt, loaded.assets)
            except CardError:
                pass
        _, peak = tracemalloc.get_traced_memory()
        assert peak < MEMORY_BOUND, f"{peak} bytes traced for a {len(data)}-byte input"
    finally:
        tracemalloc.stop()


@st.composite
def mutated_seeds(draw) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(["flip", "insert", "delete", "repeat", "truncate", "splice", "byte"]))
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == "flip" and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "byte" and data:
            data[at] = draw(st.sampled_from([0, 0xFF, 0x7F, 0x80, ord("{"), ord('"')]))
        elif op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif op == "delete":
            del data[at : at + draw(st.integers(1, 64))]
        elif op == "repeat":
            run = data[at : at + draw(st.integers(1, 32))]
            data[at:at] = run * draw(st.integers(1, 8))
        elif op == "truncate":
            del data[at:]
        elif op == "splice":
            other = draw(st.sampled_from(SEEDS))
            data[at:] = other[draw(st.integers(0, len(other))) :]
    return bytes(data)


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
_fields = st.sampled_from(
    ["name", "description", "personality", "scenario", "first_mes", "assets", "extensions", "character_book"]
)
_ours = st.sampled_from(
    ["id", "appearance", "voice", "lines", "constraints", "allowed_actions", "extra_actions", "version", "reference_image"]
)


@st.composite
def hostile_cards(draw) -> dict:
    """A card object whose fields (ours and the standard ones) hold any JSON value."""
    data: dict = {"name": draw(st.text(min_size=1, max_size=30))}
    for key, value in draw(st.dictionaries(_fields, _json, max_size=4)).items():
        data[key] = value
    ours = draw(st.dictionaries(_ours, _json, max_size=4))
    if ours:
        extensions = data.get("extensions") if isinstance(data.get("extensions"), dict) else {}
        data["extensions"] = {**extensions, "comfyui_persona": ours}
    spec = draw(st.sampled_from(["chara_card_v2", "chara_card_v3", "nonsense", None]))
    return {"spec": spec, "spec_version": "3.0", "data": data} if spec else data


def _png_with(card_text: bytes, keyword: bytes) -> bytes:
    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    image = chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0)) + chunk(b"IDAT", zlib.compress(b"\0\0"))
    return b"\x89PNG\r\n\x1a\n" + image + chunk(b"tEXt", keyword + b"\0" + card_text) + chunk(b"IEND", b"")


@st.composite
def hostile_containers(draw) -> bytes:
    card = json.dumps(draw(hostile_cards())).encode()
    kind = draw(st.sampled_from(["json", "png", "charx"]))
    if kind == "json":
        return card
    if kind == "png":
        text = base64.b64encode(card) if draw(st.booleans()) else draw(st.binary(max_size=64))
        return _png_with(text, draw(st.sampled_from([b"ccv3", b"chara"])))
    buffer = io.BytesIO()
    names = draw(
        st.lists(
            st.sampled_from(["assets/icon/images/main.png", "assets/x.png", "a/../b", "/abs", "C:x", "assets/", "module.risum"]),
            max_size=3,
        )
    )
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("card.json", card)
        for name in names:
            try:
                archive.writestr(name, draw(st.sampled_from(SEEDS + [b"", b"\x89PNG\r\n\x1a\n"])))
            except UserWarning:
                pass  # a duplicate name (warnings are errors here): one is enough
    return buffer.getvalue()


@pytest.mark.parametrize("path", REGRESSIONS, ids=[p.name for p in REGRESSIONS])
def test_regressions_found_by_fuzzing_stay_fixed(path):
    _exercise(path.read_bytes())


@pytest.mark.parametrize("seed", range(len(SEEDS)))
def test_every_seed_is_a_card_that_reads(seed):
    loaded = read_card_bytes(SEEDS[seed], filename="seed")
    assert loaded.persona.name and loaded.warnings == []


@FUZZ
@given(mutated_seeds())
def test_mutated_cards_read_or_raise_card_errors_only(data):
    _exercise(data)


@FUZZ
@given(hostile_containers())
def test_hostile_card_objects_read_or_raise_card_errors_only(data):
    _exercise(data)


@FUZZ
@given(st.binary(max_size=512))
def test_random_bytes_read_or_raise_card_errors_only(data):
    _exercise(data)
