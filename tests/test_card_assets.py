"""A look's `reference_image` naming a card asset or a path beside the card becomes a real
file at card load (what LongLive identity anchoring opens); a reference that finds nothing
is dropped with a warning; export writes a card that finds the same picture when read back,
or refuses. Real CHARX/PNG/JSON cards built in tmp_path with real Pillow images."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import struct
import threading
import zipfile
import zlib
from pathlib import Path

import pytest
from PIL import Image
from test_cards import _png_text_chunks

from comfyui_persona.headless.cli import main
from comfyui_persona.persona.card import Appearance, Persona
from comfyui_persona.persona.cards import (
    EXTENSION_KEY,
    MAX_REFERENCE_PIXELS,
    REFERENCE_FIELD,
    CardError,
    CardReferenceError,
    card_asset_dir,
    dump_card,
    read_card_bytes,
    read_card_file,
    resolve_reference,
    write_card,
)
from comfyui_persona.persona.library import BUILTIN_DIR, PersonaLibrary

FACE = "assets/other/images/face.png"
ICON = "assets/icon/images/main.png"


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch) -> Path:
    """Every test extracts into its own cache, never the user's."""
    monkeypatch.setenv("PERSONA_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _image(colour: tuple[int, int, int], fmt: str = "PNG", size=(12, 10)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format=fmt)
    return buffer.getvalue()


RED, GREEN = _image((200, 20, 20)), _image((20, 200, 20))


def _card(reference: str | None, assets: list[dict] | None = None, name: str = "Vera") -> dict:
    data = {
        "name": name,
        "description": "A card with pictures.",
        "extensions": {EXTENSION_KEY: {"id": name.lower(), "appearance": {"reference_image": reference}}},
    }
    if assets is not None:
        data["assets"] = assets
    return {"spec": "chara_card_v3", "spec_version": "3.0", "data": data}


def _charx(card: dict, files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("card.json", json.dumps(card))
        for name, blob in files.items():
            archive.writestr(name, blob)
    return buffer.getvalue()


ASSETS = [
    {"type": "icon", "uri": "embeded://" + ICON, "name": "main", "ext": "png"},
    {"type": "x-face", "uri": "embeded://" + FACE, "name": "face", "ext": "png"},
]


def _write_charx(folder: Path, reference: str | None, name: str = "vera.charx") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(_charx(_card(reference, ASSETS), {ICON: GREEN, FACE: RED}))
    return path


def _stored_reference(card: dict) -> str | None:
    return card["data"]["extensions"][EXTENSION_KEY]["appearance"]["reference_image"]


# --------------------------------------------------------------------------- resolving


@pytest.mark.parametrize(
    ("reference", "expected"),
    [
        ("embeded://" + FACE, RED),
        ("face", RED),  # the name of an entry in data.assets
        (FACE, RED),  # the path inside the archive
        ("ccdefault:", GREEN),  # the card's own picture: its main icon
    ],
)
def test_charx_asset_reference_becomes_a_content_addressed_file(tmp_path, _cache, reference, expected):
    loaded = read_card_file(_write_charx(tmp_path / "cards", reference))
    path = Path(loaded.persona.appearance.reference_image)
    assert path.is_absolute() and path.read_bytes() == expected
    assert path.parent == _cache / "card-assets" == card_asset_dir()
    assert path.name == hashlib.sha256(expected).hexdigest() + ".png"
    # What the nodes hand the engine is the persona's look dumped: the file path.
    assert loaded.persona.appearance.model_dump(mode="json")["reference_image"] == str(path)


def test_one_image_in_two_cards_is_one_file(tmp_path):
    first = read_card_file(_write_charx(tmp_path / "a", "face")).persona.appearance.reference_image
    second = read_card_file(_write_charx(tmp_path / "b", "embeded://" + FACE)).persona.appearance.reference_image
    assert first == second
    assert len(list(card_asset_dir().iterdir())) == 1


def test_a_damaged_cache_file_is_written_again(tmp_path):
    card = _write_charx(tmp_path / "cards", "face")
    path = Path(read_card_file(card).persona.appearance.reference_image)
    path.write_bytes(b"planted")
    assert read_card_file(card).persona.appearance.reference_image == str(path)
    assert path.read_bytes() == RED


def test_ccdefault_on_a_png_card_is_the_cards_own_image(tmp_path):
    persona = Persona(id="pic", name="Pic", appearance=Appearance(reference_image="ccdefault:"))
    png = dump_card(persona, "png")  # the image is a portrait drawn from the look
    (tmp_path / "pic.png").write_bytes(png)
    path = read_card_file(tmp_path / "pic.png").persona.appearance.reference_image
    with Image.open(path) as extracted, Image.open(io.BytesIO(png)) as card_image:
        assert extracted.convert("RGB").tobytes() == card_image.convert("RGB").tobytes()


def test_a_relative_path_is_taken_from_the_cards_folder_not_the_working_directory(tmp_path, monkeypatch):
    cards = tmp_path / "cards"
    (cards / "refs").mkdir(parents=True)
    (cards / "refs" / "face.jpg").write_bytes(_image((10, 10, 200), "JPEG"))
    (cards / "vera.json").write_text(json.dumps(_card("refs/face.jpg")))
    monkeypatch.chdir(tmp_path)
    reference = read_card_file(Path("cards") / "vera.json").persona.appearance.reference_image
    assert reference == str((cards / "refs" / "face.jpg").resolve())


def test_an_absolute_path_is_kept(tmp_path):
    (tmp_path / "face.png").write_bytes(RED)
    (tmp_path / "cards").mkdir()
    (tmp_path / "cards" / "vera.json").write_text(json.dumps(_card(str(tmp_path / "face.png"))))
    loaded = read_card_file(tmp_path / "cards" / "vera.json")
    assert loaded.persona.appearance.reference_image == str((tmp_path / "face.png").resolve())


def test_a_card_with_a_picture_but_no_reference_does_not_anchor_on_it(tmp_path):
    """Decided: no implicit default. A card's picture is often a drawing or a portrait we drew
    from its colours, and a reference makes LongLive need a detectable face; a card opts in
    with `ccdefault:`."""
    assert read_card_file(_write_charx(tmp_path, None)).persona.appearance.reference_image is None
    png = dump_card(Persona(id="pic", name="Pic"), "png")
    assert read_card_bytes(png).persona.appearance.reference_image is None


# --------------------------------------------------------------------------- round trips


def _cards_in(exported: bytes, fmt: str) -> list[dict]:
    if fmt == "charx":
        with zipfile.ZipFile(io.BytesIO(exported)) as archive:
            return [json.loads(archive.read("card.json"))]
    if fmt == "json":
        return [json.loads(exported)]
    cards = [json.loads(base64.b64decode(chunk)) for chunk in _png_text_chunks(exported).values()]
    assert len(cards) == 2  # chara (V2) and ccv3
    return cards


def _read_back(exported: bytes, fmt: str, folder: Path) -> bytes:
    """Read an exported card from a folder of its own: no warning, and the bytes of its reference."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"again.{fmt}").write_bytes(exported)
    loaded = read_card_file(folder / f"again.{fmt}")
    assert loaded.warnings == []
    return Path(loaded.persona.appearance.reference_image).read_bytes()


def test_charx_export_keeps_the_cards_own_spelling_and_its_picture(tmp_path):
    loaded = read_card_file(_write_charx(tmp_path / "cards", "face"))
    exported = dump_card(loaded.persona, "charx", loaded.assets)
    assert [_stored_reference(card) for card in _cards_in(exported, "charx")] == ["face"]
    assert str(card_asset_dir()).encode() not in exported
    assert _read_back(exported, "charx", tmp_path / "again") == RED


@pytest.mark.parametrize("fmt", ["json", "png"])
def test_export_that_cannot_carry_the_cards_image_is_refused_naming_the_field(tmp_path, fmt):
    """The bug: JSON/PNG export wrote `face` without the image, and the exported card was
    then rejected on import. A container that cannot carry the picture is an error that
    names the field and the way out (CHARX), not a card that silently lost its picture."""
    loaded = read_card_file(_write_charx(tmp_path / "cards", "face"))
    out = tmp_path / f"out.{fmt}"
    with pytest.raises(CardReferenceError) as caught:
        write_card(loaded.persona, out, fmt, loaded.assets)
    message = str(caught.value)
    assert REFERENCE_FIELD in message and "'face'" in message and "export as CHARX" in message
    assert not out.exists()


def test_png_export_of_the_cards_own_picture_reads_back_as_that_picture(tmp_path):
    """A PNG card's image IS its picture: a reference to the CHARX icon survives PNG export
    (the PNG keeps its image where the icon was), and another asset holding the very bytes
    of the icon is written as `ccdefault:`."""
    for reference in ("ccdefault:", "embeded://" + ICON, "main"):
        loaded = read_card_file(_write_charx(tmp_path / "cards", reference))
        exported = dump_card(loaded.persona, "png", loaded.assets)
        assert [_stored_reference(card) for card in _cards_in(exported, "png")] == [reference] * 2
        assert _read_back(exported, "png", tmp_path / "again") == GREEN
    (tmp_path / "same.charx").write_bytes(_charx(_card("face", ASSETS), {ICON: GREEN, FACE: GREEN}))
    loaded = read_card_file(tmp_path / "same.charx")
    exported = dump_card(loaded.persona, "png", loaded.assets)
    assert [_stored_reference(card) for card in _cards_in(exported, "png")] == ["ccdefault:"] * 2
    assert _read_back(exported, "png", tmp_path / "same") == GREEN


def test_a_png_cards_ccdefault_survives_png_and_charx_export_and_json_is_refused(tmp_path):
    persona = Persona(id="pic", name="Pic", appearance=Appearance(reference_image="ccdefault:"))
    (tmp_path / "pic.png").write_bytes(dump_card(persona, "png"))
    loaded = read_card_file(tmp_path / "pic.png")
    picture = Path(loaded.persona.appearance.reference_image).read_bytes()
    for fmt in ("png", "charx"):
        exported = dump_card(loaded.persona, fmt, loaded.assets)
        assert _stored_reference(_cards_in(exported, fmt)[0]) == "ccdefault:"
        assert _read_back(exported, fmt, tmp_path / fmt) == picture
    with pytest.raises(CardReferenceError, match="'ccdefault:'.*JSON card cannot carry it.*CHARX"):
        dump_card(loaded.persona, "json", loaded.assets)


def test_a_relative_reference_is_kept_where_it_still_finds_the_file_else_made_absolute(tmp_path):
    cards = tmp_path / "cards"
    (cards / "refs").mkdir(parents=True)
    (cards / "refs" / "face.jpg").write_bytes(_image((10, 10, 200), "JPEG"))
    (cards / "vera.json").write_text(json.dumps(_card("refs/face.jpg")))
    loaded = read_card_file(cards / "vera.json")
    absolute = str((cards / "refs" / "face.jpg").resolve())
    beside = write_card(loaded.persona, cards / "copy.json", "json")
    assert _stored_reference(json.loads(beside.read_text())) == "refs/face.jpg"
    (tmp_path / "elsewhere").mkdir()
    for fmt in ("json", "png"):
        away = write_card(loaded.persona, tmp_path / "elsewhere" / f"vera.{fmt}", fmt, loaded.assets)
        assert [_stored_reference(card) for card in _cards_in(away.read_bytes(), fmt)] == [absolute] * (
            2 if fmt == "png" else 1
        )
        assert read_card_file(away).persona.appearance.reference_image == absolute
    assert _stored_reference(json.loads(dump_card(loaded.persona, "json"))) == absolute  # no folder given


def test_charx_export_carries_a_file_reference_so_the_card_travels(tmp_path):
    """A file on disk cannot travel in a JSON card, but a CHARX carries it: the export adds
    the image as an asset and names it, so even an upload (no folder) finds it."""
    cards = tmp_path / "cards"
    (cards / "refs").mkdir(parents=True)
    photo = _image((10, 10, 200), "JPEG")
    (cards / "refs" / "face.jpg").write_bytes(photo)
    (cards / "vera.json").write_text(json.dumps(_card("refs/face.jpg")))
    loaded = read_card_file(cards / "vera.json")
    exported = dump_card(loaded.persona, "charx", loaded.assets)
    (card,) = _cards_in(exported, "charx")
    reference = _stored_reference(card)
    assert reference.startswith("embeded://assets/other/images/") and reference.endswith(".jpg")
    assert any(a["uri"] == reference for a in card["data"]["assets"])
    uploaded = read_card_bytes(exported, filename="vera.charx")
    assert uploaded.warnings == []
    assert Path(uploaded.persona.appearance.reference_image).read_bytes() == photo


def test_cli_export_refuses_a_json_it_cannot_make_whole_and_a_png_reimports(tmp_path, capsys):
    user, other = tmp_path / "user", tmp_path / "other"
    _write_charx(user, "ccdefault:")
    out = tmp_path / "vera.json"
    assert main(["personas", "--dir", str(user), "export", "vera", "--format", "json", "-o", str(out)]) == 2
    error = capsys.readouterr().err
    assert REFERENCE_FIELD in error and "CHARX" in error and not out.exists()
    png = tmp_path / "vera.png"
    assert main(["personas", "--dir", str(user), "export", "vera", "--format", "png", "-o", str(png)]) == 0
    assert main(["personas", "--dir", str(other), "import", str(png)]) == 0
    assert "warning" not in capsys.readouterr().err
    reimported = PersonaLibrary(user_dirs=[other], include_builtin=False).get_card("vera")
    assert reimported.warnings == []
    assert Path(reimported.persona.appearance.reference_image).read_bytes() == GREEN


def test_a_reference_changed_after_load_is_what_export_writes(tmp_path):
    loaded = read_card_file(_write_charx(tmp_path / "cards", "face"))
    (tmp_path / "other.png").write_bytes(GREEN)
    look = loaded.persona.appearance.model_copy(update={"reference_image": str(tmp_path / "other.png")})
    changed = loaded.persona.model_copy(update={"appearance": look})
    assert _stored_reference(json.loads(dump_card(changed, "json"))) == str(tmp_path / "other.png")


# --------------------------------------------------------------------------- references that find nothing


def _cached_files() -> list[Path]:
    folder = card_asset_dir()
    return sorted(folder.iterdir()) if folder.is_dir() else []


def _dropped(path: Path, *, cache_untouched: bool = True) -> str:
    """Reading the card keeps the persona and drops the reference, saying why (the card file,
    the field, what was looked for); `strict` resolution raises that same message."""
    loaded = read_card_file(path)
    assert loaded.persona.name == "Vera" and loaded.persona.appearance.reference_image is None
    (warning,) = loaded.warnings
    assert path.name in warning and REFERENCE_FIELD in warning and "dropped" in warning
    with pytest.raises(CardReferenceError) as caught:
        unresolved = read_card_file(path, resolve=False)
        resolve_reference(unresolved, card_dir=path.parent, filename=path.name, strict=True)
    assert warning.startswith(str(caught.value))
    if cache_untouched:
        assert _cached_files() == []  # nothing written for a reference that was refused
    return warning


def test_an_embedded_uri_to_a_file_the_charx_lacks_is_named(tmp_path):
    message = _dropped(_write_charx(tmp_path, "embeded://assets/other/images/gone.png"))
    assert "'assets/other/images/gone.png'" in message and FACE in message  # sought, and what is there


def test_a_missing_relative_file_names_the_path_looked_for(tmp_path):
    (tmp_path / "vera.json").write_text(json.dumps(_card("refs/face.png")))
    message = _dropped(tmp_path / "vera.json")
    assert str((tmp_path / "refs" / "face.png").resolve()) in message and "does not exist" in message


def test_ccdefault_on_a_card_without_a_picture_is_named(tmp_path):
    (tmp_path / "vera.json").write_text(json.dumps(_card("ccdefault:")))
    assert "carries no image" in _dropped(tmp_path / "vera.json")


@pytest.mark.parametrize("reference", ["https://example.invalid/face.png", "data:image/png;base64,AAAA"])
def test_a_url_is_not_fetched(tmp_path, reference):
    assert "not fetched" in _dropped(_write_charx(tmp_path, reference))


def test_an_asset_that_lives_at_a_url_is_not_fetched(tmp_path):
    assets = [{"type": "x-face", "uri": "https://example.invalid/face.png", "name": "face", "ext": "png"}]
    (tmp_path / "vera.charx").write_bytes(_charx(_card("face", assets), {}))
    assert "nothing is downloaded" in _dropped(tmp_path / "vera.charx")


def test_an_asset_name_shared_by_two_entries_is_ambiguous(tmp_path):
    assets = [*ASSETS, {"type": "background", "uri": "embeded://" + ICON, "name": "face", "ext": "png"}]
    (tmp_path / "vera.charx").write_bytes(_charx(_card("face", assets), {ICON: GREEN, FACE: RED}))
    message = _dropped(tmp_path / "vera.charx")
    assert "2 entries" in message and "embeded://" + FACE in message


def test_an_asset_that_is_not_an_image_is_named(tmp_path):
    (tmp_path / "vera.charx").write_bytes(_charx(_card("embeded://" + FACE, ASSETS), {ICON: GREEN, FACE: b"text"}))
    assert "not a PNG, JPEG or WebP image" in _dropped(tmp_path / "vera.charx")


@pytest.mark.parametrize("fmt", ["EPS", "TIFF", "BMP", "GIF"])
def test_only_png_jpeg_and_webp_parsers_see_a_cards_image(tmp_path, fmt):
    """An image Pillow can read but we do not take (EPS would go to Ghostscript when the
    engine decodes it), saved under a .png name, is refused at load and never cached."""
    (tmp_path / "vera.charx").write_bytes(_charx(_card("face", ASSETS), {ICON: GREEN, FACE: _image((1, 2, 3), fmt)}))
    assert "not a PNG, JPEG or WebP image" in _dropped(tmp_path / "vera.charx")


def _png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims width × height (Pillow reads the size without decoding)."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def test_an_image_over_the_pixel_limit_is_refused(tmp_path):
    assert 9000 * 8000 > MAX_REFERENCE_PIXELS
    (tmp_path / "vera.charx").write_bytes(_charx(_card("face", ASSETS), {ICON: GREEN, FACE: _png_header(9000, 8000)}))
    assert "9000×8000 pixels" in _dropped(tmp_path / "vera.charx")
    (tmp_path / "small.charx").write_bytes(_charx(_card("face", ASSETS), {ICON: GREEN, FACE: _png_header(8000, 8000)}))
    assert read_card_file(tmp_path / "small.charx").warnings == []  # 64 MP is allowed


def test_an_uploaded_card_may_not_name_files_on_the_server(tmp_path):
    (tmp_path / "face.png").write_bytes(RED)
    for reference in ("face.png", str(tmp_path / "face.png")):
        loaded = read_card_bytes(json.dumps(_card(reference)).encode(), filename="vera.json")
        assert loaded.persona.appearance.reference_image is None
        assert "upload" in loaded.warnings[0] and "may name only images it carries" in loaded.warnings[0]
        # stored, the card no longer names the file, so it never reads it from the user folder
        library = PersonaLibrary(user_dirs=[tmp_path / "user"], include_builtin=False)
        stored = library.add(loaded)
        assert _stored_reference(json.loads(stored.path.read_text())) is None
    # its own assets are fine
    blob = _charx(_card("face", ASSETS), {ICON: GREEN, FACE: RED})
    assert Path(read_card_bytes(blob).persona.appearance.reference_image).read_bytes() == RED


def test_an_unwritable_cache_is_named(tmp_path, monkeypatch):
    (tmp_path / "not-a-folder").write_text("")
    monkeypatch.setenv("PERSONA_CACHE_DIR", str(tmp_path / "not-a-folder"))
    assert "PERSONA_CACHE_DIR" in _dropped(_write_charx(tmp_path / "cards", "face"), cache_untouched=False)


# --------------------------------------------------------------------------- the asset cache


def test_a_link_planted_at_the_temporary_name_is_not_followed(tmp_path):
    """The old code wrote `.<name>.<pid>.<thread>.tmp` with write_bytes, which follows a link
    planted there: the victim file was overwritten. mkstemp creates a fresh file."""
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"precious")
    folder = card_asset_dir()
    folder.mkdir(parents=True)
    name = hashlib.sha256(RED).hexdigest() + ".png"
    (folder / f".{name}.{os.getpid()}.{threading.get_ident()}.tmp").symlink_to(victim)
    path = Path(read_card_file(_write_charx(tmp_path / "cards", "face")).persona.appearance.reference_image)
    assert victim.read_bytes() == b"precious"
    assert path == folder / name and not path.is_symlink() and path.read_bytes() == RED


def test_a_link_planted_at_the_cache_name_is_replaced_not_trusted(tmp_path):
    outside = tmp_path / "outside.png"
    outside.write_bytes(RED)  # the right bytes, somewhere else
    folder = card_asset_dir()
    folder.mkdir(parents=True)
    (folder / (hashlib.sha256(RED).hexdigest() + ".png")).symlink_to(outside)
    path = Path(read_card_file(_write_charx(tmp_path / "cards", "face")).persona.appearance.reference_image)
    assert path.parent == folder and not path.is_symlink() and path.read_bytes() == RED


def test_a_failed_cache_write_leaves_no_temporary_file(tmp_path):
    folder = card_asset_dir()
    blocker = folder / (hashlib.sha256(RED).hexdigest() + ".png")
    (blocker / "inside").mkdir(parents=True)  # a folder where the file goes: the rename fails
    assert "cannot write" in _dropped(_write_charx(tmp_path / "cards", "face"), cache_untouched=False)
    assert sorted(p.name for p in folder.iterdir()) == [blocker.name]


def test_an_import_refused_by_the_quota_writes_nothing_to_the_cache(tmp_path, capsys, monkeypatch):
    user = tmp_path / "user"
    user.mkdir()
    (user / "vera.json").write_text(json.dumps(_card(None)))
    card = _write_charx(tmp_path / "downloads", "face")
    monkeypatch.setenv("PERSONA_CARDS_MAX_CARDS", "1")
    assert main(["personas", "--dir", str(user), "import", str(card)]) == 2
    assert "PERSONA_CARDS_MAX_CARDS=1" in capsys.readouterr().err
    assert _cached_files() == []


def test_reference_errors_are_card_errors():
    assert issubclass(CardReferenceError, CardError)


# --------------------------------------------------------------------------- the library


def test_library_keeps_a_card_whose_reference_finds_nothing_and_warns(tmp_path, capsys):
    """Decided: a missing photo costs the persona its anchoring, not its existence. The card
    is listed (it still chats and renders from its text look); the warning says what to fix;
    the card file is left as it is, so putting the photo back restores the anchoring."""
    user = tmp_path / "user"
    _write_charx(user, "face")
    (user / "broken.json").write_text(json.dumps(_card("nowhere.png", name="Broken")))
    library = PersonaLibrary(user_dirs=[user], include_builtin=False)
    assert library.ids() == ["broken", "vera"] and library.errors == {}
    assert Path(library.get("vera").appearance.reference_image).read_bytes() == RED
    assert library.get("broken").appearance.reference_image is None
    (warning,) = library.warnings[user / "broken.json"]
    assert str((user / "nowhere.png").resolve()) in warning
    assert main(["personas", "--dir", str(user), "list"]) == 0
    assert "warning: " in capsys.readouterr().err
    (user / "nowhere.png").write_bytes(GREEN)
    library.refresh()
    assert Path(library.get("broken").appearance.reference_image).read_bytes() == GREEN
    assert library.warnings == {}


def test_an_uploaded_charx_is_stored_with_its_own_spelling(tmp_path):
    blob = _charx(_card("embeded://" + FACE, ASSETS), {ICON: GREEN, FACE: RED})
    library = PersonaLibrary(user_dirs=[tmp_path / "user"], include_builtin=False)
    stored = library.add(read_card_bytes(blob, filename="upload.charx"))  # what the server's import does
    with zipfile.ZipFile(stored.path) as archive:
        assert _stored_reference(json.loads(archive.read("card.json"))) == "embeded://" + FACE
    resolved = library.get("vera").appearance.reference_image
    assert Path(resolved).read_bytes() == RED
    fresh = PersonaLibrary(user_dirs=[tmp_path / "user"], include_builtin=False)
    assert fresh.get("vera").appearance.reference_image == resolved


def test_import_from_another_folder_keeps_a_relative_reference_working(tmp_path):
    source = tmp_path / "downloads"
    source.mkdir()
    (source / "face.png").write_bytes(RED)
    (source / "vera.json").write_text(json.dumps(_card("face.png")))
    library = PersonaLibrary(user_dirs=[tmp_path / "user"], include_builtin=False)
    library.import_file(source / "vera.json")
    absolute = str((source / "face.png").resolve())
    assert _stored_reference(json.loads(library.path_of("vera").read_text())) == absolute
    assert PersonaLibrary(user_dirs=[tmp_path / "user"], include_builtin=False).get("vera").appearance.reference_image == absolute


def test_add_checks_the_reference_before_writing(tmp_path):
    library = PersonaLibrary(user_dirs=[tmp_path / "user"], include_builtin=False)
    with pytest.raises(CardReferenceError, match="nope.png"):
        library.add(Persona(id="coded", name="Coded", appearance=Appearance(reference_image="nope.png")))
    assert not list((tmp_path / "user").iterdir())
    (tmp_path / "user" / "face.png").write_bytes(RED)  # beside the card it will be: found, kept relative
    path = library.add(Persona(id="coded", name="Coded", appearance=Appearance(reference_image="face.png"))).path
    assert _stored_reference(json.loads(path.read_text())) == "face.png"
    assert library.get("coded").appearance.reference_image == str((tmp_path / "user" / "face.png").resolve())


# --------------------------------------------------------------------------- the engine


@pytest.mark.usefixtures("one_torch_thread")
def test_longlive_anchors_on_a_charx_cards_embedded_photo(tmp_path):
    """The bug this file is about: a card naming its asset started a session that failed
    with RenderError. Now the look the nodes hand the engine opens, and the sink is that photo."""
    import torch

    from comfyui_persona.video.backend import SessionSpec
    from comfyui_persona.video.decoders.wan_vae import load_wan_vae
    from comfyui_persona.video.identity import FaceEmbedder, IdentityConditioner
    from comfyui_persona.video.identity import models as identity_models
    from comfyui_persona.video.longlive.engine import LongLiveBackend
    from comfyui_persona.video.longlive.settings import LongLiveSettings
    from comfyui_persona.video.longlive.testing import write_tiny_models

    photo = identity_models.default_model_dir() / "yaoming.jpg"
    assets = [{"type": "x-face", "uri": "embeded://assets/other/images/yao.jpg", "name": "yao", "ext": "jpg"}]
    (tmp_path / "yao.charx").write_bytes(
        _charx(_card("embeded://assets/other/images/yao.jpg", assets), {"assets/other/images/yao.jpg": photo.read_bytes()})
    )
    persona = read_card_file(tmp_path / "yao.charx").persona
    models = tmp_path / "models"
    write_tiny_models(models)
    backend = LongLiveBackend(settings=LongLiveSettings(dtype="float32"), models_dir=models, blend_chunks=1)
    look = persona.appearance.model_dump(mode="json")  # as nodes/stream_nodes.py builds the spec
    backend.start_session(SessionSpec(persona_id=persona.id, persona_name=persona.name, look=look, width=96, height=64, seed=5))
    backend.host.settle(backend.session)  # the primed sink's pass
    assert backend.stream.chunks_done == 1  # the reference sink chunk
    vae = load_wan_vae(models / "Wan2.1_VAE.pth", dtype=torch.float32)
    expected = IdentityConditioner(photo, FaceEmbedder(threads=2)).reference_latents(vae, 96, 64, frames=3)
    torch.testing.assert_close(backend.reference_latents, expected, rtol=0, atol=0)


def test_a_library_card_whose_cached_image_was_pruned_gets_it_back_and_marks_it_used(tmp_path, monkeypatch):
    """The asset cache prunes unused files; a persona the library already holds keeps a
    working reference: each get marks the file used, and one that went is written again
    at the same path (the loader node's IS_CHANGED goes through the same lookup)."""
    from comfyui_persona.nodes.conversation_nodes import PersonaCardLoader

    _write_charx(tmp_path / "cards", "face")
    library = PersonaLibrary([tmp_path / "cards"], include_builtin=False)
    image = Path(library.get("vera").appearance.reference_image)
    os.utime(image, (1.0, 1.0))
    assert Path(library.get("vera").appearance.reference_image) == image
    assert image.stat().st_mtime > 1.0  # marked used
    image.unlink()  # pruned
    assert Path(library.get("vera").appearance.reference_image) == image and image.read_bytes() == RED
    monkeypatch.setattr(PersonaLibrary, "default", classmethod(lambda cls, user_dir=None: library))  # load_persona(id)
    fingerprint = PersonaCardLoader.IS_CHANGED(persona_id="vera")
    image.unlink()
    assert PersonaCardLoader.IS_CHANGED(persona_id="vera") == fingerprint, "the same card: the cached output stays"
    assert image.read_bytes() == RED


def test_an_edited_card_file_reaches_the_card_and_scene_loaders(tmp_path, monkeypatch):
    """Before, IS_CHANGED was the id alone: ComfyUI served the old card until it restarted."""
    from comfyui_persona.nodes.conversation_nodes import PersonaCardLoader
    from comfyui_persona.nodes.scene_nodes import PersonaScene

    folder = tmp_path / "cards"
    folder.mkdir()
    card = json.loads((BUILTIN_DIR / "tomas.json").read_text())
    card["data"]["name"] = "Vera"
    card["data"]["extensions"]["comfyui_persona"]["id"] = "vera"
    (folder / "vera.json").write_text(json.dumps(card))
    library = PersonaLibrary([folder])
    monkeypatch.setattr(PersonaLibrary, "default", classmethod(lambda cls, user_dir=None: library))
    assert PersonaCardLoader().load("vera")[0].name == "Vera"
    before = PersonaCardLoader.IS_CHANGED(persona_id="vera"), PersonaScene.IS_CHANGED(personas="vera, mira")
    assert before == (PersonaCardLoader.IS_CHANGED(persona_id="vera"), PersonaScene.IS_CHANGED(personas="vera, mira"))
    card["data"]["name"] = "Veronica"
    (folder / "vera.json").write_text(json.dumps(card) + " ")  # another size: the library sees it at once
    after = PersonaCardLoader.IS_CHANGED(persona_id="vera"), PersonaScene.IS_CHANGED(personas="vera, mira")
    assert after[0] != before[0] and after[1] != before[1]
    assert PersonaCardLoader().load("vera")[0].name == "Veronica"
