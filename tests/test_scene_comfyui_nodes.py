"""The Persona Scene node without ComfyUI: its input checks, and the shipped scene workflow run
by the headless runner (the same node classes; tests/test_scene_comfyui.py runs them in ComfyUI).

Which cast a session plays is settled per node (`nodes.scene_nodes.lead_persona`): a host's
scene stays, a queued Run plays what its graph says.
"""

from __future__ import annotations

import json

import pytest

from comfyui_persona.headless.runner import StreamingRunner, WorkflowGraph, load_workflow
from comfyui_persona.nodes import NODE_CLASS_MAPPINGS
from comfyui_persona.nodes.runtime import CallbackListener, SessionStore, bind_store
from comfyui_persona.nodes.scene_nodes import PersonaScene, SceneInputError, cast_ids, lead_persona
from comfyui_persona.nodes.types import SceneValue
from comfyui_persona.persona.library import load_persona
from comfyui_persona.persona.scene import SceneTracker
from comfyui_persona.persona.state import StateTracker
from paths import REPO

SCENE_API = REPO / "workflows" / "api" / "persona_scene_chat_api.json"
PREVIEW_API = REPO / "workflows" / "api" / "persona_preview_chat_api.json"


@pytest.mark.parametrize(("text", "ids"), [
    ("mira, bjorn", ("mira", "bjorn")),
    ("  ada;juno  sol ", ("ada", "juno", "sol")),
    ('{"personas": ["bjorn", "mira", "ada", "kenji"], "layout": "side_by_side"}', ("bjorn", "mira", "ada", "kenji")),
])
def test_a_scene_is_ids_left_to_right_or_a_scene_files_json(text: str, ids: tuple) -> None:
    assert cast_ids(text) == ids
    assert PersonaScene.VALIDATE_INPUTS(personas=text) is True
    (value,) = PersonaScene().load(text)
    assert value.ids == ids and value.lead.id == ids[0] and value.lead.name


@pytest.mark.parametrize(("text", "message"), [
    ("", "a scene holds 2 to 4 personas; got 0"),
    ("mira", "a scene holds 2 to 4 personas; got 1 (mira); for one persona use Persona Card Loader"),
    ("mira, bjorn, ada, juno, sol", "a scene holds 2 to 4 personas; got 5 (mira, bjorn, ada, juno, sol)"),
    ("mira, bjorn, mira", "a persona appears once per scene; repeated: mira"),
    ("mira, nobody", "unknown persona 'nobody' in the scene; known: ada, bjorn,"),
    ("mira, Bjorn!", "'Bjorn!' is not a persona id"),
    ('{"personas": "mira"}', 'a scene file is an object with "personas": a list of persona ids'),
    ('{"personas": ["mira", "bjorn"], "layout": "stacked"}', "unknown layout 'stacked'"),
    ('{"personas": ["mira", "bjorn"', "the scene is not valid JSON"),
])
def test_a_bad_scene_is_refused_with_one_message_at_validation_and_at_run_time(text: str, message: str) -> None:
    with pytest.raises(SceneInputError) as caught:
        PersonaScene().load(text)
    assert str(caught.value).startswith(message), str(caught.value)
    assert isinstance(caught.value, ValueError) and caught.value.code == "bad_scene"
    assert PersonaScene.VALIDATE_INPUTS(personas=text) == str(caught.value)
    assert PersonaScene.VALIDATE_INPUTS(personas=None) is True, "a linked input is checked when it runs"


def _runner(path, store: SessionStore, session_id: str, events: list) -> StreamingRunner:
    store.open(session_id, listener=CallbackListener(lambda kind, payload: events.append((kind, payload))))
    runner = StreamingRunner(WorkflowGraph(load_workflow(path, NODE_CLASS_MAPPINGS), NODE_CLASS_MAPPINGS),
                             store, session_id)
    runner.start()
    return runner


def test_the_scene_workflow_gives_each_addressed_persona_its_directive_and_draws_both() -> None:
    store, events = SessionStore(), []
    runner = _runner(SCENE_API, store, "s", events)
    try:
        runner.turn("chat", "Mira, wave; Bjorn, sit down", 1)
        runner.tick()
        runner.turn("action", {"action": "clap", "expression": "excited", "intensity": 0.7, "duration_s": 0.0,
                               "dialogue": "", "character": "bjorn"}, 2)
        runner.tick()
        session = store.find("s")
        assert tuple(p.id for p in session.cast) == ("mira", "bjorn") and isinstance(session.tracker, SceneTracker)
    finally:
        runner.close()
    directives = [[(d.character, d.action) for d in p["directives"]] for kind, p in events if kind == "directives"]
    assert directives == [[("mira", "wave"), ("bjorn", "sit")]]
    replies = [p["text"] for kind, p in events if kind == "reply"]
    assert replies == ["Mira: Sure, wave!\nBjorn: Aye, sit down."], replies
    chunks = [p["frames"].chunk for kind, p in events if kind == "chunk"]
    assert [c.frames.shape for c in chunks] == [(2, 320, 512, 3)] * 3
    assert [c.first_index for c in chunks] == [0, 2, 4], "one stream: frames advance"
    changed = [(p["state"]["character"], p["state"]["action"]) for kind, p in events if kind == "state"]
    assert ("mira", "wave") in changed and ("bjorn", "sit") in changed
    assert ("bjorn", "clap") in changed and ("mira", "clap") not in changed, "the manual action names its performer"


def test_a_queued_run_plays_its_graphs_cast_and_a_plain_card_after_it_ends_the_scene() -> None:
    store = SessionStore()
    mira, bjorn, ada = (load_persona(p) for p in ("mira", "bjorn", "ada"))
    session = store.get("run")
    with bind_store(store):
        assert lead_persona(SceneValue((mira, bjorn)), session) is mira
        session.tracker = SceneTracker(session.cast)
        assert lead_persona(SceneValue((ada, mira)), session) is ada
        assert tuple(p.id for p in session.cast) == ("ada", "mira") and session.tracker is None, "a new cast, afresh"
        session.tracker = SceneTracker(session.cast)
        assert lead_persona(mira, session) is mira
        assert session.cast == () and session.tracker is None, "a plain card after a scene: one persona again"
        session.tracker = StateTracker(mira.vocabulary())
        assert lead_persona(mira, session) is mira and session.tracker is not None, "the same card: state kept"
        session.conversation = object()
        photo = mira.model_copy(update={"appearance": mira.appearance.model_copy(update={"reference_image": "face.png"})})
        assert lead_persona(photo, session) is photo and session.tracker is not None, "a new look: state kept"
        # The Card Loader switched to another persona in the same session: its vocabulary applies.
        assert lead_persona(ada, session) is ada
        assert session.tracker is None and session.conversation is None, "another card: afresh"
        session.tracker = StateTracker(ada.vocabulary())
        edited = ada.model_copy(update={"name": "Ada Lovelace"})
        assert lead_persona(edited, session) is edited and session.tracker is None, "an edited card: afresh"


def test_a_hosts_scene_stays_whatever_the_graphs_scene_says() -> None:
    store = SessionStore()
    mira, bjorn, ada = (load_persona(p) for p in ("mira", "bjorn", "ada"))
    hosted = store.open("hosted", streamed=True)
    hosted.cast = (ada, mira)  # hello.scene, set before any node runs
    assert lead_persona(SceneValue((mira, bjorn)), hosted) is ada and hosted.cast == (ada, mira)
    assert lead_persona(bjorn, hosted) is bjorn and hosted.cast == (ada, mira), "a card: as before scene nodes"
    plain = store.open("plain", streamed=True)  # a host that asked for no scene: the graph's is taken
    assert lead_persona(SceneValue((bjorn, ada)), plain) is bjorn and [p.id for p in plain.cast] == ["bjorn", "ada"]


def test_the_scene_workflow_is_the_preview_chat_with_a_scene_in_place_of_the_card() -> None:
    scene, preview = (json.loads(p.read_text()) for p in (SCENE_API, PREVIEW_API))
    assert scene["1"]["class_type"] == "PersonaScene" and preview["1"]["class_type"] == "PersonaCardLoader"
    assert {k: v["class_type"] for k, v in scene.items() if k != "1"} == {
        k: v["class_type"] for k, v in preview.items() if k != "1"}
    takes_scene = sorted(v["class_type"] for v in scene.values() if v["inputs"].get("persona") == ["1", 0])
    assert takes_scene == ["PersonaConversationTurn", "PersonaInterpreter", "PersonaPreviewRenderer",
                           "PersonaStateTracker"]
