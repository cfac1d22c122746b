"""A scene's state (persona/scene.py `SceneTracker`) and its turns (`SceneChat`): one state
tracker per character behind the tracker's own calls. Built-in cards, embedded interpreter."""

from __future__ import annotations

import pytest

from comfyui_persona.persona.interpreter import get_interpreter
from comfyui_persona.persona.library import PersonaLibrary
from comfyui_persona.persona.scene import SceneChat, SceneError, SceneTracker
from comfyui_persona.persona.schema import ActionDirective


@pytest.fixture(scope="module")
def cast():
    library = PersonaLibrary.default()
    return [library.get(persona_id) for persona_id in ("mira", "bjorn")]


def _d(action, character=None):
    return ActionDirective(action=action, expression="smile", intensity=0.6, character=character)


def test_each_character_is_planned_by_its_own_tracker(cast):
    tracker = SceneTracker(cast)
    tracker.plan([_d("sit", "bjorn")], 0)
    planned = tracker.plan([_d("walk", "bjorn"), _d("wave")], 5000)
    # Bjorn sits, so he stands before walking; Mira (named by nobody: the first) just waves
    assert [(d.character, d.action) for d in planned] == [("bjorn", "stand"), ("bjorn", "walk"), ("mira", "wave")]
    assert tracker.states_at(5100)["mira"].action == "wave"
    assert tracker.state_at(5100).action == "wave"  # the lead's state
    with pytest.raises(SceneError, match="'ada', who is not in this scene"):
        tracker.plan([_d("wave", "ada")], 6000)


def test_one_voice_at_a_time_and_changes_in_the_order_they_happened(cast):
    tracker = SceneTracker(cast)
    tracker.advance(0)
    tracker.set_speaking(True, 100, character="mira")
    tracker.set_speaking(False, 900, character="mira")
    tracker.set_speaking(True, 880, character="bjorn")  # a few ms early (two clocks): Mira stops there
    reported = tracker.advance(2000)
    assert all(c.model_dump(mode="json")["character"] == c.character for c in reported)  # the wire payload
    changes = [(c.character, c.state.speaking, c.state.since_ms) for c in reported]
    talking: dict[str, bool] = {}
    for who, speaking, _ in changes:
        talking[who] = speaking
        assert sum(talking.values()) <= 1, changes
    assert changes[-1][:2] == ("bjorn", True)
    tracker.set_speaking(False, 2500)  # a cut silences everyone
    assert not any(s.speaking for s in tracker.states_at(2600).values())


def test_a_scene_turn_gives_each_addressed_persona_its_directives_and_line(cast):
    chat = SceneChat(get_interpreter("embedded"), cast)
    response = chat.respond("Mira, wave; Bjorn, sit down")
    assert [(d.character, d.action) for d in response.directives] == [("mira", "wave"), ("bjorn", "sit")]
    assert [who for who, _ in response.replies] == ["mira", "bjorn"]
    assert all(line for _, line in response.replies)


def test_an_llm_backend_is_told_who_else_is_in_the_scene(cast):
    from comfyui_persona.persona.interpreter import InterpretRequest
    from comfyui_persona.persona.interpreter.structured import build_messages
    from comfyui_persona.persona.scene import SceneInterpreter

    scene = SceneInterpreter(get_interpreter("embedded"), cast)
    system = build_messages(InterpretRequest(text="hi", persona=scene.cast["mira"]))[0]["content"]
    assert system.startswith("You are Mira.") and "You share this scene with Bjorn" in system
    assert "answer only as Mira" in system
    alone = build_messages(InterpretRequest(text="hi", persona=cast[0]))[0]["content"]
    assert "share this scene" not in alone  # the card itself is unchanged
