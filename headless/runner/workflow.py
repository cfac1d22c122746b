"""Saved workflows: read ComfyUI's API or UI format, convert UI → API, validate.

API format (what ComfyUI's /prompt takes) is `{node_id: {"class_type", "inputs"}}`,
each input a value or a link `[source_id, output_index]`. UI format (what the editor
saves) lists nodes with positional `widgets_values` and a separate link table; it says
nothing about which value belongs to which input, so conversion reads the node classes'
own `INPUT_TYPES` (ComfyUI's frontend does the same with /object_info):
- widgets are the inputs whose type is a primitive (INT, FLOAT, STRING, BOOLEAN) or a
  choice list, in declaration order (required, then optional);
- an INT named `seed`/`noise_seed` (or declaring `control_after_generate`) is followed by
  the frontend's extra "fixed/randomize" value, which is skipped;
- a widget converted to an input keeps its slot in `widgets_values`, but a link wins;
- Reroute nodes are followed, PrimitiveNode values are inlined, Note nodes dropped,
  muted nodes (mode 2) dropped; bypassed nodes (mode 4) are refused (not supported).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from .errors import (
    BadLinkError,
    DependencyCycleError,
    InputTypeMismatchError,
    InvalidInputValueError,
    MissingInputError,
    UnknownNodeTypeError,
    WorkflowFormatError,
)

ApiWorkflow = dict[str, dict[str, Any]]
Registry = Mapping[str, type]

WIDGET_TYPES = frozenset({"INT", "FLOAT", "STRING", "BOOLEAN"})
_SEED_CONTROL_VALUES = frozenset({"fixed", "increment", "decrement", "randomize"})
_VIRTUAL_NODES = frozenset({"Note", "MarkdownNote", "Reroute", "PrimitiveNode"})


def load_workflow(path: str | Path, registry: Registry) -> ApiWorkflow:
    """Read a saved workflow in either format and return it in API format (not validated)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise WorkflowFormatError(f"workflow file not found: {path}") from None
    except json.JSONDecodeError as exc:
        raise WorkflowFormatError(f"{path} is not JSON: {exc}") from None
    return to_api(data, registry)


class _Shape(BaseModel):
    """The parts of a saved workflow the conversion reads; everything else passes untouched."""

    model_config = ConfigDict(extra="allow")


class _UiSocket(_Shape):
    name: str
    link: int | None = None


class _UiNode(_Shape):
    id: int | str
    type: str
    mode: int = 0
    inputs: list[_UiSocket] | None = None
    widgets_values: list | dict | None = None
    properties: dict | None = None


class _UiLink(_Shape):  # newer frontends save links as objects
    id: int
    origin_id: int | str
    origin_slot: int


class _UiWorkflow(_Shape):
    nodes: list[_UiNode]
    # [id, origin, origin slot, target, target slot, type]
    links: list[Annotated[list, Field(min_length=3)] | _UiLink] | None = None


class _ApiNode(_Shape):
    class_type: str
    inputs: dict[str, Any] = {}


_API_SHAPE = TypeAdapter(dict[str, _ApiNode])
_LINK_HEAD = TypeAdapter(tuple[int, int | str, int])  # a link array's id, origin, origin slot


def check_shape(data: dict, ui: bool) -> None:
    """`WorkflowFormatError` naming the first place where an uploaded workflow's JSON has the
    wrong shape (a number where a list of inputs belongs, a link of one element), before the
    conversion or the validation index into it."""
    try:
        if ui:
            workflow = _UiWorkflow.model_validate(data)
            for link in workflow.links or []:
                if isinstance(link, list):
                    _LINK_HEAD.validate_python(link[:3])
        else:
            _API_SHAPE.validate_python(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "the workflow"
        raise WorkflowFormatError(f"malformed workflow at {where[:120]}: {first['msg']}") from None


def to_api(data: Any, registry: Registry) -> ApiWorkflow:
    """API format from either format (API format is copied as is)."""
    if not isinstance(data, dict):
        raise WorkflowFormatError("a workflow is a JSON object")
    if isinstance(data.get("nodes"), list) and "links" in data:
        check_shape(data, ui=True)
        return ui_to_api(data, registry)
    if data and all(isinstance(v, dict) and "class_type" in v for v in data.values()):
        check_shape(data, ui=False)
        return {str(k): {"class_type": v["class_type"], "inputs": dict(v.get("inputs", {})), **_meta(v)}
                for k, v in data.items()}
    raise WorkflowFormatError("not a ComfyUI workflow: expected API format ({id: {class_type, inputs}}) "
                              "or UI format ({nodes: [...], links: [...]})")


def _meta(node: dict) -> dict:
    return {"_meta": node["_meta"]} if "_meta" in node else {}


def input_spec(cls: type) -> list[tuple[str, Any, dict, bool]]:
    """(name, type, options, required) for every declared input, in declaration order."""
    declared = cls.INPUT_TYPES()
    specs = []
    for section, required in (("required", True), ("optional", False)):
        for name, entry in (declared.get(section) or {}).items():
            kind = entry[0]
            options = entry[1] if len(entry) > 1 and isinstance(entry[1], dict) else {}
            specs.append((name, kind, options, required))
    return specs


def is_widget(kind: Any, options: dict) -> bool:
    """True for inputs the editor shows as widgets (values), false for socket-only types."""
    if options.get("forceInput"):
        return False
    return isinstance(kind, (list, tuple)) or kind in WIDGET_TYPES or kind == "COMBO"


def _has_seed_control(name: str, kind: Any, options: dict) -> bool:
    if "control_after_generate" in options:
        return bool(options["control_after_generate"])
    return kind == "INT" and name in ("seed", "noise_seed")


def ui_to_api(data: dict, registry: Registry) -> ApiWorkflow:
    """Convert the editor's saved format to API format using the classes' INPUT_TYPES."""
    nodes = {str(node["id"]): node for node in data["nodes"]}
    links: dict[int, tuple[str, int]] = {}
    for link in data.get("links") or []:
        if isinstance(link, dict):  # newer frontends may save links as objects
            link_id, origin, slot = link["id"], link["origin_id"], link["origin_slot"]
        else:
            link_id, origin, slot = link[0], link[1], link[2]
        links[int(link_id)] = (str(origin), int(slot))

    def resolve(link_id: int, node_id: str, input_name: str) -> Any:
        """A link as `[source, slot]`, following Reroutes and inlining PrimitiveNodes."""
        seen = set()
        while True:
            if link_id not in links:
                raise BadLinkError(f"input {input_name!r} uses link {link_id}, which does not exist", node_id)
            origin, slot = links[link_id]
            source = nodes.get(origin)
            if source is None:
                raise BadLinkError(f"input {input_name!r} links to missing node {origin}", node_id)
            if source.get("type") == "Reroute" and origin not in seen:
                seen.add(origin)
                upstream = (source.get("inputs") or [{}])[0].get("link")
                if upstream is None:
                    raise BadLinkError(f"input {input_name!r} comes from an unconnected Reroute {origin}", node_id)
                link_id = int(upstream)
                continue
            if source.get("type") == "PrimitiveNode":
                values = source.get("widgets_values")
                return values[0] if isinstance(values, list) and values else None
            return [origin, slot]

    api: ApiWorkflow = {}
    for node_id, node in nodes.items():
        class_type = node.get("type")
        mode = node.get("mode", 0)
        if class_type in _VIRTUAL_NODES or mode == 2:
            continue
        if mode == 4:
            raise WorkflowFormatError("bypassed nodes are not supported by the headless runner; "
                                      "remove or un-bypass it", node_id, class_type if isinstance(class_type, str) else None)
        cls = registry.get(class_type)
        if cls is None:
            raise UnknownNodeTypeError(f"unknown node type {class_type!r}", node_id, class_type)
        inputs: dict[str, Any] = {}
        widgets = node.get("widgets_values")
        if isinstance(widgets, dict):
            inputs.update({k: v for k, v in widgets.items() if k in {s[0] for s in input_spec(cls)}})
        else:
            values = list(widgets or [])
            position = 0
            for name, kind, options, _required in input_spec(cls):
                if not is_widget(kind, options):
                    continue
                if position < len(values):
                    inputs[name] = values[position]
                position += 1
                if _has_seed_control(name, kind, options) and position < len(values) \
                        and values[position] in _SEED_CONTROL_VALUES:
                    position += 1
        for socket in node.get("inputs") or []:
            if socket.get("link") is not None:
                inputs[socket["name"]] = resolve(int(socket["link"]), node_id, socket["name"])
        entry: dict[str, Any] = {"inputs": inputs, "class_type": class_type}
        if node.get("title"):
            entry["_meta"] = {"title": node["title"]}
        api[node_id] = entry
    return api


def _describe(value: Any) -> str:
    return type(value).__name__


def _type_matches(expected: str, got: str) -> bool:
    if expected == "*" or got == "*":
        return True
    wanted = {t.strip() for t in expected.split(",")}
    return bool(wanted & {t.strip() for t in got.split(",")})


def validate(workflow: ApiWorkflow, registry: Registry) -> list[str]:
    """Check every node and link; return the node ids in execution (topological) order.

    Raises the first problem found, as a named `WorkflowError` subclass naming the node.
    """
    class_types = {node_id: node.get("class_type", "?") for node_id, node in workflow.items()}
    for node_id, node in workflow.items():
        class_type = node.get("class_type")
        cls = registry.get(class_type)
        if cls is None:
            raise UnknownNodeTypeError(f"unknown node type {class_type!r}", node_id, class_type)
        inputs = node.get("inputs") or {}
        for name, kind, options, required in input_spec(cls):
            if name not in inputs:
                if required:
                    raise MissingInputError(node_id, class_type, name)
                continue
            value = inputs[name]
            if _is_link(value):
                _check_link(workflow, registry, node_id, class_type, name, kind, value)
            else:
                _check_value(node_id, class_type, name, kind, options, value)
    return topological_order(workflow, class_types)


def _is_link(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[0], str) and isinstance(value[1], int)


def _check_link(workflow, registry, node_id, class_type, name, kind, link) -> None:
    source_id, slot = link
    source = workflow.get(source_id)
    if source is None:
        raise BadLinkError(f"input {name!r} links to missing node {source_id}", node_id, class_type)
    source_cls = registry.get(source["class_type"])
    if source_cls is None:
        raise UnknownNodeTypeError(f"unknown node type {source['class_type']!r}", source_id, source["class_type"])
    outputs = source_cls.RETURN_TYPES
    if not 0 <= slot < len(outputs):
        raise BadLinkError(f"input {name!r} links to output {slot} of node {source_id}, which has "
                           f"{len(outputs)} outputs", node_id, class_type)
    got = outputs[slot]
    if isinstance(kind, (list, tuple)) or isinstance(got, (list, tuple)):
        return  # a choice list fed by a link: ComfyUI checks the value at run time
    if not _type_matches(str(kind), str(got)):
        raise InputTypeMismatchError(node_id, class_type, name, str(kind), f"{got} (from node {source_id})")


def _check_value(node_id, class_type, name, kind, options, value) -> None:
    if isinstance(kind, (list, tuple)):
        if value not in kind:
            raise InvalidInputValueError(node_id, class_type, name, f"{value!r} is not one of {list(kind)}")
        return
    if kind == "INT":
        if isinstance(value, bool) or not isinstance(value, int):
            raise InputTypeMismatchError(node_id, class_type, name, "INT", _describe(value))
    elif kind == "FLOAT":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InputTypeMismatchError(node_id, class_type, name, "FLOAT", _describe(value))
        if not math.isfinite(value):  # JSON's NaN passes every range comparison
            raise InvalidInputValueError(node_id, class_type, name, f"{value} is not a finite number")
    elif kind == "STRING":
        if not isinstance(value, str):
            raise InputTypeMismatchError(node_id, class_type, name, "STRING", _describe(value))
        return
    elif kind == "BOOLEAN":
        if not isinstance(value, bool):
            raise InputTypeMismatchError(node_id, class_type, name, "BOOLEAN", _describe(value))
        return
    else:
        raise InputTypeMismatchError(node_id, class_type, name, f"a link to a {kind} output", _describe(value))
    low, high = options.get("min"), options.get("max")
    if low is not None and value < low or high is not None and value > high:
        raise InvalidInputValueError(node_id, class_type, name, f"{value} is outside [{low}, {high}]")


def topological_order(workflow: ApiWorkflow, class_types: dict[str, str]) -> list[str]:
    """Kahn's order (ties broken by id, so runs are reproducible); a loop raises with its path."""
    deps = {node_id: {v[0] for v in (node.get("inputs") or {}).values() if _is_link(v)}
            for node_id, node in workflow.items()}
    remaining = {node_id: set(d) for node_id, d in deps.items()}
    order: list[str] = []
    ready = sorted((n for n, d in remaining.items() if not d), key=_id_sort)
    while ready:
        node_id = ready.pop(0)
        order.append(node_id)
        del remaining[node_id]
        for other, d in remaining.items():
            if node_id in d:
                d.discard(node_id)
                if not d:
                    ready.append(other)
        ready.sort(key=_id_sort)
    if remaining:
        raise DependencyCycleError(_find_cycle(remaining), class_types)
    return order


def _find_cycle(remaining: dict[str, set[str]]) -> list[str]:
    """Walk dependencies from any stuck node until one repeats: that stretch is a cycle."""
    start = min(remaining, key=_id_sort)
    path: list[str] = []
    node = start
    while node not in path:
        path.append(node)
        node = min(remaining[node], key=_id_sort)
    cycle = path[path.index(node):]
    cycle.reverse()  # report in data-flow order (source before consumer)
    return cycle


def _id_sort(node_id: str) -> tuple:
    # ASCII digits only: "²" is a digit to str.isdigit() and no number to int()
    return (0, int(node_id), "") if node_id.isascii() and node_id.isdigit() else (1, 0, node_id)
