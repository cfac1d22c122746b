"""The state tracker: coherent plans over the pose graph, timing, idle return, since times, changes."""

from __future__ import annotations

import pytest

from comfyui_persona.persona.card import Persona
from comfyui_persona.persona.library import load_persona
from comfyui_persona.persona.schema import ActionDirective, Activity, CharacterState, Pose, core_vocabulary
from comfyui_persona.persona.state import StateTracker, UnknownActionError


def d(action: str, expression: str = "neutral", **extra) -> ActionDirective:
    return ActionDirective(
        action=action, expression=expression, intensity=extra.pop("intensity", 0.5), **extra
    )


def actions(plan: list[ActionDirective]) -> list[str]:
    return [directive.action for directive in plan]


def sitting_tracker(at_ms: int = 0) -> StateTracker:
    tracker = StateTracker(core_vocabulary(), clock_ms=at_ms)
    tracker.plan([d("sit")], at_ms)
    assert tracker.state_at(at_ms + 1500).pose == Pose.SITTING
    return tracker


def test_starts_standing_idle_neutral_since_the_clock():
    state = StateTracker(core_vocabulary(), clock_ms=500).state_at(800)
    assert state == CharacterState(pose=Pose.STANDING, action="idle", expression="neutral", since_ms=500)


def test_walk_while_sitting_stands_up_first():
    tracker = sitting_tracker()
    plan = tracker.plan([d("walk", "smile")], 2000)
    assert actions(plan) == ["stand", "walk"]
    assert plan[0].expression == "smile" and plan[0].duration_s == 1.5 and plan[1].duration_s == 4.0
    assert "inserted 'stand' before 'walk'" in tracker.notes
    standing_up = tracker.state_at(2500)
    assert (standing_up.pose, standing_up.action, standing_up.activity) == (
        Pose.SITTING,
        "stand",
        Activity.TRANSITIONING,
    )
    walking = tracker.state_at(4000)
    assert (walking.pose, walking.action, walking.activity, walking.since_ms) == (
        Pose.WALKING,
        "walk",
        Activity.ACTING,
        3500,
    )
    after = tracker.state_at(9000)
    assert (after.pose, after.action, after.activity, after.since_ms) == (
        Pose.STANDING,
        "idle",
        Activity.IDLE,
        7500,
    )


def test_sit_while_sitting_is_a_no_op():
    tracker = sitting_tracker()
    assert tracker.plan([d("sit")], 2000) == []
    assert tracker.notes == ["already sitting: 'sit' dropped"]
    assert tracker.state_at(2500).pose == Pose.SITTING and tracker.state_at(2500).since_ms == 1500


def test_sit_while_sitting_with_something_to_say_keeps_the_words():
    tracker = sitting_tracker()
    plan = tracker.plan([d("sit", "smile", dialogue="I'm already sitting!")], 2000)
    assert actions(plan) == ["idle"] and plan[0].dialogue == "I'm already sitting!"
    state = tracker.state_at(2100)
    assert (state.pose, state.action, state.expression) == (Pose.SITTING, "idle", "smile")


def test_stand_while_standing_is_a_no_op():
    tracker = StateTracker(core_vocabulary())
    assert tracker.plan([d("stand")], 0) == []


@pytest.mark.parametrize("action", ["bow", "dance"])
def test_actions_that_need_standing_stand_up_first(action):
    tracker = sitting_tracker()
    assert actions(tracker.plan([d(action)], 2000)) == ["stand", action]


def test_sit_then_sit_again_in_one_plan_sits_once():
    tracker = StateTracker(core_vocabulary())
    assert actions(tracker.plan([d("sit"), d("wave"), d("sit")], 0)) == ["sit", "wave"]
    assert tracker.state_at(1500 + 2000).pose == Pose.SITTING


def test_persona_extra_action_follows_the_pose_graph():
    kenji = load_persona("kenji")
    tracker = StateTracker(kenji.vocabulary())
    assert actions(tracker.plan([d("sit"), d("spin", "determined")], 0)) == ["sit", "stand", "spin"]


def test_action_that_cannot_be_reached_is_dropped_with_a_reason():
    persona = Persona(id="chair", name="Chair", allowed_actions=("sit", "walk", "wave"))
    tracker = StateTracker(persona.vocabulary())
    plan = tracker.plan([d("sit"), d("walk"), d("wave")], 0)
    assert actions(plan) == ["sit", "wave"]
    assert any("'walk'" in note and "dropped" in note for note in tracker.notes)


def test_idle_return_after_the_action_duration():
    tracker = StateTracker(core_vocabulary())
    tracker.plan([d("wave")], 1000)
    assert tracker.state_at(2999).action == "wave"
    back = tracker.state_at(3000)
    assert (back.action, back.activity, back.since_ms) == ("idle", Activity.IDLE, 3000)
    assert tracker.busy_until_ms() == 3000


def test_directive_duration_overrides_the_default():
    tracker = StateTracker(core_vocabulary())
    plan = tracker.plan([d("dance", duration_s=0.5), d("nod")], 0)
    assert [p.duration_s for p in plan] == [0.5, 1.5]
    assert tracker.state_at(400).action == "dance" and tracker.state_at(600).action == "nod"
    assert tracker.state_at(2000).action == "idle"


def test_expression_holds_for_its_duration_then_returns_to_neutral():
    tracker = StateTracker(core_vocabulary())
    tracker.plan([d("nod", "smile")], 0)  # nod 1.5 s, smile default 2.5 s: the smile outlasts the nod
    assert tracker.state_at(1000).expression == "smile"
    at_2000 = tracker.state_at(2000)
    assert (at_2000.action, at_2000.expression, at_2000.since_ms) == ("idle", "smile", 1500)
    at_2500 = tracker.state_at(2500)
    assert (at_2500.expression, at_2500.since_ms) == ("neutral", 2500)


def test_expression_only_directive_keeps_the_pose():
    tracker = sitting_tracker()
    tracker.plan([d("idle", "laugh", duration_s=1.0)], 2000)
    state = tracker.state_at(2500)
    assert (state.pose, state.action, state.expression) == (Pose.SITTING, "idle", "laugh")
    assert tracker.state_at(3000).expression == "neutral"


def test_later_expression_replaces_an_earlier_one():
    tracker = StateTracker(core_vocabulary())
    tracker.plan([d("nod", "smile"), d("shake_head", "frown")], 0)
    assert tracker.state_at(1600).expression == "frown"


def test_changes_lists_each_state_once_with_since_times():
    tracker = StateTracker(core_vocabulary())
    tracker.plan([d("wave", "smile"), d("nod")], 0)
    changes = tracker.changes(0, 10_000)
    assert [(c.action, c.expression, c.since_ms) for c in changes] == [
        ("nod", "smile", 2000),
        ("nod", "neutral", 2500),
        ("idle", "neutral", 3500),
    ]
    assert tracker.changes(2000, 2400) == []
    assert tracker.state_at(0).since_ms == 0 and tracker.state_at(0).action == "wave"


def test_advance_reports_every_change_exactly_once():
    tracker = StateTracker(core_vocabulary())
    first = tracker.advance(0)
    assert [s.action for s in first] == ["idle"]  # the initial state
    assert tracker.advance(100) == []
    tracker.plan([d("wave")], 100)  # at the same ms as the last advance
    assert [(s.action, s.since_ms) for s in tracker.advance(100)] == [("wave", 100)]
    assert [(s.action, s.since_ms) for s in tracker.advance(5000)] == [("idle", 2100)]
    assert tracker.advance(6000) == []


def test_new_plan_interrupts_the_running_action():
    tracker = StateTracker(core_vocabulary())
    tracker.plan([d("walk"), d("wave")], 0)
    tracker.advance(1000)
    plan = tracker.plan([d("nod")], 1000)
    assert actions(plan) == ["nod"]
    state = tracker.state_at(1200)
    assert (state.pose, state.action, state.since_ms) == (Pose.STANDING, "nod", 1000)
    assert tracker.state_at(2500).action == "idle"  # the cancelled wave never runs


def test_interrupted_sit_counts_as_done():
    tracker = StateTracker(core_vocabulary())
    tracker.plan([d("sit")], 0)
    assert actions(tracker.plan([d("walk")], 500)) == ["stand", "walk"]


def test_queued_plan_runs_after_the_current_one():
    tracker = StateTracker(core_vocabulary())
    tracker.plan([d("sit")], 0)
    plan = tracker.plan([d("dance")], 200, interrupt=False)
    assert actions(plan) == ["stand", "dance"]
    assert tracker.state_at(1000).action == "sit"
    assert tracker.state_at(1500).action == "stand"
    assert tracker.state_at(3000).action == "dance"


def test_speaking_is_tracked_and_reported():
    tracker = StateTracker(core_vocabulary())
    tracker.advance(0)
    tracker.set_speaking(True, 300)
    tracker.set_speaking(False, 900)
    reported = tracker.advance(1000)
    assert [(s.speaking, s.since_ms) for s in reported] == [(True, 300), (False, 900)]


def test_reset_returns_to_standing_idle():
    tracker = sitting_tracker()
    tracker.plan([d("idle", "sad", duration_s=10)], 2000)
    tracker.set_speaking(True, 2000)
    tracker.reset(3000)
    assert tracker.state_at(3000) == CharacterState(since_ms=3000)
    assert tracker.state_at(9000) == CharacterState(since_ms=3000)


def test_unknown_action_or_expression_is_named():
    tracker = StateTracker(load_persona("sol").vocabulary())
    with pytest.raises(UnknownActionError, match="unknown action 'dance'"):
        tracker.plan([d("dance")], 0)
    with pytest.raises(UnknownActionError, match="unknown expression 'smirk'"):
        tracker.plan([d("nod", "smirk")], 0)
    assert tracker.state_at(100).action == "idle"  # a refused plan changes nothing


def test_long_session_keeps_state_small_and_consistent():
    tracker = StateTracker(core_vocabulary())
    now = 0
    for i in range(500):
        tracker.plan([d("sit" if i % 2 else "walk", "smile")], now)
        now += 700
        tracker.advance(now)
    assert len(tracker._segments) <= 3 and len(tracker._faces) <= 3
    assert tracker.state_at(now).since_ms <= now


def test_history_stays_bounded_without_advance():
    tracker = StateTracker(core_vocabulary())
    for i in range(300):
        tracker.plan([d("wave", "smile")], i * 1000)
    assert len(tracker._segments) <= 62 and len(tracker._faces) <= 62
    assert tracker.state_at(300_000 + 1000).action == "idle"
