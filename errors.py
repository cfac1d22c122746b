"""The one error root of comfyui-persona, and the one missing-model-file error.

Every exception the pack raises on purpose derives from `PersonaError`, so a host (the
server, a ComfyUI node, the CLI) can tell "the user or the environment did something we
expected and explained" from a bug with one `except`. Classes keep a built-in base too
(`ValueError`, `FileNotFoundError`, ...) where callers already catch that.

Every loader of weights or model files raises `ModelFileMissingError` for a file that is
not there, with the same structured payload (`name`, `purpose`, `size_bytes`, `source`,
`looked_in`), so `persona models check`, the ComfyUI error dialog and the headless log all
say the same thing about it.

This module sits at the package root (not in `persona/` or `video/`) because every layer
raises these, and it imports nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["ModelFileMissingError", "PersonaError", "size_text"]


class PersonaError(Exception):
    """Root of every error comfyui-persona raises on purpose (never a bug)."""

    #: Short machine-readable kind, for payloads (`error.code`); subclasses may override.
    code = "error"

    def payload(self) -> dict[str, Any]:
        """A JSON-able description: what the wire and ComfyUI's error dialog show."""
        return {"code": self.code, "type": type(self).__name__, "message": str(self)}


def size_text(size_bytes: int | None, exact: bool = True) -> str:
    """'1.27 GiB', 'about 484 MiB', or 'size unknown'."""
    if not size_bytes:
        return "size unknown"
    about = "" if exact else "about "
    if size_bytes >= 2**30:
        return f"{about}{size_bytes / 2**30:.2f} GiB"
    return f"{about}{max(1, round(size_bytes / 2**20))} MiB"


class ModelFileMissingError(PersonaError, FileNotFoundError):
    """A model/weight file a component needs is not where it was looked for.

    `name` is the file's name, `purpose` what it is for, `size_bytes` its expected size
    (None when unknown), `source` where it is published (a URL or a package to install),
    `looked_in` the paths tried, `hint` how to point the loader elsewhere.
    """

    code = "model_file_missing"

    def __init__(
        self,
        name: str,
        *,
        purpose: str,
        source: str,
        looked_in: Sequence[str | Path] = (),
        size_bytes: int | None = None,
        size_exact: bool = True,
        hint: str = "",
    ) -> None:
        self.name = name
        self.purpose = purpose
        self.source = source
        self.looked_in = [str(p) for p in looked_in]
        self.size_bytes = size_bytes
        self.size_exact = size_exact
        self.hint = hint
        tried = f" — looked for {', '.join(self.looked_in)}" if self.looked_in else ""
        message = f"missing model file {name} ({purpose}; {size_text(size_bytes, size_exact)}){tried}. It is published at {source}."
        if hint:
            message += f" {hint}"
        super().__init__(message)

    def __reduce__(self):  # picklable across processes (Ray, the ComfyUI worker)
        return (
            _rebuild_missing,
            (self.name, self.purpose, self.source, self.looked_in, self.size_bytes, self.size_exact, self.hint),
        )

    def payload(self) -> dict[str, Any]:
        return {
            **super().payload(),
            "name": self.name,
            "purpose": self.purpose,
            "size_bytes": self.size_bytes,
            "source": self.source,
            "looked_in": list(self.looked_in),
        }


def _rebuild_missing(name, purpose, source, looked_in, size_bytes, size_exact, hint):
    return ModelFileMissingError(
        name, purpose=purpose, source=source, looked_in=looked_in, size_bytes=size_bytes, size_exact=size_exact, hint=hint
    )
