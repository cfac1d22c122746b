"""The LongLive sampler node inside real ComfyUI 0.3.75 (tests/comfyui_harness.py), tiny models.

ComfyUI's PromptExecutor runs the saved LongLive workflow three times in one process: a chunk;
a run cancelled (`comfy.model_management.interrupt_current_processing`, what /interrupt calls)
right after the sampler's second denoising pass; and a run after it. What the node must do: the
cancel stops the sampler within one pass (ComfyUI reports `execution_interrupted`), the run after
it continues the stream at the next frame (no chunk dropped), and the progress bar moves once per
pass with a latent preview.

Each test's scenario runs in its own session, one after another in one ComfyUI process (as a
server gets prompts; starting ComfyUI and loading the pack takes seconds): the cancel, the
shipped lip-sync step, then the loader reading ComfyUI's shared model folders (last: the folders
it adds stay registered).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from comfyui_persona.video import model_files
from paths import REPO

pytestmark = [pytest.mark.comfyui, pytest.mark.slow]

DRIVER = r'''
import asyncio, json, os, sys
spec_path, out_path = sys.argv[1], sys.argv[2]
spec = json.load(open(spec_path))
import comfy.options
comfy.options.enable_args_parsing()
sys.argv = [sys.argv[0], "--cpu", "--output-directory", spec["output_dir"]]
import comfy.model_management as mm
import comfy.utils
import execution
import folder_paths
import nodes

folder_paths.set_output_directory(spec["output_dir"])
asyncio.run(nodes.load_custom_node(spec["pack"], module_parent="custom_nodes"))
pack = next(m for name, m in sys.modules.items()
            if name.endswith("comfyui-persona") and hasattr(m, "NODE_CLASS_MAPPINGS"))
store = sys.modules[pack.__name__ + ".nodes.runtime"]
chunks, calls, state = [], [], {"run": 0, "scenario": None}

def emit(kind, payload):
    if kind == "chunk":
        chunks.append(int(payload["frames"].chunk.first_index))

from comfy_execution.utils import get_executing_context

def hook(value, total, preview, prompt_id=None, node_id=None):
    scenario = state["scenario"]
    context = get_executing_context()
    if scenario is None or (node_id or (context.node_id if context else None)) != scenario["sampler"]:
        return
    calls.append({"value": value, "total": total, "preview": preview is not None,
                  "interrupted_before": mm.processing_interrupted()})
    if state["run"] == scenario["cancel_run"] and value == 2:  # cancel after the sampler's second pass of this run
        mm.interrupt_current_processing(True)

comfy.utils.set_progress_bar_global_hook(hook)

class Server:
    client_id = None
    last_node_id = None
    last_prompt_id = None
    def send_sync(self, event, data, sid=None):
        pass

executor = execution.PromptExecutor(Server(), cache_type=execution.CacheType.CLASSIC, cache_args={"lru": 0, "ram": 0})
report = {}
for scenario in spec["scenarios"]:
    os.environ[spec["models_env"]] = scenario["models_dir"]
    for kind, folder in scenario["folders"].items():  # ComfyUI's shared model folders, as extra_model_paths adds them
        folder_paths.add_model_folder_path(kind, folder)
    state["scenario"] = scenario
    store.default_store().open(scenario["session"], listener=store.CallbackListener(emit), streamed=True)
    runs = report[scenario["name"]] = []
    for number in range(scenario["runs"]):
        state["run"] = number
        chunks.clear(); calls.clear()
        prompt_id = f"{scenario['name']}-{number}"
        prompt = json.loads(json.dumps(scenario["prompt"]))
        for node in prompt.values():  # a new turn each run, as the streaming runner sets it
            if node["class_type"] == "PersonaConversationTurn":
                node["inputs"]["turn"] = number - 1
        valid = asyncio.run(execution.validate_prompt(prompt_id, prompt, None))
        if not valid[0]:  # this scenario's test fails on it, the others still run
            runs.append({"success": False, "chunks": [], "calls": [], "events": [], "errors": [],
                         "invalid": json.loads(json.dumps(valid[1:], default=str))})
            continue
        executor.execute(prompt, prompt_id, {}, valid[2])
        runs.append({"success": executor.success, "chunks": list(chunks), "calls": list(calls),
                     "events": [event for event, _ in executor.status_messages],
                     "errors": [f"{d.get('node_type')}: {d.get('exception_message')}"
                                for event, d in executor.status_messages if event == "execution_error"]})
        mm.interrupt_current_processing(False)
json.dump(report, open(out_path, "w"), indent=1)
'''


def _scenario(name: str, models_dir: Path, *, runs: int, cancel_run: int | None, folders=None, loader=None,
              lipsync: bool = False) -> dict:
    """One test's runs of the saved LongLive workflow (tiny size, float32), in its own session."""
    workflow = json.loads((REPO / "workflows" / "api" / "persona_longlive_chat_api.json").read_text())
    sampler = next(k for k, v in workflow.items() if v["class_type"] == "PersonaLongLiveSampler")
    for node in workflow.values():
        if "session_id" in node["inputs"]:
            node["inputs"]["session_id"] = f"longlive-{name}"
        if node["class_type"] == "PersonaLongLiveLoader":
            node["inputs"].update(dtype="float32", **(loader or {}))
        if node["class_type"] == "PersonaLongLiveSampler":
            node["inputs"].update(width=96, height=64)
        if node["class_type"] == "PersonaStreamLipSync":  # shipped on; the sampler tests turn it off
            node["inputs"].update(enabled=lipsync)
    return {"name": name, "prompt": workflow, "sampler": sampler, "session": f"longlive-{name}", "runs": runs,
            "cancel_run": cancel_run, "models_dir": str(models_dir),
            "folders": {k: str(v) for k, v in (folders or {}).items()}}


def _shared_folders(tmp_path: Path) -> tuple[dict, dict]:
    """(ComfyUI's shared model folders holding a tiny set, the loader's picks of its files)."""
    from comfyui_persona.video.longlive.testing import write_tiny_models

    files = write_tiny_models(tmp_path / "tiny")
    folders = {kind: tmp_path / "comfy" / kind for kind in ("diffusion_models", "loras", "text_encoders", "vae_approx")}
    for folder in folders.values():
        folder.mkdir(parents=True)
    files["longlive.generator"].rename(folders["diffusion_models"] / "longlive_1.3b.pt")
    files["longlive.lora"].rename(folders["loras"] / "longlive_lora.pt")
    files["umt5.encoder"].rename(folders["text_encoders"] / "umt5-xxl-enc.pth")
    (folders["text_encoders"] / "umt5-xxl").mkdir()
    files["umt5.tokenizer"].rename(folders["text_encoders"] / "umt5-xxl" / "tokenizer.json")
    files["taew2.1"].rename(folders["vae_approx"] / "taew2_1.pth")
    picks = {"generator": "longlive_1.3b.pt", "lora": "longlive_lora.pt", "text_encoder": "umt5-xxl-enc.pth",
             "tae": "taew2_1.pth"}
    return folders, picks


@pytest.fixture(scope="module")
def driven(comfyui, tmp_path_factory) -> dict:
    """Each test's scenario run by ComfyUI's PromptExecutor in one ComfyUI process: name → its runs."""
    from comfyui_persona.video.longlive.testing import write_tiny_models

    tmp_path = tmp_path_factory.mktemp("comfyui-longlive")
    write_tiny_models(tmp_path / "models")
    (tmp_path / "empty").mkdir()
    folders, picks = _shared_folders(tmp_path)
    scenarios = [
        _scenario("cancel", tmp_path / "models", runs=3, cancel_run=1),
        _scenario("lipsync", tmp_path / "models", runs=1, cancel_run=None, lipsync=True),
        # The pack's own models folder is empty: every file comes from the shared folders.
        _scenario("folders", tmp_path / "empty", runs=1, cancel_run=None, folders=folders, loader=picks),
    ]
    spec = {"pack": str(comfyui.root / "custom_nodes" / "comfyui-persona"), "output_dir": str(tmp_path / "out"),
            "models_env": model_files.ENV_VAR, "scenarios": scenarios}
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    (tmp_path / "driver.py").write_text(DRIVER)
    code = ("import sys, runpy; sys.argv = ['driver', {spec!r}, {out!r}]; runpy.run_path({driver!r}, "
            "run_name='__main__')").format(spec=str(tmp_path / "spec.json"), out=str(tmp_path / "runs.json"),
                                          driver=str(tmp_path / "driver.py"))
    done = comfyui.run_python(code, timeout=900)
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads((tmp_path / "runs.json").read_text())


def test_cancel_stops_the_sampler_within_one_pass_and_the_next_run_has_no_gap(driven):
    first, cancelled, after = driven["cancel"]
    assert first["success"] and first["chunks"] == [0], first
    assert not cancelled["success"] and "execution_interrupted" in cancelled["events"]
    assert cancelled["chunks"] == []
    # The cancel came in the hook of pass 2 (the first chunk's owed refresh, then a denoising
    # pass); no pass of the sampler ran after it.
    assert [c["value"] for c in cancelled["calls"]] == [1, 2]
    assert after["success"] and after["chunks"] == [9], "the run after the cancel continues at frame 9"
    # One progress step per pass (the first chunk: 4 denoising passes, then the node's end), each
    # pass with a Latent2RGB preview of its x0 estimate.
    assert [c["value"] for c in first["calls"]] == [1, 2, 3, 4, 5], first["calls"]
    assert all(c["preview"] for c in first["calls"][:4])


def test_the_loader_picks_its_files_from_comfyuis_shared_model_folders(driven):
    """Generator from diffusion_models, LoRA from loras, UMT5 (with its tokenizer beside it) from
    text_encoders, TAEW2.1 from vae_approx, chosen in the loader's combo inputs; the pack's own
    models folder is empty, so every file comes from the shared folders."""
    (run,) = driven["folders"]
    assert run["success"] and run["chunks"] == [0], run


def test_the_shipped_lip_sync_step_without_its_extra_names_the_extra(driven):
    """The LongLive chat workflow ships with Persona Stream Lip Sync on. ComfyUI installed the
    pack the Registry way (requirements.txt: no `lipsync` extra, so no diffusers): the run fails
    at that node with one error naming the extra and the switch, not a bare import error."""
    (run,) = driven["lipsync"]
    assert not run["success"] and run["chunks"] == []
    (error,) = run["errors"]
    assert error.startswith("PersonaStreamLipSync:") and "comfyui-persona[lipsync]" in error and "`enabled` off" in error
