"""The saved API-format workflows run by real ComfyUI's PromptExecutor, and parity with the
headless runner: same saved workflow, same seed → same directives and bit-identical frames.

One ComfyUI process runs every prompt (tests/comfyui_driver.py, run by ComfyUI's Python);
its JSON report is shared by the tests below. LongLive workflows run on the real weights
where every file exists (ours or ComfyUI's models/persona); otherwise on the tiny random
model set (`video.longlive.testing.write_tiny_models`, real file formats) written to a temp
dir that ComfyUI's process gets as PERSONA_MODELS_DIR, with the loader's preset on "auto"
(read from the files). Either way both LongLive workflows must stream frames in ComfyUI.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
from pathlib import Path

import pytest

from comfyui_persona.headless.runner import StreamingRunner, WorkflowGraph, load_workflow
from comfyui_persona.nodes import NODE_CLASS_MAPPINGS
from comfyui_persona.nodes.engine_nodes import DECODER_FILES, ENGINE_FILES, missing_files, resolve_models_dir
from comfyui_persona.nodes.runtime import CallbackListener, SessionStore
from comfyui_persona.video import model_files
from paths import REPO

pytestmark = [pytest.mark.comfyui, pytest.mark.slow]

WORKFLOWS = REPO / "workflows" / "api"
PREVIEW = WORKFLOWS / "persona_preview_chat_api.json"
API_FILES = sorted(WORKFLOWS.glob("*_api.json"))
RECORDER_NODE = "30"


def _load(path: Path) -> dict:
    return json.loads(path.read_text())


def _with_turn(workflow: dict, turn: int) -> dict:
    """The saved workflow with the conversation turn set as the headless runner sets it."""
    changed = copy.deepcopy(workflow)
    for node in changed.values():
        if node["class_type"] == "PersonaConversationTurn":
            node["inputs"]["turn"] = turn
    return changed


def _in_session(workflow: dict, session_id: str) -> dict:
    changed = copy.deepcopy(workflow)
    for node in changed.values():
        if "session_id" in node["inputs"]:
            node["inputs"]["session_id"] = session_id
    return changed


def _is_longlive(workflow: dict) -> bool:
    return any(n["class_type"] == "PersonaLongLiveLoader" for n in workflow.values())


def _longlive_models(comfyui) -> tuple[Path | None, str]:
    """A folder holding every LongLive file (ours or ComfyUI's models/persona), else which files are missing where."""
    folders = [resolve_models_dir(), comfyui.root / "models" / "persona"]
    for folder in folders:
        if not missing_files(folder):
            return folder, ""
    names = []
    for key in (*ENGINE_FILES, DECODER_FILES["tae"]):
        try:
            model_files.find(key, folders[0])
        except model_files.CheckpointNotFoundError:
            names.append(model_files.FILES[key].filename)
    return None, f"missing {', '.join(names)} in {folders[0]} (nor all found in {folders[1]})"


#: Set to 1 to demand the real weights: LongLive workflows are then skipped (reason named) without them.
REAL_ONLY_ENV = "PERSONA_COMFYUI_REAL_MODELS"


@pytest.fixture(scope="module")
def longlive_models(comfyui, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path | None, bool]:
    """(models folder, whether it is the tiny set): the real weights if all are present, else
    the tiny set; (None, False) when $PERSONA_COMFYUI_REAL_MODELS=1 and real files are missing."""
    folder, _ = _longlive_models(comfyui)
    if folder is not None or os.environ.get(REAL_ONLY_ENV) == "1":
        return folder, False
    from comfyui_persona.video.longlive.testing import write_tiny_models

    tiny = tmp_path_factory.mktemp("tiny-models")
    write_tiny_models(tiny)
    return tiny, True


@pytest.fixture(scope="module")
def comfy_report(comfyui, longlive_models: tuple[Path, bool], tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Run all prompts once in ComfyUI: preview idle then wave (parity), a recorder run, LongLive."""
    work = tmp_path_factory.mktemp("comfy-driver")
    preview = _load(PREVIEW)
    recorder = _in_session(_with_turn(preview, 0), "recorder")
    recorder["6"]["inputs"].update(width=128, height=128)
    recorder[RECORDER_NODE] = {"class_type": "PersonaSessionRecorder",
                               "inputs": {"frames": ["6", 0], "filename_prefix": "persona/test"}}
    runs = [
        {"name": "preview-idle", "prompt": _with_turn(preview, -1)},
        {"name": "preview-wave", "prompt": _with_turn(preview, 1)},
        {"name": "recorder", "prompt": recorder, "sessions": ["recorder"]},
    ]
    folder, tiny = longlive_models
    for path in API_FILES:  # every saved workflow as it is, each in its own session
        workflow = _in_session(_load(path), path.stem)
        if folder is None and _is_longlive(workflow):
            continue
        for node in workflow.values():
            if node["class_type"] != "PersonaLongLiveLoader":
                continue
            if tiny:  # the folder comes from PERSONA_MODELS_DIR (models_dir stays as saved, empty)
                node["inputs"].update(preset="auto", dtype="float32")
            else:
                node["inputs"]["models_dir"] = str(folder)
        runs.append({"name": path.stem, "prompt": workflow, "sessions": [path.stem]})
    with pytest.MonkeyPatch.context() as patch:  # run_prompts passes our environment on to ComfyUI
        if tiny:
            patch.setenv(model_files.ENV_VAR, str(folder))
        report = comfyui.run_prompts(runs, work, timeout=900)
    report["output_dir"] = str(work / "output")
    return report


def _run(report: dict, name: str) -> dict:
    run = next(r for r in report["runs"] if r["name"] == name)
    assert "crash" not in run, run["crash"]
    assert run["valid"], run["validation"]
    errors = [m for m in run["messages"] if m["event"] == "execution_error"]
    assert run["success"], errors
    return run


def test_comfyui_loads_every_node_of_the_pack_with_its_own_loader(comfy_report: dict) -> None:
    assert comfy_report["loaded"] is True
    assert comfy_report["node_classes"] == sorted(NODE_CLASS_MAPPINGS)


def test_preview_workflow_runs_in_comfyui_and_streams_frames_and_directives(comfy_report: dict) -> None:
    idle = _run(comfy_report, "preview-idle")
    wave = _run(comfy_report, "preview-wave")
    assert not [e for e in idle["events"] if e["kind"] == "directives"], "turn -1 must not interpret anything"
    (directives,) = [e["directives"] for e in wave["events"] if e["kind"] == "directives"]
    assert directives and directives[0]["action"] == "wave"
    replies = [e for e in wave["events"] if e["kind"] == "reply" and e["done"]]
    assert replies and replies[0]["text"].strip()
    for run, first in ((idle, 0), (wave, None)):
        (chunk,) = [e for e in run["events"] if e["kind"] == "chunk"]
        assert chunk["shape"][0] > 0 and chunk["shape"][1:] == [384, 384, 3]
        if first is not None:
            assert chunk["first_index"] == first
    (sink,) = [v["persona_stream"][0] for v in wave["ui"].values() if "persona_stream" in v]
    assert sink["backend"] == "preview" and sink["shows_directives"] == [1]
    # The second run re-used ComfyUI's cache for the card loader (a loader stays cached).
    cached = [m for m in wave["messages"] if m["event"] == "execution_cached"][0]["nodes"]
    assert "1" in cached


def test_headless_runner_gives_the_same_directives_and_frames_as_comfyui(comfy_report: dict) -> None:
    """The same saved file, run by our runner (start, then one chat turn and a tick) and by
    ComfyUI (a run with no message, then a run with the file's message): bit-identical frames."""
    workflow = load_workflow(PREVIEW, NODE_CLASS_MAPPINGS)
    text = next(n["inputs"]["text"] for n in workflow.values() if n["class_type"] == "PersonaConversationTurn")
    events: list[dict] = []

    def emit(kind: str, payload: dict) -> None:
        if kind == "chunk":
            chunk = payload["frames"].chunk
            events.append({"kind": "chunk", "first_index": int(chunk.first_index), "pts_ms": list(chunk.pts_ms),
                           "sha256": hashlib.sha256(chunk.frames.tobytes()).hexdigest()})
        elif kind == "directives":
            events.append({"kind": kind, "directives": [d.model_dump(mode="json") for d in payload["directives"]]})

    store = SessionStore()
    store.open("default", listener=CallbackListener(emit))
    runner = StreamingRunner(WorkflowGraph(workflow, NODE_CLASS_MAPPINGS), store, "default")
    try:
        runner.start()
        runner.turn("chat", text, 1)
        runner.tick()
    finally:
        runner.close()

    def comparable(run_events: list[dict]) -> list[dict]:
        keep = ("kind", "first_index", "pts_ms", "sha256", "directives")
        return [{k: e[k] for k in keep if k in e} for e in run_events if e["kind"] in ("chunk", "directives")]

    comfy = comparable(_run(comfy_report, "preview-idle")["events"] + _run(comfy_report, "preview-wave")["events"])
    ours = comparable(events)
    assert [e["kind"] for e in ours] == ["chunk", "directives", "chunk"]
    assert ours == comfy


def test_nodes_report_progress_through_comfyuis_progress_api(comfy_report: dict) -> None:
    run = _run(comfy_report, "recorder")
    (summary,) = run["ui"][RECORDER_NODE]["persona_recording"]
    assert summary["frames"] > 0 and summary["subfolder"] == "persona"
    assert (Path(comfy_report["output_dir"]) / "persona" / summary["filename"]).stat().st_size > 0
    ours = [p for p in run["progress"] if p["node"] == RECORDER_NODE]
    assert [p["value"] for p in ours] == list(range(1, summary["frames"] + 1))
    assert {p["total"] for p in ours} == {summary["frames"]}


@pytest.mark.parametrize("path", API_FILES, ids=[p.stem for p in API_FILES])
def test_every_saved_api_workflow_runs_in_comfyui(comfyui, comfy_report: dict, longlive_models, path: Path) -> None:
    workflow = _load(path)
    if _is_longlive(workflow) and longlive_models[0] is None:
        pytest.skip(f"{path.name} needs the real LongLive weights ({REAL_ONLY_ENV}=1): {_longlive_models(comfyui)[1]}")
    run = _run(comfy_report, path.stem)
    chunks = [e for e in run["events"] if e["kind"] == "chunk"]
    assert len(chunks) == 1 and chunks[0]["shape"][0] > 0, "one run must stream one chunk"
    renderer = next(n["inputs"] for n in workflow.values() if {"width", "height"} <= set(n["inputs"]))
    assert chunks[0]["shape"][1:] == [renderer["height"], renderer["width"], 3]
    sinks = [v["persona_stream"][0] for v in run["ui"].values() if "persona_stream" in v]
    assert sinks and sinks[0]["count"] == chunks[0]["shape"][0]


def test_longlive_workflows_stream_frames_in_comfyui(comfyui, comfy_report: dict, longlive_models) -> None:
    """Dense and sparse LongLive workflows both ran the engine in ComfyUI (tiny set or real weights)."""
    if longlive_models[0] is None:
        pytest.skip(f"real LongLive weights demanded ({REAL_ONLY_ENV}=1): {_longlive_models(comfyui)[1]}")
    names = [p.stem for p in API_FILES if _is_longlive(_load(p))]
    assert sorted(names) == ["persona_longlive_chat_api", "persona_longlive_sparse_api"]
    for name in names:
        run = _run(comfy_report, name)
        (chunk,) = [e for e in run["events"] if e["kind"] == "chunk"]
        assert chunk["first_index"] == 0 and chunk["shape"] == [9, 480, 832, 3]  # LongLive's first chunk
        (sink,) = [v["persona_stream"][0] for v in run["ui"].values() if "persona_stream" in v]
        assert sink["backend"] == "longlive"
