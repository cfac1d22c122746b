"""Writing a persona as a card file: JSON and CHARX are V3; PNG carries V2 and V3.

The look's reference image is written so that reading the file back finds the same
picture (`_exported_reference`): the card's own spelling when the file still finds it with
that, `ccdefault:` when the picture is the file's own image, the image itself added as an
asset in a CHARX, a path for a file on disk. A JSON or PNG card that cannot carry an image
the persona's card carried is a `CardReferenceError`, not a card that would lose its
picture on the way back in. Files are written through `durable.open_atomic` (a temporary,
fsync, rename): a refused card, a crash or a full disk leaves what was there before.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

from ...durable import open_atomic
from ..card import Persona
from .assets import Asset, BytesAsset, FileAsset, as_assets
from .cache import card_asset_dir
from .charx import write_charx
from .errors import CardError, CardFormatError, CardReferenceError, CardStorageError
from .limits import CardLimits, current_limits
from .loaded import PNG_IMAGE_ASSET, CardFormat
from .mapping import EXTENSION_KEY, REFERENCE_FIELD, persona_to_card
from .png import PNG_SIGNATURE, strip_card_chunks, text_chunk
from .portrait import embedded_icon, render_portrait
from .reference import DEFAULT_URI, EMBEDDED_URI, URI_SCHEME, asset_for, default_image

__all__ = ["dump_card", "write_card", "write_card_to"]

# A reference image a CHARX export carries that the source card named as a file.
_REFERENCE_ASSET_DIR = "assets/other/images"
_REFERENCE_ASSET_TYPE = "x-reference"
_SUFFIX = re.compile(r"^\.[a-z0-9]{1,8}$")


def _find_asset(value: str, card: dict[str, Any], assets: Mapping[str, Asset]) -> str | None:
    """The archive path `value` names among `assets`, else None (never raises)."""
    try:
        return asset_for(value, card, assets, "")
    except CardReferenceError:
        return None


def _same_picture(a: Asset, b: Asset, limits: CardLimits) -> bool:
    """The same image bytes, ignoring a PNG's card chunks (a PNG card's image is kept without them)."""
    if a.same_bytes(b):
        return True
    if max(a.size, b.size) > limits.max_png_bytes or not (a.startswith(PNG_SIGNATURE) and b.startswith(PNG_SIGNATURE)):
        return False
    try:
        return strip_card_chunks(a.read()) == strip_card_chunks(b.read())
    except CardError:
        return False


def _carry(blob: Asset, suffix: str, card: dict[str, Any], out: dict[str, Asset]) -> str:
    """The archive path of `blob` in a CHARX being written: an asset already holding those
    bytes, else a new one (added to `out` and listed in `card`'s `data.assets`)."""
    for name, held in out.items():
        if held.same_bytes(blob):
            return name
    ext = suffix if _SUFFIX.match(suffix) else ""
    name = f"{_REFERENCE_ASSET_DIR}/reference-{blob.digest()[:16]}{ext}"
    out[name] = blob
    data = card["data"]
    listed = data.get("assets") if isinstance(data.get("assets"), list) else []
    entry = {"type": _REFERENCE_ASSET_TYPE, "uri": EMBEDDED_URI + name, "name": "reference", "ext": ext[1:]}
    data["assets"] = [*listed, entry]
    return name


def _exported_reference(
    persona: Persona,
    format: CardFormat,
    card: dict[str, Any],
    out: dict[str, Asset],
    source: Mapping[str, Asset],
    card_dir: Path | None,
    limits: CardLimits,
) -> str | None:
    """What a `format` card file should store as the look's `reference_image` so that reading
    it back finds the same picture.

    `card` is the card object being written and `out` the files it will carry (a PNG: its
    image under `PNG_IMAGE_ASSET`; JSON: none); `source` is what the persona was read with.
    In order: the card's own spelling when the file carries what it names; `ccdefault:` when
    the picture is the file's own image (a PNG card exported from a CHARX icon); for a CHARX,
    the image itself, added as an asset (`card` and `out` gain it); for a file on disk, its
    path: as written when that finds the same file from `card_dir` (where the file goes),
    else absolute. An image that lived only inside the source card and that this container
    cannot carry is a `CardReferenceError`, not a card that would lose it.
    """
    appearance = persona.appearance
    written = appearance.card_reference()
    if not written:
        return written
    value = written.strip()
    current = appearance.reference_image
    if current and current != written:  # resolved at load: the file it found
        file: Path | None = Path(current)
    else:
        typed = Path(value).expanduser()
        file = typed if typed.is_absolute() else None
    inside = _find_asset(value, persona.card, source)
    blob: Asset | None = source[inside] if inside is not None else None
    if blob is None and file is not None:
        with contextlib.suppress(OSError):
            blob = FileAsset(file)
    kept = _find_asset(value, card, out)
    if kept is not None and (blob is None or out[kept].same_bytes(blob)):
        return written
    if blob is not None:
        default = default_image(card, out)
        if default is not None and _same_picture(out[default], blob, limits):
            return DEFAULT_URI
        if format == "charx":
            suffix = Path(inside if inside is not None else str(file)).suffix.lower()
            return EMBEDDED_URI + _carry(blob, suffix, card, out)
    extracted = file is not None and file.resolve().parent == card_asset_dir().resolve()
    carried = inside is not None or extracted or value == DEFAULT_URI or value.startswith(EMBEDDED_URI)
    if not carried and not URI_SCHEME.match(value):
        if file is None:
            return written  # a path never resolved (a persona built in code): the caller's value
        if card_dir is not None and (card_dir / Path(value).expanduser()).resolve() == file.resolve():
            return written
        return str(file)
    if not carried:
        raise CardReferenceError(
            f"{REFERENCE_FIELD} {written!r} is a URL; URLs are never fetched, so the exported card would "
            "not find its picture (name a file, or an image the card carries)"
        )
    what = f"the card's file {inside!r}" if inside is not None else "an image the card carried"
    only = " (a PNG card carries only its own picture, and this is another image)" if format == "png" else ""
    raise CardReferenceError(
        f"{REFERENCE_FIELD} {written!r} is {what}; a {format.upper()} card cannot carry it{only}, so the "
        "exported card would not find its picture: export as CHARX, which carries the card's images"
    )


def _dangling(asset: Any, files: Mapping[str, Asset]) -> bool:
    """A `data.assets` entry whose `embeded://` file is not among `files`."""
    uri = asset.get("uri") if isinstance(asset, dict) else None
    return isinstance(uri, str) and uri.startswith(EMBEDDED_URI) and uri[len(EMBEDDED_URI) :] not in files


def _store_reference(card: dict[str, Any], reference: str | None) -> None:
    card["data"]["extensions"][EXTENSION_KEY]["appearance"]["reference_image"] = reference


def _png_image(persona: Persona, source: Mapping[str, Asset], limits: CardLimits) -> bytes:
    """The image a PNG card is written with: the card's PNG icon (if a PNG card of that size
    could be read back), else a portrait drawn from the look; without card chunks."""
    icon = embedded_icon(persona, source)
    if icon is not None and icon.size <= limits.max_png_bytes:
        with contextlib.suppress(CardError):
            return strip_card_chunks(icon.read())
    return strip_card_chunks(render_portrait(persona.appearance))


def write_card_to(
    handle: IO[bytes],
    persona: Persona,
    format: CardFormat = "json",
    assets: Mapping[str, Asset | bytes] | None = None,
    *,
    card_dir: str | Path | None = None,
    limits: CardLimits | None = None,
) -> None:
    """Write the card file to `handle` (seekable for CHARX). Everything that can refuse the
    card (its reference, see `_exported_reference`) is decided before the first byte."""
    limits = limits or current_limits()
    source = as_assets(assets)
    base = Path(card_dir).expanduser().resolve() if card_dir is not None else None
    if format == "json":
        card = persona_to_card(persona, "v3")
        _store_reference(card, _exported_reference(persona, format, card, {}, source, base, limits))
        handle.write(json.dumps(card, ensure_ascii=False, indent=2).encode("utf-8") + b"\n")
        return
    if format == "png":
        image = _png_image(persona, source, limits)
        v2, v3 = persona_to_card(persona, "v2"), persona_to_card(persona, "v3")
        reference = _exported_reference(persona, format, v3, {PNG_IMAGE_ASSET: BytesAsset(image)}, source, base, limits)
        for card in (v2, v3):
            _store_reference(card, reference)
        iend = image.rindex(b"IEND") - 4
        handle.write(image[:iend] + text_chunk("chara", v2) + text_chunk("ccv3", v3) + image[iend:])
        return
    if format == "charx":
        out = dict(source)
        card = persona_to_card(persona, "v3")
        data = card["data"]
        listed = data.get("assets")
        if isinstance(listed, list):
            # Entries naming files this archive lacks (a PNG or JSON card read from a CHARX)
            # name nothing, and would make the CHARX one our reader refuses.
            listed = data["assets"] = [a for a in listed if not _dangling(a, out)]
        if not isinstance(listed, list) or not any(isinstance(a, dict) and a.get("type") == "icon" for a in listed):
            icon = PNG_IMAGE_ASSET
            if icon not in out:
                drawn = embedded_icon(persona, source)
                out[icon] = drawn if drawn is not None else BytesAsset(render_portrait(persona.appearance))
            entry = {"type": "icon", "uri": EMBEDDED_URI + icon, "name": "main", "ext": "png"}
            data["assets"] = [*(listed if isinstance(listed, list) else []), entry]
        _store_reference(card, _exported_reference(persona, format, card, out, source, base, limits))
        write_charx(handle, card, out)
        return
    raise CardFormatError(f"unknown card format {format!r}; use json, png or charx")


def dump_card(
    persona: Persona,
    format: CardFormat = "json",
    assets: Mapping[str, Asset | bytes] | None = None,
    *,
    card_dir: str | Path | None = None,
    limits: CardLimits | None = None,
) -> bytes:
    """The card file's bytes in `format` (see `write_card_to`); for files, `write_card`
    streams instead of holding a CHARX's assets in memory."""
    buffer = io.BytesIO()
    write_card_to(buffer, persona, format, assets, card_dir=card_dir, limits=limits)
    return buffer.getvalue()


def write_card(
    persona: Persona,
    path: str | Path,
    format: CardFormat = "json",
    assets: Mapping[str, Asset | bytes] | None = None,
    *,
    exclusive: bool = False,
    limits: CardLimits | None = None,
) -> Path:
    """Write `persona` as a card file, atomically and durably; returns the path written.

    A refused card, a crash or a full disk leaves the file that was there (or none): the
    bytes go to a temporary beside it, renamed over it only once all are on disk. With
    `exclusive`, an existing file is never replaced (`FileExistsError`). A write that fails
    for want of room or rights is a `CardStorageError` naming the file."""
    path = Path(path).expanduser()  # `--output=~/x.json` reaches us unexpanded (no shell did it)
    folder = path.resolve().parent
    try:
        with open_atomic(path, exclusive=exclusive) as handle:
            write_card_to(handle, persona, format, assets, card_dir=folder, limits=limits)
    except FileExistsError:
        raise
    except CardError:
        raise
    except OSError as error:
        raise CardStorageError(f"cannot write the card {path}: {error.strerror or error}") from None
    return path
