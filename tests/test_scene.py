"""Scenes of several personas, conversation side (persona/scene.py): who is addressed, who
performs, who answers. The embedded interpreter and the built-in cards, no mocks."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from comfyui_persona.persona.interpreter import get_interpreter
from comfyui_persona.persona.library import PersonaLibrary
from comfyui_persona.persona.scene import GroupTurns, Scene, SceneError, SceneInterpreter, address
from comfyui_persona.persona.schema import ActionDirective


@pytest.fixture(scope="module")
def cast():
    library = PersonaLibrary.default()
    return [library.get(persona_id) for persona_id in ("mira", "bjorn", "ada")]


@pytest.fixture(scope="module")
def embedded():
    return get_interpreter("embedded")


def parts(text, cast, **kwargs):
    return [(a.personas, a.text) for a in address(text, cast, **kwargs)]


def test_a_name_opening_a_clause_addresses_that_persona_from_there_on(cast):
    assert parts("Mira, wave; Bjorn, sit down", cast) == [(("mira",), "wave ;"), (("bjorn",), "sit down")]
    assert parts("Mira wave and Bjorn sit down", cast) == [(("mira",), "wave"), (("bjorn",), "sit down")]
    assert parts("Mira and Bjorn, wave", cast) == [(("mira", "bjorn"), "wave")]
    # a word of a name no one else shares: "the professor" is Professor Ada
    assert parts("Hey professor, nod please. Bjorn, dance!", cast) == [(("ada",), "nod please ."),
                                                                      (("bjorn",), "dance !")]
    assert parts("Could you wave, Bjorn?", cast)[0][0] == ("bjorn",)  # a name closing the request


def test_a_name_inside_a_clause_is_an_object_and_an_unnamed_opening_goes_to_the_last_addressee(cast):
    assert parts("Mira, wave at Bjorn", cast) == [(("mira",), "wave at Bjorn")]
    assert parts("wave at Mira and Bjorn", cast) == [(("mira",), "wave at Mira and Bjorn")]
    assert parts("wave", cast, default="ada") == [(("ada",), "wave")]
    assert parts("wave", cast) == [(("mira",), "wave")]  # nobody yet: the scene's first persona


def test_group_words_address_the_whole_cast(cast):
    everyone = ("mira", "bjorn", "ada")
    for text in ("everyone clap", "all of you bow", "can you both wave?", "Everybody, dance!"):
        assert [p for p, _ in parts(text, cast)] == [everyone], text


def test_spanish_and_the_other_languages_the_interpreter_reads_address_too(cast):
    everyone = ("mira", "bjorn", "ada")
    assert parts("¡Bjorn, saluda!", cast)[0][0] == ("bjorn",)  # the opening mark is no word
    assert parts("¿Bjorn, puedes saludar?", cast)[0][0] == ("bjorn",)
    assert parts("Hola Bjorn, siéntate", cast) == [(("bjorn",), "siéntate")]
    assert parts("Bjorn y Mira, bailen", cast) == [(("bjorn", "mira"), "bailen")]
    assert parts("Mira, saluda y Bjorn, siéntate", cast) == [(("mira",), "saluda"), (("bjorn",), "siéntate")]
    for text in ("todos, saluden", "Alle, winkt!", "tout le monde, dansez", "tutti, ballate", "みんな、手を振って"):
        assert [p for p, _ in parts(text, cast)] == [everyone], text
    assert parts("Bjorn、手を振って", cast) == [(("bjorn",), "手を振って")]


def test_names_match_without_accents_invisible_marks_or_another_s_word_in_the_way(cast):
    jose = cast[0].model_copy(update={"id": "jose-nunez", "name": "José Ñúñez"})
    assert parts("Jose, wave", [cast[1], jose]) == [(("jose-nunez",), "wave")]
    assert parts("\u202bBjorn, wave", cast)[0][0] == ("bjorn",)  # a bidi mark pasted before the name
    # "Bjorn" is a whole name here and a word of another's: the whole name wins
    bjorn_mira = cast[0].model_copy(update={"id": "bjorn-mira", "name": "Bjorn Mira"})
    assert parts("Bjorn, wave", [bjorn_mira, cast[1]]) == [(("bjorn",), "wave")]
    assert parts("Bjorn Mira, wave", [bjorn_mira, cast[1]]) == [(("bjorn-mira",), "wave")]


def test_each_addressed_persona_gets_its_own_directive_stamped_with_its_id(cast, embedded):
    scene = SceneInterpreter(embedded, cast[:2])
    reading = scene.interpret("Mira, wave; Bjorn, sit down")
    assert [(d.character, d.action) for d in reading.directives] == [("mira", "wave"), ("bjorn", "sit")]
    reading = scene.interpret("everyone clap")
    assert [(d.character, d.action) for d in reading.directives] == [("mira", "clap"), ("bjorn", "clap")]
    assert {p for p, r in reading.parts if r.reply} == {"mira", "bjorn"}  # both answer, each in character
    assert scene.interpret("Bjorn, nod").directives[0].character == "bjorn"
    assert scene.interpret("now wave").directives[0].character == "bjorn"  # still talking to Bjorn


def test_a_persona_to_persona_exchange_stops_after_the_limit(cast, embedded):
    scene = SceneInterpreter(embedded, cast[:2])
    turns = GroupTurns(cast[:2], max_exchanges=2)
    reading = scene.interpret("Mira, say hello to Bjorn")
    (who, interpretation), = reading.parts
    reading.parts[0] = (who, interpretation.model_copy(update={"reply": "Bjorn, hello!"}))  # as an LLM would
    names = {"mira": "Bjorn", "bjorn": "Mira"}

    def answer(persona_id, line):  # every answer hands the word back: only the limit ends it
        return f"{names[persona_id]}, your turn!"

    said = list(turns.replies(reading, answer))
    assert [who for who, _ in said] == ["mira", "bjorn", "mira"]  # the reply, then two hand-overs
    quiet = list(GroupTurns(cast[:2]).replies(scene.interpret("Mira, wave"), lambda p, line: ""))
    assert [who for who, _ in quiet] == ["mira"]  # an answer that addresses nobody ends it


def test_bad_scenes_are_clear_errors():
    with pytest.raises(ValidationError, match="repeated: mira"):
        Scene(personas=("mira", "mira"))
    with pytest.raises(ValidationError):
        Scene(personas=("a", "b", "c", "d", "e"))
    with pytest.raises(ValidationError, match="not a persona id"):
        Scene(personas=("Mira Smith",))
    scene = Scene(personas=("mira", "bjorn"))
    assert scene.performer(ActionDirective(action="wave", expression="smile", intensity=0.5)) == "mira"
    with pytest.raises(SceneError, match="'ada', who is not in this scene"):
        scene.performer(ActionDirective(action="wave", expression="smile", intensity=0.5, character="ada"))
    assert Scene.model_validate_json(scene.model_dump_json()) == scene  # a scene file round-trips
