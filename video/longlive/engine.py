"""`LongLiveBackend`: the real engine behind the `RendererBackend` protocol.

Per chunk: the directive queue decides the prompt (PromptComposer), the text encoder turns it
into an embedding (cached per prompt), the ConditioningBlender moves the embedding in
effect toward it over a few chunks (each change re-caches the KV window, sink kept), the
StreamingSampler makes 3 latent frames, and the streaming decoder (TAEW2.1 or the Wan VAE)
turns them into 12 video frames (9 for the first chunk) at 16 fps; `ChunkPipeline` runs the
decode beside the chunk's refresh pass and places the re-cache before or after the chunk.

Collaborators are passed in (STYLE.md house rule 9), so a test builds the whole engine from
tiny random parts on CPU; without them the engine loads the files of the models directory
(real ones, or the tiny set of `testing.write_tiny_models`).

Identity anchoring: when the session's look names a `reference_image` file, or an
`IdentityConditioner` was given (`identity=`), the reference photo is
framed on the face, encoded by the Wan VAE as a still clip of one chunk (3 latent frames)
and written into the KV cache as the session's first chunk (`StreamingSampler.prime_sink`)
before anything is generated: the sink every later chunk attends to, never re-cached. The
prompt's appearance text becomes `IdentityConditioner.appearance_prompt(look)`. With the TAE
decoder the Wan VAE is not resident: it is loaded from the models directory for that one
encode and freed right after (the latents are cached per reference and size, so restarting
a session does not load it again).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, replace

import numpy as np
import torch

from ...persona.schema import ActionDirective
from ..backend import Chunk, RenderError, SessionSpec
from .model import CausalWanModel
from .runtime import EngineRuntime
from .sampler import StreamingSampler

NATIVE_FPS = 16.0


@dataclass
class _Queued:
    directive: ActionDirective
    seq: int
    chunks_left: int | None  # None: holds until replaced


class LongLiveBackend:
    """Streams the persona from LongLive. One session at a time; not thread-safe."""

    name = "longlive"

    def __init__(
        self,
        model: CausalWanModel | EngineRuntime | None = None,
        text_encoder=None,
        decoder=None,
        *,
        steps: int | None = None,
        blend_chunks: int = 2,
        settings=None,
        models_dir=None,
        attention: dict | None = None,
        identity=None,
        reference_vae=None,
        reference_sink: bool = True,
        recache: str | None = None,
        recache_mode: str | None = None,
    ) -> None:
        if model is None or text_encoder is None or decoder is None:
            built = _load_from_models_dir(settings, models_dir)
            model = model or built[0]
            text_encoder = text_encoder or built[1]
            decoder = decoder or built[2]
        self.runtime = model if isinstance(model, EngineRuntime) else EngineRuntime(model)
        self.model = self.runtime.model
        self.text_encoder = text_encoder
        self.decoder = decoder
        if steps is None:  # the settings' denoising_steps, else all 4 of LongLive's list
            steps = settings.denoising_steps if settings is not None else None
        if recache_mode is None:
            recache_mode = settings.recache_mode if settings is not None else "stock"
        self.sampler = StreamingSampler(self.runtime, steps=steps, recache_mode=recache_mode)
        self.blend_chunks = blend_chunks
        self.spec: SessionSpec | None = None
        # When a prompt switch re-caches the window: before the next chunk, or right after it.
        self.set_recache_timing(recache or (settings.prompt_switch_recache if settings is not None else "after"))
        if attention is None:  # only what differs from dense: an empty dict keeps the plain DenseRouter
            attention = settings.attention.model_dump(exclude_defaults=True) if settings else {}
        self.attention = attention
        self.models_dir = models_dir
        self.identity = identity  # an IdentityConditioner, or None: from the look's reference_image
        self.reference_vae = reference_vae  # a WanVAE kept resident for reference encodes, else lazy
        # False: references are ignored (no sink priming, no appearance_prompt): the baseline
        # runs of the long-session identity test (docs/identity.md).
        self.reference_sink = reference_sink
        self._look_identity: tuple[str, object] | None = None
        self._reference_cache: tuple = ()  # (conditioner, (w, h, frames), latents)
        self.reference_latents: torch.Tensor | None = None  # what the current session's sink holds

    # ---- session ------------------------------------------------------------------------

    def start_session(self, spec: SessionSpec) -> None:
        from ..decoders.streaming import open_stream
        from ..text.prompt import PromptComposer
        from ..transitions.conditioning import ConditioningBlender
        from .pipeline import ChunkPipeline

        stride = self.model.cfg.vae_stride[1] * self.model.cfg.patch_size[1]
        if spec.width % stride or spec.height % stride:
            raise RenderError(f"LongLive renders sizes that are multiples of {stride}; got {spec.width}x{spec.height}")
        if spec.fps != NATIVE_FPS:
            raise RenderError(f"LongLive streams at {NATIVE_FPS:g} fps; got {spec.fps:g}")
        try:
            self.composer = PromptComposer.from_session(spec)
        except ValueError as exc:
            raise RenderError(str(exc)) from exc
        conditioner = self._conditioner_for(spec.look or {})
        if conditioner is not None:
            self.composer = replace(self.composer, appearance=conditioner.appearance_prompt(spec.look or {}))
        self.spec = spec
        vs = self.model.cfg.vae_stride
        self.sampler.start(spec.height // vs[1], spec.width // vs[2], seed=spec.seed)
        if self.attention:
            from ..attention import make_router

            geometry = self.sampler.window.geometry
            self.sampler.stream.router = make_router(self.attention, num_layers=len(self.model.blocks),
                                                     sink_tokens=geometry.sink_chunks * geometry.rows_per_slot)
        self.pipeline = ChunkPipeline(self.sampler, open_stream(self.decoder), recache=self.recache)
        self.queue: deque[_Queued] = deque()
        self.current: _Queued | None = None
        self.speaking_chunks = 0
        self.frame_index = 0
        self.shows: list[int] = []
        rest = self._embed(self.composer.compose(None))
        self.blender = ConditioningBlender(rest, steps=self.blend_chunks)
        self.sampler.set_prompt(rest, recache=False)
        self._prompt = self.composer.compose(None)
        self.reference_latents = None
        if conditioner is not None and self.model.cfg.sink_size > 0:
            self.reference_latents = self._encode_reference(conditioner, spec.width, spec.height)
            self.sampler.prime_sink(self.reference_latents)

    # ---- identity -----------------------------------------------------------------------

    def _conditioner_for(self, look: dict):
        """The given conditioner, else one for the look's reference_image (built once per path)."""
        if not self.reference_sink:
            return None
        if self.identity is not None:
            return self.identity
        path = look.get("reference_image")
        if not path:
            return None
        path = str(path)
        if self._look_identity is None or self._look_identity[0] != path:
            from ..identity import FaceEmbedder, IdentityConditioner

            try:
                conditioner = IdentityConditioner(path, FaceEmbedder())
            except (ValueError, OSError, ImportError) as exc:  # no file, no face, no face models
                raise RenderError(f"identity reference {path!r}: {exc}") from exc
            self._look_identity = (path, conditioner)
        return self._look_identity[1]

    def _encode_reference(self, conditioner, width: int, height: int) -> torch.Tensor:
        """One sink chunk of clean latents from the reference, (1, C, frames per chunk, h, w)."""
        frames = self.model.cfg.num_frame_per_block
        cached = self._reference_cache
        if not (cached and cached[0] is conditioner and cached[1] == (width, height, frames)):
            vae, loaded = self._reference_encoder()
            try:
                latents = conditioner.reference_latents(vae, width, height, frames=frames)
            finally:
                if loaded:  # the lazily loaded Wan VAE goes as soon as it has encoded
                    del vae
                    if torch.cuda.is_available():
                        torch.cuda.empty_cache()
            # One entry, holding the conditioner itself (an id() could be reused after it dies).
            self._reference_cache = (conditioner, (width, height, frames), latents.float().to(self.sampler.device))
        return self._reference_cache[2]

    def _reference_encoder(self):
        """(Wan VAE, whether it was loaded just now): the decoder itself, the resident one
        given, or the models directory's `Wan2.1_VAE.pth`."""
        from ..decoders.wan_vae import WanVAE

        if isinstance(self.decoder, WanVAE):
            return self.decoder, False
        if self.reference_vae is not None:
            return self.reference_vae, False
        from .. import model_files
        from ..decoders.wan_vae import load_wan_vae

        try:
            path = model_files.find("wan2.1.vae", self.models_dir)
        except model_files.CheckpointNotFoundError as exc:
            raise RenderError(f"identity anchoring encodes the reference with the Wan VAE: {exc}") from exc
        device = self.sampler.device
        return load_wan_vae(path, device=device, dtype=_decoder_dtype(device, "vae")), True

    def set_recache_timing(self, recache: str) -> None:
        """"before" or "after" (`ChunkPipeline`); applies between chunks, no restart."""
        from .pipeline import checked_recache_timing

        self.recache = checked_recache_timing(recache)
        if self.spec is not None:
            self.pipeline.set_recache_timing(recache)

    def _require_session(self) -> None:
        if self.spec is None:
            raise RenderError("start_session first")

    def _embed(self, prompt: str) -> torch.Tensor:
        return self.text_encoder.encode(prompt).to(self.sampler.device)

    # ---- directives ---------------------------------------------------------------------

    def _chunks_for(self, seconds: float | None) -> int | None:
        if seconds is None:
            return None
        frames_per_chunk = self.model.cfg.num_frame_per_block * self.model.cfg.vae_stride[0]
        return max(1, math.ceil(seconds * NATIVE_FPS / frames_per_chunk))

    def submit(self, directives: list[ActionDirective], seq: int) -> None:
        self._require_session()
        for d in directives:  # unknown words fail now, not mid-stream
            try:
                self.composer.compose(d)
            except KeyError as exc:
                raise RenderError(str(exc).strip("'\"")) from exc
        self.queue = deque(_Queued(d, seq, self._chunks_for(d.duration_s)) for d in directives)
        self.current = None
        self._advance()

    def set_speech(self, visemes: list[tuple[int, str]] | None, duration_ms: int = 0) -> None:
        """LongLive cannot place individual mouth shapes; it adds a talking cue to the prompt
        for the spoken duration (the last viseme's offset, or `duration_ms`)."""
        self._require_session()
        if visemes:
            duration_ms = max(duration_ms, max(offset for offset, _ in visemes))
        elif visemes is not None:
            duration_ms = 0
        frames = duration_ms * NATIVE_FPS / 1000
        self.speaking_chunks = math.ceil(frames / (self.model.cfg.num_frame_per_block * self.model.cfg.vae_stride[0]))
        self._retarget()

    def reset(self) -> None:
        self._require_session()
        self.queue.clear()
        self.current = None
        self.speaking_chunks = 0
        self._retarget()

    def _advance(self) -> None:
        """Take the next queued directive (or rest) and aim the blender at its prompt."""
        self.current = self.queue.popleft() if self.queue else None
        if self.current is not None:
            self.shows.append(self.current.seq)
        self._retarget()

    def _retarget(self) -> None:
        directive = self.current.directive if self.current else None
        prompt = self.composer.compose(directive, speaking=self.speaking_chunks > 0)
        if prompt != self._prompt:
            self._prompt = prompt
            self.blender.set_target(self._embed(prompt))

    # ---- frames -------------------------------------------------------------------------

    @torch.no_grad()
    def next_chunk(self) -> Chunk:
        self._require_session()
        embedding, changed = self.blender.step()
        if changed:
            self.pipeline.set_prompt(embedding)  # re-caches the window (before or after the chunk), keeps the sink
        frames = self.pipeline.next_frames().numpy()  # the refresh pass runs beside the decode
        first = self.frame_index
        self.frame_index += frames.shape[0]
        shows, self.shows = self.shows, []
        self._tick()
        pts = [round(i * 1000 / NATIVE_FPS) for i in range(first, self.frame_index)]
        return Chunk(frames=np.ascontiguousarray(frames), first_index=first, pts_ms=pts, shows_directives=shows)

    def _tick(self) -> None:
        """One chunk of time passed: count down speech and the current directive."""
        if self.speaking_chunks:
            self.speaking_chunks -= 1
            if not self.speaking_chunks:
                self._retarget()
        if self.current is not None and self.current.chunks_left is not None:
            self.current.chunks_left -= 1
            if self.current.chunks_left <= 0:
                self._advance()


def _load_from_models_dir(settings, models_dir):
    """Generator (+ merged LoRA), UMT5 and the chosen decoder from the models directory.

    Every loader reads its architecture from the file it loads (config detection): the DiT
    preset from the generator's shapes (or the named `settings.preset`, checked strictly),
    UMT5's sizes, the decoder's widths. The UMT5 encoder pads to the DiT's `text_len`.
    Raises `CheckpointNotFoundError` naming the first missing file.
    """
    from .. import model_files
    from ..decoders.taehv import load_taehv
    from ..decoders.wan_vae import load_wan_vae
    from ..text.umt5 import UMT5TextEncoder, load_tokenizer, load_umt5
    from .checkpoint import load_generator, read_generator_state, resolve_config
    from .lora import merge_lora, read_lora_state
    from .model import cast_for_inference
    from .settings import LongLiveSettings

    settings = settings or LongLiveSettings()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    speed = settings.resolved(device, torch.cuda.get_device_capability() if device == "cuda" else None)
    dtype = getattr(torch, settings.dtype)
    paths = {k: model_files.find(k, models_dir) for k in ("longlive.generator", "longlive.lora", "umt5.encoder", "umt5.tokenizer")}
    decoder_key = "taew2.1" if settings.decoder == "tae" else "wan2.1.vae"
    decoder_path = model_files.find(decoder_key, models_dir)
    generator = paths["longlive.generator"]
    cfg = settings.wan_config(resolve_config(read_generator_state(generator), settings.preset, str(generator)))
    model = load_generator(generator, cfg)
    merge_lora(model, read_lora_state(paths["longlive.lora"]))
    model = cast_for_inference(model.to(device), dtype).eval()
    model.fuse_qkv()  # after the LoRA merge, which names q, k, v
    if speed.fp8:
        from .fp8 import quantize_blocks_fp8

        quantize_blocks_fp8(model)  # after the LoRA merge: quantise the final weights
    runtime = EngineRuntime(model)  # after every change to the weights
    if speed.compile:
        runtime.compile(speed.compile_mode)
    runtime.use_cuda_graphs(speed.cuda_graphs)
    umt5 = load_umt5(paths["umt5.encoder"], device, dtype)
    if umt5.config.d_model != cfg.text_dim:
        raise RenderError(
            f"the text encoder ({paths['umt5.encoder']}) makes {umt5.config.d_model}-d embeddings but the "
            f"generator reads {cfg.text_dim}-d ones: the two files are from different model sets"
        )
    encoder = UMT5TextEncoder(umt5, load_tokenizer(paths["umt5.tokenizer"]), text_len=cfg.text_len)
    load = load_taehv if settings.decoder == "tae" else load_wan_vae
    decoder = load(decoder_path, device=device, dtype=_decoder_dtype(device, settings.decoder))
    if speed.compile and device == "cuda" and settings.decoder == "tae":
        decoder.compile()
    return runtime, encoder, decoder


def _decoder_dtype(device, decoder: str) -> torch.dtype:
    """float32 on CPU. On a GPU: float16 for TAEW2.1 (as its authors run it); bfloat16 for the
    Wan VAE, which keeps float32's range (Wan's code and diffusers' examples run it in float32,
    and a deep conv stack's activations can leave float16's), as benchmarks/longlive.py times it."""
    if not str(device).startswith("cuda"):
        return torch.float32
    return torch.float16 if decoder == "tae" else torch.bfloat16
