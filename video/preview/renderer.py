"""`PreviewRenderer`: the CPU backend that draws the persona as an animated 2D character.

It implements `video.backend.RendererBackend`, so the runner, nodes and server drive it
exactly like the LongLive engine: start a session, submit directives, optionally set
speech, and pull chunks of frames on a frame clock (frame i is at i·1000/fps ms).

Behaviour in one place:
- A submission replaces whatever was still queued; its first directive starts on the
  very next frame, cross-fading from wherever the character is (never a jump cut). The
  chunk holding that frame lists the submission's `seq` in `shows_directives`.
- An action lasts `duration_s` (or its vocabulary default), then the character returns to
  rest in the posture the action leaves it in (sit → seated, stand/walk → standing).
  Action `idle` keeps the body as it is and only changes the expression; in a queue it
  occupies the expression's duration (0 for `neutral`).
- An expression holds for its duration, then relaxes back to neutral.
- Unknown action/expression names (not core, not in `SessionSpec.vocabulary`) raise
  `RenderError` listing the known ones: the interpreter is supposed to emit only known
  words, and a silent fallback would hide that bug. A persona's own words render with a
  generic gesture/face keyframe.
- Breathing, sway and blinks run all the time (blink times are drawn from the seed), so
  the same seed and the same calls give byte-identical frames.
"""

from __future__ import annotations

import copy
import functools
import logging
import math
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import skia

from ...persona.schema import CORE_ACTIONS, CORE_EXPRESSIONS, ActionDirective
from ..backend import Chunk, RenderError, SessionSpec
from ..transitions.pose import PoseChannel
from .draw import REF, Scene, draw_character
from .look import Look
from .motions import (
    ACTION_MOTIONS,
    ActionTrack,
    ExpressionTrack,
    IdleTrack,
    generic_gesture,
)
from .params import BODY, FACE
from .visemes import Speech, talking_cycle

if TYPE_CHECKING:
    from .ensemble import ScenePreviewRenderer

__all__ = ["LIMITS", "PreviewRenderer"]

log = logging.getLogger(__name__)

#: Allowed settings (inclusive); sizes even so H.264 (yuv420p) can encode them.
LIMITS = {"width": (64, 2048), "height": (64, 2048), "fps": (1.0, 60.0), "chunk_frames": (1, 240)}

#: Cross-fade lengths (ms). Posture changes are slower: a body sits down, it doesn't drop.
BLEND_ACTION_MS = 500.0
BLEND_POSTURE_MS = 900.0
BLEND_RETURN_MS = 600.0
BLEND_FACE_MS = 400.0
BLINK_MS = 160.0
MIN_ACTION_MS = 600.0


def _locked(method: Callable) -> Callable:
    """Run a public method under the renderer's lock `self._lock` (calls may come from two
    threads); the scene renderer (ensemble.py) locks its methods with it too."""

    @functools.wraps(method)
    def wrapper(self: PreviewRenderer | ScenePreviewRenderer, *args: object, **kwargs: object) -> object:
        with self._lock:
            return method(self, *args, **kwargs)

    return wrapper


@dataclass
class _Playing:
    name: str
    end_ms: float
    sitting_after: bool


class PreviewRenderer:
    """Animated 2D persona on the CPU (see module docstring for the behaviour)."""

    name = "preview"

    def __init__(self, chunk_frames: int = 4, blinks: bool = True, blend_scale: float = 1.0) -> None:
        """`chunk_frames`: frames per `next_chunk` (small = low latency; LongLive uses 12).
        `blinks`: idle blinking (the smoothness sweep turns it off: a blink is a deliberate
        160 ms closure, not a transition). `blend_scale`: multiplies every cross-fade
        length; 0 turns cross-fades into jump cuts, which only tests and demos want."""
        low, high = LIMITS["chunk_frames"]
        if not isinstance(chunk_frames, int) or not low <= chunk_frames <= high:
            raise RenderError(f"chunk_frames={chunk_frames!r} must be an integer in [{low}, {high}]")
        if not 0.0 <= blend_scale <= 10.0:
            raise RenderError(f"blend_scale={blend_scale!r} must be in [0, 10]")
        self.chunk_frames = chunk_frames
        # The server may submit from its event loop while a worker thread renders.
        self._lock = threading.RLock()
        self.blinks = blinks
        self.blend_scale = float(blend_scale)
        self.spec: SessionSpec | None = None

    # --- session ------------------------------------------------------------------------

    @_locked
    def start_session(self, spec: SessionSpec) -> None:
        _check_spec(spec)
        self.spec = spec
        self.look = Look.from_spec(spec.look or {}, spec.persona_name)
        for warning in self.look.warnings:
            log.warning("persona %s: %s", spec.persona_id, warning)
        self._actions, self._expressions = _vocabulary(spec.vocabulary or {})
        self._scene = Scene(self.look, spec.width, spec.height, spec.seed)
        self._pixels = np.zeros((spec.height, spec.width, 4), dtype=np.uint8)
        self._surface = skia.Surface(self._pixels)
        self._font = _font()
        rng = np.random.default_rng(spec.seed)
        self._phase = float(rng.uniform(0.0, 2 * math.pi))
        self._blink_rng = np.random.default_rng(rng.integers(2**63))
        self._speech_seed = int(rng.integers(2**31))
        self._frame = 0
        self._world_x = 0.0
        #: (body, face) parameters of the last frame produced (for metrics and tests).
        self.last_pose: tuple[np.ndarray, np.ndarray] | None = None
        self._rest_state()

    @_locked
    def reset(self) -> None:
        """Back to standing idle with a neutral face, blending there; the clock goes on."""
        self._require_session()
        now = self._now()
        self._queue.clear()
        self._playing = None
        self._face_until = math.inf
        self._sitting = False
        self._speech = None
        self._body.play(IdleTrack(False, self._phase), now, BLEND_RETURN_MS * self.blend_scale)
        self._face.play(ExpressionTrack("neutral", 0.0, now), now, BLEND_FACE_MS * self.blend_scale)

    def _rest_state(self) -> None:
        self._sitting = False
        self._body = PoseChannel(IdleTrack(False, self._phase))
        self._face = PoseChannel(ExpressionTrack("neutral", 0.0, 0.0))
        self._queue: deque[tuple[ActionDirective, int | None]] = deque()
        self._playing: _Playing | None = None
        self._face_until = math.inf
        self._next_directive_ms = 0.0
        self._speech: Speech | None = None
        self._pending_seqs: list[int] = []
        self._next_blink_ms = self._draw_blink_gap(0.0)

    # --- inputs -------------------------------------------------------------------------

    @_locked
    def submit(self, directives: list[ActionDirective], seq: int) -> None:
        self._require_session()
        for d in directives:
            self._check_words(d)
        self._queue.clear()
        for i, d in enumerate(directives):
            self._queue.append((d, seq if i == 0 else None))
        self._next_directive_ms = self._now()  # start on the next frame
        if not directives:
            self._pending_seqs.append(seq)

    @_locked
    def set_speech(self, visemes: list[tuple[int, str]] | None, duration_ms: int = 0) -> None:
        self._require_session()
        now = self._now()
        if visemes is None:
            if duration_ms <= 0:
                self._speech = None
                return
            self._speech_seed += 1
            visemes = talking_cycle(int(duration_ms), self._speech_seed)
        if not visemes:
            self._speech = None
            return
        try:
            # The timeline under way hands over its mouth and weight (see `Speech`).
            self._speech = Speech(list(visemes), now, previous=self._speech)
        except ValueError as exc:
            raise RenderError(str(exc)) from None

    # --- output -------------------------------------------------------------------------

    @_locked
    def next_chunk(self, on_frame: Callable[[int], None] | None = None) -> Chunk:
        """The next `chunk_frames` frames; `on_frame(k)` after each (progress)."""
        self._require_session()
        assert self.spec is not None

        def step() -> tuple[np.ndarray, float, list[int]]:
            t = self._now()
            shown = self._advance(t)
            body, face = self._pose(t)
            self.last_pose = (body, face)
            frame = self._draw(body, face)
            self._frame += 1
            return frame, t, shown

        return render_chunk(self.spec, self.chunk_frames, self._frame, step, on_frame)

    #: What rendering a frame changes (the scene strip and the look are fixed per session).
    _CLOCK_STATE = ("_frame", "_world_x", "_blink_rng", "_body", "_face", "_queue", "_playing", "_face_until",
                    "_next_directive_ms", "_speech", "_pending_seqs", "_next_blink_ms", "_sitting", "last_pose")

    @_locked
    def set_chunk_frames(self, frames: int) -> None:
        """Frames per `next_chunk` from now on (a length setting, not a new stream)."""
        low, high = LIMITS["chunk_frames"]
        if not isinstance(frames, int) or not low <= frames <= high:
            raise RenderError(f"chunk_frames={frames!r} must be an integer in [{low}, {high}]")
        self.chunk_frames = frames

    @_locked
    def checkpoint(self) -> dict:
        """The state a chunk moves on, copied: `restore` puts it back, so a chunk cancelled
        half way (ComfyUI's Cancel) is rendered again whole, with no gap in the frames."""
        self._require_session()
        return copy.deepcopy({name: getattr(self, name) for name in self._CLOCK_STATE})

    @_locked
    def restore(self, state: dict) -> None:
        for name, value in state.items():
            setattr(self, name, value)

    @_locked
    def step_pose(self) -> tuple[np.ndarray, np.ndarray]:
        """Advance one frame without drawing it; returns its (body, face) parameters.

        Same state changes as `next_chunk` (the clock moves on), at a fraction of the cost:
        the smoothness metric uses it to sweep hundreds of transitions.
        """
        body, face, _ = self.step()
        return body, face

    @_locked
    def step(self) -> tuple[np.ndarray, np.ndarray, list[int]]:
        """`step_pose` that also returns the submission seqs first shown on this frame: a
        scene (ensemble.py) poses each of its characters with it and draws them together."""
        self._require_session()
        t = self._now()
        shown = self._advance(t)
        body, face = self._pose(t)
        self._frame += 1
        self.last_pose = (body, face)
        return body, face, shown

    @property
    def sitting(self) -> bool:
        return self._sitting

    @property
    def speaking(self) -> bool:
        """Whether a mouth timeline is playing (a scene turns the others' heads to it)."""
        return self._speech is not None

    def check_words(self, directive: ActionDirective) -> None:
        """`RenderError` when this persona cannot perform `directive`'s action or expression
        (a scene checks every performer's share before it queues any of them)."""
        self._require_session()
        self._check_words(directive)

    # --- internals ----------------------------------------------------------------------

    def _now(self) -> float:
        assert self.spec is not None
        return self._frame * 1000.0 / self.spec.fps

    def _require_session(self) -> None:
        if self.spec is None:
            raise RenderError("no session: call start_session(spec) first")

    def _check_words(self, d: ActionDirective) -> None:
        if d.action not in self._actions:
            raise RenderError(f"unknown action {d.action!r}; known: {', '.join(self._actions)}")
        if d.expression not in self._expressions:
            raise RenderError(f"unknown expression {d.expression!r}; known: {', '.join(self._expressions)}")

    def _advance(self, t: float) -> list[int]:
        """Start queued directives and finished returns due at time t; returns seqs shown."""
        shown = self._pending_seqs
        self._pending_seqs = []
        if self._playing is not None and t >= self._playing.end_ms:
            self._sitting = self._playing.sitting_after
            self._body.play(IdleTrack(self._sitting, self._phase), t, BLEND_RETURN_MS * self.blend_scale)
            self._playing = None
        if t >= self._face_until:
            self._face.play(ExpressionTrack("neutral", 0.0, t), t, (BLEND_FACE_MS * 1.5) * self.blend_scale)
            self._face_until = math.inf
        if self._queue and t >= self._next_directive_ms:
            directive, seq = self._queue.popleft()
            self._next_directive_ms = t + self._start(directive, t)
            if seq is not None:
                shown.append(seq)
        return shown

    def _start(self, d: ActionDirective, t: float) -> float:
        """Begin directive `d` at t; returns how long it occupies the queue (ms)."""
        face_ms = 1000.0 * (d.duration_s if d.duration_s is not None else self._expressions[d.expression])
        self._face.play(ExpressionTrack(d.expression, d.intensity, t), t, BLEND_FACE_MS * self.blend_scale)
        self._face_until = t + face_ms if d.expression != "neutral" and face_ms > 0 else math.inf
        if d.action == "idle":  # the body carries on; the queue waits while the face shows
            return max(face_ms, 0.0)
        default_s, seated_after, can_sit = self._actions[d.action]
        duration_ms = max(MIN_ACTION_MS, 1000.0 * (d.duration_s if d.duration_s is not None else default_s))
        overlay = ACTION_MOTIONS.get(d.action) or generic_gesture(d.action)
        # Posture changes (sit, stand, walk) are performed in the posture they end in; an
        # action that cannot be done seated (walk, dance, bow) stands up as it starts (the
        # state tracker normally asks for `stand` first, this keeps the renderer safe).
        if seated_after is not None:
            sitting_during = seated_after
        else:
            sitting_during = self._sitting and can_sit
        sitting_after = sitting_during if seated_after is None else seated_after
        blend = BLEND_POSTURE_MS if sitting_during != self._sitting else BLEND_ACTION_MS
        self._sitting = sitting_during
        self._body.play(
            ActionTrack(overlay, d.intensity, t, sitting_during, self._phase), t, blend * self.blend_scale
        )
        self._playing = _Playing(d.action, t + duration_ms, sitting_after)
        return duration_ms

    def _face_vector(self, t: float) -> np.ndarray:
        face = self._face.sample(t).copy()
        blink = self._blink_amount(t) if self.blinks else 0.0
        if blink > 0.0:
            for key in ("eye_l", "eye_r"):
                face[FACE.index[key]] *= 1.0 - blink
        if self._speech is not None:
            if self._speech.done(t):
                self._speech = None
            else:
                w = self._speech.weight(t)
                if w > 0.0:
                    open_, width, round_ = self._speech.shape(t)
                    for key, value in (("mouth_open", open_), ("mouth_w", width), ("mouth_round", round_)):
                        i = FACE.index[key]
                        face[i] += (value - face[i]) * w
        return face

    def _draw_blink_gap(self, t: float) -> float:
        return t + float(self._blink_rng.uniform(2200.0, 5200.0))

    def _blink_amount(self, t: float) -> float:
        while t > self._next_blink_ms + BLINK_MS:
            self._next_blink_ms = self._draw_blink_gap(self._next_blink_ms + BLINK_MS)
        x = (t - self._next_blink_ms) / BLINK_MS
        if 0.0 <= x <= 1.0:
            return math.sin(math.pi * x)
        return 0.0

    def _pose(self, t: float) -> tuple[np.ndarray, np.ndarray]:
        """Body and face at t; also moves the scene on by this frame's walking speed."""
        assert self.spec is not None
        body = self._body.sample(t).copy()
        self._world_x += body[BODY.index["walk_speed"]] / self.spec.fps
        return body, self._face_vector(t)

    def _draw(self, body_vec: np.ndarray, face_vec: np.ndarray) -> np.ndarray:
        spec = self.spec
        assert spec is not None
        canvas = self._surface.getCanvas()
        self._scene.draw(canvas, self._world_x)
        scale = spec.height / REF
        canvas.save()
        canvas.translate(spec.width / 2.0, 0.0)
        canvas.scale(scale, scale)
        draw_character(canvas, self.look, BODY.as_dict(body_vec), FACE.as_dict(face_vec), self._font)
        canvas.restore()
        return self._pixels[:, :, :3]


def _check_spec(spec: SessionSpec) -> None:
    for field in ("width", "height"):
        value = getattr(spec, field)
        low, high = LIMITS[field]
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high or value % 2:
            raise RenderError(f"{field}={value!r} must be an even integer in [{low}, {high}]")
    low, high = LIMITS["fps"]
    fps = spec.fps
    if (
        not isinstance(fps, (int, float))
        or isinstance(fps, bool)
        or not math.isfinite(fps)
        or not low <= fps <= high
    ):
        raise RenderError(f"fps={fps!r} must be a number in [{low:g}, {high:g}]")


def _vocabulary(vocab: dict) -> tuple[dict[str, tuple[float, bool | None, bool]], dict[str, float]]:
    """Actions: name → (default duration s, seated afterwards (None: unchanged), can be
    done seated); expressions: name → default duration s."""
    actions: dict[str, tuple[float, bool | None, bool]] = {
        e.name: (e.default_duration_s, _seated(e.pose_after), _can_sit(e.from_poses)) for e in CORE_ACTIONS
    }
    expressions = {e.name: e.default_duration_s for e in CORE_EXPRESSIONS}
    for entry in vocab.get("actions", ()) or ():
        name, duration, pose_after, from_poses = _entry(entry)
        actions[name] = (duration, _seated(pose_after), _can_sit(from_poses))
    for entry in vocab.get("expressions", ()) or ():
        name, duration, _, _ = _entry(entry)
        expressions[name] = duration
    return actions, expressions


def _entry(entry: object) -> tuple[str, float, object, object]:
    """(name, default duration, pose_after, from_poses) of a name, dict or VocabularyEntry."""
    if isinstance(entry, str):
        return entry, 2.0, None, ("standing", "sitting")
    if isinstance(entry, dict) and isinstance(entry.get("name"), str):
        get = entry.get
    elif isinstance(getattr(entry, "name", None), str):

        def get(key: str, default: object = None) -> object:
            return getattr(entry, key, default)
    else:
        raise RenderError(f"vocabulary entry {entry!r} has no name")
    duration = get("default_duration_s", 2.0)
    return (
        str(get("name")),
        float(2.0 if duration is None else duration),
        get("pose_after"),
        get("from_poses", ("standing", "sitting")),
    )


def _can_sit(from_poses: object) -> bool:
    poses = from_poses if isinstance(from_poses, (list, tuple)) else ("standing", "sitting")
    return any(getattr(p, "value", p) == "sitting" for p in poses)


def _seated(pose_after: object) -> bool | None:
    value = getattr(pose_after, "value", pose_after)
    if value is None:
        return None
    return value == "sitting"


def _font() -> skia.Font | None:
    typeface = skia.Typeface("DejaVu Sans", skia.FontStyle.Bold())
    if typeface is None:
        return None
    return skia.Font(typeface, 12.0)


def render_chunk(spec: SessionSpec, n: int, first: int, step: Callable[[], tuple[np.ndarray, float, list[int]]],
                 on_frame: Callable[[int], None] | None) -> Chunk:
    """`n` frames from `step()` (each: the frame, its time in ms, the directive seqs it
    begins), as one chunk starting at frame `first`; `on_frame(k)` after each (progress).
    Shared by the one-persona renderer and the scene renderer."""
    frames = np.empty((n, spec.height, spec.width, 3), dtype=np.uint8)
    shows: list[int] = []
    pts: list[int] = []
    for k in range(n):
        frames[k], t, shown = step()
        shows.extend(seq for seq in shown if seq not in shows)
        pts.append(int(round(t)))
        if on_frame is not None:
            on_frame(k)
    return Chunk(frames=frames, first_index=first, pts_ms=pts, shows_directives=shows)
