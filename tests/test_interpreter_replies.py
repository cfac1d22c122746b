"""Replies without an LLM: small talk answered from the card, feelings acknowledged, macros
expanded, performed requests confirmed (never refused), refusals naming the action."""

from __future__ import annotations

import pytest

from comfyui_persona.persona.card import Lines, Persona
from comfyui_persona.persona.interpreter import InterpretRequest, get_interpreter

CARD = Persona(
    id="wren",
    name="Wren",
    description="{{char}} is a travelling botanist who sketches every plant she meets.",
    personality="Gentle and curious. She loves rainy mornings and strong tea.",
    backstory="{{char}} runs a tiny greenhouse café where {{user}} has just walked in.",
    lines=Lines(
        greeting=("Hello {{user}}, I'm {{char}}!",),
        acknowledge=("Of course, {{user}}: {action}.",),
        chitchat=("Mm, {{char}} is listening.",),
    ),
)


@pytest.fixture(scope="module")
def interp():
    return get_interpreter("embedded", use_embedding=False)


def reply(interp, text, persona=CARD):
    return interp.interpret(InterpretRequest(text=text, persona=persona)).reply


def test_name_question_answers_with_the_name_and_who_it_is(interp):
    answer = reply(interp, "what's your name?")
    assert answer.startswith("I'm Wren.")
    assert "I am a travelling botanist who sketches every plant" in answer


def test_a_card_written_in_another_language_is_quoted_not_turned_into_first_person(interp):
    """The English third-to-first-person rules swapped the name for "me"/"I" inside German,
    Japanese and Arabic prose ("Herr me ist ein freundlicher Bäcker")."""
    for name, description in (("Müller", "Herr Müller ist ein freundlicher Bäcker aus München."),
                              ("ミラ", "ミラは東京のガイドです。"), ("محمد", "محمد مرشد سياحي ودود من القاهرة.")):
        card = CARD.model_copy(update={"name": name, "description": description})
        assert reply(interp, "what's your name?", card) == f"I'm {name}. {description}"


def test_how_are_you_is_answered(interp):
    assert "doing well" in reply(interp, "hey, how are you doing?")


def test_likes_come_from_the_card_in_first_person(interp):
    assert "I love rainy mornings and strong tea." in reply(interp, "what do you like?")


def test_scenario_comes_from_the_card_with_macros_filled(interp):
    answer = reply(interp, "where are you?")
    assert "I run a tiny greenhouse café where you have just walked in." in answer


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("I'm sad today", "sorry you're feeling down"),
        ("I feel really stressed about work", "stressful"),
        ("I'm so angry at my landlord", "frustrating"),
        ("I just got promoted!", "happy for you"),
        ("i'm not feeling great", "sorry you're feeling down"),
    ],
)
def test_feelings_are_acknowledged(interp, text, needle):
    assert needle in reply(interp, text)


@pytest.mark.parametrize(("text", "face", "needle"), [
    ("Estoy triste", "sad", "Siento que estés triste"), ("Ich bin traurig", "sad", "Das tut mir leid"),
    ("Je suis fatigué", "sad", "longue journée"), ("Sono felice", "smile", "felice per te"),
    ("Estoy enfadado", "angry", "frustrante"), ("我很难过", "sad", "很抱歉"),
])
def test_feelings_are_acknowledged_in_the_user_s_language_with_a_face(interp, text, face, needle):
    """Glossed to "i am sad" and all, they got "tell me more" and no face: only English was heard."""
    result = interp.interpret(InterpretRequest(text=text, persona=CARD))
    assert needle in result.reply, result.reply
    assert [(d.action, d.expression) for d in result.directives] == [("idle", face)]


def test_macros_are_expanded_in_every_line(interp):
    for text in ("hello", "wave", "the weather is nice today"):
        answer = reply(interp, text)
        assert "{{" not in answer and "}}" not in answer, answer
    assert reply(interp, "hello") == "Hello you, I'm Wren!"
    assert reply(interp, "wave") == "Of course, you: wave."


@pytest.mark.parametrize(
    "text", ["wave to the crowd for me", "could you sit on the floor?", "take a load off"]
)
def test_a_performed_request_is_confirmed_not_refused(interp, text):
    answer = reply(interp, text, Persona(id="p", name="P"))
    assert "can't" not in answer, answer


def test_refusal_names_the_action_with_pronouns_turned_round(interp):
    answer = reply(interp, "hug me", Persona(id="p", name="P"))
    assert "hug you" in answer
    assert "hug me" not in answer


def test_partly_performed_request_confirms_and_refuses_the_rest(interp):
    answer = reply(interp, "do a backflip and wave", Persona(id="p", name="P"))
    assert "wave" in answer and "can't do a backflip" in answer


def test_stop_says_it_stops(interp):
    assert "stop" in reply(interp, "knock it off", Persona(id="p", name="P")).lower()


def test_what_can_you_do_lists_actions(interp):
    answer = reply(interp, "what can you do?")
    assert "wave" in answer and "sit down" in answer
