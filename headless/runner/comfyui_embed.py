"""ComfyUI as a library in this process: `persona serve --comfyui PATH`.

With a ComfyUI install given, the headless server runs every session's prompts on ComfyUI's
own executor (`execution.PromptExecutor`), with ComfyUI's node registry: its core nodes, its
built-in extras (Image Scale, Create Video, Save Video...) and this pack's nodes, exactly the
executor and nodes a prompt meets inside ComfyUI, so a saved workflow gives the same
directives and frames in both hosts. Custom node packs other than this one are not loaded
(their import side effects are theirs); a workflow that needs one names it at load time.

The executor is not thread-safe (model management, its caches, the interrupt flag): one
worker thread of ours runs every prompt of every session in turn, as ComfyUI's own prompt
worker does. The Python running `persona serve` must have ComfyUI's requirements installed
(its venv): this module only puts the install on `sys.path`.
"""

from __future__ import annotations

import asyncio
import queue
import sys
import threading
import uuid
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...nodes.runtime import SessionStore, bind_store
from .comfy_host import PromptOutcome, outcome_of, validation_error
from .errors import WorkflowError
from .workflow import ApiWorkflow

__all__ = ["ComfyUINotFoundError", "EmbeddedComfyUI", "EmbeddedPrompts", "load_comfyui"]

_REQUIRED = ("main.py", "nodes.py", "execution.py", "folder_paths.py")


class ComfyUINotFoundError(WorkflowError):
    """`--comfyui PATH` is not a ComfyUI install, or its Python packages are missing here."""

    code = "comfyui_not_found"


@dataclass
class EmbeddedComfyUI:
    root: Path
    registry: dict[str, type]
    execution: Any


_LOADED: list[EmbeddedComfyUI] = []
_LOAD_LOCK = threading.Lock()


def load_comfyui(path: str | Path, *, output_dir: str | Path | None = None) -> EmbeddedComfyUI:
    """Import ComfyUI from `path` (once per process) with its built-in extra nodes and this
    pack's nodes in its registry; `ComfyUINotFoundError` names what is wrong. `output_dir`:
    where its save nodes write (ComfyUI's `--output-directory`), made if missing; None keeps
    the install's own output folder."""
    root = Path(path).expanduser().resolve()
    missing = [name for name in _REQUIRED if not (root / name).is_file()]
    if missing:
        raise ComfyUINotFoundError(f"{root} is not a ComfyUI install (no {', '.join(missing)})")
    with _LOAD_LOCK:
        if _LOADED:
            if _LOADED[0].root != root:
                raise ComfyUINotFoundError(f"ComfyUI is already loaded from {_LOADED[0].root}")
            _set_output_directory(output_dir)
            return _LOADED[0]
        if str(root) not in sys.path:
            sys.path.insert(0, str(root))
        try:
            import comfy.cli_args  # its defaults (this process's argv is persona's, not ComfyUI's)
            import torch

            # ComfyUI's model management assumes a CUDA device unless told `--cpu`.
            comfy.cli_args.args.cpu = comfy.cli_args.args.cpu or not torch.cuda.is_available()
            import execution  # noqa: F401  (ComfyUI's modules, from its folder)
            import folder_paths  # noqa: F401

            import nodes
        except ImportError as exc:
            raise ComfyUINotFoundError(
                f"ComfyUI at {root} does not import in this Python ({exc}): run persona serve with ComfyUI's "
                "Python (its venv), with this pack installed there"
            ) from exc
        asyncio.run(nodes.init_extra_nodes(init_custom_nodes=False, init_api_nodes=False))
        from ...nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

        nodes.NODE_CLASS_MAPPINGS.update(NODE_CLASS_MAPPINGS)
        nodes.NODE_DISPLAY_NAME_MAPPINGS.update(NODE_DISPLAY_NAME_MAPPINGS)
        loaded = EmbeddedComfyUI(root, nodes.NODE_CLASS_MAPPINGS, sys.modules["execution"])
        _LOADED.append(loaded)
        _set_output_directory(output_dir)
        return loaded


def _set_output_directory(output_dir: str | Path | None) -> None:
    if output_dir is None:
        return
    folder = Path(output_dir).expanduser()
    try:
        folder = folder.resolve()
        folder.mkdir(parents=True, exist_ok=True)
    except (OSError, ValueError) as exc:  # ValueError: a NUL in the path
        raise WorkflowError(f"the ComfyUI output folder {str(folder)[:200]!r} cannot be made: {exc}") from None
    sys.modules["folder_paths"].set_output_directory(str(folder))


class _Server:
    """What ComfyUI's executor needs of its PromptServer: a client id, a message sink."""

    def __init__(self) -> None:
        self.client_id = None
        self.last_node_id = None
        self.last_prompt_id = None
        self.sockets_metadata: dict = {}

    def send_sync(self, event: str, data: Any, sid: Any = None) -> None:
        pass  # no browser: outcomes are read from the executor's status messages

    def queue_updated(self) -> None:
        pass


class EmbeddedPrompts:
    """A `PromptRunner` on ComfyUI's executor in this process (see module docstring).
    `store`: the session store the nodes run with (the service's)."""

    cancels = 0  # no ComfyUI page, no Cancel

    def __init__(self, comfy: EmbeddedComfyUI, store: SessionStore) -> None:
        self.comfy = comfy
        self.store = store
        self._jobs: queue.Queue[tuple[Any, Future]] = queue.Queue()
        self._server = _Server()
        self._executor = comfy.execution.PromptExecutor(
            self._server, cache_type=comfy.execution.CacheType.CLASSIC, cache_args={"lru": 0, "ram": 0}
        )
        self._thread = threading.Thread(target=self._work, name="persona-comfyui", daemon=True)
        self._thread.start()

    def _work(self) -> None:
        while True:
            job, done = self._jobs.get()
            if done.set_running_or_notify_cancel():
                try:
                    with bind_store(self.store):
                        done.set_result(job())
                except BaseException as exc:  # the caller gets it
                    done.set_exception(exc)

    def _run(self, job) -> Any:
        done: Future = Future()
        self._jobs.put((job, done))
        return done.result()

    def validate(self, prompt: ApiWorkflow) -> list[str]:
        execution = self.comfy.execution
        valid = self._run(lambda: asyncio.run(execution.validate_prompt(str(uuid.uuid4()), prompt, None)))
        if not valid[0]:
            raise validation_error(prompt, valid[1], valid[3])
        return list(valid[2])

    def execute(self, prompt: ApiWorkflow, outputs: list[str], *, keep: bool, client_id: str | None) -> PromptOutcome:
        prompt_id = str(uuid.uuid4())

        def run() -> PromptOutcome:
            executor = self._executor
            self._server.last_prompt_id = prompt_id
            executor.execute(prompt, prompt_id, {}, outputs)
            status = {"status_str": "success" if executor.success else "error", "messages": executor.status_messages}
            return outcome_of(prompt_id, status, executor.history_result.get("outputs", {}))

        return self._run(run)
