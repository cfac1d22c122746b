"""Interpreter backends: free text → ordered directives plus an in-character reply.

`get_interpreter(name, **options)` is the one way to build a backend by name; the
server, the CLI and the nodes use it so that a backend is a setting, not an import.
"""

from __future__ import annotations

from collections.abc import Callable

from ...errors import PersonaError
from .base import MAX_UTTERANCE_CHARS, Interpretation, Interpreter, InterpretRequest, Turn

__all__ = [
    "BACKENDS",
    "MAX_UTTERANCE_CHARS",
    "Interpretation",
    "InterpretRequest",
    "Interpreter",
    "Turn",
    "InterpreterOptionError",
    "UnknownBackendError",
    "UnknownInterpreterError",
    "get_interpreter",
    "parse_options",
]


class UnknownInterpreterError(PersonaError, ValueError):
    """No interpreter backend by that name; the message lists the known names."""

    code = "unknown_interpreter"


#: The name callers used before the video side got its own unknown-backend error.
UnknownBackendError = UnknownInterpreterError


class InterpreterOptionError(PersonaError, ValueError):
    """An interpreter option is malformed or out of range (the message names it)."""

    code = "bad_interpreter_option"


def parse_options(items: str | list[str] | tuple[str, ...] | None) -> dict[str, str]:
    """Backend options from `KEY=VALUE` items (CLI `--option`, one per line in the ComfyUI
    node's text box); blank lines and `#` comments are skipped."""
    if items is None:
        return {}
    lines = items.splitlines() if isinstance(items, str) else list(items)
    options: dict[str, str] = {}
    for line in lines:
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.strip():
            raise InterpreterOptionError(f"an option must look like KEY=VALUE, got {line!r}")
        options[key.strip()] = value.strip()
    return options


def _embedded(**options: object) -> Interpreter:
    from .embedded import EmbeddedInterpreter

    return EmbeddedInterpreter(**options)  # type: ignore[arg-type]


def _openai(**options: object) -> Interpreter:
    from .openai_compat import OpenAIInterpreter

    return OpenAIInterpreter(**options)  # type: ignore[arg-type]


def _llamacpp(**options: object) -> Interpreter:
    from .llamacpp import LlamaCppInterpreter

    return LlamaCppInterpreter(**options)  # type: ignore[arg-type]


#: backend name → factory (imports the backend module only when it is asked for)
BACKENDS: dict[str, Callable[..., Interpreter]] = {
    "embedded": _embedded,
    "openai": _openai,
    "llamacpp": _llamacpp,
}


def get_interpreter(name: str = "embedded", **options: object) -> Interpreter:
    """The backend called `name`, built with `options` (each backend documents its own)."""
    factory = BACKENDS.get(name)
    if factory is None:
        raise UnknownInterpreterError(f"unknown interpreter backend {name!r}; known: {', '.join(BACKENDS)}")
    return factory(**options)
