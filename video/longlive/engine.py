"""`LongLiveBackend`: the real engine behind the `RendererBackend` protocol, one per session.

Per chunk: the directive queue decides the prompt (PromptComposer), the text encoder turns it
into an embedding (cached per prompt), the ConditioningBlender moves the embedding in effect
toward it over a few chunks (the KV window re-cached once it gets there: BLEND_RECACHE), and
the session's chunk is made by the engine's `EngineHost`, batched with the other sessions
streaming on the same loaded
engine, then decoded (TAEW2.1 or the Wan VAE) into 12 video frames (9 for the first chunk) at
16 fps. A directive (or a speech cue) marks the next chunk urgent and may restart the chunk in
flight under the new prompt (host.py); the blender's step for that chunk is then taken again.

Collaborators are passed in (STYLE.md house rule 9): a loaded engine's host (`host=`, shared by
every session on it), or a model/runtime, text encoder and decoder (the backend then makes a
host of its own), so a test builds the whole engine from tiny random parts on CPU; without
them the engine loads the files of the models directory (real ones, or the tiny set of
`testing.write_tiny_models`).

Identity anchoring: when the session's look names a `reference_image` file, or an
`IdentityConditioner` was given (`identity=`), the reference photo is framed on the face,
encoded by the Wan VAE as a still clip of one chunk (3 latent frames) and written into the KV
cache as the session's first chunk (`SessionStream.prime_sink`) before anything is generated:
the sink every later chunk attends to. With `recache_mode="stock"` (LongLive's) a prompt switch
in the first 12 latent frames re-encodes it under the new prompt (same latents); after that, and
always with "causal", it is kept as written. The prompt's appearance text becomes
`IdentityConditioner.appearance_prompt(look)`. With the TAE decoder the Wan VAE is not resident:
it is loaded for that one encode and freed right after (latents cached per reference and size).

Scenes (issue 20, `start_scene`): 2–4 characters in one stream. LongLive takes one text per
chunk, so the prompt is `ScenePromptComposer`'s (each character left to right with the clause
its own composer makes of what it does now). Each character keeps its own directive queue: a
submission replaces what was queued only for the characters it names (`character`; none: the
first), and the prompt is re-composed from every character's current directive, so a change for
one changes only its clause and goes through the same switch/re-cache path as a persona's.
The talking cue goes on whoever speaks (`set_speech(character=)`, or the speech track's
`set_speakers` windows). Identity: when every character has a reference, their framed
references are put side by side in prompt order (`video.identity.scene.SceneReference`) and
that one frame is encoded into the sink.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from ...persona.schema import ActionDirective
from ..backend import Chunk, RenderError, SessionSpec
from .host import EngineHost, HostedSession
from .model import CausalWanModel
from .runtime import EngineRuntime
from .settings import BLEND_RECACHE
from .stream import PromptSwitch

NATIVE_FPS = 16.0



@dataclass
class _Queued:
    directive: ActionDirective
    seq: int
    chunks_left: int | None  # None: holds until replaced


@dataclass
class _Track:
    """One character's directives: what it does now and what is queued after it."""

    queue: deque[_Queued] = field(default_factory=deque)
    current: _Queued | None = None


class LongLiveBackend:
    """Streams one persona session (or a scene) from LongLive. Thread-safe between the session's render loop
    (`next_chunk`) and its turn lane (`submit`, `set_speech`, `reset`)."""

    name = "longlive"

    def __init__(
        self,
        model: CausalWanModel | EngineRuntime | None = None,
        text_encoder=None,
        decoder=None,
        *,
        steps: int | None = None,
        blend_chunks: int = 2,
        blend_recache: str = "last",
        settings=None,
        models_dir=None,
        attention: dict | None = None,
        identity=None,
        reference_vae=None,
        reference_sink: bool = True,
        recache: str | None = None,
        recache_mode: str | None = None,
        preempt: bool | None = None,
        host: EngineHost | None = None,
        engine=None,
    ) -> None:
        """`engine`: a `loader.LoadedEngine` (its host, text encoder, decoder and settings);
        `host`: an `EngineHost` to stream on (with `text_encoder`); otherwise the parts given,
        or the models directory's files, make an engine of this backend's own."""
        if engine is not None:
            host, text_encoder, settings = engine.host, engine.text_encoder, settings or engine.settings
        elif host is None:
            if model is None or text_encoder is None or decoder is None:
                from .loader import load_engine

                loaded = load_engine(settings, models_dir)
                host, text_encoder = loaded.host, text_encoder or loaded.text_encoder
            else:
                runtime = model if isinstance(model, EngineRuntime) else EngineRuntime(model)
                max_sessions = settings.max_sessions if settings is not None else 4
                host = EngineHost(runtime, decoder, max_sessions=max_sessions)
        self.host = host
        self.runtime = host.runtime
        self.model = self.runtime.model
        self.decoder = host.decoder
        self.text_encoder = text_encoder
        if steps is None:  # the settings' denoising_steps, else all 4 of LongLive's list
            steps = settings.denoising_steps if settings is not None else None
        self.steps = steps
        self.recache_mode = recache_mode or (settings.recache_mode if settings is not None else "stock")
        if preempt is not None:
            host.preempt = preempt
        elif settings is not None:
            host.preempt = settings.preempt
        if settings is not None:
            host.prefetch = settings.fill_batches
        self.blend_chunks = blend_chunks
        if blend_recache not in BLEND_RECACHE:
            raise ValueError(f"blend_recache must be one of {BLEND_RECACHE}, got {blend_recache!r}")
        self.blend_recache = blend_recache
        self.spec: SessionSpec | None = None
        self.cast: tuple[str, ...] = ()  # a scene's persona ids, left to right; () for one persona
        self.scene_composer = None  # a scene's ScenePromptComposer
        self.session: HostedSession | None = None
        # When a prompt switch re-caches the window: before the next chunk, or right after it.
        self.set_recache_timing(recache or (settings.prompt_switch_recache if settings is not None else "after"))
        if attention is None:  # only what differs from dense: an empty dict keeps the dense router
            attention = settings.attention.model_dump(exclude_defaults=True) if settings else {}
        self.attention = attention
        self.models_dir = models_dir if engine is None else engine.files.models_dir
        self.identity = identity  # an IdentityConditioner, or None: from the look's reference_image
        self.reference_vae = reference_vae  # a WanVAE kept resident for reference encodes, else lazy
        # False: references are ignored (no sink priming, no appearance_prompt): the baseline
        # runs of the long-session identity test (docs/identity.md).
        self.reference_sink = reference_sink
        self._look_identity: dict[str, object] = {}  # reference_image path -> IdentityConditioner
        self._scene_ref = None  # the cast's side-by-side SceneReference
        self._reference_cache: tuple = ()  # (conditioner, (w, h, frames), latents)
        self.reference_latents: torch.Tensor | None = None  # what the current session's sink holds
        self._lock = threading.RLock()
        self._blend_before_chunk = None  # the blender's state before the chunk in flight took its step

    @property
    def device(self) -> torch.device:
        return self.runtime.device

    @property
    def stream(self):
        """The session's `SessionStream` (its window, queue, clean latents)."""
        self._require_session()
        return self.session.stream

    # ---- session ------------------------------------------------------------------------

    def start_session(self, spec: SessionSpec) -> None:
        from ..text.prompt import PromptComposer

        self._check_spec(spec)
        try:
            composer = PromptComposer.from_session(spec)
        except ValueError as exc:
            raise RenderError(str(exc)) from exc
        conditioner = self._conditioner_for(spec.look or {})
        if conditioner is not None:
            composer = replace(composer, appearance=conditioner.appearance_prompt(spec.look or {}))
        self._open(spec, (spec.persona_id,), {spec.persona_id: composer}, None, conditioner)

    def start_scene(self, specs: Sequence[SessionSpec]) -> None:
        """A scene: one spec per character, left to right (the first leads and sets size, rate
        and seed). Each character's look may name its `reference_image`; an `identity=` given
        to the backend anchors the first. Raises `RenderError` for a bad cast."""
        from ..text.scene_prompt import POSITIONS, ScenePromptComposer

        specs = list(specs)
        if not 1 <= len(specs) <= max(POSITIONS):
            raise RenderError(f"a scene holds 1 to {max(POSITIONS)} characters, not {len(specs)}")
        first = specs[0]
        self._check_spec(first)
        if any((s.width, s.height, s.fps) != (first.width, first.height, first.fps) for s in specs[1:]):
            raise RenderError("every character of a scene renders at the scene's size and fps")
        conditioners = [self._conditioner_for(s.look or {}, lead=i == 0) for i, s in enumerate(specs)]
        anchored = []
        for s, conditioner in zip(specs, conditioners, strict=True):
            if conditioner is not None:  # the photo's measured look joins the card's text, as for one persona
                s = replace(s, look={**(s.look or {}), "description": conditioner.appearance_prompt(s.look or {})})
            anchored.append(s)
        try:
            scene = ScenePromptComposer.from_specs(anchored)
        except ValueError as exc:  # a repeated character, unknown vocabulary sections
            raise RenderError(str(exc)) from exc
        ids = scene.ids
        reference = None
        if all(c is not None for c in conditioners):  # one reference per character, or none (docs/scenes.md)
            reference = conditioners[0] if len(ids) == 1 else self._scene_reference(tuple(conditioners))
        composers = {}
        for persona_id, s in zip(ids, anchored, strict=True):  # each one's own words, for the checks in submit
            composers[persona_id] = self._own_composer(s)
        self._open(first, ids, composers, scene, reference)

    def _own_composer(self, spec: SessionSpec):
        from ..text.prompt import PromptComposer

        try:
            return PromptComposer.from_session(spec)
        except ValueError as exc:
            raise RenderError(str(exc)) from exc

    def _check_spec(self, spec: SessionSpec) -> None:
        stride = self.model.cfg.vae_stride[1] * self.model.cfg.patch_size[1]
        if spec.width % stride or spec.height % stride:
            raise RenderError(f"LongLive renders sizes that are multiples of {stride}; got {spec.width}x{spec.height}")
        if spec.fps != NATIVE_FPS:
            raise RenderError(f"LongLive streams at {NATIVE_FPS:g} fps; got {spec.fps:g}")

    def _open(self, spec: SessionSpec, cast: tuple[str, ...], composers: dict, scene, conditioner) -> None:
        """Start (or restart) the engine session for `spec`'s size and seed, at rest, with the
        sink primed from `conditioner`'s reference when there is one."""
        from ..transitions.conditioning import ConditioningBlender

        vs = self.model.cfg.vae_stride
        latent = (spec.height // vs[1], spec.width // vs[2])
        # Host calls happen outside this backend's lock: the host's driver takes the host lock and
        # then this lock (the begin hook), so holding this one while waiting for that one could deadlock.
        if self.session is not None and self.host.latent_hw == latent and not self.session.closed:
            self.session.restart(spec.seed)
        else:
            self.close()
            name = f"{spec.persona_id} ({spec.persona_name})" if scene is None else "scene " + ", ".join(cast)
            self.session = self.host.open_session(
                *latent, seed=spec.seed, steps=self.steps, recache_mode=self.recache_mode, timing=self.recache,
                begin_hook=self._begin_chunk, name=name)
            self.session.restart_hook = self._restart_chunk
        if self.attention:
            from ..attention import make_router

            geometry = self.session.stream.window.geometry
            self.session.configure(router=make_router(self.attention, num_layers=len(self.model.blocks),
                                                      sink_tokens=geometry.sink_chunks * geometry.rows_per_slot))
        with self._lock:
            self.composer = composers[cast[0]]  # the lead's (a scene's prompt is scene_composer's)
            self._composers = composers
            self.scene_composer = scene
            self.cast = cast if scene is not None else ()
            self.spec = spec
            self.tracks: dict[str, _Track] = {persona_id: _Track() for persona_id in cast}
            self.speaking_chunks = 0
            self.speaker = cast[0]  # who the talking cue is on
            self._speaker_windows: list[tuple[int, int, str]] = []
            self.frame_index = 0
            self.shows: list[int] = []
            # Per chunk begun and not yet handed out, oldest first: the directives it is the
            # first to show. The host may begin a session's next chunk (to ride in another
            # session's batch) before the caller has taken the last one, so one slot would
            # give the older chunk the newer one's directives.
            self._chunk_shows: deque[list[int]] = deque()
            rest_prompt = self._compose()
        rest = self._embed(rest_prompt)
        with self._lock:
            self.blender = ConditioningBlender(rest, steps=self.blend_chunks)
            self._blend_before_chunk = None
            self._prompt = rest_prompt
            self.reference_latents = None
        self.session.set_prompt(rest, recache=False)
        if conditioner is not None and self.model.cfg.sink_size > 0:
            self.reference_latents = self._encode_reference(conditioner, spec.width, spec.height)
            self.session.prime_sink(self.reference_latents)

    # One-persona compatibility: its directive queue and current directive.
    @property
    def queue(self) -> deque[_Queued]:
        return self.tracks[self.spec.persona_id if not self.cast else self.cast[0]].queue

    @property
    def current(self) -> _Queued | None:
        return self.tracks[self.spec.persona_id if not self.cast else self.cast[0]].current

    def close(self) -> None:
        """Leave the engine (its row goes to the next session)."""
        if self.session is not None:
            self.session.close()
            self.session = None

    def _begin_chunk(self) -> PromptSwitch | None:
        """The host's begin hook (driver thread): this chunk's step of the blend, or None."""
        with self._lock:
            self._blend_before_chunk = self.blender.state()
            self._chunk_shows.append(self.shows)  # directives this chunk is the first to show
            self.shows = []
            embedding, changed = self.blender.step()
            return self._switch(embedding) if changed else None

    def _switch(self, embedding: torch.Tensor) -> PromptSwitch:
        """The blend step's prompt; its re-cache only at the blend's last step ("last"), see
        BLEND_RECACHE."""
        return PromptSwitch(embedding, recache=self.blend_recache == "each" or not self.blender.blending)

    def _restart_chunk(self) -> PromptSwitch | None:
        """The host's restart hook: the chunk in flight is redone for a new target, so its blend
        step is taken again from where the blender was before it."""
        with self._lock:
            before = self.blender.current
            if self._blend_before_chunk is not None:
                self.blender.restore(self._blend_before_chunk)
            if not self._chunk_shows:
                self._chunk_shows.append([])
            self._chunk_shows[-1] += self.shows  # the chunk in flight is the newest begun
            self.shows = []
            embedding, _ = self.blender.step()
            return None if embedding is before else self._switch(embedding)

    # ---- identity -----------------------------------------------------------------------

    def _conditioner_for(self, look: dict, lead: bool = True):
        """The given conditioner (for the lead), else one for the look's reference_image (built
        once per path)."""
        if not self.reference_sink:
            return None
        if self.identity is not None and lead:
            return self.identity
        path = look.get("reference_image")
        if not path:
            return None
        path = str(path)
        if path not in self._look_identity:
            from ..identity import FaceEmbedder, IdentityConditioner

            try:
                conditioner = IdentityConditioner(path, FaceEmbedder())
            except (ValueError, OSError, ImportError) as exc:  # no file, no face, no face models
                raise RenderError(f"identity reference {path!r}: {exc}") from exc
            # At most a scene's worth: a session's characters, not every photo ever seen.
            self._look_identity = {**dict(list(self._look_identity.items())[-3:]), path: conditioner}
        return self._look_identity[path]

    def _scene_reference(self, conditioners: tuple):
        """The side-by-side reference of these characters, the same object while the cast's
        conditioners are the same (so the encoded latents are cached across restarts)."""
        from ..identity.scene import SceneReference

        if self._scene_ref is None or self._scene_ref.conditioners != conditioners:
            self._scene_ref = SceneReference(conditioners)
        return self._scene_ref

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
            self._reference_cache = (conditioner, (width, height, frames), latents.float().to(self.device))
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
        from .loader import decoder_dtype

        device = self.device
        return load_wan_vae(path, device=device, dtype=decoder_dtype(device, "vae")), True

    def set_recache_timing(self, recache: str) -> None:
        """"before" or "after" (stream.py); applies from the next switch, no restart."""
        from .stream import checked_recache_timing

        self.recache = checked_recache_timing(recache)
        if self.session is not None:
            self.session.configure(timing=self.recache)

    def set_recache_mode(self, mode: str) -> None:
        """"stock" or "causal" (stream.py); applies from the next re-cache, no restart."""
        from .stream import checked_recache_mode

        self.recache_mode = checked_recache_mode(mode)
        if self.session is not None:
            self.session.configure(recache_mode=self.recache_mode)

    def _require_session(self) -> None:
        if self.spec is None:
            raise RenderError("start_session first")

    def _embed(self, prompt: str) -> torch.Tensor:
        return self.text_encoder.encode(prompt).to(self.device)

    # ---- directives ---------------------------------------------------------------------

    def _chunks_for(self, seconds: float | None) -> int | None:
        if seconds is None:
            return None
        frames_per_chunk = self.model.cfg.num_frame_per_block * self.model.cfg.vae_stride[0]
        return max(1, math.ceil(seconds * NATIVE_FPS / frames_per_chunk))

    def performer_of(self, directive: ActionDirective) -> str:
        """Who performs `directive`: its `character` in a scene (none: the first); a
        one-persona session performs everything itself, as in protocol 1.0."""
        if not self.cast:
            return self.spec.persona_id
        who = getattr(directive, "character", None) or self.cast[0]
        if who not in self.tracks:
            raise RenderError(f"directive for {who!r}, who is not in this scene ({', '.join(self.cast)})")
        return who

    def submit(self, directives: list[ActionDirective], seq: int) -> None:
        """Queue `directives`; in a scene the queue of each character they name is replaced,
        the others carry on. Unknown words or characters fail now, with nothing queued."""
        self._require_session()
        shares: dict[str, list[ActionDirective]] = {}
        for d in directives:  # unknown words fail now, not mid-stream
            who = self.performer_of(d)
            try:
                self._composers[who].compose(d)
            except KeyError as exc:
                raise RenderError(str(exc).strip("'\"")) from exc
            shares.setdefault(who, []).append(d)
        if not shares:  # an empty submission: the lead goes back to rest
            shares[self.cast[0] if self.cast else self.spec.persona_id] = []
        with self._lock:
            for who, share in shares.items():
                self.tracks[who].queue = deque(_Queued(d, seq, self._chunks_for(d.duration_s)) for d in share)
                self._advance(who, show=False)
            if any(self.tracks[who].current is not None for who in shares):
                self.shows.append(seq)
            changed = self._retarget()
        if changed:
            self.session.notify_directive()

    def set_speech(self, visemes: list[tuple[int, str]] | None, duration_ms: int = 0,
                   character: str | None = None) -> None:
        """LongLive cannot place individual mouth shapes; it adds a talking cue to the prompt
        for the spoken duration (the last viseme's offset, or `duration_ms`). In a scene the cue
        is on `character`, else on whoever the speaker windows (`set_speakers`) say speaks now
        or next, else on the first."""
        self._require_session()
        if visemes:
            duration_ms = max(duration_ms, max(offset for offset, _ in visemes))
        elif visemes is not None:
            duration_ms = 0
        frames = duration_ms * NATIVE_FPS / 1000
        with self._lock:
            if character is not None and self.cast and character not in self.tracks:
                raise RenderError(f"{character!r} speaks but is not in this scene ({', '.join(self.cast)})")
            if self.cast:
                self.speaker = character or self._speaker_at(self._now_ms(), ahead=True) or self.cast[0]
            self.speaking_chunks = math.ceil(frames / self._frames_per_chunk())
            changed = self._retarget()
        if changed:
            self.session.notify_directive()

    def set_speakers(self, windows: Sequence[tuple[int, int, str]]) -> None:
        """Who speaks when on the session clock, (start ms, end ms, persona id) per line: a
        speech track speaking several voices hands these over before each chunk, so the
        talking cue moves to each speaker in their own time (a scene; ignored for one persona)."""
        self._require_session()
        with self._lock:
            self._speaker_windows = [(int(a), int(b), who) for a, b, who in windows if who in self.tracks]
            if self.cast and self.speaking_chunks:
                speaker = self._speaker_at(self._now_ms())
                if speaker is not None and speaker != self.speaker:
                    self.speaker = speaker
                    changed = self._retarget()
                    if changed:
                        self.session.notify_directive()

    def reset(self) -> None:
        self._require_session()
        with self._lock:
            for track in self.tracks.values():
                track.queue.clear()
                track.current = None
            self.speaking_chunks = 0
            changed = self._retarget()
        if changed:
            self.session.notify_directive()

    def _frames_per_chunk(self) -> int:
        return self.model.cfg.num_frame_per_block * self.model.cfg.vae_stride[0]

    def _now_ms(self) -> float:
        return self.frame_index * 1000.0 / NATIVE_FPS

    def _speaker_at(self, at_ms: float, ahead: bool = False) -> str | None:
        """Whose speaker window holds `at_ms` (with `ahead`: else the next one to start)."""
        for start, end, who in self._speaker_windows:
            if start <= at_ms < end:
                return who
        if ahead:
            upcoming = [(start, who) for start, _, who in self._speaker_windows if start >= at_ms]
            return min(upcoming)[1] if upcoming else None
        return None

    def _advance(self, who: str, show: bool = True) -> None:
        """`who` takes its next queued directive (or rests); its seq is shown with `show`."""
        track = self.tracks[who]
        track.current = track.queue.popleft() if track.queue else None
        if show and track.current is not None:
            self.shows.append(track.current.seq)

    def _compose(self) -> str:
        """The prompt for what every character does now (and who talks)."""
        speaking = self.speaking_chunks > 0
        if self.scene_composer is None:
            current = self.tracks[self.spec.persona_id].current
            return self.composer.compose(current.directive if current else None, speaking=speaking)
        doing = {who: (t.current.directive if t.current else None) for who, t in self.tracks.items()}
        return self.scene_composer.compose(doing, speaking=self.speaker if speaking else None)

    def _retarget(self) -> bool:
        """Aim the blender at the prompt the current state composes to; True if it changed."""
        prompt = self._compose()
        if prompt == self._prompt:
            return False
        self._prompt = prompt
        self.blender.set_target(self._embed(prompt))
        return True

    # ---- frames -------------------------------------------------------------------------

    @torch.no_grad()
    def next_chunk(self, *, deadline: float | None = None, interrupt=None, progress=None) -> Chunk:
        """The next chunk of frames (batched with the engine's other sessions). `deadline`
        (time.monotonic) helps the host schedule; `interrupt` (polled between passes) stops the
        chunk with `host.ChunkInterrupted`, and the next call continues without a gap;
        `progress(done, total, latents)` is called after each pass (`HostedSession.progress`)."""
        self._require_session()
        frames = self.session.next_frames(deadline=deadline, interrupt=interrupt, progress=progress).numpy()
        with self._lock:
            first = self.frame_index
            self.frame_index += frames.shape[0]
            shows = self._chunk_shows.popleft() if self._chunk_shows else []
            self._tick()
        pts = [round(i * 1000 / NATIVE_FPS) for i in range(first, self.frame_index)]
        return Chunk(frames=np.ascontiguousarray(frames), first_index=first, pts_ms=pts, shows_directives=shows)

    def _tick(self) -> None:
        """One chunk of time passed: count down speech and each character's current directive."""
        changed = False
        if self.speaking_chunks:
            self.speaking_chunks -= 1
            changed = not self.speaking_chunks
            speaker = self._speaker_at(self._now_ms()) if self.cast else None
            if speaker is not None and speaker != self.speaker:  # the next line's voice
                self.speaker, changed = speaker, True
        for who, track in self.tracks.items():
            if track.current is not None and track.current.chunks_left is not None:
                track.current.chunks_left -= 1
                if track.current.chunks_left <= 0:
                    self._advance(who)
                    changed = True
        if changed:
            self._retarget()
