"""ComfyUI node inputs generated from a pydantic settings model (Scope's way): one source of truth.

A node lists which fields of a settings model it shows; `node_inputs` turns each into ComfyUI's
classic input spec with the field's default, bounds, step, choices and description (tooltip),
and `settings_from_inputs` turns the values a run receives back into the validated model. So a
bound or a default changes in one place (the pydantic field) and the node, the headless
runner and the validation follow; `tests/test_engine_nodes.py` checks that they agree.

Mapping: `Literal[...]` → a combo of its values; `bool` → BOOLEAN; `int` → INT (min/max from
ge/le, step from multiple_of); `float` → FLOAT (min/max from ge/gt/le/lt, step from the field's
`ui.step`); `float | None` with a lower bound of 0 → FLOAT where 0 means None ("off"); `str` →
STRING. Field order follows `json_schema_extra["ui"]["order"]`. Imports nothing heavy: the
settings models are pydantic only.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Iterable
from typing import Any, Literal

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from ..errors import PersonaError


class SettingsInputError(PersonaError, TypeError):
    """A settings field has a type no ComfyUI widget shows (a programming error in a node)."""


def _bounds(info: FieldInfo) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for meta in info.metadata:
        for attr, key in (("ge", "min"), ("gt", "min"), ("le", "max"), ("lt", "max"), ("multiple_of", "step")):
            value = getattr(meta, attr, None)
            if value is not None:
                out[key] = value
    return out


def _ui(info: FieldInfo) -> dict[str, Any]:
    extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
    return dict(extra.get("ui", {}))


def _optional(annotation: Any) -> tuple[Any, bool]:
    """(the type inside `X | None`, True) or (annotation, False)."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(annotation)) == 2:
            return args[0], True
    return annotation, False


def field_input(model: type[BaseModel], name: str) -> tuple:
    """The ComfyUI input spec of one settings field."""
    info = model.model_fields[name]
    annotation, optional = _optional(info.annotation)
    default = info.get_default(call_default_factory=True)
    options: dict[str, Any] = {"tooltip": info.description or name}
    if typing.get_origin(annotation) is Literal:
        choices = list(typing.get_args(annotation))
        return (choices, {**options, "default": default})
    if annotation is bool:
        return ("BOOLEAN", {**options, "default": default})
    if annotation is int:
        bounds = _bounds(info)
        return ("INT", {**options, "default": default, "min": bounds.get("min", -(2**31)),
                        "max": bounds.get("max", 2**31 - 1), "step": bounds.get("step", 1)})
    if annotation is float:
        bounds = _bounds(info)
        low = bounds.get("min", -1e9)
        if optional:
            if low != 0:
                raise SettingsInputError(f"{model.__name__}.{name}: an optional float needs a lower bound of 0 "
                                         "(0 stands for None on the widget)")
            default = 0.0 if default is None else default
            options["tooltip"] += " (0 = off)"
        return ("FLOAT", {**options, "default": float(default), "min": float(low),
                          "max": float(bounds.get("max", 1e9)), "step": float(_ui(info).get("step", 0.01))})
    if annotation is str:
        return ("STRING", {**options, "default": default})
    raise SettingsInputError(f"{model.__name__}.{name}: no ComfyUI widget for {info.annotation!r}")


def node_inputs(model: type[BaseModel], names: Iterable[str] | None = None, *,
                load: bool | None = None) -> dict[str, tuple]:
    """Input specs for `names` (default: every field whose `ui.is_load_param` equals `load`,
    or every field when `load` is None), in the fields' UI order."""
    if names is None:
        names = [n for n, info in model.model_fields.items()
                 if load is None or _ui(info).get("is_load_param") == load]
    ordered = sorted(names, key=lambda n: _ui(model.model_fields[n]).get("order", 1_000))
    return {name: field_input(model, name) for name in ordered}


def settings_values(model: type[BaseModel], values: dict[str, Any]) -> dict[str, Any]:
    """The node's widget values for `model`'s fields, with 0 turned back into None for
    optional floats (the inverse of `field_input`)."""
    out = {}
    for name, value in values.items():
        if name not in model.model_fields:
            continue
        _, optional = _optional(model.model_fields[name].annotation)
        out[name] = None if optional and value == 0 else value
    return out


def settings_from_inputs(model: type[BaseModel], values: dict[str, Any], **fixed: Any) -> BaseModel:
    """The validated settings from a node's inputs (fields the node does not show keep their
    defaults; `fixed` sets others, e.g. a nested model)."""
    return model.model_validate({**settings_values(model, values), **fixed})
