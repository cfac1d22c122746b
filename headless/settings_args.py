"""Command-line flags generated from a pydantic settings model, plus a settings file.

One source for every setting (STYLE.md rule 19): a field of `ServerConfig` is a flag of
`persona serve` (`max_sessions` → `--max-sessions`), with its description as the help text
and its type and bounds checked by the model, never by a hand copy. A settings file (TOML or
JSON, `--config FILE`) holds the same fields under the same names, so a local run and a
cluster deployment read one format. Precedence: model defaults < settings file < flags.

Short names a user already knows stay as aliases (`--rate` for `--messages-per-second`).
"""

from __future__ import annotations

import argparse
import json
import tomllib
import types
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from ..errors import PersonaError

__all__ = ["SettingsError", "add_model_arguments", "load_settings_file", "settings_from_args", "validation_message"]


class SettingsError(PersonaError, ValueError):
    """A settings file or flag the model refuses; the message names the field."""


_UNSET = object()


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _base_type(annotation: Any) -> Any:
    """`int | None` → int; `Annotated[float, ...]` → float; `list[str]` → list."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _base_type(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _base_type(args[0]) if len(args) == 1 else str
    if origin is typing.Literal:
        return str
    if origin in (list, tuple, set):
        return list
    return annotation


def add_model_arguments(
    parser: argparse.ArgumentParser, model: type[BaseModel], aliases: dict[str, list[str]] | None = None,
    skip: tuple[str, ...] = (),
) -> None:
    """A flag per field of `model` (help = its description). Flags default to "not given",
    so `settings_from_args` knows which ones the user set. Booleans get `--x/--no-x`;
    lists repeat (`--allowed-origin A --allowed-origin B`)."""
    aliases = aliases or {}
    group = parser.add_argument_group("settings (also in a --config file, same names)")
    for name, field in model.model_fields.items():
        if name in skip:
            continue
        kind = _base_type(field.annotation)
        help_text = (field.description or "").replace("%", "%%")
        default = field.get_default(call_default_factory=True)
        if default not in (None, [], ""):
            help_text += f" (default {default})"
        flags = [_flag(name), *aliases.get(name, [])]
        if kind is bool:
            group.add_argument(*flags, dest=name, action=argparse.BooleanOptionalAction, default=_UNSET, help=help_text)
        elif kind is list:
            singular = _flag(name.rstrip("s"))
            # None, not _UNSET: argparse's "append" appends to the default object itself.
            group.add_argument(singular, *flags[1:], dest=name, action="append", default=None, metavar="TEXT",
                               help=help_text + " (repeat for several)")
        else:
            choices = typing.get_args(field.annotation) if typing.get_origin(field.annotation) is typing.Literal else None
            metavar = None if choices else {int: "N", float: "X"}.get(kind, "TEXT")
            group.add_argument(*flags, dest=name, default=_UNSET, choices=choices, metavar=metavar, help=help_text)


def load_settings_file(path: Path) -> dict[str, Any]:
    """The fields a TOML or JSON settings file sets (`.json` is JSON, anything else TOML)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise SettingsError(f"cannot read settings file {path}: {exc.strerror or exc}") from None
    try:
        data = json.loads(text) if Path(path).suffix.lower() == ".json" else tomllib.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as exc:
        raise SettingsError(f"settings file {path} is not valid {'JSON' if str(path).endswith('.json') else 'TOML'}: {exc}") from None
    if not isinstance(data, dict):
        raise SettingsError(f"settings file {path} must hold a table of settings")
    return data


def settings_from_args(model: type[BaseModel], args: argparse.Namespace, config_file: Path | None = None,
                       **overrides: Any) -> BaseModel:
    """The model from its defaults, then the file, then `overrides` (the caller's own values,
    e.g. from the environment), then the flags the user gave; `SettingsError` names a bad field."""
    values: dict[str, Any] = {}
    if config_file is not None:
        values.update(load_settings_file(config_file))
    values.update({k: v for k, v in overrides.items() if v is not None})
    for name in model.model_fields:
        given = getattr(args, name, _UNSET)
        if given is not _UNSET and given is not None:  # None: a list flag not given
            values[name] = given
    try:
        return model(**values)
    except ValidationError as exc:
        raise SettingsError(validation_message(exc)) from None


def validation_message(exc: ValidationError) -> str:
    """One line for a pydantic error: the first bad field as its flag name, what is wrong,
    the value given, and how many more problems there are (`port: Input should be ... (got
    '99999')`); pydantic's own text is a multi-line dump with URLs."""
    errors = exc.errors()
    if not errors:
        return str(exc).splitlines()[0]
    first = errors[0]
    where = ".".join(str(p) for p in first["loc"]) or "settings"
    value = first.get("input")
    shown = f" (got {value!r})" if not isinstance(value, (dict, list)) else ""
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{_flag(where)[2:]}: {first['msg']}{shown}{more}"
