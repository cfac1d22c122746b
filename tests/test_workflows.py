"""The saved workflows in workflows/: UI format ↔ API format twins, and the engine-side nodes
(prompt composer, transition blender, session recorder) run through the headless runner.

Runs without ComfyUI; tests/test_comfyui_workflows.py runs the same files in real ComfyUI.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from comfyui_persona.headless.runner import StreamingRunner, WorkflowGraph, load_workflow, ui_to_api
from comfyui_persona.nodes import NODE_CLASS_MAPPINGS
from comfyui_persona.nodes.runtime import SessionStore
from paths import REPO

WORKFLOWS = REPO / "workflows"
API = WORKFLOWS / "api"  # API twins, outside the folder ComfyUI serves as templates
UI_FILES = sorted(WORKFLOWS.glob("*.json"))
REQUIRED = ("persona_preview_chat", "persona_longlive_chat", "persona_longlive_sparse")


def _api_twin(path: Path) -> Path:
    return API / f"{path.stem}_api.json"


def test_every_required_workflow_is_saved_in_both_formats() -> None:
    for name in REQUIRED:
        assert (WORKFLOWS / f"{name}.json").is_file(), f"{name}.json (UI format) is missing"
        assert (API / f"{name}_api.json").is_file(), f"api/{name}_api.json (API format) is missing"
    for path in API.glob("*_api.json"):
        assert (WORKFLOWS / path.name.replace("_api.json", ".json")).is_file(), f"{path.name} has no UI twin"


def test_the_template_folder_holds_ui_workflows_each_with_a_thumbnail() -> None:
    """ComfyUI lists every workflows/*.json as a template: an API-format file there opened a
    blank tab ("Workflow does not contain a valid version"), a missing thumbnail was a 404."""
    for path in UI_FILES:
        data = json.loads(path.read_text())
        assert isinstance(data.get("nodes"), list) and "version" in data, f"{path.name} is not UI format"
        thumbnail = path.with_suffix(".jpg")
        assert thumbnail.is_file() and thumbnail.read_bytes()[:3] == b"\xff\xd8\xff", f"{path.stem}.jpg is missing"


@pytest.mark.parametrize("path", UI_FILES, ids=[p.stem for p in UI_FILES])
def test_ui_workflow_converts_to_its_committed_api_twin(path: Path) -> None:
    ui = json.loads(path.read_text())
    assert isinstance(ui.get("nodes"), list) and "links" in ui, f"{path.name} is not UI format"
    committed = json.loads(_api_twin(path).read_text())
    assert ui_to_api(ui, NODE_CLASS_MAPPINGS) == committed


@pytest.mark.parametrize("path", UI_FILES, ids=[p.stem for p in UI_FILES])
def test_ui_workflow_id_is_a_uuid_as_comfyuis_frontend_requires(path: Path) -> None:
    """The 1.32 frontend refuses a workflow whose `id` is not a UUID ("Invalid workflow against
    zod schema: Invalid uuid at 'id'") and then drops its links; the browser test loads them too."""
    import uuid

    value = json.loads(path.read_text())["id"]
    assert str(uuid.UUID(value)) == value.lower(), f"{path.name}: id {value!r} is not a UUID"


@pytest.mark.parametrize("path", UI_FILES, ids=[p.stem for p in UI_FILES])
def test_saved_workflow_builds_with_nodes_from_the_pack_only(path: Path) -> None:
    graph = WorkflowGraph(load_workflow(_api_twin(path), NODE_CLASS_MAPPINGS), NODE_CLASS_MAPPINGS)
    assert graph.accepts("chat") and graph.accepts("action")
    classes = {cls.__name__ for cls in graph.classes.values()}
    assert "PersonaStreamSink" in classes
    if "longlive" in path.stem:
        assert {"PersonaLongLiveLoader", "PersonaLongLiveSampler", "PersonaPromptComposer",
                "PersonaTransitionBlender"} <= classes
        loader = next(n for n, c in graph.classes.items() if c.__name__ == "PersonaLongLiveLoader")
        assert loader in graph.turn_lane, "the model loader must load once, not on every tick"


def test_longlive_workflows_differ_only_in_attention() -> None:
    dense = json.loads((API / "persona_longlive_chat_api.json").read_text())
    sparse = json.loads((API / "persona_longlive_sparse_api.json").read_text())
    sampler = next(k for k, v in dense.items() if v["class_type"] == "PersonaLongLiveSampler")
    assert dense[sampler]["inputs"]["sparge_attention"] is False
    assert sparse[sampler]["inputs"]["sparge_attention"] is True
    for node in (dense, sparse):
        node[sampler]["inputs"].pop("sparge_attention")
        node[sampler].pop("_meta")
    assert dense == sparse


def _preview_with(extra: dict) -> dict:
    workflow = json.loads((API / "persona_preview_chat_api.json").read_text())
    workflow["6"]["inputs"].update(width=128, height=128)
    workflow.update(extra)
    return workflow


def test_prompt_composer_starts_every_prompt_with_the_appearance_and_names_the_action() -> None:
    composer = NODE_CLASS_MAPPINGS["PersonaPromptComposer"]()
    from comfyui_persona.nodes.types import DirectivePlan
    from comfyui_persona.persona.library import load_persona
    from comfyui_persona.persona.schema import ActionDirective

    persona = load_persona("mira")
    plan = DirectivePlan(turn=1, directives=(ActionDirective(action="wave", expression="smile", intensity=0.9),))
    style, text = composer.compose(persona, plan, "a woman with a red scarf")
    assert style.appearance == "a woman with a red scarf"
    assert text.startswith("a woman with a red scarf, ")
    assert "energetically" in text and "wav" in text
    _, default_text = composer.compose(persona, plan, "")
    assert default_text.startswith(persona.appearance.description.rstrip(".,"))
    blend = NODE_CLASS_MAPPINGS["PersonaTransitionBlender"]().blend(3, "linear")[0]
    assert (blend.chunks, blend.easing) == (3, "linear")


def test_session_recorder_writes_a_playable_mp4_of_every_streamed_frame(tmp_path: Path, monkeypatch) -> None:
    import av
    monkeypatch.setenv("PERSONA_RECORDINGS_DIR", str(tmp_path))
    workflow = _preview_with({
        "30": {"class_type": "PersonaSessionRecorder", "inputs": {"frames": ["6", 0], "filename_prefix": "runs/chat"}},
    })
    store = SessionStore()
    store.open("rec-session", streamed=True)  # a streamed session: one file for all of it
    runner = StreamingRunner(WorkflowGraph(workflow, NODE_CLASS_MAPPINGS), store, "rec-session")
    frames = streamed = 0
    try:
        result = runner.start()
        streamed += result.ui["7"]["persona_stream"][0]["count"]
        runner.turn("chat", "please wave", 1)
        for _ in range(3):
            result = runner.tick()
            streamed += result.ui["7"]["persona_stream"][0]["count"]
        summary = result.ui["30"]["persona_recording"][0]
        frames = summary["frames_rendered"]
        assert frames == streamed, "every frame the sink streamed is recorded"
        assert summary["subfolder"] == "runs" and summary["filename"] == "chat_rec-session.mp4"
        path = tmp_path / "runs" / "chat_rec-session.mp4"
        with av.open(str(path)) as container:  # fragmented MP4: readable before the session closes
            readable = sum(1 for _ in container.decode(video=0))
        assert 0 < summary["frames"] <= readable <= frames  # every frame it reports is in the file
    finally:
        runner.close()
    assert frames >= 4
    with av.open(str(tmp_path / "runs" / "chat_rec-session.mp4")) as container:
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(decoded) == frames and decoded[0].shape == (128, 128, 3)
    assert decoded[-1].std() > 10, "the recorded frames are blank"


def test_session_recorder_refuses_a_prefix_that_leaves_the_output_folder(tmp_path: Path) -> None:
    from comfyui_persona.nodes.recorder_nodes import RecordingPathError, recording_path

    assert recording_path(tmp_path, "a/b", "s1") == (tmp_path / "a" / "b_s1.mp4").resolve()
    for bad in ("../escape", "a/../../b", "a/./../.."):
        with pytest.raises(RecordingPathError, match="must stay inside"):
            recording_path(tmp_path, bad, "s1")


def test_a_queued_run_records_one_complete_file_per_run(tmp_path: Path, monkeypatch) -> None:
    """Nobody streams the session (a ComfyUI Run): each run's file is whole when the run
    ends, every frame the node reports in it, and the next run writes the next file."""
    import av
    monkeypatch.setenv("PERSONA_RECORDINGS_DIR", str(tmp_path))
    workflow = _preview_with({
        "30": {"class_type": "PersonaSessionRecorder", "inputs": {"frames": ["6", 0], "filename_prefix": "runs/chat"}},
    })
    workflow["6"]["inputs"]["chunk_frames"] = 12
    runner = StreamingRunner(WorkflowGraph(workflow, NODE_CLASS_MAPPINGS), SessionStore(), "queued")
    try:
        names = []
        for run in range(2):
            result = runner.start() if run == 0 else runner.tick()
            summary = result.ui["30"]["persona_recording"][0]
            names.append(summary["filename"])
            with av.open(str(tmp_path / "runs" / summary["filename"])) as container:
                assert sum(1 for _ in container.decode(video=0)) == summary["frames"] == summary["frames_rendered"] == 12
        assert names == ["chat_queued.mp4", "chat_queued_0002.mp4"]
    finally:
        runner.close()
    # A new session of the same id (ComfyUI restarted, or its idle sweep ran) never overwrites
    # an earlier file: before, its first run rewrote chat_queued.mp4.
    first = (tmp_path / "runs" / "chat_queued.mp4").read_bytes()
    runner = StreamingRunner(WorkflowGraph(workflow, NODE_CLASS_MAPPINGS), SessionStore(), "queued")
    try:
        assert runner.start().ui["30"]["persona_recording"][0]["filename"] == "chat_queued_0003.mp4"
    finally:
        runner.close()
    assert (tmp_path / "runs" / "chat_queued.mp4").read_bytes() == first


def test_a_bypassed_node_is_refused_by_name() -> None:
    """The message said "bypassed nodes are not supported" without saying which node."""
    from comfyui_persona.headless.runner.errors import WorkflowFormatError

    saved = json.loads((REPO / "workflows" / "persona_preview_chat.json").read_text())
    node = next(n for n in saved["nodes"] if n["type"] == "PersonaInterpreter")
    node["mode"] = 4
    with pytest.raises(WorkflowFormatError, match=rf"^node {node['id']} \(PersonaInterpreter\): bypassed"):
        ui_to_api(saved, NODE_CLASS_MAPPINGS)


def test_a_subgraph_or_group_node_is_named_as_such_not_as_a_missing_pack() -> None:
    """Both were "from a pack this server does not have: install it": no pack provides them."""
    from comfyui_persona.headless.runner.hosts import unknown_node_types

    saved = {"nodes": [{"id": 7, "type": "0f2c5b9e-3f7a-4a51-9d4e-5b2a8c1d7e60"},
                       {"id": 8, "type": "workflow>MyGroup"}], "links": []}
    lines = unknown_node_types(saved, NODE_CLASS_MAPPINGS)
    assert len(lines) == 2 and all("subgraph or group node" in line for line in lines), lines
