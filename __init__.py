"""comfyui-persona: a real-time AI persona as a ComfyUI custom-node pack.

ComfyUI imports this file from `custom_nodes/` and reads `NODE_CLASS_MAPPINGS`,
`NODE_DISPLAY_NAME_MAPPINGS` and `WEB_DIRECTORY`. Installed with pip, the same folder is
the package `comfyui_persona`. The node mappings are resolved lazily (module
`__getattr__`), so `import comfyui_persona.persona` stays cheap: no torch, no nodes.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

WEB_DIRECTORY = "./web_extension"

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]


def __getattr__(name: str) -> Any:
    if name in ("NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"):
        from . import nodes
        from .headless.comfyui_routes import register_with_comfyui

        # ComfyUI reads the mappings right after importing this file: the moment to mount
        # the chat routes on its server (a no-op outside a running ComfyUI).
        register_with_comfyui()
        globals().update(NODE_CLASS_MAPPINGS=nodes.NODE_CLASS_MAPPINGS,
                         NODE_DISPLAY_NAME_MAPPINGS=nodes.NODE_DISPLAY_NAME_MAPPINGS)
        return globals()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
