"""Engine-side nodes: LongLive model loader, (sparse-attention) LongLive sampler, prompt
composer, transition blender.

Classic ComfyUI node API, nothing imported from ComfyUI or torch at module load: ComfyUI's
modules are looked up in `sys.modules` (as nodes/comfy_env.py does), so the headless runner
runs the same classes without ComfyUI. The loader is cached (same inputs, same loaded
weights) and its settings inputs are generated from `LongLiveSettings` (settings_inputs.py);
the sampler runs on every queued run / every headless tick (IS_CHANGED new on every run,
`STREAMING = True`) and keeps its session's backend in the session store, like the preview
renderer, so the two renderers are interchangeable in a workflow.

Inside ComfyUI:
- files come from ComfyUI's shared model folders, picked in combo inputs: the generator from
  `diffusion_models`, its LoRA from `loras`, UMT5 from `text_encoders`, the Wan VAE from `vae`,
  TAEW2.1 from `vae_approx`; "auto" is the pack's own models folder (`models/persona`, or
  $PERSONA_MODELS_DIR), kept as the fallback;
- the engine is registered with `comfy.model_management` (a ModelPatcher around the DiT), so
  "Unload models" and memory pressure offload it; the next run loads it back and rebuilds the
  sessions' caches;
- the sampler checks ComfyUI's interrupt between denoising passes (`processing_interrupted`):
  a cancel stops the chunk within one pass and the next run makes that same chunk (no gap);
  the progress bar moves per pass with a latent preview (ComfyUI's Latent2RGB factors for Wan).
"""

from __future__ import annotations

import logging
import os
import sys
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
from .runtime import Session, current_store, every_run
from .types import DIRECTIVES, FRAMES, PERSONA, PERSONA_OR_SCENE, DirectivePlan, FramesValue

log = logging.getLogger(__name__)

#: ComfyUI model folder (ComfyUI/models/persona/, or `persona:` in extra_model_paths.yaml)
#: that plays the part of the models directory inside ComfyUI.
COMFY_MODELS_FOLDER = "persona"
#: The files a LongLive engine loads, by decoder choice (keys of video.model_files).
ENGINE_FILES = ("longlive.generator", "longlive.lora", "umt5.encoder", "umt5.tokenizer")
DECODER_FILES = {"tae": "taew2.1", "vae": "wan2.1.vae"}
#: Loader input → (ComfyUI model folder it lists, model-file key it replaces).
FILE_PICKERS = {
    "generator": ("diffusion_models", "longlive.generator"),
    "lora": ("loras", "longlive.lora"),
    "text_encoder": ("text_encoders", "umt5.encoder"),
    "vae": ("vae", "wan2.1.vae"),
    "tae": ("vae_approx", "taew2.1"),
}
#: The picker value that means "the pack's models folder" (models/persona, $PERSONA_MODELS_DIR).
AUTO_FILE = "auto"


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


def missing_file_errors(models_dir: Path, decoder: str = "tae", paths: dict | None = None) -> list:
    """The `CheckpointNotFoundError` of each weight file the engine needs that is not there."""
    from ..video.longlive.loader import EngineFiles

    return EngineFiles(models_dir=models_dir, paths=dict(paths or {})).missing(decoder)


def missing_files(models_dir: Path, decoder: str = "tae") -> list[str]:
    """Messages naming each weight file the engine needs that `models_dir` lacks."""
    return [str(exc) for exc in missing_file_errors(models_dir, decoder)]


# --------------------------------------------------------------------------- ComfyUI hooks


def _comfy(name: str) -> Any | None:
    """A ComfyUI module if this process is ComfyUI (never imported from here)."""
    return sys.modules.get(name)


def file_choices(folder: str) -> list[str]:
    """"auto" then the files of ComfyUI's model folder `folder` (only "auto" outside ComfyUI)."""
    folder_paths = _comfy("folder_paths")
    if folder_paths is None:
        return [AUTO_FILE]
    try:
        return [AUTO_FILE, *folder_paths.get_filename_list(folder)]
    except KeyError:
        return [AUTO_FILE]


def picked_paths(picks: dict[str, str]) -> dict[str, Path]:
    """Model-file key → full path for every picker not on "auto" (ComfyUI's folders)."""
    folder_paths = _comfy("folder_paths")
    out: dict[str, Path] = {}
    for name, value in picks.items():
        if not value or value == AUTO_FILE:
            continue
        folder, key = FILE_PICKERS[name]
        full = folder_paths.get_full_path(folder, value) if folder_paths is not None else None
        out[key] = Path(full) if full else Path(value)
        if key == "umt5.encoder":  # the tokenizer travels with the encoder when it sits beside it
            beside = out[key].parent / "umt5-xxl" / "tokenizer.json"
            if beside.is_file():
                out["umt5.tokenizer"] = beside
    return out


def comfy_interrupted() -> bool:
    """Whether the user pressed Cancel in ComfyUI (False outside ComfyUI). Reads the flag
    without clearing it: `raise_comfy_interrupt` clears it the way ComfyUI does."""
    mm = _comfy("comfy.model_management")
    return bool(mm is not None and mm.processing_interrupted())


def raise_comfy_interrupt(cause: BaseException) -> None:
    """Raise ComfyUI's own interrupt exception (clearing its flag); `cause` outside ComfyUI."""
    mm = _comfy("comfy.model_management")
    if mm is not None:
        mm.throw_exception_if_processing_interrupted()
    raise cause


def register_with_comfy(engine) -> Any:
    """Put the engine's DiT under `comfy.model_management` (a ModelPatcher), so "Unload models"
    and memory pressure can offload it; None outside ComfyUI."""
    mm, patcher_mod = _comfy("comfy.model_management"), _comfy("comfy.model_patcher")
    device = engine.runtime.device
    if mm is None or patcher_mod is None or device.type != "cuda":
        return None
    try:
        patcher = patcher_mod.ModelPatcher(engine.model, load_device=device, offload_device=mm.unet_offload_device())
        extension = _comfy("comfy.patcher_extension")
        if extension is not None:  # "Unload models" / memory pressure: the sessions' caches go too
            patcher.add_callback(extension.CallbacksMP.ON_DETACH, lambda _patcher, _all: engine.release_caches())
        mm.load_models_gpu([patcher])
    except Exception:  # another ComfyUI version's model management: stream anyway, unmanaged
        log.warning("the LongLive engine could not be registered with comfy.model_management; "
                    "'Unload models' will not free it", exc_info=True)
        return None
    return patcher


def ensure_engine_loaded(value: LongLiveModel) -> None:
    """Before a run: ask ComfyUI to (re)load the engine (a no-op when resident). If ComfyUI had
    offloaded it meanwhile, the sessions on it end and the caches are rebuilt at the new place."""
    mm = _comfy("comfy.model_management")
    if value.comfy_model is None or mm is None:
        return
    first = next(value.model.parameters())
    before = (first.device, first.data_ptr())
    mm.load_models_gpu([value.comfy_model])
    first = next(value.model.parameters())
    if (first.device, first.data_ptr()) != before:
        value.engine.reset_after_move()


def latent_preview(latents) -> Any:
    """A small RGB preview of latents (1, 16, F, h, w) from ComfyUI's Latent2RGB factors for
    Wan 2.1 (`comfy.latent_formats.Wan21`), or None outside ComfyUI."""
    formats = _comfy("comfy.latent_formats")
    if formats is None or latents is None:
        return None
    import torch
    from PIL import Image

    fmt = formats.Wan21()
    factors = torch.tensor(fmt.latent_rgb_factors, device=latents.device, dtype=torch.float32)
    bias = torch.tensor(fmt.latent_rgb_factors_bias, device=latents.device, dtype=torch.float32)
    rgb = torch.einsum("chw,cr->hwr", latents[0, :, -1].float(), factors) + bias
    array = ((rgb.clamp(-1, 1) + 1) * 127.5).to(torch.uint8).cpu().numpy()
    return ("JPEG", Image.fromarray(array), 512)


_LOADED: dict[tuple, LongLiveModel] = {}


#: Load-time settings newer than the first shared LongLive workflows, in the order they were added.
APPENDED_SETTINGS = ("attention_kernel",)


class PersonaLongLiveLoader:
    """Loads the LongLive generator (+ its LoRA), UMT5 and the decoder once per settings."""

    DESCRIPTION = (
        "Load the LongLive engine (causal Wan2.1-T2V-1.3B + LoRA, UMT5 text encoder, TAEW2.1 or Wan VAE "
        "decoder) from ComfyUI's model folders (or models/persona). Cached: the weights load once. On a GPU "
        "it compiles and uses FP8 block linears where supported (settings: auto), with the compile warm-up "
        "here. One loaded engine serves up to max_sessions sessions of one frame size, batched."
    )
    CATEGORY = "persona/video"
    RETURN_TYPES = (LONGLIVE,)
    RETURN_NAMES = ("engine",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        from ..video.longlive.settings import LongLiveSettings
        from .settings_inputs import node_inputs

        pickers = {
            name: (file_choices(folder), {"default": AUTO_FILE, "tooltip": f"File from ComfyUI's models/{folder} "
                                          "folder; auto = the pack's models folder (models/persona)."})
            for name, (folder, _) in FILE_PICKERS.items()
        }
        required = node_inputs(LongLiveSettings, load=True)  # every load-time setting, one source
        # Settings added after workflows were shared come last, as optional inputs: a saved
        # workflow lists its widget values by position, so they must not shift the others.
        appended = {name: required.pop(name) for name in APPENDED_SETTINGS}
        return {
            "required": required,
            "optional": {  # optional, so workflows saved before they existed still load
                **pickers,
                "models_dir": (
                    "STRING",
                    {"default": "", "tooltip": "Folder with the weight files for the pickers on auto. Empty: "
                     "$PERSONA_MODELS_DIR, else ComfyUI/models/persona, else ~/.cache/comfyui-persona/models."},
                ),
                **appended,
            },
        }

    def load(self, models_dir: str = "", **inputs: Any) -> tuple:
        from ..video.longlive.settings import LongLiveSettings
        from .settings_inputs import settings_from_inputs

        picks = {name: inputs.pop(name, AUTO_FILE) for name in FILE_PICKERS}
        settings = settings_from_inputs(LongLiveSettings, inputs)
        directory = resolve_models_dir(models_dir)
        paths = picked_paths(picks)
        key = (settings.model_dump_json(), str(directory), tuple(sorted((k, str(v)) for k, v in paths.items())))
        if key not in _LOADED:  # ComfyUI caches the output; this also spares the headless runner a reload
            problems = missing_file_errors(directory, settings.decoder, paths)
            if problems:  # all of them at once, not one per attempt
                raise EngineFilesMissingError(problems)
            _LOADED.clear()  # one engine resident at a time: the 1.3B weights are ~5 GiB
            _LOADED[key] = self._load(settings, directory, paths)
        return (_LOADED[key],)

    @staticmethod
    def _load(settings, directory: Path, paths: dict) -> LongLiveModel:
        try:
            from ..video.longlive.loader import EngineFiles, load_engine
        except ModuleNotFoundError as exc:
            raise EngineDependencyError(
                f"the LongLive engine needs the Python package {exc.name!r}: install the pack's extra "
                "with `pip install comfyui-persona[longlive]` (in ComfyUI's Python)"
            ) from exc
        bar = progress(1)

        def warm(done: int, total: int) -> None:  # the compile warm-up, chunk by chunk
            bar.update_absolute(done, total)

        try:
            engine = load_engine(settings, EngineFiles(models_dir=directory, paths=paths), progress=warm)
        except ModuleNotFoundError as exc:
            raise EngineDependencyError(
                f"the LongLive engine needs the Python package {exc.name!r}: install the pack's extra "
                "with `pip install comfyui-persona[longlive]` (in ComfyUI's Python)"
            ) from exc
        bar.update_absolute(1, 1)
        return LongLiveModel(engine=engine, comfy_model=register_with_comfy(engine))


#: The sampler's live engine settings, generated from `LongLiveSettings` (nodes/settings_inputs.py).
SAMPLER_SETTINGS = ("denoising_steps", "prompt_switch_recache", "recache_mode", "preempt")
#: Live settings newer than the first shared LongLive workflows: optional inputs after the others.
APPENDED_SAMPLER_SETTINGS = ("fill_batches",)
#: Its attention settings, generated from `SparseAttentionConfig`.
ATTENTION_SETTINGS = ("sparge_attention", "sparge_topk", "sparge_cdf_threshold", "sparge_timestep_threshold")


def sampler_settings(values: dict[str, Any]):
    """`LongLiveSettings` (live fields and attention) from the sampler node's inputs."""
    from ..video.attention.config import SparseAttentionConfig
    from ..video.longlive.settings import LongLiveSettings
    from .settings_inputs import settings_from_inputs

    attention = settings_from_inputs(SparseAttentionConfig, values)
    live = SAMPLER_SETTINGS + APPENDED_SAMPLER_SETTINGS
    return settings_from_inputs(LongLiveSettings, {k: v for k, v in values.items() if k in live},
                                attention=attention)


@dataclass
class _EngineSlot:
    """A session's LongLive backend, the settings it started with, the last turn submitted."""

    key: tuple
    backend: Any
    spec: Any
    engine: LongLiveModel
    submitted_turn: int = 0

    def close(self) -> None:
        self.backend.close()


class PersonaLongLiveSampler:
    """Streams the persona from LongLive, one chunk per run, with dense or block-sparse attention."""

    DESCRIPTION = (
        "LongLive sampler: each run generates the next chunk (3 latent frames → 12 video frames at 16 fps) "
        "for the planned directives, blending prompts between actions; sessions on one engine are batched. "
        "Cancel stops within one denoising pass and the next run continues the stream. sparge_attention uses "
        "block-sparse self-attention (SpargeAttn's rules) on the late denoising steps."
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
                "persona": (PERSONA_OR_SCENE, {"tooltip": "Who to show (appearance, vocabulary); a scene: "
                                              "every character in one prompt, left to right."}),
                "plan": (DIRECTIVES, {"tooltip": "The planned directives from the state tracker."}),
                "session_id": (
                    "STRING",
                    {"default": "default", "tooltip": "Session whose stream this is (see the turn node)."},
                ),
                "width": ("INT", {"default": 832, "min": 64, "max": 1536, "step": 16,
                                  "tooltip": "Frame width, px (multiple of 16)."}),
                "height": ("INT", {"default": 480, "min": 64, "max": 1024, "step": 16,
                                   "tooltip": "Frame height, px (multiple of 16)."}),
                "seed": ("INT", {"default": 0, "min": 0, "max": 2**31 - 1, "control_after_generate": True,
                                 "tooltip": "Noise seed of the stream: same seed, same frames (changing it "
                                 "restarts the stream)."}),
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
                # Optional, last: workflows saved before these existed keep their widget positions.
                **node_inputs(LongLiveSettings, APPENDED_SAMPLER_SETTINGS),
            },
        }

    @classmethod
    def IS_CHANGED(cls, **kwargs: Any) -> str:
        return every_run()

    def render(self, engine: LongLiveModel, persona, plan: DirectivePlan, session_id: str, width: int, height: int,
               seed: int, prompt: PromptStyle | None = None, transition: TransitionStyle | None = None,
               identity: IdentityValue | None = None, **settings_inputs: Any) -> tuple:
        from ..video.longlive.host import ChunkInterrupted
        from .scene_nodes import lead_persona

        settings = sampler_settings(settings_inputs)
        ensure_engine_loaded(engine)
        session = current_store().get(session_id)
        persona = lead_persona(persona, session)  # a scene's lead; the session's cast is the scene
        cast = tuple(session.cast)
        transition = transition or TransitionStyle()
        sparse = settings.attention.sparge_attention
        routing = settings.attention.model_dump(mode="json", exclude_defaults=True) if sparse else {}
        appearance = (prompt.appearance if prompt else "") or persona.appearance.description
        identity = identity or (prompt.identity if prompt else None)
        conditioner = identity.conditioner if identity is not None else None
        key = (id(engine.engine), tuple(p.id for p in cast) or persona.id, width, height, seed,
               repr(sorted(routing.items())), transition, appearance, id(conditioner))
        steps = len(engine.engine.runtime.model.cfg.denoising_step_list[: settings.denoising_steps])
        bar = progress(steps + 1)
        with session.lock:
            slot = session.renderer
            if slot is None or slot.key != key or slot.backend.session is None or slot.backend.session.closed:
                slot = self._start(engine, persona, session, key, width, height, seed, routing, transition,
                                   appearance, conditioner, cast)
            backend = slot.backend
            backend.set_recache_timing(settings.prompt_switch_recache)  # live: no restart
            backend.set_recache_mode(settings.recache_mode)
            backend.session.configure(steps=settings.denoising_steps)
            engine.host.preempt = settings.preempt
            engine.host.prefetch = settings.fill_batches
            if plan.turn > slot.submitted_turn:
                backend.submit(list(plan.directives), plan.turn)
                slot.submitted_turn = plan.turn

            def on_pass(done: int, total: int, latents) -> None:
                preview = latent_preview(latents)
                if preview is None:
                    bar.update_absolute(done, total)
                else:
                    bar.update_absolute(done, total, preview)

            try:
                chunk = backend.next_chunk(interrupt=comfy_interrupted, progress=on_pass)
            except ChunkInterrupted as exc:
                raise_comfy_interrupt(exc)
        bar.update_absolute(steps + 1, steps + 1)
        return (FramesValue(session_id=session_id, backend=self.BACKEND, chunk=chunk, fps=16.0,
                            extra={"attention": "sparse" if sparse else "dense"}),)

    def _start(self, engine: LongLiveModel, persona, session: Session, key, width, height, seed, routing, transition,
               appearance, conditioner=None, cast: tuple = ()) -> _EngineSlot:
        from ..video.backend import SessionSpec
        from ..video.longlive.engine import NATIVE_FPS, LongLiveBackend

        def spec_of(who, description: str | None = None) -> SessionSpec:
            look = who.appearance.model_dump(mode="json")
            if description is not None:
                look["description"] = description
            return SessionSpec(persona_id=who.id, persona_name=who.name, look=look, width=width, height=height,
                               fps=NATIVE_FPS, seed=seed, vocabulary=own_vocabulary(who))

        spec = spec_of(persona, appearance)  # the composer's appearance text (and identity) are the lead's
        backend = LongLiveBackend(engine=engine.engine, blend_chunks=transition.chunks,
                                  blend_recache=transition.recache, attention=routing,
                                  identity=conditioner)
        # EngineBusyError: another size streams on this engine, or it is full
        if cast:  # a scene: one prompt naming every character (docs/scenes.md, "LongLive")
            backend.start_scene([spec if who.id == persona.id else spec_of(who) for who in cast])
        else:
            backend.start_session(spec)
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
        "(per-token slerp, sink kept; the KV window re-cached when the blend arrives, or after every step), so "
        "actions never jump-cut."
    )
    CATEGORY = "persona/video"
    RETURN_TYPES = (TRANSITION,)
    RETURN_NAMES = ("transition",)
    FUNCTION = "blend"

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        from ..video.longlive.settings import BLEND_RECACHE
        from ..video.transitions.easing import EASINGS

        return {
            "required": {
                "chunks": ("INT", {"default": 2, "min": 0, "max": 8,
                                   "tooltip": "Chunks (of 12 frames) a prompt change is spread over; 0 switches at once."}),
                "easing": (list(EASINGS), {"default": "smoothstep", "tooltip": "Blend curve over those chunks."}),
            },
            "optional": {  # optional: workflows saved before it load with the default
                "recache": (list(BLEND_RECACHE), {
                    "default": "last",
                    "tooltip": "When LongLive re-caches its KV window under the blended prompt: once, when the blend "
                               "arrives (last: one window pass per change, as stock LongLive), or after every step "
                               "(each: a window pass per chunk of the blend, about 2.6 chunk passes of GPU time each)."}),
            },
        }

    def blend(self, chunks: int, easing: str, recache: str = "last") -> tuple:
        return (TransitionStyle(chunks=chunks, easing=easing, recache=recache),)
