"""How a service runs its sessions' workflows: with this package's executor, or ComfyUI's.

- `RunnerHosts`: the headless default. The pack's own executor (`StreamingRunner`, two lanes
  on two threads) runs graphs of the pack's nodes; a node type it does not know is named at
  load time with the pack that provides it (`unknown_node_types`).
- `PromptHosts`: ComfyUI's executor runs every prompt (`ComfyPromptHost`): inside ComfyUI
  through its queue, headless with `--comfyui PATH` in-process. Any node type ComfyUI knows
  can be in the graph.

Both take uploaded workflows (the Persona tab streams the graph on the canvas: it uploads the
API prompt, `POST /persona/workflows`, and names it in `hello.workflow`), validated at upload
so a bad graph is refused with every bad node named before a session starts.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any, Protocol

from ...nodes.runtime import SessionStore
from .cache import make_cache
from .comfy_host import ComfyPromptHost, PromptRunner
from .errors import UnknownNodeTypeError, WorkflowError
from .executor import StreamingRunner, WorkflowGraph
from .prompts import PromptTemplate
from .upload_policy import check_upload, interpreter_choices
from .workflow import ApiWorkflow, Registry, check_shape, to_api

__all__ = ["PromptHosts", "RunnerHosts", "SessionHosts", "WorkflowLimitError", "unknown_node_types"]

#: Uploaded workflows kept (the least recently used goes first) and their largest size. The
#: JSON values bound memory: 2 MiB of `[{},{},...]` held 45 MiB as Python objects (a
#: 2,000-node UI workflow has about 70,000 values; ours have 300-500).
MAX_WORKFLOWS = 32
MAX_WORKFLOW_NODES = 2000
MAX_WORKFLOW_VALUES = 100_000


class WorkflowLimitError(WorkflowError):
    """An uploaded workflow is over the size limit."""


class SessionHosts(Protocol):
    """What the service asks of whatever runs its sessions' workflows."""

    default_persona: str
    #: The default workflow's scene (a Persona Scene node's personas, left to right), or ():
    #: a session whose hello names no persona and no scene plays it (docs/scenes.md).
    default_scene: tuple[str, ...]

    def accepts(self, kind: str) -> bool:
        """Whether the default workflow takes host values of `kind` (chat, action, persona)."""

    def register(self, data: Any) -> str:
        """Validate an uploaded workflow (API or UI format); its id for `hello.workflow`."""

    def new_host(self, store: SessionStore, session_id: str, persona: str | None,
                 workflow: str | None = None, client_id: str | None = None) -> Any:
        """A `WorkflowHost` for one session (the default workflow, or an uploaded one)."""

    def warm_up(self) -> None:
        """Run a throwaway session through a turn and a chunk (loads the interpreter's models)."""


def _default_persona(bindings: Mapping[str, list[tuple[str, tuple[str, ...]]]], workflow: ApiWorkflow) -> str:
    for node_id, names in bindings.get("persona", []):
        value = workflow[node_id]["inputs"].get(names[0])
        if isinstance(value, str):
            return value
    from ...persona.library import DEFAULT_PERSONA_ID

    return DEFAULT_PERSONA_ID


def _default_scene(workflow: ApiWorkflow) -> tuple[str, ...]:
    """The cast of the workflow's Persona Scene node (the first, by node id, when there are
    several), checked as the node checks it; () when it has none or the cast is a link."""
    from ...nodes.scene_nodes import SceneInputError, cast_ids

    for node_id in sorted(workflow, key=lambda k: (len(k), k)):
        node = workflow[node_id]
        personas = node.get("inputs", {}).get("personas") if node.get("class_type") == "PersonaScene" else None
        if isinstance(personas, str):
            try:
                return cast_ids(personas)
            except SceneInputError as exc:
                raise WorkflowError(f"node {node_id} (PersonaScene): {exc}") from None
    return ()


#: A subgraph node's type: the UUID of its definition in the workflow's `definitions`.
_SUBGRAPH = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")

#: Node types of ComfyUI itself (not a pack), as saved workflows name them, for the message
#: a headless server without ComfyUI gives: the most common ones in persona pipelines.
_CORE_HINTS = ("Image", "Latent", "VAE", "CLIP", "Checkpoint", "Lora", "Preview", "Save", "Load", "Upscale",
               "KSampler", "Conditioning", "Mask", "Video", "Audio")


_NOT_NODES = frozenset({"Note", "MarkdownNote", "Reroute", "PrimitiveNode"})


def unknown_node_types(data: Any, registry: Registry) -> list[str]:
    """One line per node type of a saved workflow (API or UI format) that `registry` lacks,
    naming the pack that provides it: a UI workflow records it (`properties.cnr_id`, e.g.
    `comfy-core`); otherwise a core-looking name is called core."""
    packs: dict[str, str] = {}
    missing: dict[str, list[str]] = {}
    if isinstance(data, dict) and isinstance(data.get("nodes"), list):  # UI format
        for node in data["nodes"]:
            kind = node.get("type") if isinstance(node, dict) else None
            if not isinstance(kind, str) or kind in _NOT_NODES or node.get("mode") == 2:
                continue  # not a node, or not one to run (the shape check names a bad one)
            props = node.get("properties")
            props = props if isinstance(props, dict) else {}
            pack = props.get("cnr_id") or props.get("aux_id")
            if isinstance(kind, str) and isinstance(pack, str):
                packs[kind] = pack
            if isinstance(kind, str) and kind not in registry:
                missing.setdefault(kind, []).append(str(node.get("id")))
    elif isinstance(data, dict):  # API format
        for node_id, node in data.items():
            kind = node.get("class_type") if isinstance(node, dict) else None
            if isinstance(kind, str) and kind not in registry:
                missing.setdefault(kind, []).append(str(node_id))
    lines = []
    for kind, ids in sorted(missing.items()):
        pack = packs.get(kind)
        if _SUBGRAPH.match(kind) or kind.startswith("workflow>"):  # a subgraph's id, a legacy group node
            where = "a subgraph or group node: the headless runner runs plain nodes; convert it back to its nodes in ComfyUI's editor"
        elif pack == "comfy-core" or (pack is None and any(hint in kind for hint in _CORE_HINTS)):
            where = "a ComfyUI core node: run with --comfyui PATH (a ComfyUI install)"
        elif pack:
            where = f"from the pack {pack!r}: install it in ComfyUI and run with --comfyui PATH"
        else:
            where = "from a pack this server does not have: install it in ComfyUI and run with --comfyui PATH"
        lines.append(f"{kind} (node {', '.join(ids)}): {where}")
    return lines


class _Uploads:
    """Uploaded workflows by content id, bounded (LRU)."""

    def __init__(self) -> None:
        self._items: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def key(workflow: ApiWorkflow) -> str:
        return hashlib.sha256(json.dumps(workflow, sort_keys=True, default=str).encode()).hexdigest()[:24]

    def put(self, key: str, value: Any) -> None:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > MAX_WORKFLOWS:
                self._items.popitem(last=False)

    def get(self, key: str) -> Any:
        with self._lock:
            if key not in self._items:
                raise WorkflowError(f"no uploaded workflow {key[:40]!r} (upload it again: POST /persona/workflows)")
            self._items.move_to_end(key)
            return self._items[key]


def _count_values(data: Any) -> int:
    count, stack = 0, [data]
    while stack and count <= MAX_WORKFLOW_VALUES:
        value = stack.pop()
        count += 1
        if isinstance(value, dict):
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)
    return count


def _as_api(data: Any, registry: Registry) -> ApiWorkflow:
    if _count_values(data) > MAX_WORKFLOW_VALUES:
        raise WorkflowLimitError(f"the workflow holds over {MAX_WORKFLOW_VALUES:,} JSON values; that is the limit")
    if _is_api(data):
        check_shape(data, ui=False)
        workflow = {str(k): v for k, v in data.items()}
    else:
        workflow = to_api(data, registry)
    if len(workflow) > MAX_WORKFLOW_NODES:
        raise WorkflowLimitError(f"the workflow has {len(workflow)} nodes; the limit is {MAX_WORKFLOW_NODES}")
    return workflow


def _is_api(data: Any) -> bool:
    return isinstance(data, dict) and bool(data) and all(isinstance(v, dict) and "class_type" in v for v in data.values())


class RunnerHosts:
    """Sessions run by the pack's executor (see module docstring)."""

    def __init__(self, graph: WorkflowGraph, cache_policy: str = "classic") -> None:
        """Uploads follow `upload_policy` (this host is headless)."""
        self.graph = graph
        self.registry = graph.registry
        self.cache_policy = cache_policy
        self.default_persona = _default_persona(graph.bindings, graph.workflow)
        self.default_scene = _default_scene(graph.workflow)
        self._uploads = _Uploads()

    def accepts(self, kind: str) -> bool:
        return self.graph.accepts(kind)

    def register(self, data: Any) -> str:
        unknown = unknown_node_types(data, self.registry)
        if unknown:
            raise UnknownNodeTypeError("this server cannot run these node types: " + "; ".join(unknown))
        workflow = _as_api(data, self.registry)
        check_upload(workflow, interpreter_choices(self.graph.workflow))
        graph = WorkflowGraph(workflow, self.registry)
        if not graph.accepts("chat"):
            raise WorkflowError("the workflow has no node that takes chat text (add a PersonaConversationTurn)")
        key = _Uploads.key(graph.workflow)
        self._uploads.put(key, graph)
        return key

    def new_host(self, store: SessionStore, session_id: str, persona: str | None,
                 workflow: str | None = None, client_id: str | None = None) -> StreamingRunner:
        graph = self._uploads.get(workflow) if workflow else self.graph
        inputs = {"persona": persona} if persona is not None and graph.accepts("persona") else None
        return StreamingRunner(graph, store, session_id, cache=make_cache(self.cache_policy), inputs=inputs)

    def warm_up(self) -> None:
        runner = StreamingRunner(self.graph, SessionStore(), "warm-up", inputs={"persona": self.default_persona})
        try:
            runner.start()
            runner.turn("chat", "hello", 1)
            runner.tick()
        finally:
            runner.close()


class PromptHosts:
    """Sessions run by ComfyUI's executor (see module docstring). `registry` is ComfyUI's
    node registry (every node type it knows)."""

    def __init__(self, workflow: ApiWorkflow, registry: Registry, prompts: PromptRunner,
                 store_for_warm_up: SessionStore | None = None, *, trusted_uploads: bool = False) -> None:
        """`trusted_uploads`: inside ComfyUI, whose canvas user is the operator; headless
        (`persona serve --comfyui`), uploads follow `upload_policy`."""
        self.registry = registry
        self.trusted_uploads = trusted_uploads
        self.prompts = prompts
        self.template = self._template(workflow)
        self.default_persona = _default_persona(self.template.bindings, workflow)
        self.default_scene = _default_scene(workflow)
        self._uploads = _Uploads()
        self._warm_store = store_for_warm_up

    def _template(self, workflow: ApiWorkflow) -> PromptTemplate:
        template = PromptTemplate(workflow, self.registry)
        if not template.accepts("chat"):
            raise WorkflowError("the workflow has no node that takes chat text (add a PersonaConversationTurn)")
        self.prompts.validate(template.render("validate", {}, {}))
        return template

    def accepts(self, kind: str) -> bool:
        return self.template.accepts(kind)

    def register(self, data: Any) -> str:
        workflow = _as_api(data, self.registry)
        if not self.trusted_uploads:
            check_upload(workflow, interpreter_choices(self.template.workflow))
        template = self._template(workflow)
        key = _Uploads.key(template.workflow)
        self._uploads.put(key, template)
        return key

    def new_host(self, store: SessionStore, session_id: str, persona: str | None,
                 workflow: str | None = None, client_id: str | None = None) -> ComfyPromptHost:
        template = self._uploads.get(workflow) if workflow else self.template
        return ComfyPromptHost(template, self.prompts, store, session_id,
                               persona if template.accepts("persona") else None, client_id)

    def warm_up(self) -> None:
        store = self._warm_store if self._warm_store is not None else SessionStore()
        host = self.new_host(store, "warm-up", self.default_persona)
        try:
            host.start()
            host.turn("chat", "hello", 1)
            host.tick()
        finally:
            host.close()
