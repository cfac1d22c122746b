"""The persona gallery: built-ins, user folders, imports, and the `persona personas` command."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from comfyui_persona.headless.cli import main
from comfyui_persona.persona.card import Persona
from comfyui_persona.persona.cards import CardError, dump_card, read_card_bytes, read_card_file
from comfyui_persona.persona.library import (
    BUILTIN_DIR,
    DEFAULT_PERSONA_ID,
    PersonaLibrary,
    UnknownPersonaError,
    builtin_persona_ids,
    load_persona,
)
from comfyui_persona.persona.schema import core_vocabulary

BUILTINS = builtin_persona_ids()


def test_at_least_six_builtins_and_the_default_is_one():
    assert len(BUILTINS) >= 6
    assert DEFAULT_PERSONA_ID in BUILTINS


@pytest.mark.parametrize("persona_id", BUILTINS)
def test_every_builtin_loads_validates_and_is_complete(persona_id):
    path = BUILTIN_DIR / f"{persona_id}.json"
    card = json.loads(path.read_text())
    assert card["spec"] == "chara_card_v3" and card["spec_version"] == "3.0"
    persona = load_persona(persona_id)
    assert persona.id == persona_id
    vocabulary = persona.vocabulary()  # raises on unknown allowed actions
    assert "idle" in vocabulary.action_names
    for text in (persona.description, persona.personality, persona.backstory, persona.first_message):
        assert len(text) > 20
    assert len(persona.appearance.description.split()) >= 10  # enough to drive a video prompt
    assert persona.constraints and persona.voice.style
    for group in ("acknowledge", "cannot", "chitchat", "greeting", "farewell", "thanks", "refusal"):
        assert getattr(persona.lines, group), group
    assert any("{action}" in line for line in persona.lines.acknowledge)
    assert load_persona(str(path)).model_dump() == persona.model_dump()


def test_builtins_look_and_sound_distinct():
    personas = [load_persona(i) for i in BUILTINS]
    looks = {
        (p.appearance.hair_colour, p.appearance.hair_style, p.appearance.outfit_colour) for p in personas
    }
    assert len(looks) == len(personas)
    assert len({p.appearance.outfit_colour for p in personas}) == len(personas)
    assert len({p.appearance.background_colour for p in personas}) == len(personas)
    assert len({p.appearance.hair_style for p in personas}) >= 5
    assert len({p.appearance.description for p in personas}) == len(personas)
    voices = {(p.voice.voice, p.voice.rate, p.voice.pitch) for p in personas}
    assert len(voices) == len(personas)
    assert all(p.voice.engine == "espeak" for p in personas)
    assert len({p.first_message for p in personas}) == len(personas)


def test_one_builtin_limits_actions_and_one_adds_its_own():
    personas = [load_persona(i) for i in BUILTINS]
    core = set(core_vocabulary().action_names)
    limited = [p for p in personas if p.allowed_actions is not None]
    assert limited and all(set(p.vocabulary().action_names) < core for p in limited)
    extended = [p for p in personas if p.extra_actions and p.extra_expressions]
    assert extended
    for persona in extended:
        for entry in (*persona.extra_actions, *persona.extra_expressions):
            assert entry.description and entry.synonyms and entry.phrase
            assert entry.name not in core
        assert persona.extra_actions[0].name in persona.vocabulary().action_names


def test_unknown_id_error_lists_known_ids_and_is_a_key_error():
    with pytest.raises(KeyError) as info:
        load_persona("nobody")
    assert isinstance(info.value, UnknownPersonaError)
    message = str(info.value)
    assert "'nobody'" in message and all(i in message for i in BUILTINS)


def test_user_folder_adds_and_shadows_builtins(tmp_path):
    mine = Persona(id="zara", name="Zara", first_message="Hey.")
    (tmp_path / "zara.json").write_bytes(dump_card(mine, "json"))
    restyled = load_persona(DEFAULT_PERSONA_ID).model_copy(update={"name": "Restyled"})
    (tmp_path / "default.png").write_bytes(dump_card(restyled, "png"))
    (tmp_path / "broken.json").write_text("{not json")
    library = PersonaLibrary(user_dirs=[tmp_path])
    assert "zara" in library.ids() and set(BUILTINS) <= set(library.ids())
    assert library.get(DEFAULT_PERSONA_ID).name == "Restyled"
    assert list(library.errors) == [tmp_path / "broken.json"]
    assert "not valid JSON" in library.errors[tmp_path / "broken.json"]


def test_persona_dir_environment_variable_is_read(tmp_path, monkeypatch):
    (tmp_path / "envy.json").write_bytes(dump_card(Persona(id="envy", name="Envy"), "json"))
    monkeypatch.setenv("PERSONA_DIR", str(tmp_path))
    assert PersonaLibrary().get("envy").name == "Envy"


def test_add_stores_a_card_that_a_fresh_library_finds(tmp_path):
    library = PersonaLibrary(user_dirs=[tmp_path / "user"])
    stored = library.add(Persona(id="newbie", name="Newbie"))
    assert stored.path == tmp_path / "user" / "newbie.json" and not stored.renamed and not stored.replaced
    assert library.get("newbie").name == "Newbie"
    assert PersonaLibrary(user_dirs=[tmp_path / "user"]).get("newbie").name == "Newbie"


def test_a_taken_id_gets_the_next_free_one_unless_overwrite_is_asked(tmp_path):
    """Decided (issue 18): an upload named `mira` replaced the built-in default for every new
    session. A taken id, a built-in's included, now never loses its card without `overwrite`."""
    library = PersonaLibrary(user_dirs=[tmp_path / "user"])
    first = library.add(Persona(id="newbie", name="Newbie"))
    again = library.add(Persona(id="newbie", name="Again"))
    assert again.id == "newbie-2" and again.renamed and again.requested_id == "newbie"
    assert "'newbie-2'" in again.warnings[-1] and "overwrite" in again.warnings[-1]
    assert library.get("newbie").name == "Newbie" and library.get("newbie-2").name == "Again"
    assert first.path.is_file() and again.path == tmp_path / "user" / "newbie-2.json"
    third = library.add(Persona(id="newbie", name="Third"))
    assert third.id == "newbie-3"
    builtin = library.add(load_persona(DEFAULT_PERSONA_ID).model_copy(update={"name": "Planted"}))
    assert builtin.id == f"{DEFAULT_PERSONA_ID}-2"
    assert library.get(DEFAULT_PERSONA_ID).name != "Planted"
    replaced = library.add(Persona(id="newbie", name="Replaced"), overwrite=True)
    assert replaced.id == "newbie" and replaced.replaced and not replaced.renamed
    assert PersonaLibrary(user_dirs=[tmp_path / "user"]).get("newbie").name == "Replaced"


def test_the_first_user_folder_where_imports_go_shadows_the_later_ones(tmp_path):
    """Before, a later folder won: `import --overwrite` into the first folder said "imported"
    while the later folder's card of that id stayed the one every host used."""
    first, later = tmp_path / "a", tmp_path / "b"
    PersonaLibrary(user_dirs=[later]).add(Persona(id="zed", name="Old Zed"))
    library = PersonaLibrary(user_dirs=[first, later])
    assert library.get("zed").name == "Old Zed"
    stored = library.add(Persona(id="zed", name="New Zed"), overwrite=True)
    assert stored.path.parent == first and library.get("zed").name == "New Zed"
    assert PersonaLibrary(user_dirs=[first, later]).get("zed").name == "New Zed"
    assert PersonaLibrary(user_dirs=[later, first]).get("zed").name == "Old Zed"


def test_an_overwrite_that_changes_the_container_leaves_one_file(tmp_path):
    library = PersonaLibrary(user_dirs=[tmp_path])
    library.add(Persona(id="pic", name="Pic"))
    picture = dump_card(Persona(id="pic", name="Pic"), "png")
    stored = library.add(read_card_bytes(picture, filename="pic.png"), overwrite=True)
    assert stored.path.suffix == ".charx" and sorted(p.name for p in tmp_path.iterdir()) == ["pic.charx"]


def test_import_of_png_card_keeps_its_image(tmp_path):
    source = tmp_path / "card.png"
    source.write_bytes(dump_card(Persona(id="pic", name="Pic"), "png"))
    library = PersonaLibrary(user_dirs=[tmp_path / "user"])
    persona = library.import_file(source).persona
    stored = library.path_of(persona.id)
    assert stored.suffix == ".charx"
    assert read_card_file(stored).assets  # the image travelled with it


def test_add_without_a_user_folder_is_a_clear_error():
    with pytest.raises(CardError, match="PERSONA_DIR"):
        PersonaLibrary(user_dirs=[]).add(Persona(id="x", name="X"))


def test_cli_lists_shows_exports_and_imports(tmp_path, capsys):
    user = str(tmp_path / "user")
    assert main(["personas", "--dir", user, "list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {row["id"] for row in rows} == set(BUILTINS)
    assert main(["personas", "--dir", user, "show", DEFAULT_PERSONA_ID]) == 0
    assert json.loads(capsys.readouterr().out)["id"] == DEFAULT_PERSONA_ID
    for fmt in ("json", "png", "charx"):
        out = tmp_path / f"out.{fmt}"
        assert (
            main(["personas", "--dir", user, "export", DEFAULT_PERSONA_ID, "--format", fmt, "-o", str(out)])
            == 0
        )
        assert read_card_file(out).persona.id == DEFAULT_PERSONA_ID
    card = Persona(id="cli-import", name="Cli Import")
    (tmp_path / "in.json").write_bytes(dump_card(card, "json"))
    capsys.readouterr()
    assert main(["personas", "--dir", user, "import", str(tmp_path / "in.json")]) == 0
    assert "imported cli-import" in capsys.readouterr().out
    assert main(["personas", "--dir", user, "show", "nobody"]) == 2
    assert "unknown persona 'nobody'" in capsys.readouterr().err
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\nnonsense")
    assert main(["personas", "--dir", user, "import", str(tmp_path / "bad.png")]) == 2
    assert "bad.png" in capsys.readouterr().err


def test_remove_deletes_a_user_card_and_uncovers_the_builtin(tmp_path):
    library = PersonaLibrary(user_dirs=[tmp_path])
    library.add(load_persona(DEFAULT_PERSONA_ID).model_copy(update={"name": "Mine"}), overwrite=True)
    assert library.get(DEFAULT_PERSONA_ID).name == "Mine"
    library.remove(DEFAULT_PERSONA_ID)
    assert library.get(DEFAULT_PERSONA_ID).name != "Mine"
    with pytest.raises(PermissionError, match="built in"):
        library.remove(DEFAULT_PERSONA_ID)


def test_portrait_is_the_card_image_or_a_drawing_of_the_look(tmp_path):
    from io import BytesIO

    from PIL import Image

    library = PersonaLibrary(user_dirs=[tmp_path])
    drawn = Image.open(BytesIO(library.portrait("mira"))).convert("RGB")
    assert drawn.getpixel((2, 2)) == (0xE4, 0xF1, 0xEA)  # Mira's background colour
    picture = BytesIO()
    Image.new("RGB", (40, 30), (1, 2, 3)).save(picture, format="PNG")
    card = dump_card(
        Persona(id="framed", name="Framed"), "charx", {"assets/icon/images/main.png": picture.getvalue()}
    )
    (tmp_path / "framed.charx").write_bytes(card)
    library.refresh()
    assert Image.open(BytesIO(library.portrait("framed"))).size == (40, 30)


def test_load_persona_sees_cards_added_after_first_use(tmp_path, monkeypatch):
    monkeypatch.setenv("PERSONA_DIR", str(tmp_path))
    monkeypatch.setattr(PersonaLibrary, "_defaults", {})
    load_persona(DEFAULT_PERSONA_ID)
    (tmp_path / "late.json").write_bytes(dump_card(Persona(id="late", name="Late"), "json"))
    assert load_persona("late").name == "Late"


def test_builtin_voices_exist_in_espeak_ng():
    """Each built-in's espeak voice name is one libespeak-ng accepts (checked in a child
    process: espeak's state is process-global and the voice tests own it)."""
    import subprocess
    import sys

    import espeakng_loader  # noqa: F401  (in the test extra: missing is a failure, not a skip)
    names = [load_persona(i).voice.voice for i in BUILTINS]
    script = (
        "import ctypes, sys, espeakng_loader as e\n"
        "lib = ctypes.CDLL(e.get_library_path())\n"
        "assert lib.espeak_Initialize(1, 0, e.get_data_path().encode(), 0) > 0\n"
        "print([n for n in sys.argv[1:] if lib.espeak_SetVoiceByName(n.encode()) != 0])\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, *names], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "[]", f"voices espeak-ng does not know: {result.stdout}"


# --------------------------------------------------------------------------- one library, followed by stat


def test_the_default_library_is_the_xdg_folder_unless_persona_dir_says_otherwise(tmp_path, monkeypatch):
    from comfyui_persona.persona.library import default_user_dir, default_user_dirs

    monkeypatch.delenv("PERSONA_DIR", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    monkeypatch.setattr(PersonaLibrary, "_defaults", {})
    assert default_user_dir() == tmp_path / "xdg" / "comfyui-persona" / "personas"
    library = PersonaLibrary.default()
    assert library.user_dirs == [default_user_dir()] and PersonaLibrary.default() is library
    monkeypatch.delenv("XDG_DATA_HOME")
    assert default_user_dir() == Path.home() / ".local" / "share" / "comfyui-persona" / "personas"
    monkeypatch.setenv("PERSONA_DIR", f"{tmp_path / 'a'}{os.pathsep}{tmp_path / 'b'}")
    assert default_user_dirs() == [tmp_path / "a", tmp_path / "b"]
    server = PersonaLibrary.default(tmp_path / "server")  # a server's --personas-dir goes first
    assert server.user_dirs == [tmp_path / "server", tmp_path / "a", tmp_path / "b"]


def test_the_cli_and_the_card_loader_node_use_the_one_folder(tmp_path, monkeypatch, capsys):
    """Issue 17: `persona personas import` needed PERSONA_DIR and `persona interpret --persona
    zed` then said unknown. Now both, and ComfyUI's Card Loader, use the default library."""
    from comfyui_persona.nodes.conversation_nodes import PersonaCardLoader

    monkeypatch.delenv("PERSONA_DIR", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    monkeypatch.setattr(PersonaLibrary, "_defaults", {})
    (tmp_path / "zed.json").write_bytes(dump_card(Persona(id="zed", name="Zed"), "json"))
    assert main(["personas", "import", str(tmp_path / "zed.json")]) == 0
    assert (tmp_path / "xdg" / "comfyui-persona" / "personas" / "zed.json").is_file()
    capsys.readouterr()
    assert main(["interpret", "--persona", "zed", "--json", "--option", "use_embedding=false", "wave"]) == 0
    assert json.loads(capsys.readouterr().out)["directives"][0]["action"] == "wave"
    assert "zed" in PersonaCardLoader.INPUT_TYPES()["required"]["persona_id"][0]
    assert PersonaCardLoader().load("zed")[0].name == "Zed"


def test_a_running_library_sees_cards_added_changed_and_removed_without_rereading(tmp_path, monkeypatch):
    import comfyui_persona.persona.library as library_module

    reads: list[str] = []
    real = library_module.read_card_file

    def counting(path, **kwargs):
        reads.append(Path(path).name)
        return real(path, **kwargs)

    monkeypatch.setattr(library_module, "read_card_file", counting)
    library = PersonaLibrary(user_dirs=[tmp_path], include_builtin=False)
    (tmp_path / "ann.json").write_bytes(dump_card(Persona(id="ann", name="Ann"), "json"))
    assert library.ids() == ["ann"] and reads == ["ann.json"]
    for _ in range(5):
        library.list()
        library.get("ann")
    assert reads == ["ann.json"]  # nothing changed: stat only, no read
    (tmp_path / "bo.json").write_bytes(dump_card(Persona(id="bo", name="Bo"), "json"))
    assert library.ids() == ["ann", "bo"] and reads == ["ann.json", "bo.json"]
    (tmp_path / "ann.json").write_bytes(dump_card(Persona(id="ann", name="Ann Edited, Longer"), "json"))
    assert library.get("ann").name == "Ann Edited, Longer"
    (tmp_path / "bo.json").unlink()
    assert library.ids() == ["ann"]
    with pytest.raises(UnknownPersonaError):
        library.get("bo")
    assert reads == ["ann.json", "bo.json", "ann.json"]


def test_a_card_removed_by_hand_makes_the_builtin_visible_again(tmp_path):
    library = PersonaLibrary(user_dirs=[tmp_path])
    restyled = load_persona(DEFAULT_PERSONA_ID).model_copy(update={"name": "Restyled"})
    (tmp_path / "mine.json").write_bytes(dump_card(restyled, "json"))
    assert library.get(DEFAULT_PERSONA_ID).name == "Restyled"
    (tmp_path / "mine.json").unlink()
    assert library.get(DEFAULT_PERSONA_ID).name != "Restyled"


def test_library_errors_are_persona_errors():
    from comfyui_persona.errors import PersonaError
    from comfyui_persona.persona.library import BuiltinPersonaError

    assert issubclass(UnknownPersonaError, PersonaError) and issubclass(UnknownPersonaError, KeyError)
    assert issubclass(BuiltinPersonaError, PersonaError) and issubclass(BuiltinPersonaError, PermissionError)
