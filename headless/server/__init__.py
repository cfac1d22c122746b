"""The headless streaming server: the `/persona/ws` chat protocol, the chat page, health and metrics.

`PersonaService` owns sessions; `add_routes` mounts its handlers on any aiohttp router
(standalone here, ComfyUI's PromptServer there); `create_app` is the standalone app.
"""

from __future__ import annotations

from .config import InsecureBindError, ServerConfig, check_exposure, is_loopback
from .service import STATIC_DIR, PersonaService, add_routes, create_app

__all__ = [
    "STATIC_DIR",
    "InsecureBindError",
    "PersonaService",
    "ServerConfig",
    "add_routes",
    "check_exposure",
    "create_app",
    "is_loopback",
]
