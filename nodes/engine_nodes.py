"""Engine-side nodes: LongLive model loader, (sparse-attention) LongLive sampler, prompt
composer, transition blender.

Classic ComfyUI node API, nothing imported from ComfyUI or torch at module load. The loader
is cached (same inputs, same loaded weights); the sampler runs on every queued run / every
headless tick (IS_CHANGED → NaN, `STREAMING = True`) and keeps its engine in the session
store, like the preview renderer, so the two renderers are interchangeable in a workflow.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ModelFileMissingError, PersonaError
from .comfy_env import models_folder, progress
from .engine_types import (
    IDENTITY,
    LONGLIVE,
    PROMPT,
    TRANSITION,
    IdentityValue,
    LongLiveModel,
    PromptStyle,
    TransitionStyle,
)
from .session_store import Session, current_store
from .types import DIRECTIVES, FRAMES, PERSONA, DirectivePlan, FramesValue

#: ComfyUI model folder (ComfyUI/models/persona/, or `persona:` in extra_model_paths.yaml)
#: that plays the part of the models directory inside ComfyUI.
COMFY_MODELS_FOLDER = "persona"
#: The files a LongLive engine loads, by decoder choice (keys of video.model_files).
ENGINE_FILES = ("longlive.generator", "longlive.lora", "umt5.encoder", "umt5.tokenizer")
DECODER_FILES = {"tae": "taew2.1", "vae": "wan2.1.vae"}


class EngineFilesMissingError(ModelFileMissingError):
    """The models folder lacks weight files the engine needs; the message names every one (the
    structured payload names the first; `missing` holds each file's own error)."""

    def __init__(self, missing: list) -> None:
        self.missing = list(missing)
        first = self.missing[0]
        super().__init__(first.name, purpose=first.purpose, source=first.source, looked_in=first.looked_in,
                         size_bytes=first.size_bytes, size_exact=first.size_exact, hint=first.hint)
        self.args = (f"{len(self.missing)} LongLive file(s) missing:\n" + "\n".join(str(e) for e in self.missing),)

    def __str__(self) -> str:
        return str(self.args[0])

    def __reduce__(self):
        return (EngineFilesMissingError, (self.missing,))


class EngineDependencyError(PersonaError, ImportError):
    """A package of the `longlive` extra is not installed in the Python that runs the node."""

    code = "dependency_missing"


def resolve_models_dir(explicit: str = "") -> Path:
    """Where the weights are: the node's `models_dir` input, else $PERSONA_MODELS_DIR, else
    ComfyUI's `models/persona` folders (the first that holds the generator), else the
    headless default (~/.cache/comfyui-persona/models)."""
    from ..video import model_files

    if explicit.strip():
        return Path(explicit.strip()).expanduser()
    if os.environ.get(model_files.ENV_VAR):
        return model_files.models_dir()
    folders = models_folder(COMFY_MODELS_FOLDER)
    for folder in folders:
        try:
            model_files.find("longlive.generator", folder)
            return folder
        except model_files.CheckpointNotFoundError:
            continue
    return folders[0] if folders else model_files.models_dir()


def missing_file_errors(models_dir: Path, decoder: str = "tae") -> list:
    """The `CheckpointNotFoundError` of each weight file the engine needs that `models_dir` lacks."""
    from ..video import model_files

    problems = []
    for key in (*ENGINE_FILES, DECODER_FILES[decoder]):
        try:
            model_files.find(key, models_dir)
        except model_files.CheckpointNotFoundError as exc:
            problems.append(exc)
    return problems


def missing_files(models_dir: Path, decoder: str = "tae") -> list[str]:
    """Messages naming each weight file the engine needs that `models_dir` lacks."""
    return [str(exc) for exc in missing_file_errors(models_dir, decoder)]


_LOADED: dict[tuple, LongLiveModel] = {}


class PersonaLongLiveLoader:
    """Loads the LongLive generator (+ its LoRA), UMT5 and the decoder once per settings."""

    DESCRIPTION = (
        "Load the LongLive engine (causal Wan2.1-T2V-1.3B + LoRA, UMT5 text encoder, TAEW2.1 or Wan VAE "
        "decoder) from the models folder. Cached: the weights load once. One loaded engine streams one "
        "session at a time."
    )
    CATEGORY = "persona/video"
    RETURN_TYPES = (LONGLIVE,)
    RETURN_NAMES = ("engine",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        from ..video.longlive.settings import LongLiveSettings
        from .settings_inputs import node_inputs

        return {
            "required": node_inputs(LongLiveSettings, load=True),  # every load-time setting, one source
            "optional": {  # optional, so workflows saved before it existed still load
                "models_dir": (
                    "STRING",
                    {"default": "", "tooltip": "Folder with the weight files. Empty: $PERSONA_MODELS_DIR, else "
                     "ComfyUI/models/persona, else ~/.cache/comfyui-persona/models."},
                ),
            },
        }

    def load(self, models_dir: str = "", **inputs: Any) -> tuple:
        from ..video.longlive.engine import LongLiveBackend
        from ..video.longlive.settings import LongLiveSettings
        from .settings_inputs import settings_from_inputs

        settings = settings_from_inputs(LongLiveSettings, inputs)
        directory = resolve_models_dir(models_dir)
        key = (settings.model_dump_json(), str(directory))
        if key not in _LOADED:  # ComfyUI caches the output; this also spares the headless runner a reload
            problems = missing_file_errors(directory, settings.decoder)
            if problems:  # all of them at once, not one per attempt
                raise EngineFilesMissingError(problems)
            bar = progress(1)
            try:
                built = LongLiveBackend(settings=settings, models_dir=directory)
            except ModuleNotFoundError as exc:
                raise EngineDependencyError(
                    f"the LongLive engine needs the Python package {exc.name!r}: install the pack's extra "
                    "with `pip install comfyui-persona[longlive]` (in ComfyUI's Python)"
                ) from exc
            _LOADED.clear()  # one engine resident at a time: the 1.3B weights are ~5 GiB
            _LOADED[key] = LongLiveModel(settings=settings, models_dir=directory, model=built.runtime,
                                         text_encoder=built.text_encoder, decoder=built.decoder)
            bar.update(1)
        return (_LOADED[key],)


#: The sampler's live engine settings, generated from `LongLiveSettings` (nodes/settings_inputs.py).
SAMPLER_SETTINGS = ("denoising_steps", "prompt_switch_recache", "recache_mode", "preempt")
#: Its attention settings, generated from `SparseAttentionConfig`.
ATTENTION_SETTINGS = ("sparge_attention", "sparge_topk", "sparge_cdf_threshold", "sparge_timestep_threshold")


def sampler_settings(values: dict[str, Any]):
    """`LongLiveSettings` (live fields and attention) from the sampler node's inputs."""
    from ..video.attention.config import SparseAttentionConfig
    from ..video.longlive.settings import LongLiveSettings
    from .settings_inputs import settings_from_inputs

    attention = settings_from_inputs(SparseAttentionConfig, values)
    return settings_from_inputs(LongLiveSettings, {k: v for k, v in values.items() if k in SAMPLER_SETTINGS},
                                attention=attention)


def _always_changed(**_: Any) -> float:
    return math.nan


@dataclass
class _EngineSlot:
    """A session's LongLive backend, the settings it started with, the last turn submitted."""

    key: tuple
    backend: Any
    spec: Any
    engine: LongLiveModel
    submitted_turn: int = 0

    def close(self) -> None:
        if self.engine.owner is self.backend:
            self.engine.owner = None


class PersonaLongLiveSampler:
    """Streams the persona from LongLive, one chunk per run, with dense or block-sparse attention."""

    DESCRIPTION = (
        "LongLive sampler: each run generates the next chunk (3 latent frames → 12 video frames at 16 fps) "
        "for the planned directives, blending prompts between actions. attention=sparse uses block-sparse "
        "self-attention (SpargeAttn's rules) on the late denoising steps."
    )
    CATEGORY = "persona/video"
    RETURN_TYPES = (FRAMES,)
    RETURN_NAMES = ("frames",)
    FUNCTION = "render"
    STREAMING = True
    BACKEND = "longlive"

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        from ..video.attention.config import SparseAttentionConfig
        from ..video.longlive.settings import LongLiveSettings
        from .settings_inputs import node_inputs

        return {
            "required": {
                "engine": (LONGLIVE, {"tooltip": "The loaded LongLive engine."}),
                "persona": (PERSONA, {"tooltip": "Who to show (appearance, vocabulary)."}),
                "plan": (DIRECTIVES, {"tooltip": "The planned directives from the state tracker."}),
                "session_id": (
                    "STRING",
                    {"default": "default", "tooltip": "Session whose stream this is (see the turn node)."},
                ),
                "width": ("INT", {"default": 832, "min": 64, "max": 1536, "step": 16,
                                  "tooltip": "Frame width, px (multiple of 16)."}),
                "height": ("INT", {"default": 480, "min": 64, "max": 1024, "step": 16,
                                   "tooltip": "Frame height, px (multiple of 16)."}),
                "seed": ("INT", {"default": 0, "min": 0, "max": 2**31 - 1,
                                 "tooltip": "Noise seed of the stream: same seed, same frames."}),
                # Live engine settings and sparse attention: generated from the pydantic settings.
                **node_inputs(LongLiveSettings, SAMPLER_SETTINGS),
                **node_inputs(SparseAttentionConfig, ATTENTION_SETTINGS),
            },
            "optional": {
                "prompt": (PROMPT, {"tooltip": "Prompt style from the prompt composer (appearance text, and "
                                    "the identity reference when one is connected to the composer)."}),
                "transition": (TRANSITION, {"tooltip": "How prompts blend between actions (transition blender)."}),
                "identity": (IDENTITY, {"tooltip": "Reference photo from the identity node: the stream is anchored "
                                        "on it (its VAE latents fill the KV sink). Overrides the composer's."}),
            },
        }

    @classmethod
    def IS_CHANGED(cls, **kwargs: Any) -> float:
        return _always_changed(**kwargs)

    def render(self, engine: LongLiveModel, persona, plan: DirectivePlan, session_id: str, width: int, height: int,
               seed: int, prompt: PromptStyle | None = None, transition: TransitionStyle | None = None,
               identity: IdentityValue | None = None, **settings_inputs: Any) -> tuple:
        settings = sampler_settings(settings_inputs)
        session = current_store().get(session_id)
        transition = transition or TransitionStyle()
        routing = settings.attention.model_dump(mode="json", exclude_defaults=True) if settings.attention.sparge_attention else {}
        appearance = (prompt.appearance if prompt else "") or persona.appearance.description
        identity = identity or (prompt.identity if prompt else None)
        conditioner = identity.conditioner if identity is not None else None
        key = (id(engine), persona.id, width, height, seed, settings.denoising_steps, json.dumps(routing, sort_keys=True),
               transition, appearance, id(conditioner))
        bar = progress(1)
        with session.lock:
            slot = session.peek("renderer")
            if slot is None or getattr(slot, "key", None) != key:
                slot = self._start(engine, persona, session, key, width, height, seed, settings.denoising_steps,
                                   routing, transition, appearance, conditioner)
            elif engine.owner is not slot.backend:
                # Another session streamed on this engine's KV cache meanwhile: restart ours.
                slot.backend.start_session(slot.spec)
                _apply_easing(slot.backend, transition)
                slot.submitted_turn = 0
            engine.owner = slot.backend
            slot.backend.set_recache_timing(settings.prompt_switch_recache)  # live: no restart
            slot.backend.sampler._s().recache_mode = settings.recache_mode
            if plan.turn > slot.submitted_turn:
                slot.backend.submit(list(plan.directives), plan.turn)
                slot.submitted_turn = plan.turn
            chunk = slot.backend.next_chunk()
        bar.update(1)
        return (FramesValue(session_id=session_id, backend=self.BACKEND, chunk=chunk, fps=16.0,
                            extra={"attention": "sparse" if routing else "dense"}),)

    def _start(self, engine, persona, session: Session, key, width, height, seed, steps, routing, transition,
               appearance, conditioner=None) -> _EngineSlot:
        from ..video.backend import SessionSpec
        from ..video.longlive.engine import NATIVE_FPS, LongLiveBackend

        look = persona.appearance.model_dump(mode="json")
        look["description"] = appearance
        spec = SessionSpec(persona_id=persona.id, persona_name=persona.name, look=look, width=width, height=height,
                           fps=NATIVE_FPS, seed=seed, vocabulary=own_vocabulary(persona))
        backend = LongLiveBackend(engine.model, engine.text_encoder, engine.decoder, steps=steps,
                                  blend_chunks=transition.chunks, settings=engine.settings, attention=routing,
                                  models_dir=engine.models_dir, identity=conditioner)
        try:
            backend.start_session(spec)
        except Exception:
            engine.owner = None  # the failed start already rewrote the shared KV cache: no stream is valid
            raise
        _apply_easing(backend, transition)
        slot = _EngineSlot(key=key, backend=backend, spec=spec, engine=engine)
        session.replace("renderer", slot)
        session.on_reset(_reset_hook(session))
        return slot


def own_vocabulary(persona) -> dict:
    """The persona's own words as entries (phrase included): LongLive's prompt composer adds
    them to the core vocabulary it already knows."""
    return {
        "actions": [entry.model_dump(mode="json") for entry in persona.extra_actions],
        "expressions": [entry.model_dump(mode="json") for entry in persona.extra_expressions],
    }


def _apply_easing(backend, transition: TransitionStyle) -> None:
    backend.blender.easing = transition.easing


def _reset_hook(session: Session):
    def reset() -> None:
        slot = session.peek("renderer")
        if slot is not None:
            slot.backend.reset()

    return session.resource("longlive_reset_hook", lambda: reset)


class PersonaPromptComposer:
    """How LongLive prompts describe the persona, and what the current plan composes to."""

    DESCRIPTION = (
        "Prompt composer: sets the appearance text that starts every LongLive prompt (the card's look, "
        "a reference photo's, or your own) and shows the prompts the current plan composes to."
    )
    CATEGORY = "persona/video"
    RETURN_TYPES = (PROMPT, "STRING")
    RETURN_NAMES = ("prompt", "text")
    FUNCTION = "compose"

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {
            "required": {
                "persona": (PERSONA, {"tooltip": "Whose look and vocabulary the prompts use."}),
                "plan": (DIRECTIVES, {"tooltip": "The planned directives to compose prompts for."}),
                "appearance": (
                    "STRING",
                    {"default": "", "multiline": True,
                     "tooltip": "Appearance text at the start of every prompt. Empty: the persona card's look "
                     "(or the identity reference's, when connected)."},
                ),
            },
            "optional": {
                "identity": (IDENTITY, {"tooltip": "Appearance measured on a reference photo (identity node)."}),
            },
        }

    def compose(self, persona, plan: DirectivePlan, appearance: str, identity=None) -> tuple:
        from ..video.backend import SessionSpec
        from ..video.text.prompt import PromptComposer

        text = appearance.strip() or (identity.appearance if identity is not None else "")
        look = persona.appearance.model_dump(mode="json")
        look["description"] = text or persona.appearance.description
        spec = SessionSpec(persona_id=persona.id, persona_name=persona.name, look=look,
                           vocabulary=own_vocabulary(persona))
        composer = PromptComposer.from_session(spec)
        prompts = [composer.compose(d) for d in plan.directives] or [composer.compose(None)]
        preview = "\n".join(prompts)
        return (PromptStyle(appearance=text, preview=preview, identity=identity), preview)


class PersonaTransitionBlender:
    """How the engine moves from one action's prompt to the next."""

    DESCRIPTION = (
        "Transition blender: the text conditioning moves to each new action's prompt over this many chunks "
        "(per-token slerp, KV window re-cached each step, sink kept), so actions never jump-cut."
    )
    CATEGORY = "persona/video"
    RETURN_TYPES = (TRANSITION,)
    RETURN_NAMES = ("transition",)
    FUNCTION = "blend"

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        from ..video.transitions.easing import EASINGS

        return {
            "required": {
                "chunks": ("INT", {"default": 2, "min": 0, "max": 8,
                                   "tooltip": "Chunks (of 12 frames) a prompt change is spread over; 0 switches at once."}),
                "easing": (list(EASINGS), {"default": "smoothstep", "tooltip": "Blend curve over those chunks."}),
            }
        }

    def blend(self, chunks: int, easing: str) -> tuple:
        return (TransitionStyle(chunks=chunks, easing=easing),)
