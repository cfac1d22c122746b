"""The persona node classes: ComfyUI's classic node API, session-store state, real components.

No ComfyUI here (the real-ComfyUI tests live elsewhere): these check the contract
ComfyUI relies on (INPUT_TYPES with tooltips, RETURN_TYPES/NAMES, FUNCTION, CATEGORY,
DESCRIPTION) and what each node does with the real interpreter, tracker and renderer.
"""

import subprocess
import sys

import pytest

from comfyui_persona.nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS
from comfyui_persona.nodes.conversation_nodes import (
    PersonaCardLoader,
    PersonaConversationTurn,
    PersonaDirective,
    PersonaInterpreter,
)
from comfyui_persona.nodes.runtime import (
    CallbackListener,
    SessionStore,
    bind_store,
    current_store,
    default_store,
)
from comfyui_persona.nodes.stream_nodes import PersonaPreviewRenderer, PersonaStateTracker, PersonaStreamSink
from comfyui_persona.nodes.types import DirectivePlan

PREVIEW_NODES = [
    "PersonaCardLoader", "PersonaConversationTurn", "PersonaInterpreter", "PersonaDirective",
    "PersonaStateTracker", "PersonaPreviewRenderer", "PersonaStreamSink", "PersonaFrameOutput",
]


@pytest.mark.parametrize("name", PREVIEW_NODES)
def test_node_follows_the_classic_comfyui_api_with_tooltips_everywhere(name):
    cls = NODE_CLASS_MAPPINGS[name]
    assert name.startswith("Persona") and NODE_DISPLAY_NAME_MAPPINGS[name]
    assert cls.CATEGORY.startswith("persona/") and cls.DESCRIPTION
    assert callable(getattr(cls, cls.FUNCTION))
    assert len(getattr(cls, "RETURN_NAMES", cls.RETURN_TYPES)) == len(cls.RETURN_TYPES)
    declared = cls.INPUT_TYPES()
    for section in ("required", "optional"):
        for input_name, entry in declared.get(section, {}).items():
            assert len(entry) == 2 and entry[1].get("tooltip"), f"{name}.{input_name} has no tooltip"


def test_importing_the_nodes_imports_no_torch_and_no_comfyui():
    code = (
        "import sys; import comfyui_persona.nodes; "
        "bad = [m for m in ('torch', 'comfy', 'server', 'folder_paths') if m in sys.modules]; print(bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "[]"


def test_per_turn_nodes_defeat_caching_only_without_a_host_turn():
    """ComfyUI caches a node whose (class, inputs, IS_CHANGED) key equals the last one; it
    compares keys as tuples, where an element equal *or identical* to the last matches: the
    value must be new on every run (a module-level NaN was identical, so a second Run of an
    unchanged workflow was fully cached)."""
    first, second = (PersonaConversationTurn.IS_CHANGED(turn=0, text="hi") for _ in range(2))
    assert (first,) != (second,)
    assert PersonaConversationTurn.IS_CHANGED(turn=7, text="hi") == 7
    assert (PersonaDirective.IS_CHANGED(turn=0),) != (PersonaDirective.IS_CHANGED(turn=0),)
    assert (PersonaPreviewRenderer.IS_CHANGED(),) != (PersonaPreviewRenderer.IS_CHANGED(),)
    assert (PersonaStateTracker.IS_CHANGED(),) != (PersonaStateTracker.IS_CHANGED(),)
    # loaders stay cached: the same card, the same value
    assert PersonaCardLoader.IS_CHANGED(persona_id="mira") == PersonaCardLoader.IS_CHANGED(persona_id="mira")
    assert PersonaStreamSink.OUTPUT_NODE is True


def test_current_store_is_the_bound_one_even_when_empty():
    store = SessionStore()
    assert current_store() is default_store()
    with bind_store(store):
        assert current_store() is store
    assert current_store() is default_store()


def test_turn_and_interpreter_keep_history_in_the_session_store_and_emit_in_protocol_order():
    store = SessionStore()
    events = []
    store.open("s", listener=CallbackListener(lambda kind, payload: events.append((kind, payload))))
    with bind_store(store):
        (persona,) = PersonaCardLoader().load("mira")
        (turn,) = PersonaConversationTurn().turn(persona, "please nod", "s", 3)
        plan, reply = PersonaInterpreter().interpret(persona, turn, "embedded")
        assert turn.turn == 3 and plan.turn == 3 and plan.directives[0].action == "nod" and reply
        (second,) = PersonaConversationTurn().turn(persona, "thanks", "s", 4)
    assert [t.role for t in second.history] == ["user", "persona"]
    kinds = [k for k, _ in events]
    assert kinds[0] == "directives" and kinds[-1] == "reply" and events[-1][1]["done"] is True


def test_turn_minus_one_does_nothing_and_comfyui_turn_zero_numbers_itself():
    store = SessionStore()
    with bind_store(store):
        (persona,) = PersonaCardLoader().load("mira")
        (idle,) = PersonaConversationTurn().turn(persona, "wave", "s", -1)
        assert idle.turn == 0 and not store.get("s").conversation.history
        (numbered,) = PersonaConversationTurn().turn(persona, "wave", "s", 0)
        assert numbered.turn == 1
        (manual,) = PersonaDirective().make("bow", "smile", 0.5, 0.0, "", 0, "s")
        assert manual.turn == 2 and manual.directives[0].duration_s is None
        (nothing,) = PersonaDirective().make("bow", "smile", 0.5, 0.0, "", -1, "s")
        assert nothing.turn == 0 and nothing.directives == ()


def test_state_tracker_plans_a_stand_before_walking_while_seated_and_reports_changes():
    store = SessionStore()
    events = []
    store.open("s", listener=CallbackListener(lambda kind, payload: events.append(payload)))
    with bind_store(store):
        (persona,) = PersonaCardLoader().load("mira")
        tracker = PersonaStateTracker()
        empty = DirectivePlan(turn=0)
        (sit,) = PersonaDirective().make("sit", "neutral", 0.5, 0.0, "", 1, "s")
        plan, state = tracker.track(persona, empty, "s", sit)
        assert [d.action for d in plan.directives] == ["sit"] and state.action == "sit"
        store.get("s").created -= 5  # five seconds later: seated
        _, state = tracker.track(persona, empty, "s", sit)
        assert state.pose.value == "sitting"
        (walk,) = PersonaDirective().make("walk", "neutral", 0.5, 0.0, "", 2, "s")
        plan, _ = tracker.track(persona, empty, "s", walk)
        assert [d.action for d in plan.directives] == ["stand", "walk"]
    reported = [(e["state"]["action"], e["state"]["pose"]) for e in events]
    assert reported[0] == ("sit", "standing") and ("idle", "sitting") in reported


def test_preview_renderer_submits_each_plan_once_and_really_sits():
    store = SessionStore()
    with bind_store(store):
        (persona,) = PersonaCardLoader().load("mira")
        renderer = PersonaPreviewRenderer()
        (sit,) = PersonaDirective().make("sit", "neutral", 0.5, 0.0, "", 1, "s")
        (first,) = renderer.render(persona, sit, "s", 128, 128, 12.0, 0)
        assert first.chunk.shows_directives == [1] and first.chunk.frames.shape[1:] == (128, 128, 3)
        for _ in range(12):
            (later,) = renderer.render(persona, sit, "s", 128, 128, 12.0, 0)
            assert later.chunk.shows_directives == []  # the same plan is not submitted again
        assert store.get("s").renderer.backend.sitting
        store.get("s").reset()
        assert not store.get("s").renderer.backend.sitting
    store.drop("s")
    assert store.find("s") is None


def test_renderer_state_is_per_session():
    store = SessionStore()
    with bind_store(store):
        (persona,) = PersonaCardLoader().load("mira")
        renderer = PersonaPreviewRenderer()  # one node object, as ComfyUI and the runner share it
        plan = DirectivePlan(turn=0)
        a = [renderer.render(persona, plan, "a", 64, 64, 10.0, 0)[0].chunk.first_index for _ in range(3)]
        b = renderer.render(persona, plan, "b", 64, 64, 10.0, 0)[0].chunk.first_index
    assert a == sorted(a) and a[0] == 0 and b == 0


def test_a_queued_runs_session_is_closed_after_it_goes_idle(monkeypatch):
    """Queued runs never say they are done: a session nobody streams is closed (its renderer
    and files) once no node has used it for `idle_s`; a streamed one is left to its host."""
    import time

    store = SessionStore(idle_s=5.0)
    closed = []
    queued, streamed = store.get("queued"), store.open("streamed", streamed=True)
    queued.close = lambda: closed.append("queued")
    streamed.close = lambda: closed.append("streamed")
    later = time.monotonic() + 3600
    monkeypatch.setattr(time, "monotonic", lambda: later)
    store.get("someone-else")
    assert closed == ["queued"] and store.find("queued") is None and store.find("streamed") is streamed
