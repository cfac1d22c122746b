"""Persona chat protocol v1.1 (PROTOCOL.md): parsing client messages, building server ones.

Pure functions and plain data, no I/O, so the rules are testable without a socket and
the ComfyUI mount speaks exactly the same protocol. Every rule a client can break maps
to one `ProtocolError` with a PROTOCOL.md error code; the message names the field.
"""

from __future__ import annotations

import json
import re
import struct
from dataclasses import dataclass
from typing import Any

from ...errors import PersonaError
from ...persona.text import holds_lone_surrogate

#: The `protocol` number in `ready` and `/persona/health` (PROTOCOL.md's version).
PROTOCOL_VERSION = 1
#: Largest text frame accepted (PROTOCOL.md: "frame over 64 KiB" → too_large).
MAX_FRAME_BYTES = 64 * 1024
#: Longest `chat.text` (PROTOCOL.md), the interpreter's limit too.
MAX_TEXT_CHARS = 4000
#: Longest client message id kept (ids are echoed back in `reply_to`).
MAX_ID_CHARS = 200
MAX_FPS_LIMIT = 120
_WORKFLOW_ID = re.compile(r"^[0-9a-f]{24}$")
_CLIENT_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")

#: Media kinds in binary frames.
MEDIA_JPEG = 1
MEDIA_AUDIO = 2
_MEDIA_HEADER = struct.Struct(">BIQ")  # u8 kind, u32 frame_index, u64 pts_ms (big-endian)

CLIENT_TYPES = ("hello", "chat", "action", "reset", "ping", "record", "resume", "webrtc.offer", "webrtc.candidate",
                "webrtc.close", "webrtc.playout")
ERROR_CODES = (
    "bad_json",
    "unknown_type",
    "invalid",
    "too_large",
    "not_ready",
    "unknown_persona",
    "unauthorized",
    "rate_limited",
    "busy",
    "internal",
    "interrupted",
    "session_in_use",
    "bad_offer",  # 1.1: a `webrtc.offer` that cannot be answered (malformed SDP, no codec we send)
    "webrtc_unavailable",  # 1.1: WebRTC is off on this server, or aiortc is not installed
    "webrtc_failed",  # 1.1: the peer connection failed or timed out; media went back to the WebSocket
    "node_failed",  # 1.1: a node of the session's workflow raised (a missing model file, a node pack's error)
)
#: Codes after which the server closes the connection.
FATAL_CODES = frozenset({"unauthorized", "busy"})


def failure_code(exc: BaseException) -> str:
    """The wire code for an error a session lane caught: a node of the workflow that raised
    is `node_failed` (the message names the node); anything else is `internal`, a bug."""
    return "node_failed" if isinstance(exc, PersonaError) and exc.code == "node_failed" else "internal"


class ProtocolError(PersonaError):
    """A client message broke a PROTOCOL.md rule; `code` is the wire error code."""

    def __init__(self, code: str, message: str, reply_to: str | None = None) -> None:
        assert code in ERROR_CODES, code
        super().__init__(message)
        self.code = code
        self.message = message
        self.reply_to = reply_to

    @property
    def fatal(self) -> bool:
        return self.code in FATAL_CODES


@dataclass(frozen=True)
class Hello:
    persona: str | None
    session: str | None
    token: str | None
    max_fps: int | None
    workflow: str | None = None  # an uploaded workflow's id (POST /persona/workflows): stream that graph
    comfy_client_id: str | None = None  # inside ComfyUI: the frontend client whose canvas shows the runs
    # 1.1: what to do when `session` is open on another connection: None (absent, as in 1.0)
    # or True takes it over; False refuses with `session_in_use` (a duplicated tab must not steal).
    takeover: bool | None = None
    # 1.1: a scene of 1-4 persona ids, left to right, instead of `persona` (issue 20).
    scene: tuple[str, ...] | None = None

    @property
    def cast(self) -> tuple[str, ...] | None:
        """The personas asked for, left to right (`persona` is a cast of one); None: any. A
        session resumes only when it holds exactly these (live or restored alike)."""
        return self.scene or ((self.persona,) if self.persona else None)


@dataclass(frozen=True)
class Chat:
    id: str
    text: str


@dataclass(frozen=True)
class Action:
    id: str
    directive: dict  # validated ActionDirective fields (checked against the vocabulary later)


@dataclass(frozen=True)
class Reset:
    id: str


@dataclass(frozen=True)
class Ping:
    id: str | None


@dataclass(frozen=True)
class Record:
    """Start (`on: true`) or stop (`on: false`) recording the session to MP4 (server extension)."""

    id: str
    on: bool


@dataclass(frozen=True)
class Resume:
    """Go on streaming after an `interrupted` error (ComfyUI's Cancel paused the stream)."""

    id: str | None


@dataclass(frozen=True)
class WebRTCOffer:
    """1.1: an SDP offer for WebRTC media; the server answers `webrtc.answer` (non-trickle)."""

    id: str | None
    sdp: str


@dataclass(frozen=True)
class WebRTCCandidate:
    """1.1: one trickled remote ICE candidate (`candidate` "" or None: end of candidates)."""

    candidate: str | None
    sdp_mid: str | None
    sdp_mline_index: int | None


@dataclass(frozen=True)
class WebRTCClose:
    """1.1: stop WebRTC media; frames and audio go back to the WebSocket."""

    id: str | None


@dataclass(frozen=True)
class WebRTCPlayout:
    """1.1: how much later the viewer hears a sound than it sees the picture sent with it, as the
    receiver measures it (its audio output latency, which a browser's lip-sync leaves out, less
    the audio−video skew that sync left); the server sends speech that much ahead of its pictures."""

    audio_lag_ms: float


ClientMessage = (Hello | Chat | Action | Reset | Ping | Record | Resume | WebRTCOffer | WebRTCCandidate | WebRTCClose
                 | WebRTCPlayout)

#: Longest SDP accepted in `webrtc.offer` (a browser's offer with every codec is ~6-10 KB).
MAX_SDP_CHARS = 32 * 1024
#: Longest `webrtc.candidate.candidate` line.
MAX_CANDIDATE_CHARS = 1024
#: Largest `webrtc.playout.audio_lag_ms`: a wireless headset's output latency (the pictures wait that long).
MAX_AUDIO_LAG_MS = 200.0


def frame_too_large(data: str | bytes) -> bool:
    """Whether a frame exceeds MAX_FRAME_BYTES (UTF-8 bytes for text)."""
    if len(data) * (4 if isinstance(data, str) else 1) <= MAX_FRAME_BYTES:
        return False  # cheap bound: no encoding needed for ordinary messages
    size = len(data.encode("utf-8", "surrogatepass")) if isinstance(data, str) else len(data)
    return size > MAX_FRAME_BYTES


def parse(data: str) -> ClientMessage:
    """One text frame → a typed message, or `ProtocolError` naming what is wrong."""
    try:
        obj = json.loads(data)
    except (ValueError, RecursionError):
        raise ProtocolError("bad_json", "the message is not valid JSON") from None
    if not isinstance(obj, dict):
        raise ProtocolError("bad_json", f"a message must be a JSON object, got {type(obj).__name__}")
    reply_to = _reply_to(obj)
    # Refused here, once, before any field reaches a file or a log. The frame itself is strict
    # UTF-8, so only a `\u` escape can make one: most messages skip the walk.
    if "\\u" in data and holds_lone_surrogate(obj):
        raise ProtocolError("invalid", "the message holds ill-formed Unicode (a lone UTF-16 surrogate)", reply_to)
    kind = obj.get("type")
    if not isinstance(kind, str):
        raise ProtocolError("invalid", "field 'type' is missing or not a string", reply_to)
    if kind not in CLIENT_TYPES:
        raise ProtocolError("unknown_type", f"unknown message type {kind[:50]!r}; known: {', '.join(CLIENT_TYPES)}", reply_to)
    return _PARSERS[kind](obj, reply_to)


def _reply_to(obj: dict) -> str | None:
    value = obj.get("id")
    if not isinstance(value, str) or holds_lone_surrogate(value):
        return None
    return value[:MAX_ID_CHARS]


def _id(obj: dict, required: bool = True) -> str | None:
    if "id" not in obj or obj["id"] is None:
        if required:
            raise ProtocolError("invalid", "field 'id' is required (a string)")
        return None
    value = obj["id"]
    if not isinstance(value, str):
        raise ProtocolError("invalid", "field 'id' must be a string")
    if len(value) > MAX_ID_CHARS:
        raise ProtocolError("invalid", f"field 'id' is longer than {MAX_ID_CHARS} characters")
    return value


def _optional_str(obj: dict, name: str, reply_to: str | None) -> str | None:
    value = obj.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ProtocolError("invalid", f"field '{name}' must be a string", reply_to)
    return value


def _hello(obj: dict, reply_to: str | None) -> Hello:
    persona = _optional_str(obj, "persona", reply_to)
    session = _optional_str(obj, "session", reply_to)
    token = _optional_str(obj, "token", reply_to)
    max_fps = None
    video = obj.get("video")
    if video is not None:
        if not isinstance(video, dict):
            raise ProtocolError("invalid", "field 'video' must be an object", reply_to)
        fmt = video.get("format", "jpeg")
        if fmt != "jpeg":
            raise ProtocolError("invalid", f"field 'video.format' must be 'jpeg', got {str(fmt)[:20]!r}", reply_to)
        if "max_fps" in video and video["max_fps"] is not None:
            value = video["max_fps"]
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_FPS_LIMIT:
                raise ProtocolError("invalid", f"field 'video.max_fps' must be an integer in [1, {MAX_FPS_LIMIT}]", reply_to)
            max_fps = value
    workflow = _optional_str(obj, "workflow", reply_to)
    if workflow is not None and not _WORKFLOW_ID.match(workflow):
        raise ProtocolError("invalid", "field 'workflow' is not a workflow id this server issues", reply_to)
    client = _optional_str(obj, "comfy_client_id", reply_to)
    if client is not None and not _CLIENT_ID.match(client):
        raise ProtocolError("invalid", "field 'comfy_client_id' is not a ComfyUI client id", reply_to)
    takeover = obj.get("takeover")
    if takeover is not None and not isinstance(takeover, bool):
        raise ProtocolError("invalid", "field 'takeover' must be a boolean", reply_to)
    scene = _scene(obj, reply_to)
    if scene is not None and persona is not None:
        raise ProtocolError("invalid", "fields 'persona' and 'scene' exclude each other: a scene names its "
                                       "personas (the first one leads)", reply_to)
    return Hello(persona=persona, session=session, token=token, max_fps=max_fps, workflow=workflow,
                 comfy_client_id=client, takeover=takeover, scene=scene)


def _scene(obj: dict, reply_to: str | None) -> tuple[str, ...] | None:
    """`hello.scene`: a list of persona ids, or a scene file's object (`{"personas": [...]}`)."""
    from ...persona.scene import MAX_CAST

    value = obj.get("scene")
    if value is None:
        return None
    if isinstance(value, dict):
        extra = sorted(set(value) - {"personas", "layout"})
        if extra:
            raise ProtocolError("invalid", f"field 'scene.{extra[0][:40]}' is not a scene field", reply_to)
        if value.get("layout", "side_by_side") != "side_by_side":
            raise ProtocolError("invalid", "field 'scene.layout' must be 'side_by_side'", reply_to)
        value = value.get("personas")
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ProtocolError("invalid", "field 'scene' must be a list of persona ids", reply_to)
    if not 1 <= len(value) <= MAX_CAST:
        raise ProtocolError("invalid", f"field 'scene' names {len(value)} personas; a scene holds 1 to {MAX_CAST}",
                            reply_to)
    repeated = sorted({v for v in value if value.count(v) > 1})
    if repeated:
        raise ProtocolError("invalid", f"field 'scene': a persona appears once per scene; repeated: "
                                       f"{', '.join(r[:64] for r in repeated)}", reply_to)
    return tuple(value)


def _chat(obj: dict, reply_to: str | None) -> Chat:
    message_id = _id(obj)
    text = obj.get("text")
    if not isinstance(text, str):
        raise ProtocolError("invalid", "field 'text' is required (a string)", reply_to)
    if len(text) > MAX_TEXT_CHARS:
        raise ProtocolError("too_large", f"field 'text' is {len(text)} characters; the limit is {MAX_TEXT_CHARS}", reply_to)
    return Chat(id=message_id, text=text)


_DIRECTIVE_FIELDS = {"action", "expression", "dialogue", "intensity", "duration_s", "character"}


def _action(obj: dict, reply_to: str | None) -> Action:
    from ...persona.schema import ActionDirective

    message_id = _id(obj)
    directive = obj.get("directive")
    if not isinstance(directive, dict):
        raise ProtocolError("invalid", "field 'directive' is required (an ActionDirective object)", reply_to)
    unknown = sorted(set(directive) - _DIRECTIVE_FIELDS)
    if unknown:
        raise ProtocolError("invalid", f"field 'directive.{unknown[0][:40]}' is not an ActionDirective field", reply_to)
    try:
        checked = ActionDirective.model_validate(directive)
    except ValueError as exc:
        errors = getattr(exc, "errors", lambda: [])()
        where = ".".join(str(p) for p in errors[0]["loc"]) if errors else "?"
        why = errors[0]["msg"] if errors else str(exc)
        raise ProtocolError("invalid", f"field 'directive.{where}': {why}", reply_to) from None
    return Action(id=message_id, directive=checked.model_dump())


def _reset(obj: dict, reply_to: str | None) -> Reset:
    return Reset(id=_id(obj))


def _ping(obj: dict, reply_to: str | None) -> Ping:
    return Ping(id=_id(obj, required=False))


def _record(obj: dict, reply_to: str | None) -> Record:
    message_id = _id(obj)
    on = obj.get("on")
    if not isinstance(on, bool):
        raise ProtocolError("invalid", "field 'on' is required (true to start recording, false to stop)", reply_to)
    return Record(id=message_id, on=on)


def _resume(obj: dict, reply_to: str | None) -> Resume:
    return Resume(id=_id(obj, required=False))


def _webrtc_offer(obj: dict, reply_to: str | None) -> WebRTCOffer:
    message_id = _id(obj, required=False)
    sdp = obj.get("sdp")
    if not isinstance(sdp, str) or not sdp.strip():
        raise ProtocolError("invalid", "field 'sdp' is required (the offer's SDP text)", reply_to)
    if len(sdp) > MAX_SDP_CHARS:
        raise ProtocolError("too_large", f"field 'sdp' is {len(sdp)} characters; the limit is {MAX_SDP_CHARS}", reply_to)
    return WebRTCOffer(id=message_id, sdp=sdp)


def _webrtc_candidate(obj: dict, reply_to: str | None) -> WebRTCCandidate:
    candidate = _optional_str(obj, "candidate", reply_to)
    if candidate is not None and len(candidate) > MAX_CANDIDATE_CHARS:
        raise ProtocolError("too_large", f"field 'candidate' is over {MAX_CANDIDATE_CHARS} characters", reply_to)
    mid = _optional_str(obj, "sdpMid", reply_to)
    index = obj.get("sdpMLineIndex")
    if index is not None and (isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < 64):
        raise ProtocolError("invalid", "field 'sdpMLineIndex' must be an integer in [0, 63]", reply_to)
    if candidate and mid is None and index is None:
        raise ProtocolError("invalid", "field 'sdpMid' or 'sdpMLineIndex' is required with a candidate", reply_to)
    return WebRTCCandidate(candidate=candidate or None, sdp_mid=mid, sdp_mline_index=index)


def _webrtc_close(obj: dict, reply_to: str | None) -> WebRTCClose:
    return WebRTCClose(id=_id(obj, required=False))


def _webrtc_playout(obj: dict, reply_to: str | None) -> WebRTCPlayout:
    value = obj.get("audio_lag_ms")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= MAX_AUDIO_LAG_MS:
        raise ProtocolError("invalid", f"field 'audio_lag_ms' is required: a number of milliseconds in "
                            f"[0, {MAX_AUDIO_LAG_MS:g}]", reply_to)
    return WebRTCPlayout(audio_lag_ms=float(value))


_PARSERS = {"hello": _hello, "chat": _chat, "action": _action, "reset": _reset, "ping": _ping, "record": _record,
            "resume": _resume, "webrtc.offer": _webrtc_offer, "webrtc.candidate": _webrtc_candidate,
            "webrtc.close": _webrtc_close, "webrtc.playout": _webrtc_playout}


# -- server → client -----------------------------------------------------------------------


def error_message(code: str, message: str, reply_to: str | None = None) -> dict:
    out: dict[str, Any] = {"type": "error", "reply_to": reply_to, "code": code, "message": message}
    if code in FATAL_CODES:
        out["fatal"] = True
    return out


def media_frame(kind: int, frame_index: int, pts_ms: int, payload: bytes) -> bytes:
    """`[u8 kind][u32 frame_index][u64 pts_ms][payload]`, big-endian."""
    return _MEDIA_HEADER.pack(kind, frame_index & 0xFFFFFFFF, max(0, pts_ms)) + payload


def parse_media_frame(data: bytes) -> tuple[int, int, int, bytes]:
    """(kind, frame_index, pts_ms, payload): the inverse of `media_frame` (clients, tests)."""
    kind, index, pts = _MEDIA_HEADER.unpack_from(data)
    return kind, index, pts, data[_MEDIA_HEADER.size :]
