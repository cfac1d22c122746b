"""Cue patterns (persona/interpreter/cues.py): indirect requests built from word classes,
stop phrasing, and the guards that keep statements and questions from acting.

Each case is a phrasing the word classes cover by composition, not one listed whole; the
negative cases are statements that contain the same cue words."""

from __future__ import annotations

import pytest

from comfyui_persona.persona.card import Persona
from comfyui_persona.persona.interpreter import InterpretRequest, cues, get_interpreter
from comfyui_persona.persona.text import tokenize

PERSONA = Persona(id="t", name="T")


@pytest.fixture(scope="module")
def plain():
    # Cues are lexical: the parser without the model must read them the same way.
    return get_interpreter("embedded", use_embedding=False)


def acts(interp, text: str) -> list[str]:
    return [d.action for d in interp.interpret(InterpretRequest(text=text, persona=PERSONA)).directives]


def moves(interp, text: str) -> list[str]:
    """Actions other than idle (small talk may carry a face on an idle directive)."""
    return [a for a in acts(interp, text) if a != "idle"]


def words(text: str) -> list[str]:
    return [t for t in tokenize(text) if not t.is_punct]


@pytest.mark.parametrize(
    ("text", "action"),
    [
        ("grab the ottoman", "sit"),  # any seat word after any taking verb
        ("the loveseat is all yours", "sit"),  # an offer, whoever's seat it is
        ("you look knackered", "sit"),  # tiredness said to the listener
        ("give your knees a rest", "sit"),
        ("folks, up on your feet", "stand"),
        ("a massive hand for the drummer", "clap"),
        ("shake those hips", "dance"),
        ("take a gentle lap around the hall", "walk"),
        ("take in the sights", "look_around"),
        ("steer me towards the stairs", "point"),
        ("sleep on it", "think"),
    ],
)
def test_indirect_requests_compose_from_word_classes(text, action):
    assert cues.indirect_action(words(text)) == action


@pytest.mark.parametrize(
    "text",
    [
        "are you tired of standing",  # a question never asks
        "is the sofa free",
        "my feet are so tired",  # the speaker's own news
        "we gave the chef a big hand",
        "they took the couch home",
        "I can feel the beat",
    ],
)
def test_questions_and_narration_ask_for_no_indirect_action(text):
    assert cues.indirect_action(words(text)) is None


@pytest.mark.parametrize(
    "text",
    [
        "can we stop with the nodding",
        "you can quit pointing now",
        "put an end to the bowing",
        "give the clapping a rest",
        "lay off the shrugging",
        "enough is enough",
        "that's more than enough now",
        "pack it in",
    ],
)
def test_stop_phrasing(text, plain):
    assert cues.stop_phrasing(words(text)) is not None
    assert acts(plain, text) == ["idle"]


@pytest.mark.parametrize(
    "text",
    ["the bus didn't stop here", "I can't stop laughing", "we stop at noon", "that's enough for me"],
)
def test_stop_words_in_statements_do_not_stop(text):
    assert cues.stop_phrasing(words(text)) is None


def test_giving_the_legs_a_rest_sits_but_giving_the_waving_a_rest_stops(plain):
    assert acts(plain, "give your legs a rest") == ["sit"]
    assert acts(plain, "give the waving a rest") == ["idle"]


@pytest.mark.parametrize(
    "text",
    [
        "dancing keeps me fit",  # an activity as the subject
        "standing desks are everywhere now",
        "last summer we waved at the boats",  # told in the past
        "love the way you dance",  # an opinion
        "gorgeous bow",
    ],
)
def test_statements_naming_an_action_plan_nothing(text, plain):
    assert moves(plain, text) == []


def test_a_question_that_names_an_indirect_phrase_does_not_sit(plain):
    assert moves(plain, "do you ever get tired of standing?") == []
    assert acts(plain, "you must be tired of standing") == ["sit"]


def test_music_turns_a_bare_move_into_a_dance(plain):
    assert acts(plain, "the music is on, move!") == ["dance"]
    assert acts(plain, "move!") == ["walk"]


def test_group_address_keeps_the_request(plain):
    assert acts(plain, "everyone nod") == ["nod"]
    assert moves(plain, "everyone nodded") == []


def test_a_perfect_inside_a_request_is_not_narration(plain):
    assert acts(plain, "bow once you have waved") == ["wave", "bow"]


def test_repeated_stops_are_one_idle(plain):
    assert acts(plain, "stop, stop, that's enough") == ["idle"]


def test_superlative_face_reads_as_that_face_at_high_intensity(plain):
    result = plain.interpret(InterpretRequest(text="show me your saddest face", persona=PERSONA))
    assert [d.expression for d in result.directives] == ["sad"]
    assert result.directives[0].intensity >= 0.7


def test_a_run_of_one_emoji_is_one_action(plain):
    assert acts(plain, "👋👋👋") == ["wave"]


# -- third round (issue 16): frames, stop objects, intensity families, adjuncts -------------


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("we'd love to watch you bow", ["bow"]),
        ("it'd be awesome if you nodded", ["nod"]),
        ("would you be able to sit down?", ["sit"]),
        ("is it okay for you to clap?", ["clap"]),
        ("is there any way you could shrug?", ["shrug"]),
        ("d'you reckon you could turn right?", ["turn_right"]),
        ("ya got to wave", ["wave"]),
    ],
)
def test_a_request_frame_leaves_the_request(plain, text, want):
    assert acts(plain, text) == want


@pytest.mark.parametrize(
    "text", ["I'd love to dance at my wedding", "do you like to clap along?", "I love it when people bow"]
)
def test_a_wish_about_the_speaker_or_a_taste_is_no_frame(plain, text):
    assert moves(plain, text) == []


@pytest.mark.parametrize("text", ["ditch the bowing", "skip the shrugging now", "lose all that clapping"])
def test_a_stopping_verb_with_an_activity_object_stops(plain, text):
    assert acts(plain, text) == ["idle"]


@pytest.mark.parametrize(
    ("word", "band"),
    [("forcefully", "high"), ("exuberantly", "high"), ("feverishly", "high"), ("hesitantly", "low"),
     ("delicately", "low"), ("softest", "low"), ("biggest", "high"), ("happily", None), ("table", None)],
)
def test_intensity_words_are_read_through_their_derivations(word, band):
    assert cues.intensity_word(word) == band


def test_best_effort_idioms_ask_at_full_strength(plain):
    for text in ("wave with all your might", "clap as loud as you possibly can", "dance your socks off"):
        result = plain.interpret(InterpretRequest(text=text, persona=PERSONA))
        assert result.directives and result.directives[0].intensity >= 0.7, text


def test_an_activity_named_after_a_preposition_is_not_asked_for(plain):
    assert acts(plain, "you must be worn out from all the clapping") == ["sit"]
    assert moves(plain, "after so much bowing my back hurts") == []
    assert moves(plain, "we danced after the concert") == []
    assert acts(plain, "after you bow, sit") == ["bow", "sit"]


def test_go_ahead_is_read_from_the_seat_or_music_named(plain):
    assert acts(plain, "the bench is right there, go ahead") == ["sit"]
    assert acts(plain, "this track is a banger, go nuts") == ["dance"]
    assert moves(plain, "go for it") == []


def test_hey_before_a_stop_is_no_hello(plain):
    assert acts(plain, "oi, knock it off") == ["idle"]
    assert acts(plain, "hey, sit down") == ["wave", "sit"]


@pytest.mark.parametrize(
    "text",
    ["I'd love to see you again sometime", "you gotta be kidding me", "it would be great if you told me a story",
     "forget the meeting", "you must be sore about losing"],
)
def test_a_frame_or_cue_before_no_request_asks_for_nothing(plain, text):
    result = plain.interpret(InterpretRequest(text=text, persona=PERSONA))
    assert [d.action for d in result.directives if d.action != "idle"] == []
    assert "no supported action" not in result.note and "I can't" not in result.reply
