"""Server settings: one pydantic model with bounds, shared by the CLI and tests."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field


class ServerConfig(BaseModel):
    """Everything `persona serve` can be told (house rule 2: extra="forbid", bounded)."""

    model_config = ConfigDict(extra="forbid")

    host: str = Field(default="127.0.0.1", description="Address to bind.")
    port: Annotated[int, Field(ge=0, le=65535)] = Field(default=8189, description="0: any free port.")
    token: str | None = Field(default=None, description="Shared secret clients send in hello.token.")
    max_sessions: Annotated[int, Field(ge=1, le=1000)] = 8
    resume_grace_s: Annotated[float, Field(ge=0.0, le=3600.0)] = Field(
        default=30.0, description="How long a disconnected session waits to be resumed."
    )
    messages_per_second: Annotated[int, Field(ge=1, le=10_000)] = Field(
        default=20, description="Per-connection rate limit (a sliding one-second window)."
    )
    jpeg_quality: Annotated[int, Field(ge=10, le=100)] = 80
    encoder: str = Field(default="simplejpeg", description="simplejpeg | turbojpeg | pillow")
    cache_policy: str = Field(default="classic", description="Executor cache: classic | lru | none")
    frame_queue: Annotated[int, Field(ge=1, le=256)] = Field(
        default=8, description="Encoded frames a session may hold; older ones are dropped first."
    )
    speech: bool = Field(default=True, description="Speak replies (PROTOCOL kind-2 audio, lip-sync).")
    recordings_dir: str | None = Field(
        default=None, description="Where `record` writes MP4s (default: the user's data dir, see docs/server.md)."
    )
    personas_dir: str | None = Field(
        default=None, description="Where imported cards are stored (default: $PERSONA_DIR, else the user's data dir)."
    )
    hard_frame_limit: Annotated[int, Field(ge=65536, le=64 * 1024 * 1024)] = Field(
        default=1024 * 1024,
        description="Frames above this are cut off by the WebSocket layer (connection closed, 1009); "
        "frames between 64 KiB and this get a `too_large` error and the connection stays.",
    )


def data_dir(kind: str) -> Path:
    """`$XDG_DATA_HOME/comfyui-persona/<kind>` (default ~/.local/share/...): kept across runs."""
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "comfyui-persona" / kind


def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach (a token is optional there)."""
    if host in ("localhost", ""):
        return host == "localhost"
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class InsecureBindError(ValueError):
    """Binding beyond loopback without a token would let anyone on the network drive it."""


def check_exposure(config: ServerConfig) -> None:
    if not is_loopback(config.host) and not config.token:
        raise InsecureBindError(
            f"refusing to listen on {config.host!r} without a token: anyone who can reach it could "
            "use it. Pass --token SECRET (or set PERSONA_TOKEN), or bind 127.0.0.1."
        )
