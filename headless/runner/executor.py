"""Run a validated workflow in streaming mode, the way ComfyUI would run it once per tick.

The graph is built once (`WorkflowGraph`: order, node objects, lanes). A session then
runs it through a `StreamingRunner`, in two lanes:

- the **turn lane**: nodes with no streaming ancestor (card loader, conversation turn,
  interpreter, manual directive). They run only on `turn()` (a chat/action message),
  and then only those whose content key changed (see `cache.py`); the results are
  latched for the stream lane. An interpreter may block for seconds: it runs on its own
  thread while frames keep flowing.
- the **stream lane**: nodes marked `STREAMING = True` (state tracker, renderer, sink)
  and everything downstream of them. They run on every `tick()`, reading the turn
  lane's latest latched outputs.

Only nodes that some output node (OUTPUT_NODE) needs are run. Node objects are shared by
all sessions, so nodes keep their state in the session store, which the runner binds
(`bind_store`) while node code runs. Inputs named `session_id` are bound to the
runner's session; classes declare `HEADLESS_BINDING = {kind: input names}` for the
values a host feeds per message (`chat` text, `action` directive, `persona` id).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ...nodes.runtime import SessionStore, bind_store
from .cache import OutputCache, make_cache, never, to_hashable
from .errors import NodeExecutionError, WorkflowError
from .workflow import ApiWorkflow, Registry, _is_link, input_spec, validate

#: Turn number that means "no message yet" for per-turn nodes (see nodes/conversation_nodes.py).
NO_TURN = -1


@dataclass
class TickResult:
    """What one run did: which nodes ran or hit the cache, and output nodes' `ui` payloads."""

    ran: list[str] = field(default_factory=list)
    cached: list[str] = field(default_factory=list)
    ui: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0


class WorkflowGraph:
    """A validated workflow with its node objects, built once and shared by sessions."""

    def __init__(self, workflow: ApiWorkflow, registry: Registry) -> None:
        self.workflow = workflow
        self.registry = registry
        order = validate(workflow, registry)
        self.classes = {node_id: registry[workflow[node_id]["class_type"]] for node_id in order}
        outputs = [n for n in order if getattr(self.classes[n], "OUTPUT_NODE", False)]
        if not outputs:
            raise WorkflowError("the workflow has no output node (e.g. PersonaStreamSink), so nothing would run")
        needed = self._ancestors(outputs)
        self.order = [n for n in order if n in needed]
        self.outputs = outputs
        streaming: set[str] = set()
        for node_id in self.order:  # topological, so a node's sources are classified first
            sources = self._sources(node_id)
            if getattr(self.classes[node_id], "STREAMING", False) or sources & streaming:
                streaming.add(node_id)
        self.stream_lane = [n for n in self.order if n in streaming]
        self.turn_lane = [n for n in self.order if n not in streaming]
        self.objects = {node_id: self.classes[node_id]() for node_id in self.order}
        # INPUT_TYPES may read files (the card loader lists cards): ask once, here.
        self.specs = {node_id: input_spec(self.classes[node_id]) for node_id in self.order}
        self.input_names = {node_id: {spec[0] for spec in specs} for node_id, specs in self.specs.items()}
        self.bindings = self._collect_bindings()

    def _sources(self, node_id: str) -> set[str]:
        inputs = self.workflow[node_id].get("inputs") or {}
        return {v[0] for v in inputs.values() if _is_link(v)}

    def _ancestors(self, roots: list[str]) -> set[str]:
        seen: set[str] = set()
        stack = list(roots)
        while stack:
            node_id = stack.pop()
            if node_id not in seen:
                seen.add(node_id)
                stack.extend(self._sources(node_id))
        return seen

    def _collect_bindings(self) -> dict[str, list[tuple[str, tuple[str, ...]]]]:
        """kind → [(node_id, input names)] from the classes' HEADLESS_BINDING."""
        bindings: dict[str, list[tuple[str, tuple[str, ...]]]] = {}
        for node_id in self.order:
            for kind, names in getattr(self.classes[node_id], "HEADLESS_BINDING", {}).items():
                names = (names,) if isinstance(names, str) else tuple(names)
                bindings.setdefault(kind, []).append((node_id, names))
        return bindings

    def accepts(self, kind: str) -> bool:
        """Whether some node takes host values of `kind` (`chat`, `action`, `persona`)."""
        return kind in self.bindings

    def title(self, node_id: str) -> str:
        return self.workflow[node_id].get("_meta", {}).get("title") or self.workflow[node_id]["class_type"]


class StreamingRunner:
    """One session's run of a `WorkflowGraph`: `start()`, then `turn()` per message, `tick()` per chunk.

    `turn()` and `tick()` may run concurrently on two threads (a slow interpreter must not
    stall frames); two turns, or two ticks, are serialized.
    """

    def __init__(
        self,
        graph: WorkflowGraph,
        store: SessionStore,
        session_id: str,
        cache: OutputCache | None = None,
        inputs: Mapping[str, Any] | None = None,
    ) -> None:
        self.graph = graph
        self.store = store
        self.session_id = session_id
        self.cache = cache if cache is not None else make_cache("classic")
        self._overrides: dict[str, dict[str, Any]] = {}
        self._latched: dict[str, tuple] = {}
        self._turn_lock = threading.Lock()
        self._tick_lock = threading.Lock()
        self._reset_requested = threading.Event()
        self._closed = False
        self._bind_initial(inputs or {})

    def _bind_initial(self, inputs: Mapping[str, Any]) -> None:
        for node_id in self.graph.order:
            names = self.graph.input_names[node_id]
            override: dict[str, Any] = {}
            if "session_id" in names:
                override["session_id"] = self.session_id
            if any(kind in ("chat", "action") for kind, _ in self._kinds_of(node_id)) and "turn" in names:
                override["turn"] = NO_TURN
            self._overrides[node_id] = override
        for kind, value in inputs.items():
            self._apply(self._overrides, kind, value, None)

    def _kinds_of(self, node_id: str) -> list[tuple[str, tuple[str, ...]]]:
        return [(kind, names) for kind, targets in self.graph.bindings.items() for n, names in targets if n == node_id]

    def _apply(self, overrides: dict[str, dict[str, Any]], kind: str, value: Any, turn: int | None) -> None:
        for node_id, names in self.graph.bindings.get(kind, []):
            target = overrides.setdefault(node_id, {})
            if len(names) == 1:
                target[names[0]] = value
            else:
                target.update({name: value[name] for name in names if name in value})
            if turn is not None:
                target["turn"] = turn

    def accepts(self, kind: str) -> bool:
        return self.graph.accepts(kind)

    # -- running -------------------------------------------------------------------------

    def start(self) -> TickResult:
        """First run: both lanes, so the session has state and a first chunk."""
        with self._turn_lock:
            result = self._run(self.graph.turn_lane, self._overrides, latch=True)
        with self._tick_lock:
            tick = self._run(self.graph.stream_lane, self._overrides, latch=False)
        return _merge(result, tick)

    def turn(self, kind: str, value: Any, turn: int) -> TickResult:
        """A message of `kind` (`chat` text or `action` directive fields) as turn number `turn`.

        Runs the turn lane only; the next `tick()` picks up its outputs.
        """
        if not self.graph.accepts(kind):
            raise WorkflowError(f"this workflow has no node that takes {kind!r} input")
        with self._turn_lock:
            if self._closed:
                return TickResult()
            overrides = {node_id: dict(values) for node_id, values in self._overrides.items()}
            self._apply(overrides, kind, value, turn)
            result = self._run(self.graph.turn_lane, overrides, latch=True)
            self._overrides = overrides
        return result

    def tick(self) -> TickResult:
        """One streaming step: run the stream lane (state, next chunk, sink)."""
        with self._tick_lock:
            if self._closed:
                return TickResult()
            if self._reset_requested.is_set():
                self._reset_requested.clear()
                with bind_store(self.store):
                    self.store.get(self.session_id).reset()
            return self._run(self.graph.stream_lane, self._overrides, latch=False)

    def request_reset(self) -> None:
        """Back to idle at the start of the next tick (on the tick thread, never mid-chunk)."""
        self._reset_requested.set()

    def resume(self) -> None:
        """Nothing pauses this executor (`WorkflowHost.resume`)."""

    def _run(self, lane: list[str], overrides: dict[str, dict[str, Any]], latch: bool) -> TickResult:
        result = TickResult()
        began = time.perf_counter()
        latched = dict(self._latched)
        values: dict[str, tuple] = {}
        keys: dict[str, Any] = {}
        lane_set = set(lane)
        with bind_store(self.store):
            for node_id in lane:
                inputs = {**(self.graph.workflow[node_id].get("inputs") or {}), **overrides.get(node_id, {})}
                key = self._key(node_id, inputs, keys, lane_set) if latch else never()
                keys[node_id] = key
                outputs = self.cache.get(node_id, key) if latch else None
                if outputs is not None:
                    result.cached.append(node_id)
                else:
                    kwargs = self._resolve(node_id, inputs, values, latched)
                    outputs, ui = self._execute(node_id, kwargs)
                    if ui is not None:
                        result.ui[node_id] = ui
                    if latch:
                        self.cache.put(node_id, key, outputs)
                    result.ran.append(node_id)
                values[node_id] = outputs
        if latch:
            latched.update(values)
            self._latched = latched  # one reference swap: a concurrent tick sees old or new, never half
        result.seconds = time.perf_counter() - began
        return result

    def _key(self, node_id: str, inputs: dict[str, Any], keys: dict[str, Any], lane: set[str]) -> Any:
        cls = self.graph.classes[node_id]
        parts = []
        for name in sorted(inputs):
            value = inputs[name]
            if _is_link(value):
                source = keys.get(value[0]) if value[0] in lane else never()
                parts.append((name, ("link", source, value[1])))
            else:
                parts.append((name, to_hashable(value)))
        changed = None
        if hasattr(cls, "IS_CHANGED"):
            constants = {k: v for k, v in inputs.items() if not _is_link(v)}
            try:
                changed_value = cls.IS_CHANGED(**constants)
            except Exception as exc:
                raise NodeExecutionError(f"IS_CHANGED failed: {exc}", node_id, self.graph.workflow[node_id]["class_type"]) from exc
            changed = to_hashable(changed_value)
        identity = node_id if getattr(cls, "NOT_IDEMPOTENT", False) else None
        return (self.graph.workflow[node_id]["class_type"], changed, identity, tuple(parts))

    def _resolve(self, node_id: str, inputs: dict[str, Any], values: dict[str, tuple], latched: dict[str, tuple]) -> dict:
        declared = self.graph.input_names[node_id]
        kwargs = {}
        for name, value in inputs.items():
            if name not in declared:
                continue  # ComfyUI ignores inputs a class no longer declares
            if _is_link(value):
                source, slot = value
                outputs = values.get(source, latched.get(source))
                assert outputs is not None, f"node {source} has not run before node {node_id}"
                kwargs[name] = outputs[slot]
            else:
                kwargs[name] = value
        return kwargs

    def _execute(self, node_id: str, kwargs: dict) -> tuple[tuple, Any]:
        cls = self.graph.classes[node_id]
        function = getattr(self.graph.objects[node_id], cls.FUNCTION)
        try:
            returned = function(**kwargs)
        except WorkflowError:
            raise
        except Exception as exc:
            raise NodeExecutionError(f"{type(exc).__name__}: {exc}", node_id, self.graph.workflow[node_id]["class_type"]) from exc
        ui = None
        if isinstance(returned, dict):
            ui = returned.get("ui")
            returned = returned.get("result", ())
        outputs = tuple(returned) if returned is not None else ()
        if len(outputs) != len(cls.RETURN_TYPES):
            raise NodeExecutionError(
                f"returned {len(outputs)} values for {len(cls.RETURN_TYPES)} outputs",
                node_id,
                self.graph.workflow[node_id]["class_type"],
            )
        return outputs, ui

    def close(self) -> None:
        """Drop cached outputs and the session's stateful parts, after the turn and tick in
        flight (on other threads) finish: one finishing later would build its parts again."""
        with self._turn_lock, self._tick_lock:
            self._closed = True
            self.cache.clear()
            self._latched = {}
            self.store.drop(self.session_id)


def _merge(first: TickResult, second: TickResult) -> TickResult:
    return TickResult(
        ran=first.ran + second.ran,
        cached=first.cached + second.cached,
        ui={**first.ui, **second.ui},
        seconds=first.seconds + second.seconds,
    )
