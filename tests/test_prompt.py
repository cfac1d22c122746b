"""Prompt composer: appearance + action + expression + intensity + speaking, deterministic."""

from __future__ import annotations

import pytest

from comfyui_persona.persona.schema import ActionDirective, core_vocabulary
from comfyui_persona.video.backend import SessionSpec
from comfyui_persona.video.text.prompt import PromptComposer, intensity_word

LOOK = {"description": "a woman in her thirties with red curly hair and a green jacket"}


def _composer(**kwargs) -> PromptComposer:
    spec = SessionSpec(persona_id="ada", persona_name="Ada", look=kwargs.pop("look", LOOK), **kwargs)
    return PromptComposer.from_session(spec)


def test_prompt_starts_with_the_appearance_and_holds_both_phrases():
    vocab = core_vocabulary()
    text = _composer().compose(ActionDirective(action="wave", expression="smile", intensity=0.5))
    assert text.startswith(LOOK["description"] + ", ")
    assert vocab.action("wave").phrase in text and vocab.expression("smile").phrase in text
    assert text.index(vocab.action("wave").phrase) < text.index(vocab.expression("smile").phrase)


@pytest.mark.parametrize(
    ("intensity", "word"),
    [(0.0, "slightly"), (0.2, "slightly"), (0.5, ""), (0.7, "energetically"), (1.0, "very energetically")],
)
def test_intensity_bands_choose_the_word(intensity, word):
    assert intensity_word(intensity) == word
    text = _composer().compose(ActionDirective(action="nod", expression="neutral", intensity=intensity))
    phrase = core_vocabulary().action("nod").phrase
    assert (f"{word} {phrase}" in text) if word else (f", {phrase}" in text)


def test_intensity_goes_on_the_expression_when_the_action_is_idle():
    text = _composer().compose(ActionDirective(action="idle", expression="smile", intensity=0.1))
    assert "slightly smiling warmly" in text
    rest = _composer().compose(ActionDirective(action="idle", expression="neutral", intensity=0.1))
    assert "slightly" not in rest


def test_speaking_adds_a_mouth_cue_only_while_speaking():
    d = ActionDirective(action="idle", expression="neutral", intensity=0.5)
    assert "talking" in _composer().compose(d, speaking=True)
    assert "talking" not in _composer().compose(d, speaking=False)


def test_persona_words_from_the_session_vocabulary_are_used():
    extra = {
        "actions": [
            {"name": "juggle", "description": "Juggle balls.", "phrase": "juggling three colourful balls"}
        ]
    }
    text = _composer(vocabulary=extra).compose(
        ActionDirective(action="juggle", expression="neutral", intensity=0.5)
    )
    assert "juggling three colourful balls" in text


def test_unknown_word_names_the_known_ones():
    with pytest.raises(KeyError, match="wave"):
        _composer().compose(ActionDirective(action="moonwalk", expression="neutral", intensity=0.5))


def test_same_directive_gives_the_same_text_and_a_different_one_does_not():
    d = ActionDirective(action="wave", expression="smile", intensity=0.8)
    assert _composer().compose(d, speaking=True) == _composer().compose(d, speaking=True)
    assert _composer().compose(d) != _composer().compose(
        ActionDirective(action="bow", expression="smile", intensity=0.8)
    )


def test_missing_description_falls_back_to_a_neutral_person():
    text = _composer(look={}).compose()
    assert text.startswith("a friendly young adult, ")
    assert core_vocabulary().action("idle").phrase in text


def test_bad_vocabulary_sections_are_rejected():
    with pytest.raises(ValueError, match="gestures"):
        _composer(vocabulary={"gestures": []})
