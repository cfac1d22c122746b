"""Interpreter backends: free text → ordered directives plus an in-character reply.

`get_interpreter(name, **options)` is the one way to build a backend by name; the
server, the CLI and the nodes use it so that a backend is a setting, not an import.
"""

from __future__ import annotations

from collections.abc import Callable

from .base import MAX_UTTERANCE_CHARS, Interpretation, Interpreter, InterpretRequest, Turn

__all__ = [
    "BACKENDS",
    "MAX_UTTERANCE_CHARS",
    "Interpretation",
    "InterpretRequest",
    "Interpreter",
    "Turn",
    "UnknownBackendError",
    "get_interpreter",
]


class UnknownBackendError(ValueError):
    """No interpreter backend by that name; the message lists the known names."""


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
        raise UnknownBackendError(f"unknown interpreter backend {name!r}; known: {', '.join(BACKENDS)}")
    return factory(**options)
