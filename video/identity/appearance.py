"""The persona's look as a short text kept at the start of every prompt.

Text is the cheapest identity anchor LongLive has: the same words in every chunk's
prompt pin hair, eyes and clothes where the face embedding says nothing. The text is
built from the card's `Appearance` (dumped to a dict, as `SessionSpec.look` carries
it): its free-text description first, then colours named in words. From a reference
photo we add only what can be measured cheaply and checked: the hair colour, sampled
in a patch just above the detected face box, and dropped when that patch looks like
the cheeks (bald, hair pulled back) or is not one colour (the patch fell on a scene). We do not name skin tone from a photo: lighting changes
it more than people differ, and the card's description says it in the author's words.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Small palettes: words a text encoder knows, each with a representative sRGB colour.
HAIR_COLOURS = {
    "black": (25, 22, 22),
    "dark brown": (60, 40, 30),
    "brown": (105, 70, 45),
    "light brown": (150, 110, 75),
    "blond": (215, 180, 120),
    "auburn": (135, 55, 35),
    "red": (180, 70, 40),
    "grey": (150, 150, 150),
    "white": (225, 225, 220),
}
EYE_COLOURS = {
    "brown": (100, 60, 35),
    "dark brown": (50, 30, 20),
    "hazel": (130, 110, 60),
    "green": (80, 130, 80),
    "blue": (70, 110, 170),
    "grey": (130, 140, 150),
}
GENERAL_COLOURS = {
    "black": (20, 20, 20),
    "white": (240, 240, 240),
    "grey": (128, 128, 128),
    "red": (200, 40, 40),
    "orange": (235, 130, 40),
    "yellow": (235, 210, 60),
    "green": (60, 150, 70),
    "teal": (40, 140, 140),
    "light blue": (120, 170, 225),
    "blue": (60, 110, 200),
    "navy": (30, 40, 90),
    "purple": (120, 60, 160),
    "pink": (235, 140, 180),
    "brown": (110, 70, 40),
    "beige": (215, 195, 160),
}
HAIR_STYLES = {  # {colour} is filled with a hair colour word
    "short": "short {colour} hair",
    "long": "long {colour} hair",
    "bun": "{colour} hair in a bun",
    "ponytail": "{colour} hair in a ponytail",
    "curly": "curly {colour} hair",
}


def hex_to_rgb(value: str) -> tuple[int, int, int]:
    value = value.lstrip("#")
    if len(value) != 6:
        raise ValueError(f"expected a #rrggbb colour, got {value!r}")
    return int(value[0:2], 16), int(value[2:4], 16), int(value[4:6], 16)


def _srgb_to_lab(rgb) -> np.ndarray:
    """CIE Lab (D65) of sRGB 0–255 colours, so nearest-colour means nearest as seen."""
    c = np.asarray(rgb, dtype=np.float64) / 255.0
    c = np.where(c > 0.04045, ((c + 0.055) / 1.055) ** 2.4, c / 12.92)
    xyz = c @ np.array([[0.4124, 0.2126, 0.0193], [0.3576, 0.7152, 0.1192], [0.1805, 0.0722, 0.9505]])
    xyz /= np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > 0.008856, np.cbrt(xyz), 7.787 * xyz + 16 / 116)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], -1)


def name_colour(rgb, palette: dict[str, tuple[int, int, int]]) -> str:
    """The palette word nearest to `rgb` in Lab space."""
    names = list(palette)
    distances = np.linalg.norm(_srgb_to_lab(list(palette.values())) - _srgb_to_lab(rgb), axis=-1)
    return names[int(np.argmin(distances))]


@dataclass(frozen=True)
class MeasuredLook:
    """Facts measured on the reference photo; None where the measurement was not trusted."""

    hair_colour: str | None
    hair_rgb: tuple[int, int, int] | None
    skin_rgb: tuple[int, int, int]
    hair_patch_spread: float | None = None  # median Lab distance to the patch median
    hair_skin_distance: float | None = None  # Lab distance hair patch ↔ cheek patch


def measure_look(image: np.ndarray, face_box, keypoints: np.ndarray) -> MeasuredLook:
    """Sample a hair patch just above the face box and skin patches on the cheeks.

    The hair patch is centred 0.1 box-heights above the box top (SCRFD boxes end near
    the hairline), 0.4 box-widths wide and 0.16 box-heights tall: on the six faces of
    InsightFace's t1.jpg it names all six hair colours right, where a patch placed from
    the eyes fell on the wall for turned heads. Cheek patches sit 0.45 inter-ocular
    distances below each eye. Medians, so a stray highlight does not decide.
    """
    height, width = image.shape[:2]
    x1, y1, x2, y2 = (float(v) for v in face_box)
    box_w, box_h = x2 - x1, y2 - y1

    def patch(cx: float, cy: float, w: float, h: float) -> np.ndarray | None:
        left, right = max(0, int(round(cx - w / 2))), min(width, int(round(cx + w / 2)))
        top, bottom = max(0, int(round(cy - h / 2))), min(height, int(round(cy + h / 2)))
        if right - left < 2 or bottom - top < 2:
            return None
        return image[top:bottom, left:right].reshape(-1, 3)

    iod = float(np.linalg.norm(keypoints[1] - keypoints[0])) or 1.0
    cheeks = [patch(eye[0], eye[1] + 0.45 * iod, 0.3 * iod, 0.2 * iod) for eye in keypoints[:2]]
    cheeks = [c for c in cheeks if c is not None]
    skin = np.median(np.concatenate(cheeks), axis=0) if cheeks else np.zeros(3)
    skin_rgb = tuple(int(v) for v in skin)
    hair_pixels = patch((x1 + x2) / 2, y1 - 0.1 * box_h, 0.4 * box_w, 0.16 * box_h)
    if hair_pixels is None:  # face at the top edge of the photo
        return MeasuredLook(hair_colour=None, hair_rgb=None, skin_rgb=skin_rgb)
    hair = np.median(hair_pixels, axis=0)
    spread = float(np.median(np.linalg.norm(_srgb_to_lab(hair_pixels) - _srgb_to_lab(hair), axis=-1)))
    skin_distance = float(np.linalg.norm(_srgb_to_lab(hair) - _srgb_to_lab(skin)))
    trusted = skin_distance > 12.0 and spread < 25.0  # not skin-like, and one colour rather than a scene
    hair_rgb = tuple(int(v) for v in hair)
    return MeasuredLook(
        hair_colour=name_colour(hair_rgb, HAIR_COLOURS) if trusted else None,
        hair_rgb=hair_rgb,
        skin_rgb=skin_rgb,
        hair_patch_spread=round(spread, 1),
        hair_skin_distance=round(skin_distance, 1),
    )


def describe_appearance(look: dict, measured: MeasuredLook | None = None) -> str:
    """The appearance clause for the start of every prompt, from the card's look and photo facts.

    No final full stop: `video.text.prompt.PromptComposer(appearance=...)` continues it
    with ", <action phrase>, ...".

    The card's description comes first, verbatim. Hair colour comes from the photo when
    it was measured and trusted (the photo is what the video should match), otherwise
    from the card; eye and outfit colours come from the card.
    """
    parts: list[str] = []
    description = str(look.get("description", "")).strip().rstrip(".")
    hair_style = str(look.get("hair_style", "short"))
    hair = None
    if measured is not None and measured.hair_colour is not None:
        hair = measured.hair_colour
    elif look.get("hair_colour"):
        hair = name_colour(hex_to_rgb(look["hair_colour"]), HAIR_COLOURS)
    if hair_style == "bald":
        parts.append("a bald head")
    elif hair:
        parts.append(HAIR_STYLES.get(hair_style, hair_style + " {colour} hair").format(colour=hair))
    if look.get("eye_colour"):
        parts.append(f"{name_colour(hex_to_rgb(look['eye_colour']), EYE_COLOURS)} eyes")
    if look.get("outfit_colour"):
        outfit = name_colour(hex_to_rgb(look["outfit_colour"]), GENERAL_COLOURS)
        parts.append(f"wearing a {outfit} top")
    return ", ".join(p for p in (description, *parts) if p)
