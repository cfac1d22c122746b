"""Commands in Spanish, German, French, Portuguese, Italian, Japanese and Chinese: detected,
glossed into the English parser, answered in the user's language (or, where the persona does
not speak it, in English with the languages it does speak)."""

from __future__ import annotations

import pytest

from comfyui_persona.persona.card import Persona
from comfyui_persona.persona.interpreter import InterpretRequest, get_interpreter
from comfyui_persona.persona.interpreter.languages import ENGLISH, OTHER, detect_language, gloss

PERSONA = Persona(id="t", name="Lia")


@pytest.fixture(scope="module")
def interp():
    return get_interpreter("embedded", use_embedding=False)


def run(interp, text, persona=PERSONA):
    return interp.interpret(InterpretRequest(text=text, persona=persona))


def acts(result):
    return [d.action for d in result.directives if d.action != "idle"]


@pytest.mark.parametrize(
    ("text", "language"),
    [
        ("siéntate por favor", "es"),
        ("setz dich bitte hin", "de"),
        ("assieds-toi s'il te plaît", "fr"),
        ("sente-se, por favor", "pt"),
        ("siediti per favore", "it"),
        ("座ってください", "ja"),
        ("请坐下", "zh"),
        ("sit down please", ENGLISH),
        ("wink at me", ENGLISH),
        ("no", ENGLISH),
        ("сядь пожалуйста", OTHER),
        ("اجلس من فضلك", OTHER),
    ],
)
def test_detects_the_language(text, language):
    assert detect_language(text) == language


@pytest.mark.parametrize(
    ("text", "actions"),
    [
        ("levántate y luego saluda", ["stand", "wave"]),
        ("antes de sentarte, saluda", ["wave", "sit"]),
        ("steh auf und dann verbeuge dich", ["stand", "bow"]),
        ("tanz nicht", []),
        ("lève-toi puis fais coucou", ["stand", "wave"]),
        ("ne danse pas", []),
        ("levante-se e depois acene", ["stand", "wave"]),
        ("acene com a cabeça", ["nod"]),
        ("alzati e poi saluta", ["stand", "wave"]),
        ("non ballare", []),
        ("立ってから手を振って", ["stand", "wave"]),
        ("踊らないで", []),
        ("站起来然后挥手", ["stand", "wave"]),
        ("不要跳舞", []),
    ],
)
def test_commands_keep_order_and_negation(interp, text, actions):
    assert acts(run(interp, text)) == actions


@pytest.mark.parametrize(
    "text", ["para de bailar", "hör auf zu tanzen", "arrête de danser", "别跳了", "踊るのをやめて"]
)
def test_stop_in_every_language_rests(interp, text):
    assert [d.action for d in run(interp, text).directives] == ["idle"]


def test_postposed_negation_moves_to_the_front():
    assert gloss("tanz nicht", "de").text == "don't dance"
    assert gloss("别跳了", "zh").text == "stop dance"
    assert gloss("pon cara triste", "es").text.endswith("sad face")


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("siéntate", "sentarme"),
        ("setz dich", "hinsetzen"),
        ("assieds-toi", "m'asseoir"),
        ("sente-se", "sentar"),
        ("siediti", "sedermi"),
        ("座って", "座ります"),
        ("坐下", "坐下"),
    ],
)
def test_reply_is_in_the_users_language(interp, text, needle):
    assert needle in run(interp, text).reply


def test_small_talk_in_spanish_names_the_persona(interp):
    assert "Lia" in run(interp, "¿cómo te llamas?").reply
    assert "gracias" in run(interp, "hola, ¿cómo estás?").reply


def test_a_persona_that_speaks_only_english_says_so_and_still_acts(interp):
    card = {"data": {"extensions": {"comfyui_persona": {"languages": ["en"]}}}}
    persona = PERSONA.model_copy(update={"card": card})
    result = run(interp, "siéntate", persona)
    assert acts(result) == ["sit"]
    assert result.reply.startswith("Sorry, I only speak English.")


def test_an_unread_script_gets_the_list_of_languages(interp):
    result = run(interp, "сядь пожалуйста")
    assert acts(result) == []
    for name in ("English", "Spanish", "German", "French", "Portuguese", "Italian", "Japanese", "Chinese"):
        assert name in result.reply


def test_english_stays_english(interp):
    result = run(interp, "stand up and wave")
    assert acts(result) == ["stand", "wave"]
    assert "read as" not in result.note


@pytest.mark.parametrize(
    ("text", "language", "actions"),
    [
        ("aplaudenos", "es", ["clap"]),  # clitic joined on, accent left out
        ("siéntense en el banco", "es", ["sit"]),
        ("guardami e saluta", "it", ["wave"]),
        ("applaudis-nous", "fr", ["clap"]),
        ("点了点头", "zh", ["nod"]),  # a doubled verb is one
        ("点三次头", "zh", ["nod", "nod", "nod"]),  # a count inside a separable verb
        ("往左看看", "zh", ["turn_left"]),
        ("右を見て", "ja", ["turn_right"]),  # the direction before the verb
    ],
)
def test_inflected_and_reordered_forms_are_read(interp, text, language, actions):
    result = interp.interpret(InterpretRequest(text=text, persona=Persona(id="t", name="T")))
    assert f"read as {language}" in result.note
    assert [d.action for d in result.directives if d.action != "idle"] == actions


def test_a_face_in_the_japanese_past_form_is_that_face(interp):
    result = interp.interpret(InterpretRequest(text="怒った顔をして", persona=Persona(id="t", name="T")))
    assert [d.expression for d in result.directives] == ["angry"]


@pytest.mark.parametrize("text", ["BAILA", "¡¡BAILA!!", "TANZ!!", "DANSE !!", "BALLA!!"])
def test_a_request_in_capitals_is_stronger_in_every_language(text):
    """The gloss is lower case, so only English capitals raised the intensity (0.5-0.6 for
    "¡¡BAILA!!" against 1.0 for "DANCE!!")."""
    from comfyui_persona.persona.library import PersonaLibrary

    result = get_interpreter("embedded", use_embedding=False).interpret(
        InterpretRequest(text=text, persona=PersonaLibrary.default().get("mira")))
    assert [(d.action, d.intensity >= 0.9) for d in result.directives] == [("dance", True)], result


@pytest.mark.parametrize(("text", "again"), [("hola otra vez", "¡Hola de nuevo!"), ("hallo", "Hallo nochmal!"),
                                             ("こんにちは", "また会えましたね！")])
def test_a_greeting_later_in_a_conversation_does_not_introduce_the_persona_again(text, again):
    """English said "Hello again!"; the other languages said "¡Hola! Soy Mira." every time."""
    from comfyui_persona.persona.interpreter import Turn
    from comfyui_persona.persona.library import PersonaLibrary

    mira = PersonaLibrary.default().get("mira")
    history = [Turn(role="user", text="hi"), Turn(role="persona", text="Hello! I'm Mira.")]
    result = get_interpreter("embedded", use_embedding=False).interpret(
        InterpretRequest(text=text, persona=mira, history=history))
    assert result.reply.startswith(again) and "Mira" not in result.reply, result.reply


@pytest.mark.parametrize(("text", "action"), [
    ("¿bailarías para mí?", "dance"), ("¿te sentarías?", "sit"), ("tu danserais pour moi ?", "dance"),
    ("dançaria pra mim?", "dance"), ("balleresti per me?", "dance"), ("puoi salutarmi con la mano?", "wave"),
])
def test_a_polite_conditional_asks_in_every_romance_language(text, action):
    """"¿bailarías para mí?" ("would you dance for me?") lost its verb, and "para" opening what
    was left read as "stop": the persona stopped. French, Portuguese and Italian did nothing."""
    from comfyui_persona.persona.library import PersonaLibrary

    result = get_interpreter("embedded", use_embedding=False).interpret(
        InterpretRequest(text=text, persona=PersonaLibrary.default().get("mira")))
    assert [d.action for d in result.directives] == [action], (result.directives, result.note)


@pytest.mark.parametrize(("text", "actions"), [
    ("please sit down y luego baila", ["sit", "dance"]), ("bitte setz dich and then wave", ["sit", "wave"]),
    ("wave, luego siéntate", ["wave", "sit"]),
])
def test_a_message_mixing_english_with_another_language_asks_for_all_of_it(text, actions):
    """The message is read as one language and its glossary dropped every word it did not know,
    the English half included: "please sit down y luego baila" only danced."""
    from comfyui_persona.persona.library import PersonaLibrary

    result = get_interpreter("embedded", use_embedding=False).interpret(
        InterpretRequest(text=text, persona=PersonaLibrary.default().get("mira")))
    assert [d.action for d in result.directives if d.action != "stand"] == actions, (result.directives, result.note)
