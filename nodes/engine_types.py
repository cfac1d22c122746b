"""Values that travel along the engine-side node links (LongLive, prompt, transition, identity).

Plain dataclasses, no torch at import: ComfyUI matches sockets by these type names only,
and the headless runner passes the same objects between the same node classes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: ComfyUI socket type names of the engine nodes.
LONGLIVE = "PERSONA_LONGLIVE"
PROMPT = "PERSONA_PROMPT"
TRANSITION = "PERSONA_TRANSITION"
IDENTITY = "PERSONA_IDENTITY"


@dataclass(eq=False)
class LongLiveModel:
    """A loaded LongLive engine (`video.longlive.loader.LoadedEngine`) as it travels along links.

    Every sampler on it streams through the engine's `EngineHost`: sessions of one frame size
    share one batched forward per denoising pass (up to the loader's `max_sessions`); a session
    of another size is refused with a clear 'busy' (load a second engine for it). Inside ComfyUI
    `comfy_model` is the handle registered with `comfy.model_management`, so "Unload models"
    and memory pressure free the engine like any other model.
    """

    engine: Any  # video.longlive.loader.LoadedEngine
    comfy_model: Any = None

    @property
    def settings(self) -> Any:
        return self.engine.settings

    @property
    def models_dir(self) -> Path | None:
        return self.engine.files.models_dir

    @property
    def host(self) -> Any:
        return self.engine.host

    @property
    def model(self) -> Any:
        return self.engine.model


@dataclass(frozen=True)
class PromptStyle:
    """How the persona is described at the start of every LongLive prompt."""

    appearance: str  # "" keeps the persona card's own description
    preview: str = ""  # the prompts the current plan composes to (for display)
    identity: Any = None  # IdentityValue from the identity node: the sampler anchors on it


@dataclass(frozen=True)
class TransitionStyle:
    """How the engine moves between prompts: over `chunks` chunks, along `easing`, the KV window
    re-cached at the blend's `recache` step(s) (video/longlive/engine.py BLEND_RECACHE)."""

    chunks: int = 2
    easing: str = "smoothstep"
    recache: str = "last"


@dataclass(frozen=True, eq=False)
class IdentityValue:
    """What a reference photo says about the persona's look, and the photo itself.

    `conditioner` (a `video.identity.IdentityConditioner`) is what the LongLive sampler
    anchors the session on: its framed reference, VAE-encoded, becomes the KV sink.
    Compared by identity: a new photo is a new value.
    """

    appearance: str  # text for the start of every prompt
    embedding: Any = None  # (512,) unit ArcFace embedding (numpy)
    faces_found: int = 1
    extra: dict = field(default_factory=dict)
    conditioner: Any = None
