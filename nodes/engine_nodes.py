"""Engine-side nodes: LongLive model loader, (sparse-attention) LongLive sampler, prompt
composer, transition blender.

Classic ComfyUI node API, nothing imported from ComfyUI or torch at module load. The loader
is cached (same inputs, same loaded weights); the sampler runs on every queued run / every
headless tick (IS_CHANGED → NaN, `STREAMING = True`) and keeps its engine in the session
store, like the preview renderer, so the two renderers are interchangeable in a workflow.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
from .runtime import Session, current_store, every_run
from .types import DIRECTIVES, FRAMES, PERSONA, DirectivePlan, FramesValue

#: ComfyUI model folder (ComfyUI/models/persona/, or `persona:` in extra_model_paths.yaml)
#: that plays the part of the models directory inside ComfyUI.
COMFY_MODELS_FOLDER = "persona"
#: The files a LongLive engine loads, by decoder choice (keys of video.model_files).
ENGINE_FILES = ("longlive.generator", "longlive.lora", "umt5.encoder", "umt5.tokenizer")
DECODER_FILES = {"tae": "taew2.1", "vae": "wan2.1.vae"}


class EngineFilesMissingError(FileNotFoundError):
    """The models folder lacks weight files the engine needs; the message names every one."""


class EngineDependencyError(ImportError):
    """A package of the `longlive` extra is not installed in the Python that runs the node."""


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


def missing_files(models_dir: Path, decoder: str = "tae") -> list[str]:
    """Messages naming each weight file the engine needs that `models_dir` lacks."""
    from ..video import model_files

    problems = []
    for key in (*ENGINE_FILES, DECODER_FILES[decoder]):
        try:
            model_files.find(key, models_dir)
        except model_files.CheckpointNotFoundError as exc:
            problems.append(str(exc))
    return problems


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
        from ..video.longlive.config import PRESETS

        return {
            "required": {
                "preset": (
                    ["auto", *PRESETS],
                    {"default": "auto", "tooltip": "Architecture preset. auto: read from the checkpoint's shapes; "
                     "a name: the checkpoint must match it."},
                ),
                "decoder": (
                    list(DECODER_FILES),
                    {"default": "tae", "tooltip": "Latent decoder: tae = TAEW2.1 (real time), vae = full Wan VAE."},
                ),
                "dtype": (
                    ["bfloat16", "float16", "float32"],
                    {"default": "bfloat16", "tooltip": "Compute dtype of the DiT (bfloat16 on Hopper GPUs)."},
                ),
                "local_attn_size": (
                    "INT",
                    {"default": 12, "min": 6, "max": 30, "step": 3,
                     "tooltip": "Latent frames of context a chunk attends to, sink included (multiple of 3)."},
                ),
                "sink_size": (
                    "INT",
                    {"default": 3, "min": 0, "max": 12, "step": 3,
                     "tooltip": "Latent frames at the start kept in the cache forever: the identity anchor."},
                ),
                "compile": (
                    "BOOLEAN",
                    {"default": False, "tooltip": "torch.compile the transformer and the TAE decoder (30-45 s before the "
                     "first chunk, faster after; with fp8, what makes 480x832 real time on an H100)."},
                ),
            },
            "optional": {  # optional, so workflows saved before they existed still load
                "models_dir": (
                    "STRING",
                    {"default": "", "tooltip": "Folder with the weight files. Empty: $PERSONA_MODELS_DIR, else "
                     "ComfyUI/models/persona, else ~/.cache/comfyui-persona/models."},
                ),
                "linear_precision": (
                    ["bf16", "fp8"],
                    {"default": "bf16", "tooltip": "Block linear layers in the compute dtype, or FP8 e4m3 (Hopper "
                     "GPUs: faster, slightly different numbers)."},
                ),
            },
        }

    def load(self, preset: str, decoder: str, dtype: str, local_attn_size: int, sink_size: int, compile: bool,
             models_dir: str = "", linear_precision: str = "bf16") -> tuple:
        from ..video.longlive.engine import LongLiveBackend
        from ..video.longlive.settings import LongLiveSettings

        settings = LongLiveSettings(preset=preset, decoder=decoder, dtype=dtype, local_attn_size=local_attn_size,
                                    sink_size=sink_size, compile=compile, linear_precision=linear_precision)
        directory = resolve_models_dir(models_dir)
        key = (settings.model_dump_json(), str(directory))
        if key not in _LOADED:  # ComfyUI caches the output; this also spares the headless runner a reload
            problems = missing_files(directory, decoder)
            if problems:  # all of them at once, not one per attempt
                raise EngineFilesMissingError(f"{len(problems)} LongLive file(s) missing:\n" + "\n".join(problems))
            bar = progress(1)
            try:
                built = LongLiveBackend(settings=settings, models_dir=directory)
            except ModuleNotFoundError as exc:
                raise EngineDependencyError(
                    f"the LongLive engine needs the Python package {exc.name!r}: install the pack's extra "
                    "with `pip install comfyui-persona[longlive]` (in ComfyUI's Python)"
                ) from exc
            _LOADED.clear()  # one engine resident at a time: the 1.3B weights are ~5 GiB
            _LOADED[key] = LongLiveModel(settings=settings, models_dir=directory, model=built.model,
                                         text_encoder=built.text_encoder, decoder=built.decoder)
            bar.update(1)
        return (_LOADED[key],)


def _attention_settings(attention: str, topk: float, cdf_threshold: float, timestep_threshold: float) -> dict:
    """The attention dict the engine takes (empty = dense SDPA), validated by H7's model."""
    if attention == "dense":
        return {}
    from ..video.attention.config import SparseAttentionConfig

    config = SparseAttentionConfig(
        sparge_attention=True,
        sparge_topk=topk,
        sparge_cdf_threshold=cdf_threshold or None,
        sparge_timestep_threshold=timestep_threshold,
    )
    return config.model_dump(mode="json")


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
                "steps": ("INT", {"default": 4, "min": 1, "max": 4,
                                  "tooltip": "Denoising steps per chunk (LongLive is trained for 4)."}),
                "attention": (
                    ["dense", "sparse"],
                    {"default": "dense", "tooltip": "Self-attention: dense SDPA, or block-sparse where allowed."},
                ),
                "sparse_topk": ("FLOAT", {"default": 0.5, "min": 0.05, "max": 1.0, "step": 0.05,
                                          "tooltip": "Sparse only: fraction of key blocks each query block keeps."}),
                "sparse_cdf_threshold": (
                    "FLOAT",
                    {"default": 0.0, "min": 0.0, "max": 1.0, "step": 0.01,
                     "tooltip": "Sparse only: if > 0, keep the fewest key blocks reaching this probability "
                     "mass instead of top-k."},
                ),
                "sparse_timestep_threshold": (
                    "FLOAT",
                    {"default": 800.0, "min": 0.0, "max": 1000.0, "step": 1.0,
                     "tooltip": "Sparse only: sparse on denoising steps with t below this (800: the last step)."},
                ),
            },
            "optional": {
                "prompt": (PROMPT, {"tooltip": "Prompt style from the prompt composer (appearance text, and "
                                    "the identity reference when one is connected to the composer)."}),
                "transition": (TRANSITION, {"tooltip": "How prompts blend between actions (transition blender)."}),
                "identity": (IDENTITY, {"tooltip": "Reference photo from the identity node: the stream is anchored "
                                        "on it (its VAE latents fill the KV sink). Overrides the composer's."}),
                "prompt_switch_recache": (
                    ["before", "after"],
                    {"default": "after", "tooltip": "When a new directive re-caches the context window: right "
                     "after its first chunk (default: the change shows sooner; that first chunk follows the new "
                     "prompt less closely), or before it (LongLive's order). Changes apply between chunks."},
                ),
            },
        }

    @classmethod
    def IS_CHANGED(cls, **kwargs: Any) -> str:
        return every_run()

    def render(self, engine: LongLiveModel, persona, plan: DirectivePlan, session_id: str, width: int, height: int,
               seed: int, steps: int, attention: str, sparse_topk: float, sparse_cdf_threshold: float,
               sparse_timestep_threshold: float, prompt: PromptStyle | None = None,
               transition: TransitionStyle | None = None, identity: IdentityValue | None = None,
               prompt_switch_recache: str = "after") -> tuple:
        session = current_store().get(session_id)
        transition = transition or TransitionStyle()
        routing = _attention_settings(attention, sparse_topk, sparse_cdf_threshold, sparse_timestep_threshold)
        appearance = (prompt.appearance if prompt else "") or persona.appearance.description
        identity = identity or (prompt.identity if prompt else None)
        conditioner = identity.conditioner if identity is not None else None
        key = (id(engine), persona.id, width, height, seed, steps, json.dumps(routing, sort_keys=True),
               transition, appearance, id(conditioner))
        bar = progress(1)
        with session.lock:
            slot = session.renderer
            if slot is None or getattr(slot, "key", None) != key:
                slot = self._start(engine, persona, session, key, width, height, seed, steps, routing,
                                   transition, appearance, conditioner)
            elif engine.owner is not slot.backend:
                # Another session streamed on this engine's KV cache meanwhile: restart ours.
                slot.backend.start_session(slot.spec)
                _apply_easing(slot.backend, transition)
                slot.submitted_turn = 0
            engine.owner = slot.backend
            slot.backend.set_recache_timing(prompt_switch_recache)  # live: no restart
            if plan.turn > slot.submitted_turn:
                slot.backend.submit(list(plan.directives), plan.turn)
                slot.submitted_turn = plan.turn
            chunk = slot.backend.next_chunk()
        bar.update(1)
        return (FramesValue(session_id=session_id, backend=self.BACKEND, chunk=chunk, fps=16.0,
                            extra={"attention": attention}),)

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
        session.set_renderer(slot)
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
