"""Runs API-format prompts through ComfyUI's own PromptExecutor; run by ComfyUI's Python.

Not a test module: `tests/test_comfyui_workflows.py` runs it with `ComfyEnv.run_python`
(cwd = the ComfyUI tree). It loads this pack with ComfyUI's custom-node loader
(`nodes.load_custom_node`), validates each prompt with `execution.validate_prompt`, runs it
with `execution.PromptExecutor` (one executor for all runs, so ComfyUI's cache behaves as
in a server that gets the prompts one after another), and writes what happened as JSON:
ComfyUI's status messages, the `ui` outputs, the progress-bar calls, and what the pack's
session emitted (directives, reply, state, frame chunks as SHA-256 of their pixels).

Usage: python -c "import runpy; runpy.run_path('tests/comfyui_driver.py', run_name='__main__')" SPEC OUT
(SPEC: {"pack": dir, "output_dir": dir, "runs": [{"name", "prompt"}]}).
"""

import asyncio
import hashlib
import json
import sys
import traceback


def main(spec_path: str, out_path: str) -> None:
    spec = json.load(open(spec_path))
    import comfy.options

    comfy.options.enable_args_parsing()
    sys.argv = [sys.argv[0], "--cpu", "--output-directory", spec["output_dir"]]
    import comfy.utils
    import execution
    import folder_paths
    from comfy_execution.utils import get_executing_context

    import nodes

    folder_paths.set_output_directory(spec["output_dir"])  # as main.py does with --output-directory
    loaded = asyncio.run(nodes.load_custom_node(spec["pack"], module_parent="custom_nodes"))
    pack = next(m for name, m in sys.modules.items()
                if name.endswith("comfyui-persona") and hasattr(m, "NODE_CLASS_MAPPINGS"))
    store_module = sys.modules[pack.__name__ + ".nodes.runtime"]

    progress: list[dict] = []

    def hook(value, total, preview, prompt_id=None, node_id=None):
        context = get_executing_context()
        progress.append({"value": value, "total": total,
                         "node": node_id or (context.node_id if context else None)})

    comfy.utils.set_progress_bar_global_hook(hook)

    events: list[dict] = []

    def emit(kind: str, payload: dict) -> None:
        if kind == "chunk":
            chunk = payload["frames"].chunk
            events.append({"kind": "chunk", "first_index": int(chunk.first_index),
                           "shape": list(chunk.frames.shape), "pts_ms": [int(p) for p in chunk.pts_ms],
                           "sha256": hashlib.sha256(chunk.frames.tobytes()).hexdigest()})
        elif kind == "directives":
            events.append({"kind": "directives",
                           "directives": [d.model_dump(mode="json") for d in payload["directives"]]})
        else:
            events.append({"kind": kind, **json.loads(json.dumps(payload, default=str))})

    class Server:
        """What PromptExecutor needs of PromptServer: a client id and a message sink."""

        client_id = None
        last_node_id = None
        last_prompt_id = None

        def __init__(self) -> None:
            self.messages: list[tuple[str, dict]] = []

        def send_sync(self, event, data, sid=None):
            self.messages.append((event, data))

    server = Server()
    executor = execution.PromptExecutor(server, cache_type=execution.CacheType.CLASSIC,
                                        cache_args={"lru": 0, "ram": 0})
    results = {"loaded": loaded, "pack_module": pack.__name__,
               "node_classes": sorted(k for k in nodes.NODE_CLASS_MAPPINGS if k.startswith("Persona")),
               "runs": []}
    for number, run in enumerate(spec["runs"]):
        for session_id in run.get("sessions", ["default"]):
            store_module.default_store().open(session_id, listener=store_module.CallbackListener(emit))
        events.clear()
        progress.clear()
        prompt_id = f"persona-{number}"
        record = {"name": run["name"]}
        try:
            valid = asyncio.run(execution.validate_prompt(prompt_id, run["prompt"], None))
            record["valid"] = bool(valid[0])
            record["validation"] = json.loads(json.dumps(valid[1:], default=str))
            if valid[0]:
                server.last_prompt_id = prompt_id
                executor.execute(run["prompt"], prompt_id, {}, valid[2])
                record["success"] = executor.success
                record["ui"] = json.loads(json.dumps(executor.history_result["outputs"], default=str))
                record["messages"] = [
                    {"event": event, **{k: v for k, v in data.items() if k in
                                        ("node_id", "node_type", "exception_message", "exception_type", "nodes")}}
                    for event, data in executor.status_messages
                ]
        except Exception:
            record["crash"] = traceback.format_exc()
        record["events"] = list(events)
        record["progress"] = list(progress)
        results["runs"].append(record)
    with open(out_path, "w") as out:
        json.dump(results, out, indent=1)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
