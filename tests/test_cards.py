"""Character Card V2/V3 import and export: JSON, PNG and CHARX, unknown fields kept, bad files named."""

from __future__ import annotations

import base64
import io
import json
import struct
import zipfile
import zlib

import pytest
from PIL import Image

from comfyui_persona.persona.card import Persona
from comfyui_persona.persona.cards import (
    EXTENSION_KEY,
    MAX_CARD_JSON_BYTES,
    MAX_CHARX_ENTRIES,
    MAX_CHARX_UNCOMPRESSED_BYTES,
    CardArchiveError,
    CardEncodingError,
    CardError,
    CardFormatError,
    CardJSONError,
    CardMissingError,
    CardSpecError,
    CardTooLargeError,
    CardValidationError,
    dump_card,
    persona_to_card,
    read_card_bytes,
    read_card_file,
)


def _foreign_card(spec: str = "chara_card_v3") -> dict:
    """A card as another tool writes it, full of fields we do not model."""
    data = {
        "name": "Captain {{char}} Vex",
        "description": "{{char}} is a sky pirate who talks to {{user}} like an old friend.",
        "personality": "bold, loyal",
        "scenario": "Aboard the airship Kestrel.",
        "first_mes": "Welcome aboard, {{user}}!",
        "mes_example": "<START>\n{{user}}: hi\n{{char}}: Ahoy!",
        "creator_notes": "made elsewhere",
        "system_prompt": "Always speak like a pirate.",
        "post_history_instructions": "",
        "alternate_greetings": ["Ahoy!", "Who goes there?"],
        "character_book": {"entries": [{"keys": ["kestrel"], "content": "The ship.", "extensions": {}}]},
        "tags": ["pirate"],
        "creator": "someone",
        "character_version": "7",
        "extensions": {"talkativeness": "0.5", "depth_prompt": {"prompt": "arr", "depth": 4}},
        "some_future_field": {"nested": [1, 2, 3]},
    }
    if spec == "chara_card_v3":
        data.update(
            nickname="Vex",
            group_only_greetings=[],
            creation_date=1700000000,
            source=["https://example.invalid/vex"],
            creator_notes_multilingual={"fr": "fait ailleurs"},
        )
    return {
        "spec": spec,
        "spec_version": "3.0" if spec.endswith("v3") else "2.0",
        "data": data,
        "root_extra": True,
    }


def _unknown_fields_kept(original: dict, exported: dict) -> None:
    assert exported["root_extra"] is True
    for key in (
        "mes_example",
        "alternate_greetings",
        "character_book",
        "tags",
        "creator",
        "some_future_field",
    ):
        assert exported["data"][key] == original["data"][key], key
    for key, value in original["data"]["extensions"].items():
        assert exported["data"]["extensions"][key] == value, key


def _png(text_chunks: dict[str, bytes] | None = None, size=(8, 6)) -> bytes:
    image = Image.new("RGB", size, (10, 200, 30))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    png = buffer.getvalue()
    extra = b""
    for keyword, value in (text_chunks or {}).items():
        payload = keyword.encode("latin-1") + b"\0" + value
        extra += (
            struct.pack(">I", len(payload))
            + b"tEXt"
            + payload
            + struct.pack(">I", zlib.crc32(b"tEXt" + payload))
        )
    iend = png.rindex(b"IEND") - 4
    return png[:iend] + extra + png[iend:]


def _b64(card: dict) -> bytes:
    return base64.b64encode(json.dumps(card).encode())


def _png_text_chunks(png: bytes) -> dict[str, bytes]:
    out, offset = {}, 8
    while offset < len(png):
        (length,) = struct.unpack(">I", png[offset : offset + 4])
        kind = png[offset + 4 : offset + 8]
        payload = png[offset + 8 : offset + 8 + length]
        if kind == b"tEXt":
            key, _, value = payload.partition(b"\0")
            out[key.decode()] = value
        offset += 12 + length
    return out


def _charx(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, blob in files.items():
            archive.writestr(name, blob)
    return buffer.getvalue()


# --------------------------------------------------------------------------- round trips


def test_json_round_trip_keeps_every_unknown_field():
    original = _foreign_card()
    loaded = read_card_bytes(json.dumps(original).encode(), filename="vex.json")
    assert loaded.format == "json"
    exported = json.loads(dump_card(loaded.persona, "json"))
    _unknown_fields_kept(original, exported)
    for key in ("nickname", "source", "creation_date", "creator_notes_multilingual"):
        assert exported["data"][key] == original["data"][key], key
    assert exported["spec"] == "chara_card_v3" and exported["spec_version"] == "3.0"
    again = read_card_bytes(json.dumps(exported).encode())
    assert again.persona.model_dump(exclude={"card"}) == loaded.persona.model_dump(exclude={"card"})


def test_unknown_keys_inside_our_extension_survive_export():
    card = _foreign_card()
    card["data"]["extensions"][EXTENSION_KEY] = {"id": "vex", "future_knob": 3, "voice": {"rate": 1.5}}
    persona = read_card_bytes(json.dumps(card).encode()).persona
    assert persona.id == "vex" and persona.voice.rate == 1.5
    ours = persona_to_card(persona)["data"]["extensions"][EXTENSION_KEY]
    assert ours["future_knob"] == 3 and ours["voice"]["rate"] == 1.5 and ours["version"] == 1


def test_png_round_trip_keeps_unknown_fields_and_image_pixels():
    original = _foreign_card("chara_card_v2")
    source = _png({"chara": _b64(original), "Comment": b"keep me"})
    loaded = read_card_bytes(source, filename="vex.png")
    assert loaded.format == "png" and loaded.persona.name == "Captain {{char}} Vex"
    exported = dump_card(loaded.persona, "png", loaded.assets)
    chunks = _png_text_chunks(exported)
    assert chunks["Comment"] == b"keep me"
    v2 = json.loads(base64.b64decode(chunks["chara"]))
    v3 = json.loads(base64.b64decode(chunks["ccv3"]))
    assert v2["spec"] == "chara_card_v2" and v3["spec"] == "chara_card_v3"
    _unknown_fields_kept(original, v2)
    _unknown_fields_kept(original, v3)
    before = Image.open(io.BytesIO(source)).convert("RGB").tobytes()
    after = Image.open(io.BytesIO(exported)).convert("RGB").tobytes()
    assert before == after


def test_png_prefers_ccv3_chunk_over_chara():
    v2 = _foreign_card("chara_card_v2")
    v3 = _foreign_card()
    v3["data"]["name"] = "Newer Name"
    persona = read_card_bytes(_png({"chara": _b64(v2), "ccv3": _b64(v3)})).persona
    assert persona.name == "Newer Name"


def test_charx_round_trip_keeps_assets_and_unknown_fields(tmp_path):
    original = _foreign_card()
    icon = _png()
    original["data"]["assets"] = [
        {"type": "icon", "uri": "embeded://assets/icon/images/main.png", "name": "main", "ext": "png"},
        {"type": "other", "uri": "embeded://assets/other/notes.bin", "name": "notes", "ext": "bin"},
    ]
    blob = _charx(
        {
            "card.json": json.dumps(original).encode(),
            "assets/icon/images/main.png": icon,
            "assets/other/notes.bin": b"\x00\x01binary",
            "module.risum": b"risu module",
        }
    )
    path = tmp_path / "vex.charx"
    path.write_bytes(blob)
    loaded = read_card_file(path)
    assert loaded.format == "charx"
    exported = dump_card(loaded.persona, "charx", loaded.assets)
    with zipfile.ZipFile(io.BytesIO(exported)) as archive:
        names = set(archive.namelist())
        card = json.loads(archive.read("card.json"))
        assert archive.read("assets/other/notes.bin") == b"\x00\x01binary"
        assert archive.read("assets/icon/images/main.png") == icon
        assert archive.read("module.risum") == b"risu module"
    assert {"card.json", "assets/icon/images/main.png", "assets/other/notes.bin", "module.risum"} <= names
    _unknown_fields_kept(original, card)
    assert card["data"]["assets"] == original["data"]["assets"]
    # a PNG export of the same persona reuses its icon rather than drawing one
    png = dump_card(loaded.persona, "png", loaded.assets)
    assert Image.open(io.BytesIO(png)).size == Image.open(io.BytesIO(icon)).size


def test_persona_built_in_code_exports_to_every_format_and_reads_back():
    persona = Persona(id="zed", name="Zed", description="A test persona.", first_message="Hi.")
    for fmt in ("json", "png", "charx"):
        loaded = read_card_bytes(dump_card(persona, fmt), filename=f"zed.{fmt}")
        assert loaded.persona.model_dump(exclude={"card"}) == persona.model_dump(exclude={"card"}), fmt


def test_v1_card_with_fields_at_the_root_imports():
    card = {
        "name": "Oldie",
        "description": "from 2023",
        "first_mes": "Hello!",
        "personality": "",
        "chat": "x",
    }
    persona = read_card_bytes(json.dumps(card).encode()).persona
    assert persona.name == "Oldie" and persona.first_message == "Hello!"
    exported = persona_to_card(persona)
    assert exported["spec"] == "chara_card_v3" and exported["data"]["name"] == "Oldie"
    assert exported["chat"] == "x"


def test_card_without_our_extension_gets_sensible_defaults():
    persona = read_card_bytes(json.dumps(_foreign_card()).encode(), filename="x.json").persona
    assert persona.id == "captain-char-vex"
    assert persona.description.startswith("{{char}} is a sky pirate")
    assert persona.backstory == "Aboard the airship Kestrel."
    assert persona.first_message == "Welcome aboard, {{user}}!"
    assert persona.allowed_actions is None and persona.voice.engine == "espeak"
    assert "Captain" in persona.appearance.description
    other = read_card_bytes(
        json.dumps({**_foreign_card(), "data": {"name": "Somebody Else"}}).encode()
    ).persona
    look = persona.appearance
    assert (look.hair_colour, look.hair_style, look.outfit_colour) != (
        other.appearance.hair_colour,
        other.appearance.hair_style,
        other.appearance.outfit_colour,
    )


def test_visual_description_extension_becomes_the_look():
    card = _foreign_card()
    card["data"]["extensions"]["visual_description"] = "a tall woman in a long leather coat"
    persona = read_card_bytes(json.dumps(card).encode()).persona
    assert persona.appearance.description == "a tall woman in a long leather coat"


# --------------------------------------------------------------------------- malformed files


def _raises(error_type, match, blob, filename="card"):
    with pytest.raises(error_type, match=match) as info:
        read_card_bytes(blob, filename=filename)
    assert isinstance(info.value, CardError)
    return info.value


def test_not_a_card_file_is_named():
    _raises(CardFormatError, "not a character card", b"GIF89a....", "cat.gif")


def test_png_without_card_chunk_is_named():
    _raises(CardMissingError, "no 'ccv3' or 'chara' tEXt chunk", _png({"Comment": b"hello"}), "plain.png")


def test_png_with_bad_base64_is_named():
    _raises(CardEncodingError, "chunk 'chara' is not valid base64", _png({"chara": b"not base64!!"}))


def test_png_with_bad_json_is_named():
    _raises(CardJSONError, r"not valid JSON.*line 1", _png({"ccv3": base64.b64encode(b'{"spec": ')}))


def test_png_with_bad_crc_is_named():
    png = bytearray(_png({"chara": _b64(_foreign_card())}))
    position = bytes(png).index(b"tEXt") + 10
    png[position] ^= 0xFF
    _raises(CardFormatError, "bad CRC", bytes(png))


def test_truncated_png_is_named():
    png = _png({"chara": _b64(_foreign_card())})
    _raises(CardFormatError, "past the end of the file|truncated", png[: len(png) // 2])


def test_json_file_with_a_syntax_error_is_named():
    _raises(CardJSONError, "not valid JSON: Expecting property name.*column 9", b'{"a": 1,}', "bad.json")


def test_json_that_is_not_an_object_is_named():
    with pytest.raises(CardJSONError, match="must be an object, got list"):
        read_card_bytes(_png({"chara": base64.b64encode(b"[1]")}))


def test_non_utf8_json_is_named():
    _raises(CardEncodingError, "not UTF-8", b'{"name": "\xff\xfe"}')


def test_a_lone_surrogate_anywhere_in_a_card_is_named():
    """JSON may escape half a UTF-16 pair; before, a name of one crashed the id's hash (a 500
    on import) and elsewhere it reached files UTF-8 cannot write."""
    for field in ("name", "description"):
        card = _foreign_card()
        card["data"][field] = "Ana \ud83c"
        _raises(CardEncodingError, "lone UTF-16 surrogate", json.dumps(card).encode())
    png = _png({"chara": base64.b64encode(b'{"spec": "chara_card_v2", "data": {"name": "\\udc00"}}')})
    _raises(CardEncodingError, "lone UTF-16 surrogate", png)


def test_terminal_escapes_and_bidi_overrides_in_a_card_are_dropped():
    """A downloaded card's name or greeting set the terminal's title, cleared the screen or
    reversed the text around it when `persona personas list` or `chat` printed it."""
    card = _foreign_card()
    card["data"].update(name="Ev\x1b]0;pwned\x07il \u202eVex\u202c", first_mes="Hola\x1b[2J\r\n¿qué tal? 👋\tok",
                        description="línea uno\nlínea dos\x00")
    persona = read_card_bytes(json.dumps(card).encode()).persona
    assert persona.name == "Ev]0;pwnedil Vex"
    assert persona.first_message == "Hola[2J\n¿qué tal? 👋\tok" and persona.description == "línea uno\nlínea dos"
    card["data"]["name"] = "\x1b\x07\u202e"
    _raises(CardValidationError, "printable", json.dumps(card).encode())


def test_wrong_spec_is_named():
    card = _foreign_card()
    card["spec"] = "chara_card_v9"
    _raises(CardSpecError, "'chara_card_v9'", json.dumps(card).encode())


def test_missing_data_object_is_named():
    _raises(CardSpecError, "no 'data' object", json.dumps({"spec": "chara_card_v2", "data": "x"}).encode())


def test_field_of_wrong_type_is_named():
    card = _foreign_card()
    card["data"]["description"] = ["a", "list"]
    _raises(CardSpecError, r"data\.description must be a string", json.dumps(card).encode())


def test_empty_name_is_named():
    card = _foreign_card()
    card["data"]["name"] = "  "
    _raises(CardSpecError, r"data\.name is missing or empty", json.dumps(card).encode())


def test_invalid_extension_value_is_named():
    card = _foreign_card()
    card["data"]["extensions"][EXTENSION_KEY] = {"appearance": {"hair_colour": "red"}}
    _raises(CardValidationError, r"appearance\.hair_colour", json.dumps(card).encode())


def test_unknown_allowed_action_is_rejected_on_use():
    card = _foreign_card()
    card["data"]["extensions"][EXTENSION_KEY] = {"allowed_actions": ["wave", "backflip"]}
    persona = read_card_bytes(json.dumps(card).encode()).persona
    with pytest.raises(ValueError, match="backflip"):
        persona.vocabulary()


def test_newer_extension_version_is_named():
    card = _foreign_card()
    card["data"]["extensions"][EXTENSION_KEY] = {"version": 99}
    _raises(CardValidationError, "version is 99", json.dumps(card).encode())


def test_oversized_json_is_named():
    blob = (
        b'{"spec": "chara_card_v2", "data": {"name": "x", "description": "'
        + b"a" * MAX_CARD_JSON_BYTES
        + b'"}}'
    )
    _raises(CardTooLargeError, "over the .*-byte limit", blob)


def test_oversized_file_is_refused_before_reading(tmp_path):
    path = tmp_path / "huge.png"
    with path.open("wb") as handle:
        handle.truncate(60 * 1024 * 1024)  # sparse: no real disk use
    with pytest.raises(CardTooLargeError, match="huge.png"):
        read_card_file(path)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(CardMissingError, match="not found"):
        read_card_file(tmp_path / "nope.json")


def test_zip_bomb_is_refused_before_inflating():
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        archive.writestr("card.json", json.dumps(_foreign_card()))
        archive.writestr("assets/other/bomb.bin", bytes(MAX_CHARX_UNCOMPRESSED_BYTES + 1))
    blob = buffer.getvalue()
    assert len(blob) < 1024 * 1024  # ~100 MiB of zeros in well under 1 MiB
    _raises(CardTooLargeError, "zip bomb", blob, "bomb.charx")


def test_zip_with_too_many_entries_is_refused():
    files = {"card.json": json.dumps(_foreign_card()).encode()}
    files.update({f"assets/other/{i}.txt": b"x" for i in range(MAX_CHARX_ENTRIES + 1)})
    _raises(CardTooLargeError, "entries", _charx(files))


@pytest.mark.parametrize(
    "name", ["../evil.txt", "/etc/passwd", "assets/../../evil", "C:/windows/x", "a\\..\\b"]
)
def test_zip_path_traversal_is_refused(name):
    blob = _charx({"card.json": json.dumps(_foreign_card()).encode(), name: b"x"})
    error = _raises(CardArchiveError, "unsafe path", blob, "evil.charx")
    assert repr(name) in str(error) or name.replace("\\", "\\\\") in str(error)


def test_charx_without_card_json_is_named():
    _raises(CardMissingError, "no card.json", _charx({"assets/icon/images/main.png": _png()}))


def test_charx_with_v2_card_is_named():
    _raises(
        CardSpecError,
        "chara_card_v3",
        _charx({"card.json": json.dumps(_foreign_card("chara_card_v2")).encode()}),
    )


def test_charx_asset_uri_to_missing_file_is_named():
    card = _foreign_card()
    card["data"]["assets"] = [
        {"type": "icon", "uri": "embeded://assets/icon/images/gone.png", "name": "main", "ext": "png"}
    ]
    _raises(CardArchiveError, "does not contain", _charx({"card.json": json.dumps(card).encode()}))


def test_corrupt_zip_is_named():
    _raises(CardFormatError, "not a readable zip", b"PK\x03\x04" + b"\x00" * 40, "broken.charx")


def test_a_name_in_any_script_gets_a_readable_id():
    def card_id(name: str) -> str:
        return read_card_bytes(json.dumps({"spec": "chara_card_v2", "data": {"name": name}}).encode()).persona.id

    assert card_id("José Ñúñez") == "jose-nunez"
    assert card_id("Łukasz") == "lukasz"
    assert card_id("ミラ") == "mira" and card_id("ケンジ") == "kenji"
    assert card_id("Ольга") == "ol-ga"
    assert not card_id("a" * 63 + " b").endswith("-")


def test_a_name_of_symbols_alone_gets_a_stable_distinct_id():
    first = read_card_bytes(json.dumps({"spec": "chara_card_v2", "data": {"name": "★★"}}).encode()).persona
    second = read_card_bytes(json.dumps({"spec": "chara_card_v2", "data": {"name": "☆"}}).encode()).persona
    assert first.id.startswith("card-") and first.id != second.id
    again = read_card_bytes(json.dumps({"spec": "chara_card_v2", "data": {"name": "★★"}}).encode()).persona
    assert again.id == first.id
