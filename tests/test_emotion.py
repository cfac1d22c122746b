"""Emotion inference: cue words, action defaults, the embedding floor, vocabulary limits."""

from __future__ import annotations

from comfyui_persona.persona.embedding import load_encoder
from comfyui_persona.persona.emotion import infer_expression
from comfyui_persona.persona.schema import core_vocabulary

VOCAB = core_vocabulary()


def test_sad_story_gets_a_sad_face():
    assert infer_expression("my cat died last week", "", [], VOCAB).expression == "sad"


def test_joke_gets_a_laugh():
    assert infer_expression("tell me a joke", "", [], VOCAB).expression == "laugh"


def test_reply_cues_count_when_the_user_gave_none():
    guess = infer_expression("ok", "Thank you, that is wonderful!", [], VOCAB)
    assert guess.expression == "smile" and "reply" in guess.reason


def test_action_default_when_no_words_say_anything():
    assert infer_expression("dance", "Okay.", ["dance"], VOCAB).expression == "excited"
    assert infer_expression("shrug", "Okay.", ["shrug"], VOCAB).expression == "confused"


def test_flat_small_talk_is_neutral():
    assert infer_expression("the bus comes at nine", "I see.", [], VOCAB).expression == "neutral"


def test_embedding_fallback_stays_in_vocabulary_and_respects_the_floor():
    encoder = load_encoder(disabled=False)
    guess = infer_expression("the quarterly tax filing deadline is on monday", "I see.", [], VOCAB, encoder)
    assert guess.expression in VOCAB.expression_names
    if encoder is not None:
        guess = infer_expression("I feel utterly miserable and gloomy", "Oh.", [], VOCAB, encoder)
        assert guess.expression == "sad"


def test_only_expressions_the_vocabulary_has_are_returned():
    from comfyui_persona.persona.schema import Vocabulary

    limited = Vocabulary(
        actions=VOCAB.actions, expressions=tuple(e for e in VOCAB.expressions if e.name != "sad")
    )
    assert infer_expression("my cat died", "", [], limited).expression != "sad"
