"""Reading a card file (JSON, PNG or CHARX; sniffed from its first bytes, not its name).

Files come from users, so each limit of `CardLimits` is checked before anything large is
read, inflated or decoded, and every failure raises a `CardError` subclass whose message
names the file and the problem. Nothing but a card's text is held in memory: its images
stay in the file (`assets`).
"""

from __future__ import annotations

import base64
import binascii
import json
import stat
from pathlib import Path
from typing import Any

from ..text import holds_lone_surrogate
from .assets import PngImageAsset, source_key
from .charx import ZIP_SIGNATURE, read_charx, safe_zip_name
from .errors import (
    CardArchiveError,
    CardEncodingError,
    CardFormatError,
    CardJSONError,
    CardMissingError,
    CardSpecError,
    CardTooLargeError,
)
from .limits import CardLimits, current_limits
from .loaded import PNG_IMAGE_ASSET, LoadedCard
from .mapping import card_to_persona
from .png import PNG_SIGNATURE, card_text
from .reference import EMBEDDED_URI, resolve_reference
from .voice import checked_card_voice

__all__ = ["parse_json", "read_card_bytes", "read_card_file"]


def read_card_file(
    path: str | Path, *, resolve: bool = True, verify: bool = False, limits: CardLimits | None = None
) -> LoadedCard:
    """Read a .json, .png or .charx card; the type is sniffed from the content, not the name.

    `resolve=False` leaves the reference image as the card wrote it (nothing is written to
    the cache): for a caller that may still refuse the card, then calls `resolve_reference`.
    `verify=True` inflates every CHARX entry once (keeping nothing) so a corrupt archive is
    refused now rather than when a picture is read; imports ask for it, listing does not.
    """
    limits = limits or current_limits()
    path = Path(path)
    try:
        info = path.stat()
        if stat.S_ISDIR(info.st_mode):
            raise IsADirectoryError
        if not stat.S_ISREG(info.st_mode):  # /dev/zero or a pipe reports size 0 and never ends
            raise CardFormatError(f"{path}: not a regular file (a device or a pipe), not a card file")
        size = info.st_size
        with path.open("rb") as handle:
            head = handle.read(64)
    except FileNotFoundError:
        raise CardMissingError(f"card file not found: {path}") from None
    except IsADirectoryError:
        raise CardFormatError(f"{path}: is a folder, not a card file") from None
    if size > limits.max_charx_bytes:
        raise CardTooLargeError(f"{path.name}: {size} bytes is over the {limits.max_charx_bytes}-byte limit")
    if head.startswith(ZIP_SIGNATURE):
        card_json, assets = read_charx(path, path.name, limits, verify=verify)
        loaded = _charx_card(card_json, assets, path.name, limits)
    elif head.startswith(PNG_SIGNATURE):
        if size > limits.max_png_bytes:
            raise CardTooLargeError(f"{path.name}: PNG is {size} bytes, over the {limits.max_png_bytes}-byte limit")
        loaded = _read_png(path.read_bytes(), path.name, limits, source=path)
    else:
        if size > limits.max_card_json_bytes:
            raise CardTooLargeError(
                f"{path.name}: card JSON is {size} bytes, over the {limits.max_card_json_bytes}-byte limit"
            )
        loaded = _read_container(path.read_bytes(), path.name, limits)
    loaded = checked_card_voice(loaded, path.name)
    if not resolve:
        return loaded
    return resolve_reference(loaded, card_dir=path.resolve().parent, filename=path.name)


def read_card_bytes(
    data: bytes,
    *,
    filename: str = "card",
    card_dir: str | Path | None = None,
    resolve: bool = True,
    verify: bool = True,
    limits: CardLimits | None = None,
) -> LoadedCard:
    """Read a card from bytes (an upload, a dropped file), its reference image resolved.

    `card_dir` is the folder the card lives in, for a reference given as a file path; without
    one (an upload) the card may name only images it carries (see `resolve_reference`).
    The whole card is checked (every CHARX entry inflated once, nothing kept) before its
    reference image is resolved, so a card refused for anything else never writes to the
    asset cache. The assets read from `data` when used: it is kept, not copied.
    """
    loaded = checked_card_voice(_read_container(data, filename, limits or current_limits(), verify=verify), filename)
    return resolve_reference(loaded, card_dir=card_dir, filename=filename) if resolve else loaded


def _read_container(data: bytes, filename: str, limits: CardLimits, *, verify: bool = True) -> LoadedCard:
    if data.startswith(PNG_SIGNATURE):
        return _read_png(data, filename, limits)
    if data.startswith(ZIP_SIGNATURE):
        if len(data) > limits.max_charx_bytes:
            raise CardTooLargeError(
                f"{filename}: CHARX is {len(data)} bytes, over the {limits.max_charx_bytes}-byte limit"
            )
        card_json, assets = read_charx(bytes(data), filename, limits, verify=verify)
        return _charx_card(card_json, assets, filename, limits)
    head = data[:64].lstrip(b"\xef\xbb\xbf \t\r\n")
    if head.startswith(b"{"):
        card = parse_json(data, filename, limits)
        return LoadedCard(card_to_persona(card), "json")
    raise CardFormatError(
        f"{filename}: not a character card (expected JSON, a PNG with a 'chara'/'ccv3' chunk, "
        f"or a CHARX zip; the file starts with {data[:8]!r})"
    )


def parse_json(data: bytes, where: str, limits: CardLimits) -> dict[str, Any]:
    if len(data) > limits.max_card_json_bytes:
        raise CardTooLargeError(
            f"{where}: card JSON is {len(data)} bytes, over the {limits.max_card_json_bytes}-byte limit"
        )
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise CardEncodingError(f"{where}: card JSON is not UTF-8 ({error.reason} at byte {error.start})") from None
    try:
        card = json.loads(text)
    except json.JSONDecodeError as error:
        raise CardJSONError(
            f"{where}: card is not valid JSON: {error.msg} at line {error.lineno} column {error.colno}"
        ) from None
    except RecursionError:
        raise CardJSONError(f"{where}: card JSON is nested too deeply") from None
    if not isinstance(card, dict):
        raise CardJSONError(f"{where}: card JSON must be an object, got {type(card).__name__}")
    if "\\u" in text and holds_lone_surrogate(card):  # decoded strictly: only an escape makes one
        raise CardEncodingError(f"{where}: card JSON holds a lone UTF-16 surrogate (an escape like \\ud83c "
                                "with no pair), which UTF-8 cannot carry")
    return card


def _read_png(data: bytes, filename: str, limits: CardLimits, source: Path | None = None) -> LoadedCard:
    if len(data) > limits.max_png_bytes:
        raise CardTooLargeError(f"{filename}: PNG is {len(data)} bytes, over the {limits.max_png_bytes}-byte limit")
    chunk, encoded = card_text(data, filename, limits.max_card_json_bytes, limits.max_png_chunks)
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError) as error:
        raise CardEncodingError(f"{filename}: PNG chunk '{chunk}' is not valid base64 ({error})") from None
    card = parse_json(decoded, f"{filename} (PNG chunk '{chunk}')", limits)
    persona = card_to_persona(card)
    # The image is cut from the file when something asks for it; an upload's bytes are kept.
    image = (
        PngImageAsset(source, filename=filename, size_limit=limits.max_png_bytes, key=source_key(source))
        if source is not None
        else PngImageAsset(bytes(data), filename=filename, size_limit=limits.max_png_bytes)
    )
    return LoadedCard(persona, "png", {PNG_IMAGE_ASSET: image})


def _charx_card(card_json: bytes, assets: dict, filename: str, limits: CardLimits) -> LoadedCard:
    card = parse_json(card_json, f"{filename} (card.json)", limits)
    if card.get("spec") != "chara_card_v3":
        raise CardSpecError(f"{filename}: CHARX card.json must be 'chara_card_v3', got spec {card.get('spec')!r}")
    data_obj = card.get("data")
    listed = data_obj.get("assets") if isinstance(data_obj, dict) else None
    for asset in listed if isinstance(listed, list) else []:
        uri = asset.get("uri", "") if isinstance(asset, dict) else ""
        if isinstance(uri, str) and uri.startswith(EMBEDDED_URI):
            path = uri[len(EMBEDDED_URI) :]
            if not safe_zip_name(path):
                raise CardArchiveError(f"{filename}: asset uri {uri!r} is an unsafe path")
            if path not in assets:
                raise CardArchiveError(f"{filename}: asset uri {uri!r} names a file the CHARX does not contain")
    return LoadedCard(card_to_persona(card), "charx", assets)
