"""Streaming nodes: state tracker, preview renderer, stream sink, IMAGE output.

These run on every tick of the headless runner (`STREAMING = True`) and on every queued
run in ComfyUI (IS_CHANGED new on every run: `runtime.every_run`): each run advances the session's clock, renders the
next chunk and reports state changes. What must persist between runs (tracker,
renderer backend, the last turn applied) lives in the session store.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .comfy_env import preview_image, progress, throw_if_interrupted
from .runtime import TrackerMemory, current_store, every_run
from .scene_nodes import lead_persona
from .types import DIRECTIVES, FRAMES, PERSONA_OR_SCENE, STATE, DirectivePlan, FramesValue

_SESSION_INPUT = (
    "STRING",
    {"default": "default", "tooltip": "Session whose character state / renderer this is (see the turn node)."},
)


class PersonaStateTracker:
    """Turns directives into a coherent plan (stand before walking...) and tracks the state."""

    DESCRIPTION = (
        "Keeps the character's state (pose, action, expression) coherent: plans incoming directives "
        "through the pose graph and reports every state change."
    )
    CATEGORY = "persona/state"
    RETURN_TYPES = (DIRECTIVES, STATE)
    RETURN_NAMES = ("plan", "state")
    FUNCTION = "track"
    STREAMING = True

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {
            "required": {
                "persona": (PERSONA_OR_SCENE, {"tooltip": "Whose vocabulary and pose rules apply (a scene: "
                                                "each character's own)."}),
                "directives": (DIRECTIVES, {"tooltip": "Directives from the interpreter."}),
                "session_id": _SESSION_INPUT,
            },
            "optional": {
                "manual": (DIRECTIVES, {"tooltip": "Directives from quick-action buttons (bypass the interpreter)."}),
            },
        }

    @classmethod
    def IS_CHANGED(cls, **kwargs: Any) -> str:
        return every_run()

    def track(self, persona, directives: DirectivePlan, session_id: str, manual: DirectivePlan | None = None):
        session = current_store().get(session_id)
        persona = lead_persona(persona, session)
        now = session.now_ms()
        with session.lock:  # the interpreter (turn thread) reads this tracker's state
            if session.tracker is None:
                session.tracker = _new_tracker(persona, now, session.cast)
            tracker = session.tracker
            memory: TrackerMemory = session.tracker_memory
            incoming = [p for p in (directives, manual) if p is not None and p.turn > memory.applied_turn]
            for plan in sorted(incoming, key=lambda p: p.turn):
                planned = tracker.plan(list(plan.directives), now)
                memory.plan = DirectivePlan(turn=plan.turn, directives=tuple(planned), source="plan", reply=plan.reply)
                memory.applied_turn = plan.turn
            changes = tracker.advance(now)
            state = tracker.state_at(now)
        for changed in changes:
            session.listener.on_state(changed.model_dump(mode="json"))
        return (memory.plan or DirectivePlan(turn=0, source="plan"), state)


def _new_tracker(persona, now_ms: int, cast: tuple = ()):
    from ..persona.state import StateTracker

    if cast:  # a scene: one tracker per character (persona.scene.SceneTracker)
        from ..persona.scene import SceneTracker

        return SceneTracker(cast, clock_ms=now_ms)
    return StateTracker(persona.vocabulary(), clock_ms=now_ms)


@dataclass
class _RendererSlot:
    """A session's renderer backend and the settings it was started with."""

    key: tuple
    backend: Any
    submitted_turn: int = 0

    def close(self) -> None:
        close = getattr(self.backend, "close", None)
        if callable(close):
            close()


class PersonaPreviewRenderer:
    """The CPU preview renderer: draws the persona as a 2D character, chunk by chunk."""

    DESCRIPTION = (
        "CPU preview renderer (no weights): draws the persona doing each planned action with "
        "smooth transitions. Each run renders the next chunk of frames."
    )
    CATEGORY = "persona/video"
    RETURN_TYPES = (FRAMES,)
    RETURN_NAMES = ("frames",)
    FUNCTION = "render"
    STREAMING = True
    BACKEND = "preview"

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {
            "required": {
                "persona": (PERSONA_OR_SCENE, {"tooltip": "Who to draw (appearance, vocabulary); a scene: "
                                                "everyone side by side."}),
                "plan": (DIRECTIVES, {"tooltip": "The planned directives from the state tracker."}),
                "session_id": _SESSION_INPUT,
                "width": ("INT", {"default": 384, "min": 64, "max": 2048, "step": 16, "tooltip": "Frame width, px."}),
                "height": ("INT", {"default": 384, "min": 64, "max": 2048, "step": 16, "tooltip": "Frame height, px."}),
                "fps": ("FLOAT", {"default": 24.0, "min": 1.0, "max": 60.0, "step": 1.0, "tooltip": "Frames per second."}),
                # The seed is part of the stream's restart key, so a randomised one restarted the
                # stream on every Run: the web extension sets a new node's control to "fixed"
                # (a string here would only rename the control widget; its value stays "randomize").
                "seed": ("INT", {"default": 0, "min": 0, "max": 2**31 - 1, "control_after_generate": True,
                                 "tooltip": "Seed for idle motion details (changing it restarts the stream)."}),
                "chunk_frames": (
                    "INT",
                    {
                        "default": 2,
                        "min": 1,
                        "max": 240,
                        "tooltip": "Frames rendered per run (up to 10 s at 24 fps). Fewer: a new action shows sooner "
                        "while streaming; more: a longer clip per queued Run.",
                    },
                ),
            }
        }

    @classmethod
    def IS_CHANGED(cls, **kwargs: Any) -> str:
        return every_run()

    def render(
        self,
        persona,
        plan: DirectivePlan,
        session_id: str,
        width: int,
        height: int,
        fps: float,
        seed: int,
        chunk_frames: int = 2,
    ):
        session = current_store().get(session_id)
        persona = lead_persona(persona, session)
        # What starts a new stream; frames per run (`chunk_frames`) only sets the next chunk's length.
        cast = session.cast or (persona,)
        key = (self.BACKEND, tuple(p.id for p in cast), width, height, float(fps), seed)
        slot = session.renderer
        if slot is None or slot.key != key:
            backend = _start_backend(self.BACKEND, persona, width, height, fps, seed, chunk_frames, session.cast)
            slot = _RendererSlot(key=key, backend=backend)
            session.set_renderer(slot)
        slot.backend.set_chunk_frames(chunk_frames)
        if plan.turn > slot.submitted_turn:
            slot.backend.submit(list(plan.directives), plan.turn)
            slot.submitted_turn = plan.turn
        # Cancel (ComfyUI's interrupt) is honoured before the chunk and between its frames; a
        # chunk cancelled half way is undone (`checkpoint`/`restore`), so the next run renders
        # it again whole: no gap in the frames.
        throw_if_interrupted()
        # A host that speaks (the headless server) gives the session a speech track: it
        # hands the renderer the mouth timeline of the queued speech before each chunk.
        speech = session.speech
        if speech is not None:
            chunk = speech.render(slot.backend, float(fps))
        else:
            bar = progress(chunk_frames)

            def frame_done(k: int) -> None:
                bar.update_absolute(k + 1)
                throw_if_interrupted()

            state = slot.backend.checkpoint()
            try:
                chunk = slot.backend.next_chunk(on_frame=frame_done)
            except BaseException:
                slot.backend.restore(state)
                raise
        return (FramesValue(session_id=session_id, backend=slot.backend.name, chunk=chunk, fps=float(fps)),)


def _start_backend(name: str, persona, width: int, height: int, fps: float, seed: int, chunk_frames: int,
                   cast: tuple = ()):
    from ..video.registry import create_backend

    if cast and name == "preview":  # a scene: every character side by side in one frame
        from ..video.preview import ScenePreviewRenderer

        backend = ScenePreviewRenderer(chunk_frames=chunk_frames)
        backend.start_scene([_spec(p, width, height, fps, seed) for p in cast])
        return backend
    backend = create_backend(name, chunk_frames=chunk_frames)
    backend.start_session(_spec(persona, width, height, fps, seed))
    return backend


def _spec(persona, width: int, height: int, fps: float, seed: int):
    from ..video.backend import SessionSpec

    vocabulary = persona.vocabulary()
    return SessionSpec(
        persona_id=persona.id,
        persona_name=persona.name,
        look=persona.appearance.model_dump(mode="json"),
        width=width,
        height=height,
        fps=float(fps),
        seed=seed,
        # Whole entries, not names: the renderer reads pose data (sit leaves you seated).
        vocabulary={
            "actions": [entry.model_dump(mode="json") for entry in vocabulary.actions],
            "expressions": [entry.model_dump(mode="json") for entry in vocabulary.expressions],
        },
    )


class PersonaStreamSink:
    """Hands each rendered chunk to whoever watches the session (WebSocket viewer, panel)."""

    DESCRIPTION = "Stream sink: sends rendered frames to the session's viewers (headless page, ComfyUI panel)."
    CATEGORY = "persona/video"
    RETURN_TYPES = ()
    FUNCTION = "send"
    OUTPUT_NODE = True
    STREAMING = True

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {"required": {"frames": (FRAMES, {"tooltip": "Frames from a renderer."})}}

    @classmethod
    def IS_CHANGED(cls, **kwargs: Any) -> str:
        return every_run()

    def send(self, frames: FramesValue) -> dict:
        chunk = frames.chunk
        session = current_store().get(frames.session_id)
        session.listener.on_chunk(frames)
        summary = {
            "session": frames.session_id,
            "backend": frames.backend,
            "first_index": int(chunk.first_index),
            "count": int(len(chunk.frames)),
            "shows_directives": list(chunk.shows_directives),
        }
        ui: dict = {"persona_stream": [summary]}
        # Nobody watches this session (a queued Run): show the chunk's last frame on the node,
        # as Preview Image does. A watched session's frames go to its viewer instead.
        if not session.streamed and len(chunk.frames):
            shown = preview_image(chunk.frames[-1], "persona_stream")
            if shown is not None:
                ui["images"] = [shown]
        return {"ui": ui, "result": ()}


class PersonaFramesFromImage:
    """An IMAGE batch back into the stream, in place of a chunk's frames: any ComfyUI image
    node (upscale, colour, a LoRA'd img2img...) can sit between the renderer and the sink."""

    DESCRIPTION = (
        "Frames from IMAGE: puts an image batch (e.g. the renderer's frames after Image Scale or any image "
        "node) back into the persona stream, with the chunk's timing. One image is used for every frame."
    )
    CATEGORY = "persona/video"
    RETURN_TYPES = (FRAMES,)
    RETURN_NAMES = ("frames",)
    FUNCTION = "wrap"

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {
            "required": {
                "frames": (FRAMES, {"tooltip": "The chunk whose timing (session, frame indices, times) to keep."}),
                "images": ("IMAGE", {"tooltip": "The pictures to stream instead (as many as the chunk's frames, "
                                     "or one)."}),
            }
        }

    def wrap(self, frames: FramesValue, images) -> tuple:
        import dataclasses

        import numpy as np

        array = images.detach().cpu().numpy() if hasattr(images, "detach") else np.asarray(images)
        if array.ndim == 3:
            array = array[None]
        chunk = frames.chunk
        count = len(chunk.frames)
        if array.ndim != 4 or array.shape[-1] < 3 or array.shape[0] not in (1, count):
            raise ValueError(f"images must be {count} (or 1) RGB pictures for this chunk; got shape {tuple(array.shape)}")
        pixels = (np.clip(array[..., :3], 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
        if pixels.shape[0] != count:
            pixels = np.repeat(pixels, count, axis=0)
        height, width = pixels.shape[1:3]
        if height % 2 or width % 2:  # H.264 recordings and JPEG chroma want even sizes
            pixels = pixels[:, : height - height % 2, : width - width % 2]
        replaced = dataclasses.replace(chunk, frames=np.ascontiguousarray(pixels))
        return (FramesValue(session_id=frames.session_id, backend=frames.backend, chunk=replaced, fps=frames.fps,
                            extra=dict(frames.extra)),)


class PersonaFrameOutput:
    """Frames as a ComfyUI IMAGE (float tensor, B×H×W×C in 0..1) for Save/Preview Image nodes."""

    DESCRIPTION = "Convert rendered frames to a ComfyUI IMAGE batch (needs torch; the stream sink does not)."
    CATEGORY = "persona/video"
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("images",)
    FUNCTION = "convert"

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {"required": {"frames": (FRAMES, {"tooltip": "Frames from a renderer."})}}

    def convert(self, frames: FramesValue) -> tuple:
        import torch

        pixels = torch.from_numpy(frames.chunk.frames.copy())
        return (pixels.to(torch.float32).div_(255.0),)
