"""The look's reference image (identity anchoring): from what a card wrote to a file path.

A card may write, tried in this order: `ccdefault:` (the card's own picture), an
`embeded://` asset, an asset's archive path or `data.assets[].name`, or a file path
(relative to the card's folder). An image inside the card is copied to the card image
cache (`cache.cache_asset`). A reference that finds no usable image is dropped with a
warning on `LoadedCard.warnings`: the rest of the card is still a persona.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import IO, Any

from .assets import Asset, FileAsset
from .cache import cache_asset
from .errors import CardError, CardReferenceError
from .limits import current_limits
from .loaded import PNG_IMAGE_ASSET, LoadedCard
from .mapping import REFERENCE_FIELD

__all__ = [
    "DEFAULT_URI",
    "EMBEDDED_URI",
    "REFERENCE_IMAGE_FORMATS",
    "URI_SCHEME",
    "asset_for",
    "check_image",
    "default_image",
    "listed_assets",
    "resolve_reference",
]

#: The image formats a reference may be (Pillow names). Only these parsers ever see a card's
#: bytes: Pillow knows dozens of formats, and some (EPS) hand the file to Ghostscript.
REFERENCE_IMAGE_FORMATS = ("PNG", "JPEG", "WEBP")
EMBEDDED_URI = "embeded://"  # the spec's spelling
DEFAULT_URI = "ccdefault:"  # V3: "the default asset of this type" (a PNG card's own image)
URI_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+:")  # 2+ letters: a drive (C:) is a path


def resolve_reference(
    loaded: LoadedCard, *, card_dir: str | Path | None, filename: str = "card", strict: bool = False
) -> LoadedCard:
    """`loaded` with its look's `reference_image` as an absolute path to an image file.

    A file path is taken relative to `card_dir`; `~` is expanded. Without a `card_dir` (an
    upload) file paths are refused: a card from elsewhere must not make us read our own files.
    Resolving again goes from the card's own spelling (`Appearance.card_reference`), so a
    persona already resolved can be checked against another folder, and a cache file that
    was pruned is written again at the same path.

    When nothing usable is found (no such asset or file, not a PNG/JPEG/WebP image, over
    `CardLimits.max_reference_pixels`, a URL, an upload naming a file), the reference is
    dropped and the `CardReferenceError` message goes to `LoadedCard.warnings`. With
    `strict`, that error is raised instead (for a value a caller wrote in code).
    """
    persona = loaded.persona
    written = persona.appearance.card_reference()
    if not written:
        return loaded
    where = f"{filename}: {REFERENCE_FIELD} {written!r}"
    base = Path(card_dir).expanduser().resolve() if card_dir is not None else None
    try:
        path = _reference_path(written.strip(), persona.card, loaded.assets, base, where)
    except CardReferenceError as error:
        if strict:
            raise
        dropped = persona.appearance.model_copy(update={"reference_image": None})
        warning = f"{error}; the reference was dropped, so sessions with this persona are not anchored on a photo"
        return replace(
            loaded,
            persona=persona.model_copy(update={"appearance": dropped}),
            warnings=[*loaded.warnings, warning],
        )
    appearance = persona.appearance.with_resolved_reference(written, str(path))
    return replace(loaded, persona=persona.model_copy(update={"appearance": appearance}))


def listed_assets(card: dict[str, Any]) -> list[dict[str, Any]]:
    data = card.get("data")
    listed = data.get("assets") if isinstance(data, dict) else None
    return [a for a in listed if isinstance(a, dict)] if isinstance(listed, list) else []


def default_image(card: dict[str, Any], assets: Mapping[str, Asset]) -> str | None:
    """The archive path of the card's own picture, if it carries one."""
    icons = [a for a in listed_assets(card) if a.get("type") == "icon"]
    icons.sort(key=lambda a: a.get("name") != "main")  # stable: `main` first, then file order
    for icon in icons:
        uri = str(icon.get("uri", ""))
        name = uri[len(EMBEDDED_URI) :] if uri.startswith(EMBEDDED_URI) else ""
        if name in assets:
            return name
    return PNG_IMAGE_ASSET if PNG_IMAGE_ASSET in assets else None


def asset_for(value: str, card: dict[str, Any], assets: Mapping[str, Asset], where: str) -> str | None:
    """The archive path `value` names (a URI, an archive path or an asset name), else None."""
    if value == DEFAULT_URI:
        name = default_image(card, assets)
        if name is None:
            raise CardReferenceError(
                f"{where}: looked for the card's own picture (an icon asset or a PNG card's image), "
                "but this card carries no image"
            )
        return name
    if value.startswith(EMBEDDED_URI):
        name = value[len(EMBEDDED_URI) :]
        if name not in assets:
            held = ", ".join(sorted(assets)) or "none"
            raise CardReferenceError(
                f"{where}: looked for the file {name!r} inside the card, which holds no such file (it holds: {held})"
            )
        return name
    if value in assets:
        return value
    named = [a for a in listed_assets(card) if a.get("name") == value]
    if len(named) > 1:
        uris = ", ".join(repr(a.get("uri")) for a in named)
        raise CardReferenceError(
            f"{where}: {len(named)} entries of data.assets are named {value!r} ({uris}); write one of their uris instead"
        )
    if named:
        uri = str(named[0].get("uri", ""))
        if uri == DEFAULT_URI or uri.startswith(EMBEDDED_URI):
            return asset_for(uri, card, assets, where)
        raise CardReferenceError(
            f"{where}: the asset named {value!r} is at {uri!r}; only images inside the card "
            f"({EMBEDDED_URI}..., {DEFAULT_URI}) or files on disk can be references (nothing is downloaded)"
        )
    return None


def _reference_path(
    value: str, card: dict[str, Any], assets: Mapping[str, Asset], base: Path | None, where: str
) -> Path:
    name = asset_for(value, card, assets, where)
    if name is not None:
        asset = assets[name]
        try:
            with asset.open() as stream:
                check_image(stream, f"{where}: the card's file {name!r}")
            return cache_asset(asset, Path(name).suffix.lower(), where)
        except CardReferenceError:
            raise
        except CardError as error:  # a corrupt entry, a card file changed since it was read
            raise CardReferenceError(f"{where}: the card's file {name!r} cannot be read ({error})") from None
    if URI_SCHEME.match(value):
        raise CardReferenceError(
            f"{where}: looked for an asset of this card by that name and found none, and URLs are not "
            f"fetched (write {EMBEDDED_URI}<path in the CHARX>, an asset name, {DEFAULT_URI} or a file path)"
        )
    if base is None:
        raise CardReferenceError(
            f"{where}: looked for an asset of this card by that name and found none; a card read "
            "without its folder (an upload) may name only images it carries, not files (put the "
            "image in a CHARX card and name it there)"
        )
    path = Path(value).expanduser()
    path = (path if path.is_absolute() else base / path).resolve()
    if not path.is_file():
        raise CardReferenceError(
            f"{where}: looked for an asset of this card by that name and found none, then for the "
            f"file {path} (a relative path is taken from the card's folder), which does not exist"
        )
    with FileAsset(path).open() as stream:
        check_image(stream, f"{where}: the file {path}")
    return path


def check_image(source: IO[bytes], what: str) -> tuple[int, int]:
    """Refuse a reference that is not a PNG, JPEG or WebP image of sane size now rather than
    when a session starts; returns (width, height). Only the header is read: Pillow decodes
    nothing until asked, and only the parsers of `REFERENCE_IMAGE_FORMATS` look at the bytes
    (the identity conditioner opens the file with the same list)."""
    from PIL import Image, UnidentifiedImageError

    limit = current_limits().max_reference_pixels
    try:
        with Image.open(source, formats=REFERENCE_IMAGE_FORMATS) as image:
            width, height = image.size
    except UnidentifiedImageError:
        raise CardReferenceError(f"{what} is not a PNG, JPEG or WebP image") from None
    except (OSError, ValueError, Image.DecompressionBombError) as error:
        raise CardReferenceError(f"{what} is not a readable PNG, JPEG or WebP image ({error})") from None
    if width * height > limit:
        raise CardReferenceError(
            f"{what} is {width}×{height} pixels ({width * height / 1e6:.0f} megapixels), over the "
            f"{limit // 1_000_000}-megapixel limit for a reference image"
        )
    return width, height
