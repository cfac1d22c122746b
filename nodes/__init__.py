"""ComfyUI node classes: thin adapters over `persona` and `video`.

Node modules import nothing heavy at module load (torch is imported inside the node
functions), so ComfyUI's loader and the headless runner stay quick to start.
"""

from __future__ import annotations

NODE_CLASS_MAPPINGS: dict[str, type] = {}
NODE_DISPLAY_NAME_MAPPINGS: dict[str, str] = {}
