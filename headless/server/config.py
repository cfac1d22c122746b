"""Server settings: one pydantic model with bounds, shared by the CLI and tests."""

from __future__ import annotations

import ipaddress
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ...errors import PersonaError

#: RFC 7064 / 7065 URLs as browsers and aiortc take them (IPv6 literals are not supported by aiortc).
_ICE_URL = re.compile(r"(?P<scheme>stuns?|turns?):(?P<host>[A-Za-z0-9.\-]+)(:(?P<port>[0-9]{1,5}))?"
                      r"(\?transport=(?P<transport>udp|tcp))?")


class IceServer(BaseModel):
    """One STUN or TURN server handed to both peers (`RTCIceServer` in the browser's terms)."""

    model_config = ConfigDict(extra="forbid")

    urls: list[str] = Field(min_length=1, max_length=8, description="stun:host:port or turn:host:port?transport=udp URLs.")
    username: str | None = Field(default=None, max_length=256, description="TURN user name.")
    credential: str | None = Field(default=None, max_length=256, description="TURN password.")

    @model_validator(mode="before")
    @classmethod
    def _from_url(cls, value: Any) -> Any:
        """A bare URL (`--ice-server stun:host:3478` on the command line) is a server without credentials."""
        return {"urls": [value]} if isinstance(value, str) else value

    @field_validator("urls")
    @classmethod
    def _stun_or_turn(cls, urls: list[str]) -> list[str]:
        for url in urls:
            found = _ICE_URL.fullmatch(url)
            if not found:
                raise ValueError(f"{url[:80]!r} is not a stun:, stuns:, turn: or turns: URL "
                                 "(scheme:host[:port], turn with ?transport=udp or tcp)")
            if found["port"] and not 1 <= int(found["port"]) <= 65535:
                raise ValueError(f"{url[:80]!r}: the port must be in [1, 65535]")
            if found["transport"] and not found["scheme"].startswith("turn"):
                raise ValueError(f"{url[:80]!r}: only turn: URLs take a transport")
        return urls

    @model_validator(mode="after")
    def _turn_needs_credentials(self) -> IceServer:
        """Browsers refuse a TURN server without both (RTCPeerConnection throws)."""
        if any(u.startswith("turn") for u in self.urls) and not (self.username and self.credential):
            raise ValueError("a turn: or turns: server needs a username and a credential")
        return self


class ServerConfig(BaseModel):
    """Everything `persona serve` can be told (house rule 2: extra="forbid", bounded)."""

    model_config = ConfigDict(extra="forbid")

    host: str = Field(default="127.0.0.1", description="Address to bind.")
    port: Annotated[int, Field(ge=0, le=65535)] = Field(default=8189, description="0: any free port.")
    token: str | None = Field(default=None, description="Shared secret clients send in hello.token.")
    max_sessions: Annotated[int, Field(ge=1, le=1000)] = Field(default=8, description="Concurrent sessions before `busy`.")
    resume_grace_s: Annotated[float, Field(ge=0.0, le=3600.0)] = Field(
        default=30.0, description="How long a disconnected session waits to be resumed."
    )
    messages_per_second: Annotated[int, Field(ge=1, le=10_000)] = Field(
        default=20, description="Per-connection rate limit (a sliding one-second window)."
    )
    jpeg_quality: Annotated[int, Field(ge=10, le=100)] = Field(default=80, description="JPEG quality of the frames (10..100).")
    encoder: Literal["simplejpeg", "turbojpeg", "pillow"] = Field(
        default="simplejpeg", description="JPEG library (simplejpeg is the fastest measured, docs/server.md)."
    )
    cache_policy: Literal["classic", "lru", "none"] = Field(default="classic", description="Workflow executor cache policy.")
    frame_queue: Annotated[int, Field(ge=1, le=256)] = Field(
        default=8, description="Encoded frames a session may hold; older ones are dropped first."
    )
    speech: bool = Field(default=True, description="Speak replies (PROTOCOL kind-2 audio, lip-sync).")
    comfyui: str | None = Field(
        default=None,
        description="A ComfyUI install (its folder) whose executor and nodes run the workflows: core and "
        "third-party node types in the graph. Run persona serve with ComfyUI's Python (docs/comfyui.md).",
    )
    comfyui_output_dir: str | None = Field(
        default=None, description="With --comfyui: where ComfyUI's save nodes (Save Video, Save Image...) write, as "
        "ComfyUI's own --output-directory (default: the install's output folder).",
    )
    recordings_dir: str | None = Field(
        default=None, description="Where `record` writes MP4s (default: the user's data dir, see docs/server.md)."
    )
    keep_conversations: bool = Field(
        default=True, description="Save each session's conversation after every turn, so a client resumes it "
        "after a server restart (history, what the interpreter remembers, the character's pose).",
    )
    conversations_dir: str | None = Field(
        default=None, description="Where conversations are saved (default: the user's data dir, see docs/server.md)."
    )
    conversations_max: Annotated[int, Field(ge=1, le=1_000_000)] = Field(
        default=1000, description="Saved conversations kept; the oldest go first."
    )
    conversations_max_days: Annotated[float, Field(gt=0, le=3650)] = Field(
        default=30.0, description="A saved conversation not resumed for this long is deleted."
    )
    personas_dir: str | None = Field(
        default=None, description="Where imported cards are stored (default: $PERSONA_DIR, else the user's data dir)."
    )
    hard_frame_limit: Annotated[int, Field(ge=65536, le=64 * 1024 * 1024)] = Field(
        default=1024 * 1024,
        description="Frames above this are cut off by the WebSocket layer (connection closed, 1009); "
        "frames between 64 KiB and this get a `too_large` error and the connection stays.",
    )
    # -- who may connect (docs/security.md) -------------------------------------------------
    allowed_origins: list[str] = Field(
        default_factory=list,
        description="Web origins besides the served one whose pages may use the server "
        "(e.g. https://app.example.com). Pages of any other origin, and `null`, are refused.",
    )
    allowed_hosts: list[str] = Field(
        default_factory=list,
        description="Host names the server answers to besides IP addresses and localhost "
        "(a reverse proxy's or LAN name). Any other Host is refused (DNS rebinding).",
    )
    # -- resource bounds: what one client can make the server hold ----------------------------
    hello_timeout_s: Annotated[float, Field(gt=0.0, le=300.0)] = Field(
        default=10.0, description="A WebSocket that sends no valid `hello` within this is closed."
    )
    idle_timeout_s: Annotated[float, Field(gt=0.0, le=3600.0)] = Field(
        default=15.0,
        description="A connection that sends no complete request head within this (slow headers, "
        "an idle keep-alive) is closed. Headless server only (ComfyUI owns its sockets).",
    )
    body_timeout_s: Annotated[float, Field(gt=0.0, le=3600.0)] = Field(
        default=120.0, description="An upload (card import) must arrive within this."
    )
    max_connections: Annotated[int, Field(ge=1, le=100_000)] = Field(
        default=256, description="Open connections in all (WebSockets in both hosts; every socket headless)."
    )
    max_connections_per_ip: Annotated[int, Field(ge=1, le=100_000)] = Field(
        default=32, description="Open connections from one address (WebSockets in both hosts; every socket headless)."
    )
    max_sessions_per_ip: Annotated[int, Field(ge=1, le=1000)] = Field(
        default=4,
        description="Sessions one address may hold (attached or waiting to be resumed). A session "
        "waiting to be resumed gives its slot to a new client when the server is full.",
    )
    # -- disk ------------------------------------------------------------------------------------
    recordings_max_days: Annotated[float, Field(ge=0.0, le=36500.0)] = Field(
        default=30.0, description="Finished recordings older than this are deleted (0: kept forever)."
    )
    recordings_max_mb: Annotated[int, Field(ge=0, le=10_000_000)] = Field(
        default=4096, description="Recordings beyond this total are deleted, oldest first (never the one just "
        "finished), and one recording stops at this size (0: no bound)."
    )
    recording_max_minutes: Annotated[float, Field(gt=0.0, le=24 * 60.0)] = Field(
        default=60.0, description="A recording is stopped (and kept) after this long."
    )
    recordings_min_free_mb: Annotated[int, Field(ge=0, le=10_000_000)] = Field(
        default=512, description="No recording starts, and one in progress stops, when the disk has less free."
    )
    # -- WebRTC media (protocol 1.1, docs/server.md) -------------------------------------------
    webrtc: bool = Field(
        default=True,
        description="Offer WebRTC media (video and Opus audio over aiortc) to clients that send webrtc.offer; "
        "the WebSocket stays for control and is the media fallback. Needs the webrtc extra (aiortc).",
    )
    ice_servers: list[IceServer] = Field(
        default_factory=list, max_length=16,
        description="STUN/TURN servers for WebRTC, given to the server's peers and announced in ready.webrtc "
        "(none: host candidates only, enough on localhost and a LAN). In a settings file: "
        '[{"urls": ["stun:stun.example.org:3478"]}].',
    )
    webrtc_offers_per_minute: Annotated[int, Field(ge=1, le=600)] = Field(
        default=6, description="webrtc.offer messages one connection may send per minute (each builds a peer connection)."
    )
    webrtc_connect_timeout_s: Annotated[float, Field(gt=0.0, le=300.0)] = Field(
        default=20.0, description="A WebRTC peer not connected this long after its answer is closed (webrtc_failed)."
    )
    log_repeats: Annotated[int, Field(ge=1, le=100_000)] = Field(
        default=20, description="The same log message at most this often per 10 s (a flood is summarised)."
    )

    @model_validator(mode="after")
    def _comfyui_output_needs_comfyui(self) -> ServerConfig:
        """A setting that would do nothing is a mistake worth naming."""
        if self.comfyui_output_dir is not None and self.comfyui is None:
            raise ValueError("comfyui_output_dir is for ComfyUI's save nodes: it needs comfyui (--comfyui PATH)")
        return self


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


class InsecureBindError(PersonaError, ValueError):
    """Binding beyond loopback without a token would let anyone on the network drive it."""


def check_exposure(config: ServerConfig) -> None:
    if not is_loopback(config.host) and not config.token:
        raise InsecureBindError(
            f"refusing to listen on {config.host!r} without a token: anyone who can reach it could "
            "use it. Pass --token SECRET (or set PERSONA_TOKEN), or bind 127.0.0.1."
        )
