"""Renderer backends by name: `create_backend("preview")`, later `create_backend("longlive")`.

Each entry is a module path and a class name, imported only when that backend is created,
so listing or choosing a backend never imports torch (ARCHITECTURE.md: cheap imports).
Adding a backend is one line in `_BACKENDS`.
"""

from __future__ import annotations

import importlib

from .backend import RendererBackend, RenderError

__all__ = ["UnknownRendererError", "backend_names", "create_backend"]

#: name → (module relative to this package, class name)
_BACKENDS: dict[str, tuple[str, str]] = {
    "preview": (".preview", "PreviewRenderer"),
    "longlive": (".longlive.engine", "LongLiveBackend"),
}


class UnknownRendererError(RenderError, KeyError):
    """No renderer backend of that name; the message lists the known ones. (Named apart from
    `persona.interpreter.UnknownBackendError`, which is about interpreter backends.)"""

    code = "unknown_renderer"

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


def backend_names() -> list[str]:
    return sorted(_BACKENDS)


def create_backend(name: str, **options: object) -> RendererBackend:
    """A new backend instance; `options` go to its constructor (e.g. chunk_frames=4)."""
    try:
        module_name, class_name = _BACKENDS[name]
    except KeyError:
        raise UnknownRendererError(
            f"unknown renderer backend {name!r}; known: {', '.join(backend_names())}"
        ) from None
    module = importlib.import_module(module_name, __package__)
    backend = getattr(module, class_name)(**options)
    assert isinstance(backend, RendererBackend), f"{class_name} does not implement RendererBackend"
    return backend
