"""The persona's picture for a gallery: the card's own image, made safe, or one drawn from its look.

A card's picture comes from whoever made the card. Serving it as is would hand a browser
whatever the file holds (a PNG of a few KB can declare 100 000 × 100 000 pixels and expand
to gigabytes when decoded). So the picture is opened with Pillow's PNG/JPEG/WebP parsers
only, refused unread past `CardLimits.max_portrait_pixels` (from its header), and
re-encoded as a PNG of at most `CardLimits.portrait_size` pixels a side; a picture that is
refused or unreadable is replaced by a bust drawn from the card's appearance colours.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Mapping

from ..card import Appearance, Persona
from .assets import Asset
from .errors import CardError
from .limits import CardLimits, current_limits
from .loaded import PNG_IMAGE_ASSET
from .png import PNG_SIGNATURE
from .reference import EMBEDDED_URI, REFERENCE_IMAGE_FORMATS

__all__ = ["embedded_icon", "portrait_png", "render_portrait", "safe_picture"]

_log = logging.getLogger(__name__)


def render_portrait(appearance: Appearance, size: int = 256) -> bytes:
    """A simple bust drawn from the appearance colours: the image of a PNG card with none."""
    from PIL import Image, ImageDraw  # only needed when drawing

    image = Image.new("RGB", (size, size), appearance.background_colour)
    draw = ImageDraw.Draw(image)
    s = size / 256
    cx = size / 2
    head = (cx - 48 * s, 52 * s, cx + 48 * s, 160 * s)
    hair = appearance.hair_colour
    if appearance.hair_style == "long":
        draw.rounded_rectangle((cx - 60 * s, 44 * s, cx + 60 * s, 200 * s), radius=40 * s, fill=hair)
    draw.rounded_rectangle(
        (cx - 90 * s, 176 * s, cx + 90 * s, size + 20 * s), radius=50 * s, fill=appearance.outfit_colour
    )
    draw.polygon(
        [(cx - 22 * s, 176 * s), (cx + 22 * s, 176 * s), (cx, 206 * s)], fill=appearance.outfit_accent_colour
    )
    draw.rectangle((cx - 14 * s, 150 * s, cx + 14 * s, 180 * s), fill=appearance.skin_colour)
    draw.ellipse(head, fill=appearance.skin_colour)
    if appearance.hair_style != "bald":
        draw.chord((cx - 52 * s, 40 * s, cx + 52 * s, 130 * s), 180, 360, fill=hair)
    if appearance.hair_style == "bun":
        draw.ellipse((cx - 22 * s, 18 * s, cx + 22 * s, 58 * s), fill=hair)
    elif appearance.hair_style == "ponytail":
        draw.ellipse((cx + 36 * s, 70 * s, cx + 66 * s, 150 * s), fill=hair)
    elif appearance.hair_style == "curly":
        for dx in (-44, -22, 0, 22, 44):
            draw.ellipse((cx + (dx - 16) * s, 36 * s, cx + (dx + 16) * s, 70 * s), fill=hair)
    for dx in (-18, 18):
        draw.ellipse((cx + (dx - 7) * s, 100 * s, cx + (dx + 7) * s, 114 * s), fill="#ffffff")
        draw.ellipse((cx + (dx - 4) * s, 103 * s, cx + (dx + 4) * s, 111 * s), fill=appearance.eye_colour)
    draw.arc((cx - 16 * s, 118 * s, cx + 16 * s, 140 * s), 20, 160, fill="#7a3b3b", width=max(1, int(3 * s)))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()




def embedded_icon(persona: Persona, assets: Mapping[str, Asset]) -> Asset | None:
    """The card's main icon, if it carries one as a PNG (a PNG card's own image otherwise)."""
    data = persona.card.get("data") if isinstance(persona.card.get("data"), dict) else {}
    for asset in data.get("assets") or []:
        if (
            isinstance(asset, dict)
            and asset.get("type") == "icon"
            and str(asset.get("uri", "")).startswith(EMBEDDED_URI)
        ):
            blob = assets.get(asset["uri"][len(EMBEDDED_URI) :])
            if blob is not None and _is_png(blob):
                return blob
    blob = assets.get(PNG_IMAGE_ASSET)
    return blob if blob is not None and _is_png(blob) else None


def _is_png(asset: Asset) -> bool:
    try:
        return asset.startswith(PNG_SIGNATURE)
    except CardError:
        return False


def safe_picture(asset: Asset, limits: CardLimits, what: str = "card picture") -> bytes | None:
    """The picture re-encoded as a PNG of at most `limits.portrait_size` pixels a side, or
    None when it is not a PNG/JPEG/WebP image, is unreadable, or declares more than
    `limits.max_portrait_pixels` pixels (checked from its header, before decoding)."""
    from PIL import Image

    size = limits.portrait_size
    try:
        with asset.open() as stream, Image.open(stream, formats=REFERENCE_IMAGE_FORMATS) as image:
            width, height = image.size
            if width * height > limits.max_portrait_pixels:
                _log.warning(
                    "%s is %d×%d pixels, over the %d-pixel limit: drawing a portrait instead",
                    what, width, height, limits.max_portrait_pixels,
                )
                return None
            image.draft("RGB", (size, size))  # JPEG: decode at a reduced scale
            image.thumbnail((size, size))
            rgb = image.convert("RGBA" if "A" in image.getbands() or "transparency" in image.info else "RGB")
            out = io.BytesIO()
            rgb.save(out, format="PNG")
            return out.getvalue()
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError, EOFError) as error:
        # CardError is a ValueError: a corrupt CHARX entry lands here too.
        _log.warning("%s is unreadable (%s): drawing a portrait instead", what, error)
        return None


def portrait_png(
    persona: Persona, assets: Mapping[str, Asset] | None = None, limits: CardLimits | None = None
) -> bytes:
    """The persona's picture for a gallery: its card's own image made safe, else one drawn from its look."""
    icon = embedded_icon(persona, assets or {})
    if icon is not None:
        picture = safe_picture(icon, limits or current_limits(), f"persona {persona.id!r}'s picture")
        if picture is not None:
            return picture
    return render_portrait(persona.appearance)
