"""ComfyUI's environment as the nodes see it: progress bars, model and output folders.

Nothing here imports ComfyUI. ComfyUI's `main.py` imports its `server` module, creates
`PromptServer.instance` and imports `folder_paths` and `comfy.utils` before it loads
custom nodes, so "are we inside ComfyUI?" is answered by looking at `sys.modules`, never by
importing: the headless runner (which runs the same node classes) stays ComfyUI-free, and
an unrelated top-level module called `server` elsewhere is never mistaken for it.
The chat routes ComfyUI serves for the pack live in `headless/comfyui_routes.py`.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any


def prompt_server() -> Any | None:
    """ComfyUI's running `PromptServer`, or None outside ComfyUI (imports nothing)."""
    module = sys.modules.get("server")
    server_class = getattr(module, "PromptServer", None)
    return getattr(server_class, "instance", None)


def register_models_folder(name: str = "persona") -> bool:
    """Add ComfyUI/models/<name>/ as a model folder (extra_model_paths.yaml may add more)."""
    folder_paths = sys.modules.get("folder_paths")
    if folder_paths is None or prompt_server() is None and "comfy.utils" not in sys.modules:
        return False
    folder_paths.add_model_folder_path(name, os.path.join(folder_paths.models_dir, name), is_default=True)
    return True


class _NoProgress:
    """Progress sink outside a ComfyUI run (headless runner, tests): records nothing."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.current = 0

    def update(self, value: int) -> None:
        self.current = min(self.total, self.current + value)

    def update_absolute(self, value: int, total: int | None = None) -> None:
        if total is not None:
            self.total = total
        self.current = min(self.total, value)


def progress(total: int) -> Any:
    """A progress bar for the node that is running now: `update(n)` / `update_absolute(v)`.

    Inside a ComfyUI run this is `comfy.utils.ProgressBar`, whose hook sends `progress`
    messages to the UI (the green bar on the node), feeds ComfyUI's progress registry and
    raises ComfyUI's interrupt exception when the user cancels. Anywhere else, or inside
    ComfyUI's process but outside a queued run (the chat service's own ticks), it is a
    silent stand-in, so no stray progress is reported against an unrelated node.
    """
    utils = sys.modules.get("comfy.utils")
    context = sys.modules.get("comfy_execution.utils")
    if utils is None or context is None or context.get_executing_context() is None:
        return _NoProgress(total)
    return utils.ProgressBar(total)


def throw_if_interrupted() -> None:
    """Raise ComfyUI's interrupt exception when the user cancelled the run (Cancel,
    `/interrupt`); nothing outside ComfyUI. Long nodes call it between steps, where stopping
    leaves nothing half done (before a chunk, between denoising passes)."""
    management = sys.modules.get("comfy.model_management")
    if management is not None:
        management.throw_exception_if_processing_interrupted()


def models_folder(kind: str) -> list[Path]:
    """ComfyUI's folders for model `kind` ("diffusion_models", "loras", ...); [] outside ComfyUI."""
    folder_paths = sys.modules.get("folder_paths")
    if folder_paths is None:
        return []
    try:
        return [Path(p) for p in folder_paths.get_folder_paths(kind)]
    except KeyError:
        return []


def preview_image(rgb: Any, prefix: str = "persona") -> dict | None:
    """Save `rgb` (H×W×3 uint8) as a PNG in ComfyUI's temp folder and return the entry a
    node's `ui.images` lists (what Preview Image does), so a queued Run shows the picture on
    the canvas; None outside ComfyUI."""
    folder_paths = sys.modules.get("folder_paths")
    if folder_paths is None:
        return None
    import secrets

    from PIL import Image

    folder = Path(folder_paths.get_temp_directory())
    folder.mkdir(parents=True, exist_ok=True)
    name = f"{prefix}_{secrets.token_hex(6)}.png"
    Image.fromarray(rgb).save(folder / name, compress_level=1)
    return {"filename": name, "subfolder": "", "type": "temp"}


def output_directory() -> Path | None:
    """ComfyUI's output folder (`--output-directory`), or None outside ComfyUI."""
    folder_paths = sys.modules.get("folder_paths")
    return Path(folder_paths.get_output_directory()) if folder_paths is not None else None
