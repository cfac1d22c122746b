"""`ScenePreviewRenderer`: 2–4 preview characters side by side in one frame (issue 20).

Each character is a whole `PreviewRenderer` (its own look, vocabulary, directive queue,
transitions, blinks and mouth), stepped on the scene's one frame clock with
`PreviewRenderer.step` and drawn onto one shared canvas, so a scene character moves exactly
as the single character does (plus the head turn toward a speaker, below) and the
single-character path is untouched.

Behaviour, beyond the single renderer's (renderer.py):
- A directive names its performer with `character` (directive contract v1.1); none means the
  scene's first persona. A submission replaces what was still queued *for the characters it
  names*; the others carry on. A directive for a character not in the scene, or a word its
  persona does not know, is a `RenderError` and nothing of the submission is queued.
- `set_speech(..., character=)` drives that character's mouth. A speech track that speaks
  several voices one after another (the server's) hands over who speaks when
  (`set_speakers`) and then one mouth timeline naming nobody: each shape goes to whoever
  speaks at its time, the others rest their mouths. While someone speaks, the others turn
  head and eyes toward them (eased over `LOOK_MS`, never a jump).
- The room is the first persona's background and stays still: a walking character walks in
  place (scrolling the room under everyone because one walks would slide the others).
- Layout: slot i of n is centred at (i + ½)·width/n; a character is scaled to fit its slot
  (at most the single renderer's scale) and stands on the room's floor line.
"""

from __future__ import annotations

import copy
import math
import threading
from collections.abc import Callable, Sequence

import numpy as np
import skia

from ..backend import Chunk, RenderError, SessionSpec
from .draw import GROUND_Y, REF, Scene, draw_character
from .params import BODY, FACE
from .renderer import PreviewRenderer, _check_spec, _font, _locked, render_chunk

__all__ = ["MAX_CHARACTERS", "ScenePreviewRenderer"]

#: Most characters one frame holds (persona.scene.MAX_CAST says the same for the conversation).
MAX_CHARACTERS = 4
#: Width one character needs, in reference units (arms out in a wave or a shrug).
CHARACTER_SPAN = 250.0
#: Time constant (ms) of a head turning toward whoever speaks.
LOOK_MS = 400.0
#: How much earlier than its window a mouth shape may start (a speech track leads the mouth
#: by about half a frame plus half a shape blend; see video.voice.driver).
SHAPE_LEAD_MS = 80.0
#: How far a listener turns: head yaw (radians) and eyes (gaze units) at a full look.
LOOK_YAW = 0.3
LOOK_GAZE = 0.8

_YAW = BODY.index["head_yaw"]
_GAZE = FACE.index["gaze_x"]


class ScenePreviewRenderer:
    """Several preview characters in one frame (see the module docstring)."""

    name = "preview"

    def __init__(self, chunk_frames: int = 4, blinks: bool = True, blend_scale: float = 1.0) -> None:
        PreviewRenderer(chunk_frames, blinks, blend_scale)  # the same argument checks
        self.chunk_frames = chunk_frames
        self.blinks = blinks
        self.blend_scale = blend_scale
        self._lock = threading.RLock()
        self.spec: SessionSpec | None = None
        self.cast: tuple[str, ...] = ()

    # --- session ------------------------------------------------------------------------

    @_locked
    def start_scene(self, specs: Sequence[SessionSpec]) -> None:
        """One spec per character, left to right; the first sets size, rate and room."""
        specs = list(specs)
        if not 1 <= len(specs) <= MAX_CHARACTERS:
            raise RenderError(f"a scene holds 1 to {MAX_CHARACTERS} characters, not {len(specs)}")
        ids = [s.persona_id for s in specs]
        if len(set(ids)) != len(ids):
            raise RenderError(f"a character appears once per scene: {', '.join(ids)}")
        first = specs[0]
        _check_spec(first)
        for s in specs[1:]:
            if (s.width, s.height, s.fps) != (first.width, first.height, first.fps):
                raise RenderError("every character of a scene renders at the scene's size and fps")
        self.spec = first
        self.cast = tuple(ids)
        self._performers: dict[str, PreviewRenderer] = {}
        for i, s in enumerate(specs):
            performer = PreviewRenderer(self.chunk_frames, self.blinks, self.blend_scale)
            # Each character blinks and breathes on its own seed, not in unison.
            performer.start_session(SessionSpec(s.persona_id, s.persona_name, s.look, first.width, first.height,
                                                first.fps, first.seed + 7919 * i, s.vocabulary))
            self._performers[s.persona_id] = performer
        self._room = Scene(self._performers[ids[0]].look, first.width, first.height, first.seed)
        self._pixels = np.zeros((first.height, first.width, 4), dtype=np.uint8)
        self._surface = skia.Surface(self._pixels)
        self._font = _font()
        n = len(ids)
        bg_scale = first.height / REF
        char_scale = min(bg_scale, (first.width / n) / CHARACTER_SPAN)
        #: (x centre, y offset, scale) of each slot, left to right.
        self._slots = [((i + 0.5) * first.width / n, GROUND_Y * (bg_scale - char_scale), char_scale)
                       for i in range(n)]
        self._frame = 0
        self._look = dict.fromkeys(ids, 0.0)  # -1 left … +1 right, eased
        self._speaker: str | None = None
        self._windows: list[tuple[int, int, str]] = []
        #: (body, face) each character was drawn with on the last frame (metrics and tests).
        self.last_poses: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def start_session(self, spec: SessionSpec) -> None:
        """`RendererBackend.start_session`: a scene of one."""
        self.start_scene([spec])

    @_locked
    def reset(self) -> None:
        self._require_session()
        for performer in self._performers.values():
            performer.reset()
        self._speaker = None

    # --- inputs -------------------------------------------------------------------------

    def performer_of(self, character: str | None) -> str:
        """Who performs a directive naming `character` (None: the first persona)."""
        self._require_session()
        if character is None:
            return self.cast[0]
        if character not in self._performers:
            raise RenderError(f"directive for {character!r}, who is not in this scene ({', '.join(self.cast)})")
        return character

    @_locked
    def submit(self, directives: list, seq: int) -> None:
        self._require_session()
        shares: dict[str, list] = {}
        for d in directives:
            who = self.performer_of(getattr(d, "character", None))
            self._performers[who].check_words(d)
            shares.setdefault(who, []).append(d)
        if not shares:  # an empty submission still shows on the next frame
            shares[self.cast[0]] = []
        for who, share in shares.items():
            self._performers[who].submit(share, seq)

    @_locked
    def set_speakers(self, windows: Sequence[tuple[int, int, str]]) -> None:
        """Who speaks when on the session clock: (start ms, end ms, persona id) per line. A
        speech track hands it over before each chunk, then a mouth timeline that names no
        character (`set_speech(visemes)`) moves each speaker's mouth in their own windows."""
        self._require_session()
        self._windows = [(int(a), int(b), who) for a, b, who in windows if who in self._performers]

    def _owner(self, at_ms: float) -> str:
        """The speaker at `at_ms` by the windows (a mouth shape may lead its sound a little)."""
        for start, end, who in reversed(self._windows):
            if start - SHAPE_LEAD_MS <= at_ms < end:
                return who
        return self.cast[0]

    @_locked
    def set_speech(self, visemes: list[tuple[int, str]] | None, duration_ms: int = 0,
                   character: str | None = None) -> None:
        """`RendererBackend.set_speech` for `character` (None: the first persona), or, with no
        character while speaker windows are known, each shape for whoever speaks then (the
        others rest their mouths)."""
        if character is None and visemes is not None and self._windows:
            now = self._frame * 1000.0 / self.spec.fps
            owners = [self._owner(now + offset) for offset, _ in visemes]
            for who, performer in self._performers.items():
                mine = [(offset, shape if owner == who else "X") for (offset, shape), owner in
                        zip(visemes, owners, strict=True)]
                performer.set_speech(mine if who in owners else [], 0)
            return
        who = self.performer_of(character)
        performer = self._performers[who]
        performer.set_speech(visemes, duration_ms)
        if performer.speaking:
            self._speaker = who

    # --- output -------------------------------------------------------------------------

    @_locked
    def next_chunk(self, on_frame: Callable[[int], None] | None = None) -> Chunk:
        self._require_session()
        spec = self.spec
        assert spec is not None

        def step() -> tuple[np.ndarray, float, list[int]]:
            t = self._frame * 1000.0 / spec.fps
            poses = {}
            shows: list[int] = []
            for who, performer in self._performers.items():
                body, face, shown = performer.step()
                shows.extend(shown)
                poses[who] = (body.copy(), face.copy())  # the performer keeps its own pose
            self._turn_heads(poses)
            frame = self._draw(poses)
            self.last_poses = poses
            self._frame += 1
            return frame, t, shows

        return render_chunk(spec, self.chunk_frames, self._frame, step, on_frame)

    @_locked
    def set_chunk_frames(self, frames: int) -> None:
        for performer in self._performers.values():
            performer.set_chunk_frames(frames)
        self.chunk_frames = frames

    @_locked
    def checkpoint(self) -> dict:
        """Every character's clock state and the scene's own (see PreviewRenderer.checkpoint)."""
        self._require_session()
        return {"performers": {who: p.checkpoint() for who, p in self._performers.items()},
                "scene": copy.deepcopy((self._frame, self._look, self._speaker, self.last_poses, self._windows))}

    @_locked
    def restore(self, state: dict) -> None:
        for who, saved in state["performers"].items():
            self._performers[who].restore(saved)
        self._frame, self._look, self._speaker, self.last_poses, self._windows = copy.deepcopy(state["scene"])

    # --- internals ----------------------------------------------------------------------

    def _require_session(self) -> None:
        if self.spec is None:
            raise RenderError("no session: call start_scene(specs) first")

    def _turn_heads(self, poses: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
        """Listeners ease their head and eyes toward whoever speaks; the speaker faces front."""
        assert self.spec is not None
        if self._windows:  # a speech track says who speaks now
            now = self._frame * 1000.0 / self.spec.fps
            self._speaker = next((who for a, b, who in self._windows if a <= now < b), None)
        elif self._speaker is not None and not self._performers[self._speaker].speaking:
            self._speaker = None
        ease = 1.0 - math.exp(-(1000.0 / self.spec.fps) / LOOK_MS)
        order = {who: i for i, who in enumerate(self.cast)}
        for who, (body, face) in poses.items():
            target = 0.0
            if self._speaker is not None and self._speaker != who:
                target = 1.0 if order[self._speaker] > order[who] else -1.0
            look = self._look[who] + (target - self._look[who]) * ease
            self._look[who] = look
            if abs(look) > 1e-6:
                body[_YAW] += LOOK_YAW * look
                face[_GAZE] = min(max(face[_GAZE] + LOOK_GAZE * look, -1.0), 1.0)

    def _draw(self, poses: dict[str, tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
        canvas = self._surface.getCanvas()
        self._room.draw(canvas, 0.0)
        for (x, y, scale), (who, (body, face)) in zip(self._slots, poses.items(), strict=True):
            canvas.save()
            canvas.translate(x, y)
            canvas.scale(scale, scale)
            draw_character(canvas, self._performers[who].look, BODY.as_dict(body), FACE.as_dict(face), self._font)
            canvas.restore()
        return self._pixels[:, :, :3]
