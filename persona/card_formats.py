"""Reading and writing persona cards: Character Card V2/V3 as JSON, PNG and CHARX.

The community formats (SillyTavern, chub.ai, RisuAI...) store a character as a JSON
object `{"spec": "chara_card_v2" | "chara_card_v3", "spec_version", "data": {...}}`:

- JSON: the object as a file.
- PNG: an image whose `tEXt` chunk `chara` holds base64 of the V2 JSON, and `ccv3` base64
  of the V3 JSON (V3 readers prefer `ccv3`). We write both so older tools still read it.
- CHARX (V3 only): a zip with `card.json` at its root and assets under `assets/`,
  referenced from `data.assets[].uri` as `embeded://assets/...` (sic, the spec's spelling).

Our own fields live under `data.extensions.comfyui_persona`; a card from another tool
without them imports with defaults. Import keeps the whole card object on
`Persona.card`, so exporting writes back every field we do not model (lorebooks,
alternate greetings, other tools' extensions, unknown future fields) untouched.

Files come from users, so every limit below is checked before anything large is
decoded, and every failure raises a `CardError` subclass whose message names the
problem. We parse PNG chunks ourselves (a few lines of `struct`) instead of through
Pillow: that reads the text chunks without decoding the image (no decompression-bomb
exposure, no Pillow text-size caps with their generic errors), lets us name a bad CRC
or truncated chunk precisely, and lets export replace only our two chunks, leaving the
user's image bytes as they were. Pillow is used only to draw a portrait for personas
that have no image, and to check that a reference image is a PNG, JPEG or WebP one.

A look's `reference_image` (identity anchoring) may name an asset the card carries; the
engine needs a file. Loading a card therefore resolves it (`resolve_reference`): an asset
is written once to a content-addressed file under the user cache, a relative path is
taken from the card's folder. A reference that finds no usable image is dropped with a
warning on `LoadedCard.warnings` (the rest of the card is still a persona) rather than a
failure mid-stream. Export writes the card's own spelling back (`Appearance.card_reference`),
never the cache's path, unless the target container needs another spelling to find the
same picture; a container that cannot carry it is a `CardReferenceError`, not a card that
would lose its picture on the way back in (`dump_card`).

That cache is bounded: the headless service takes card uploads from anyone it lets in, and
every new image would otherwise stay on its disk forever. Reusing a file marks it used
(its mtime), and each new file prunes the folder: files unused for `CARD_ASSET_MAX_AGE_DAYS`
go, then the least recently used until the folder is under `CARD_ASSET_MAX_MB` (both read
from PERSONA_CARD_ASSETS_MAX_DAYS / PERSONA_CARD_ASSETS_MAX_MB, 0 turning a bound off).
Nothing used in the last 15 minutes (`_IN_USE_SECONDS`) goes: a session reads its
reference soon after its card resolved it. A path pruned later is made again by resolving
the card again
(`resolve_reference` goes from the card's own spelling and its kept assets, and names the
file by its bytes, so the path is the same).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import copy
import hashlib
import io
import json
import math
import os
import re
import stat
import struct
import tempfile
import time
import zipfile
import zlib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from pydantic import ValidationError

from .card import Appearance, Persona

__all__ = [
    "CARD_ASSET_MAX_AGE_DAYS",
    "CARD_ASSET_MAX_MB",
    "ENV_ASSET_MAX_DAYS",
    "ENV_ASSET_MAX_MB",
    "EXTENSION_KEY",
    "MAX_CARD_JSON_BYTES",
    "MAX_CHARX_BYTES",
    "MAX_CHARX_ENTRIES",
    "MAX_CHARX_UNCOMPRESSED_BYTES",
    "MAX_PNG_BYTES",
    "MAX_REFERENCE_PIXELS",
    "REFERENCE_IMAGE_FORMATS",
    "CardArchiveError",
    "CardEncodingError",
    "CardError",
    "CardFormatError",
    "CardJSONError",
    "CardMissingError",
    "CardReferenceError",
    "CardSpecError",
    "CardTooLargeError",
    "CardValidationError",
    "LoadedCard",
    "card_to_persona",
    "PNG_IMAGE_ASSET",
    "REFERENCE_FIELD",
    "card_asset_bounds",
    "card_asset_dir",
    "dump_card",
    "portrait_png",
    "persona_to_card",
    "read_card_bytes",
    "read_card_file",
    "render_portrait",
    "resolve_reference",
    "write_card",
]

#: Where our fields live inside `data.extensions`.
EXTENSION_KEY = "comfyui_persona"
#: Version of our extension's layout (written, checked on read: newer major → error).
EXTENSION_VERSION = 1
#: A card's JSON text. Lorebooks make real cards large; 4 MiB holds the biggest we know of.
MAX_CARD_JSON_BYTES = 4 * 1024 * 1024
#: A PNG card file.
MAX_PNG_BYTES = 20 * 1024 * 1024
#: A CHARX file on disk, its entries once uncompressed, and its entry count (zip bombs).
MAX_CHARX_BYTES = 50 * 1024 * 1024
MAX_CHARX_UNCOMPRESSED_BYTES = 100 * 1024 * 1024
MAX_CHARX_ENTRIES = 1000
#: A reference image's size (width × height, read from its header): far above any photo the
#: engine frames (it scales to the video size), far below what would exhaust memory decoded.
MAX_REFERENCE_PIXELS = 64_000_000
#: The image formats a reference may be (Pillow names). Only these parsers ever see a card's
#: bytes: Pillow knows dozens of formats, and some (EPS) hand the file to Ghostscript.
REFERENCE_IMAGE_FORMATS = ("PNG", "JPEG", "WEBP")
#: The asset cache's bounds (environment: `ENV_ASSET_MAX_DAYS`, `ENV_ASSET_MAX_MB`; 0 turns one
#: off). A month keeps the images of every card in use (each load marks its file used); 256 MiB
#: holds hundreds of photo-sized references (a phone JPEG is 2-5 MB, a card's PNG less) and
#: is small beside the model files the same machine keeps.
CARD_ASSET_MAX_AGE_DAYS = 30.0
CARD_ASSET_MAX_MB = 256.0
ENV_ASSET_MAX_DAYS = "PERSONA_CARD_ASSETS_MAX_DAYS"
ENV_ASSET_MAX_MB = "PERSONA_CARD_ASSETS_MAX_MB"

CardFormat = Literal["json", "png", "charx"]
CardSpec = Literal["v2", "v3"]

_SPECS = {"chara_card_v2": "2.0", "chara_card_v3": "3.0"}
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_ZIP_SIGNATURE = b"PK\x03\x04"
_CARD_CHUNKS = ("ccv3", "chara")  # preference order on read
_EMBEDDED_URI = "embeded://"  # the spec's spelling
_TEXT_FIELDS = ("name", "description", "personality", "scenario", "first_mes", "mes_example")
_ID_CLEAN = re.compile(r"[^a-z0-9_-]+")
_DEFAULT_URI = "ccdefault:"  # V3: "the default asset of this type" (a PNG card's own image)
_URI_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+:")  # 2+ letters: a drive (C:) is a path
_SUFFIX = re.compile(r"^\.[a-z0-9]{1,8}$")
# The asset cache's own names: `<sha256><suffix>` and `_cached_asset`'s mkstemp temporaries.
# Pruning touches nothing else in the folder.
_CACHE_NAME = re.compile(r"^[0-9a-f]{64}(\.[a-z0-9]{1,8})?$")
_TEMP_NAME = re.compile(r"^\.[0-9a-f]{16}\.[A-Za-z0-9_]+\.tmp$")
# A file used this recently is never pruned: the session that just resolved it has yet to open
# it (a cold start loads and compiles the model first).
_IN_USE_SECONDS = 15 * 60
# A temporary this old belongs to a writer that died (a live one renames it within a second).
_STALE_TEMP_SECONDS = 60 * 60
#: Where a look's reference image sits in a card (named in `CardReferenceError` messages).
REFERENCE_FIELD = f"data.extensions.{EXTENSION_KEY}.appearance.reference_image"


class CardError(ValueError):
    """A card file that cannot be used; the message says what is wrong with it."""


class CardTooLargeError(CardError):
    """The file or one of its parts is over a size or count limit."""


class CardFormatError(CardError):
    """Not a card file at all: neither JSON, PNG nor a CHARX zip, or a corrupt container."""


class CardMissingError(CardError):
    """A container without a card in it (PNG without `chara`/`ccv3`, zip without card.json)."""


class CardEncodingError(CardError):
    """The card text is not valid base64 or not UTF-8."""


class CardJSONError(CardError):
    """The card text is not valid JSON, or not a JSON object."""


class CardSpecError(CardError):
    """Valid JSON that is not a Character Card V2/V3 (wrong `spec`, missing `data`, bad field type)."""


class CardArchiveError(CardError):
    """A CHARX zip that is unsafe or inconsistent (path traversal, zip bomb, missing asset)."""


class CardValidationError(CardError):
    """Our `comfyui_persona` extension (or a field it feeds) fails validation."""


class CardReferenceError(CardValidationError):
    """The look's `reference_image` names no usable image (no such asset or file, not an
    image, a URL we do not fetch); the message names the card, the field and what was looked for."""


@dataclass
class LoadedCard:
    """A persona read from a file, with the binary assets the file carried.

    `assets` maps a path inside the card (`assets/icon/images/main.png`) to its bytes;
    a PNG card's own image is kept under `PNG_IMAGE_ASSET` so a PNG export reuses it.
    `warnings` says what reading it dropped (a reference image that finds nothing), for a
    UI to show: the persona works without it.
    """

    persona: Persona
    format: CardFormat
    assets: dict[str, bytes] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


#: Asset key under which a PNG card's image (without its card chunks) is kept.
PNG_IMAGE_ASSET = "assets/icon/images/main.png"


# --------------------------------------------------------------------------- reading


def read_card_file(path: str | Path, *, resolve: bool = True) -> LoadedCard:
    """Read a .json, .png or .charx card; the type is sniffed from the content, not the name.

    `resolve=False` leaves the reference image as the card wrote it (nothing is written to
    the cache): for a caller that may still refuse the card, then calls `resolve_reference`.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise CardMissingError(f"card file not found: {path}") from None
    if size > MAX_CHARX_BYTES:
        raise CardTooLargeError(f"{path.name}: {size} bytes is over the {MAX_CHARX_BYTES}-byte limit")
    data = path.read_bytes()
    return read_card_bytes(data, filename=path.name, card_dir=path.resolve().parent, resolve=resolve)


def read_card_bytes(
    data: bytes, *, filename: str = "card", card_dir: str | Path | None = None, resolve: bool = True
) -> LoadedCard:
    """Read a card from bytes (an upload, a dropped file), its reference image resolved.

    `card_dir` is the folder the card lives in, for a reference given as a file path; without
    one (an upload) the card may name only images it carries (see `resolve_reference`).
    The whole card is checked before its reference image is resolved, so a card refused for
    anything else never writes to the asset cache.
    """
    loaded = _read_container(data, filename)
    return resolve_reference(loaded, card_dir=card_dir, filename=filename) if resolve else loaded


def _read_container(data: bytes, filename: str) -> LoadedCard:
    if data.startswith(_PNG_SIGNATURE):
        return _read_png(data, filename)
    if data.startswith(_ZIP_SIGNATURE):
        return _read_charx(data, filename)
    head = data[:64].lstrip(b"\xef\xbb\xbf \t\r\n")
    if head.startswith(b"{"):
        card = _parse_json(data, f"{filename}")
        return LoadedCard(card_to_persona(card), "json")
    raise CardFormatError(
        f"{filename}: not a character card (expected JSON, a PNG with a 'chara'/'ccv3' chunk, "
        f"or a CHARX zip; the file starts with {data[:8]!r})"
    )


def _parse_json(data: bytes, where: str) -> dict[str, Any]:
    if len(data) > MAX_CARD_JSON_BYTES:
        raise CardTooLargeError(
            f"{where}: card JSON is {len(data)} bytes, over the {MAX_CARD_JSON_BYTES}-byte limit"
        )
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise CardEncodingError(
            f"{where}: card JSON is not UTF-8 ({error.reason} at byte {error.start})"
        ) from None
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
    return card


def _iter_png_chunks(data: bytes, filename: str):
    """Yield (type, payload, start, end) for each chunk, checking lengths and CRCs."""
    offset = len(_PNG_SIGNATURE)
    while offset < len(data):
        if offset + 8 > len(data):
            raise CardFormatError(f"{filename}: PNG is truncated inside a chunk header at byte {offset}")
        (length,) = struct.unpack(">I", data[offset : offset + 4])
        kind = data[offset + 4 : offset + 8]
        end = offset + 12 + length
        if end > len(data):
            raise CardFormatError(
                f"{filename}: PNG chunk {kind!r} at byte {offset} claims {length} bytes, past the end of the file"
            )
        payload = data[offset + 8 : offset + 8 + length]
        (crc,) = struct.unpack(">I", data[end - 4 : end])
        if zlib.crc32(kind + payload) & 0xFFFFFFFF != crc:
            raise CardFormatError(f"{filename}: PNG chunk {kind!r} at byte {offset} has a bad CRC")
        yield kind, payload, offset, end
        offset = end
        if kind == b"IEND":
            return
    raise CardFormatError(f"{filename}: PNG has no IEND chunk (truncated file?)")


def _read_png(data: bytes, filename: str) -> LoadedCard:
    if len(data) > MAX_PNG_BYTES:
        raise CardTooLargeError(f"{filename}: PNG is {len(data)} bytes, over the {MAX_PNG_BYTES}-byte limit")
    texts: dict[str, bytes] = {}
    for kind, payload, _, _ in _iter_png_chunks(data, filename):
        if kind != b"tEXt":
            continue
        keyword, sep, value = payload.partition(b"\0")
        name = keyword.decode("latin-1")
        if sep and name in _CARD_CHUNKS and name not in texts:
            texts[name] = value
    chunk = next((name for name in _CARD_CHUNKS if name in texts), None)
    if chunk is None:
        raise CardMissingError(f"{filename}: PNG has no 'ccv3' or 'chara' tEXt chunk, so it holds no card")
    encoded = texts[chunk]
    if len(encoded) > MAX_CARD_JSON_BYTES * 4 // 3 + 4:
        raise CardTooLargeError(
            f"{filename}: PNG chunk '{chunk}' is {len(encoded)} bytes, over the card JSON limit"
        )
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError) as error:
        raise CardEncodingError(f"{filename}: PNG chunk '{chunk}' is not valid base64 ({error})") from None
    card = _parse_json(decoded, f"{filename} (PNG chunk '{chunk}')")
    persona = card_to_persona(card)
    return LoadedCard(persona, "png", {PNG_IMAGE_ASSET: _strip_card_chunks(data, filename)})


def _safe_zip_name(name: str) -> bool:
    if not name or "\0" in name or "\\" in name or name.startswith("/"):
        return False
    parts = name.split("/")
    return not any(part in ("..", ".") or ":" in part for part in parts)


def _read_charx(data: bytes, filename: str) -> LoadedCard:
    if len(data) > MAX_CHARX_BYTES:
        raise CardTooLargeError(
            f"{filename}: CHARX is {len(data)} bytes, over the {MAX_CHARX_BYTES}-byte limit"
        )
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as error:
        raise CardFormatError(f"{filename}: not a readable zip ({error})") from None
    with archive:
        infos = archive.infolist()
        if len(infos) > MAX_CHARX_ENTRIES:
            raise CardTooLargeError(
                f"{filename}: CHARX has {len(infos)} entries, over the {MAX_CHARX_ENTRIES}-entry limit"
            )
        declared = 0
        for info in infos:
            if not _safe_zip_name(info.filename):
                raise CardArchiveError(
                    f"{filename}: CHARX entry {info.filename!r} is an unsafe path (absolute, '..' or drive)"
                )
            declared += info.file_size
        if declared > MAX_CHARX_UNCOMPRESSED_BYTES:
            raise CardTooLargeError(
                f"{filename}: CHARX would uncompress to {declared} bytes, over the "
                f"{MAX_CHARX_UNCOMPRESSED_BYTES}-byte limit (zip bomb?)"
            )
        files: dict[str, bytes] = {}
        total = 0
        for info in infos:
            if info.is_dir():
                continue
            # Read at most the declared size + 1: a lying header cannot make us inflate more.
            limit = min(info.file_size, MAX_CHARX_UNCOMPRESSED_BYTES - total)
            try:
                with archive.open(info) as handle:
                    content = handle.read(limit + 1)
            except (zipfile.BadZipFile, zlib.error, NotImplementedError, RuntimeError) as error:
                raise CardFormatError(
                    f"{filename}: CHARX entry {info.filename!r} is unreadable ({error})"
                ) from None
            if len(content) > limit:
                raise CardTooLargeError(
                    f"{filename}: CHARX entry {info.filename!r} inflates past its declared size (zip bomb?)"
                )
            total += len(content)
            files[info.filename] = content
    if "card.json" not in files:
        raise CardMissingError(f"{filename}: CHARX has no card.json at its root")
    card = _parse_json(files.pop("card.json"), f"{filename} (card.json)")
    if card.get("spec") != "chara_card_v3":
        raise CardSpecError(
            f"{filename}: CHARX card.json must be 'chara_card_v3', got spec {card.get('spec')!r}"
        )
    data_obj = card.get("data")
    for asset in (data_obj.get("assets") or []) if isinstance(data_obj, dict) else []:
        uri = asset.get("uri", "") if isinstance(asset, dict) else ""
        if isinstance(uri, str) and uri.startswith(_EMBEDDED_URI):
            path = uri[len(_EMBEDDED_URI) :]
            if not _safe_zip_name(path):
                raise CardArchiveError(f"{filename}: asset uri {uri!r} is an unsafe path")
            if path not in files:
                raise CardArchiveError(
                    f"{filename}: asset uri {uri!r} names a file the CHARX does not contain"
                )
    persona = card_to_persona(card)
    return LoadedCard(persona, "charx", files)


# --------------------------------------------------------------------------- reference image


def card_asset_dir() -> Path:
    """Where card assets named as a reference image are written: `card-assets/` in the
    user cache ($PERSONA_CACHE_DIR, else $XDG_CACHE_HOME/comfyui-persona, else
    ~/.cache/comfyui-persona). A cache, not the library: card folders may be read-only
    (the built-ins, a shared PERSONA_DIR), an upload has no folder, and every file here
    can be made again from its card, which is why it may be pruned (`card_asset_bounds`)."""
    from .embedding import cache_dir  # the project's one cache location (imports numpy: only here)

    return cache_dir() / "card-assets"


def resolve_reference(
    loaded: LoadedCard, *, card_dir: str | Path | None, filename: str = "card", strict: bool = False
) -> LoadedCard:
    """`loaded` with its look's `reference_image` as an absolute path to an image file.

    What a card may write there, tried in this order:

    - `ccdefault:`: the card's own picture (its `icon` asset named `main`, else its first
      icon, else a PNG card's image);
    - `embeded://<path>`: that file inside the CHARX;
    - the archive path of an asset (`assets/icon/images/face.png`) or the `name` of an entry
      in `data.assets` (an entry's `embeded://` or `ccdefault:` uri is followed);
    - a file path, relative to `card_dir`; `~` is expanded. Without a `card_dir` (an upload)
      file paths are refused: a card from elsewhere must not make us read our own files.

    An asset is written once to `card_asset_dir()/<sha256 of its bytes><suffix>`, so one
    image gives one path (the engine keys its reference cache on it) however many cards
    carry it. Resolving again goes from the card's own spelling (`Appearance.card_reference`),
    so a persona already resolved can be checked against another folder.

    When nothing usable is found (no such asset or file, not a PNG/JPEG/WebP image, over
    `MAX_REFERENCE_PIXELS`, a URL, an upload naming a file), the reference is dropped and the
    `CardReferenceError` message goes to `LoadedCard.warnings`: a card is far more than its
    photo, and refusing it whole would lose everything else for an optional anchor. With
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


def _listed_assets(card: dict[str, Any]) -> list[dict[str, Any]]:
    data = card.get("data")
    listed = data.get("assets") if isinstance(data, dict) else None
    return [a for a in listed if isinstance(a, dict)] if isinstance(listed, list) else []


def _default_image(card: dict[str, Any], assets: dict[str, bytes]) -> str | None:
    """The archive path of the card's own picture, if it carries one."""
    icons = [a for a in _listed_assets(card) if a.get("type") == "icon"]
    icons.sort(key=lambda a: a.get("name") != "main")  # stable: `main` first, then file order
    for icon in icons:
        uri = str(icon.get("uri", ""))
        name = uri[len(_EMBEDDED_URI) :] if uri.startswith(_EMBEDDED_URI) else ""
        if name in assets:
            return name
    return PNG_IMAGE_ASSET if PNG_IMAGE_ASSET in assets else None


def _asset_for(value: str, card: dict[str, Any], assets: dict[str, bytes], where: str) -> str | None:
    """The archive path `value` names (a URI, an archive path or an asset name), else None."""
    if value == _DEFAULT_URI:
        name = _default_image(card, assets)
        if name is None:
            raise CardReferenceError(
                f"{where}: looked for the card's own picture (an icon asset or a PNG card's image), "
                "but this card carries no image"
            )
        return name
    if value.startswith(_EMBEDDED_URI):
        name = value[len(_EMBEDDED_URI) :]
        if name not in assets:
            held = ", ".join(sorted(assets)) or "none"
            raise CardReferenceError(
                f"{where}: looked for the file {name!r} inside the card, which holds no such file (it holds: {held})"
            )
        return name
    if value in assets:
        return value
    named = [a for a in _listed_assets(card) if a.get("name") == value]
    if len(named) > 1:
        uris = ", ".join(repr(a.get("uri")) for a in named)
        raise CardReferenceError(
            f"{where}: {len(named)} entries of data.assets are named {value!r} ({uris}); write one of their uris instead"
        )
    if named:
        uri = str(named[0].get("uri", ""))
        if uri == _DEFAULT_URI or uri.startswith(_EMBEDDED_URI):
            return _asset_for(uri, card, assets, where)
        raise CardReferenceError(
            f"{where}: the asset named {value!r} is at {uri!r}; only images inside the card "
            f"({_EMBEDDED_URI}..., {_DEFAULT_URI}) or files on disk can be references (nothing is downloaded)"
        )
    return None


def _reference_path(
    value: str, card: dict[str, Any], assets: dict[str, bytes], base: Path | None, where: str
) -> Path:
    name = _asset_for(value, card, assets, where)
    if name is not None:
        blob = assets[name]
        _check_image(io.BytesIO(blob), f"{where}: the card's file {name!r}")
        return _cached_asset(blob, Path(name).suffix.lower(), where)
    if _URI_SCHEME.match(value):
        raise CardReferenceError(
            f"{where}: looked for an asset of this card by that name and found none, and URLs are not "
            f"fetched (write {_EMBEDDED_URI}<path in the CHARX>, an asset name, {_DEFAULT_URI} or a file path)"
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
    _check_image(path, f"{where}: the file {path}")
    return path


def _check_image(source: Path | io.BytesIO, what: str) -> None:
    """Refuse a reference that is not a PNG, JPEG or WebP image of sane size now rather than
    when a session starts. Only the header is read: Pillow decodes nothing until asked, and
    only the parsers of `REFERENCE_IMAGE_FORMATS` look at the bytes (the identity conditioner
    opens the file with the same list)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(source, formats=REFERENCE_IMAGE_FORMATS) as image:
            width, height = image.size
    except UnidentifiedImageError:
        raise CardReferenceError(f"{what} is not a PNG, JPEG or WebP image") from None
    except (OSError, Image.DecompressionBombError) as error:
        raise CardReferenceError(f"{what} is not a readable PNG, JPEG or WebP image ({error})") from None
    if width * height > MAX_REFERENCE_PIXELS:
        raise CardReferenceError(
            f"{what} is {width}×{height} pixels ({width * height / 1e6:.0f} megapixels), over the "
            f"{MAX_REFERENCE_PIXELS // 1_000_000}-megapixel limit for a reference image"
        )


def _holds(path: Path, blob: bytes) -> bool:
    """Whether `path` is a regular file (not a link to one) holding exactly `blob`."""
    try:
        if not stat.S_ISREG(path.lstat().st_mode):
            return False
        return path.read_bytes() == blob
    except FileNotFoundError:
        return False


def _cached_asset(blob: bytes, suffix: str, where: str) -> Path:
    """A file holding `blob`, named by its SHA-256: written once, then reused while it still
    holds those bytes (a damaged or planted file, or a link, is replaced, not trusted).
    Reuse marks the file used; a new file prunes the folder (`card_asset_bounds`)."""
    max_age, max_bytes = card_asset_bounds()  # a misconfiguration is named before anything is written
    digest = hashlib.sha256(blob).hexdigest()
    folder = card_asset_dir()
    name = f"{digest}{suffix if _SUFFIX.match(suffix) else ''}"
    try:
        folder = folder.resolve()
        path = folder / name
        if _holds(path, blob):
            with contextlib.suppress(OSError):  # a read-only shared cache: still usable, just not marked
                os.utime(path)
            return path
        folder.mkdir(parents=True, exist_ok=True)
        # Another thread or process may write the same file: each writes its own temporary,
        # then renames it atomically; both hold the same bytes, so either one winning is right.
        # mkstemp: an unpredictable name, created exclusively (a planted link is never followed).
        handle, partial = tempfile.mkstemp(dir=folder, prefix=f".{digest[:16]}.", suffix=".tmp")
        try:
            with os.fdopen(handle, "wb") as out:
                out.write(blob)
            os.replace(partial, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(partial)
            raise
    except OSError as error:
        raise CardReferenceError(
            f"{where}: cannot write the card's image to {folder} ({error.strerror or error}); "
            "set PERSONA_CACHE_DIR to a writable folder"
        ) from None
    _prune(folder, keep=name, max_age=max_age, max_bytes=max_bytes)
    return path


def _bound(variable: str, default: float, unit: str) -> float:
    text = os.environ.get(variable, "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise ValueError(
            f"{variable} must be a number of {unit}, 0 or more (0: no limit), not {text!r}; "
            f"unset it for the default ({default:g})"
        )
    return value


def card_asset_bounds() -> tuple[float, int]:
    """(max age in seconds, max total bytes) of `card_asset_dir()`, each 0 for no limit: the
    module defaults, or PERSONA_CARD_ASSETS_MAX_DAYS / PERSONA_CARD_ASSETS_MAX_MB (MiB). A
    value that is not a number ≥ 0 raises `ValueError` naming the variable."""
    days = _bound(ENV_ASSET_MAX_DAYS, CARD_ASSET_MAX_AGE_DAYS, "days")
    megabytes = _bound(ENV_ASSET_MAX_MB, CARD_ASSET_MAX_MB, "MiB")
    return days * 86400.0, int(megabytes * 1024 * 1024)


def _prune(folder: Path, *, keep: str, max_age: float, max_bytes: int) -> None:
    """Delete cache files unused for longer than `max_age` seconds, then the least recently
    used until the folder's files total at most `max_bytes` (0: that bound is off). `keep`
    (the file just written) and files used in the last `_IN_USE_SECONDS` always stay.
    Only our own names are touched, links and folders never; a stale temporary (a writer
    that died) goes. Other processes prune the same folder, so a file that vanishes or
    cannot be read is passed over: pruning never fails the write that started it."""
    now = time.time()
    try:
        with os.scandir(folder) as listing:
            entries = list(listing)
    except OSError:
        return
    files: list[tuple[float, int, str]] = []  # (last used, size, name)
    for entry in entries:
        try:
            info = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        if not stat.S_ISREG(info.st_mode):
            continue
        if _TEMP_NAME.match(entry.name):
            if now - info.st_mtime > _STALE_TEMP_SECONDS:
                _remove(folder / entry.name, info.st_mtime)
        elif _CACHE_NAME.match(entry.name):
            files.append((info.st_mtime, info.st_size, entry.name))
    files.sort()  # least recently used first
    total = sum(size for _, size, _ in files)
    for used, size, name in files:
        if name == keep or now - used < _IN_USE_SECONDS:
            continue
        expired = max_age > 0 and now - used > max_age
        if (expired or (max_bytes > 0 and total > max_bytes)) and _remove(folder / name, used):
            total -= size


def _remove(path: Path, used: float) -> bool:
    """Unlink `path` unless it was used since it was listed (another process reusing it right
    now); True if it is gone."""
    try:
        info = path.lstat()
        if info.st_mtime != used or not stat.S_ISREG(info.st_mode):
            return False
        path.unlink()
    except FileNotFoundError:
        return True  # another pruner was first
    except OSError:
        return False
    return True


# --------------------------------------------------------------------------- card ↔ persona


def _slug(text: str) -> str:
    slug = _ID_CLEAN.sub("-", text.strip().lower()).strip("-_")[:64]
    return slug if slug and slug[0].isalnum() else ""


def _default_appearance(name: str, card_data: dict[str, Any]) -> Appearance:
    """A look for a card from another tool: varied by its name so two imports differ."""
    palette_hair = ["#2b1d14", "#6b3e1f", "#c9a25a", "#a33b20", "#1c1c1c", "#8c8c8c"]
    palette_outfit = ["#4a7bd1", "#2e8b57", "#8e44ad", "#c0392b", "#d35400", "#16a085"]
    styles = ["short", "long", "ponytail", "curly", "bun"]
    digest = hashlib.sha256(name.encode("utf-8")).digest()
    visual = card_data.get("extensions", {}).get("visual_description")
    description = visual if isinstance(visual, str) and visual.strip() else f"{name}, a friendly young adult"
    return Appearance(
        description=description.strip()[:1000],
        hair_colour=palette_hair[digest[0] % len(palette_hair)],
        hair_style=styles[digest[1] % len(styles)],
        outfit_colour=palette_outfit[digest[2] % len(palette_outfit)],
    )


def _normalise(card: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """(spec, data) of a V2/V3 card; a V1 card (fields at the root, no spec) reads as V2."""
    if "spec" not in card and "data" not in card and isinstance(card.get("name"), str):
        return "chara_card_v2", card  # V1: everything at the root
    spec = card.get("spec")
    if spec not in _SPECS:
        raise CardSpecError(
            f"card spec is {spec!r}; expected 'chara_card_v2' or 'chara_card_v3' (Character Card V2/V3)"
        )
    data = card.get("data")
    if not isinstance(data, dict):
        raise CardSpecError(f"{spec} card has no 'data' object (got {type(data).__name__})")
    return spec, data


def card_to_persona(card: dict[str, Any], *, fallback_id: str = "") -> Persona:
    """Our persona from a card object (which `Persona.card` keeps verbatim).

    The id is our extension's `id`, else a slug of the name, else `fallback_id`, else
    `card-` plus a hash of the name (names in scripts that do not slug to ASCII).
    """
    _, data = _normalise(card)
    for key in _TEXT_FIELDS:
        if key in data and data[key] is not None and not isinstance(data[key], str):
            raise CardSpecError(f"card field data.{key} must be a string, got {type(data[key]).__name__}")
    name = (data.get("name") or "").strip()
    if not name:
        raise CardSpecError("card field data.name is missing or empty")
    extensions = data.get("extensions") or {}
    if not isinstance(extensions, dict):
        raise CardSpecError(f"card field data.extensions must be an object, got {type(extensions).__name__}")
    ours = extensions.get(EXTENSION_KEY) or {}
    if not isinstance(ours, dict):
        raise CardSpecError(f"data.extensions.{EXTENSION_KEY} must be an object, got {type(ours).__name__}")
    version = ours.get("version", EXTENSION_VERSION)
    if not isinstance(version, int) or version > EXTENSION_VERSION:
        raise CardValidationError(
            f"data.extensions.{EXTENSION_KEY}.version is {version!r}; this release reads up to {EXTENSION_VERSION}"
        )
    known = set(Persona.model_fields) - {
        "name",
        "description",
        "personality",
        "backstory",
        "first_message",
        "card",
    }
    fields: dict[str, Any] = {key: value for key, value in ours.items() if key in known}
    # Names in non-Latin scripts slug to nothing: a stable hash keeps ids distinct.
    fields.setdefault(
        "id", _slug(name) or fallback_id or "card-" + hashlib.sha256(name.encode()).hexdigest()[:8]
    )
    if "appearance" not in fields:
        fields["appearance"] = _default_appearance(name, {"extensions": extensions})
    try:
        return Persona(
            name=name,
            description=data.get("description") or "",
            personality=data.get("personality") or "",
            backstory=data.get("scenario") or "",
            first_message=data.get("first_mes") or "",
            card=card,
            **fields,
        )
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise CardValidationError(
            f"card field {where} is invalid: {first['msg']} ({error.error_count()} problem(s) in all)"
        ) from None


def _extension(persona: Persona) -> dict[str, Any]:
    dumped = persona.model_dump(
        mode="json",
        include={
            "id",
            "appearance",
            "voice",
            "lines",
            "constraints",
            "allowed_actions",
            "extra_actions",
            "extra_expressions",
        },
    )
    # The card's own spelling (an asset name, a relative path), not the file it resolved to.
    dumped["appearance"]["reference_image"] = persona.appearance.card_reference()
    return {"version": EXTENSION_VERSION, **dumped}


def persona_to_card(persona: Persona, spec: CardSpec = "v3") -> dict[str, Any]:
    """The card object for `persona`: its original card with our fields written over it."""
    spec_name = "chara_card_v3" if spec == "v3" else "chara_card_v2"
    source = copy.deepcopy(persona.card)
    if source:
        _, data = _normalise(source)
        if data is source:  # V1: fields at the root; keep them there and nest a copy
            data = copy.deepcopy(source)
        card = source
    else:
        card, data = {}, {}
    card["spec"] = spec_name
    card["spec_version"] = _SPECS[spec_name]
    data.update(
        name=persona.name,
        description=persona.description,
        personality=persona.personality,
        scenario=persona.backstory,
        first_mes=persona.first_message,
    )
    for key, default in (
        ("mes_example", ""),
        ("creator_notes", ""),
        ("system_prompt", ""),
        ("post_history_instructions", ""),
        ("alternate_greetings", []),
        ("tags", []),
        ("creator", ""),
        ("character_version", ""),
    ):
        data.setdefault(key, default)
    if spec == "v3":
        data.setdefault("group_only_greetings", [])
    extensions = data.get("extensions")
    extensions = dict(extensions) if isinstance(extensions, dict) else {}
    previous = extensions.get(EXTENSION_KEY)
    extensions[EXTENSION_KEY] = {**(previous if isinstance(previous, dict) else {}), **_extension(persona)}
    data["extensions"] = extensions
    card["data"] = data
    # Tools that mirror V1 fields at the root: keep the mirror in step with `data`.
    for root_key in ("name", "description", "personality", "scenario", "first_mes"):
        if root_key in card and isinstance(card[root_key], str):
            card[root_key] = data[root_key]
    return card


# --------------------------------------------------------------------------- writing


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return (
        struct.pack(">I", len(payload))
        + kind
        + payload
        + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF)
    )


def _strip_card_chunks(png: bytes, filename: str = "image") -> bytes:
    """The PNG without any `chara`/`ccv3` text chunks (the image and other metadata kept)."""
    out = [_PNG_SIGNATURE]
    for kind, payload, start, end in _iter_png_chunks(png, filename):
        if kind == b"tEXt" and payload.partition(b"\0")[0].decode("latin-1") in _CARD_CHUNKS:
            continue
        out.append(png[start:end])
    return b"".join(out)


def _text_chunk(keyword: str, card: dict[str, Any]) -> bytes:
    encoded = base64.b64encode(json.dumps(card, ensure_ascii=False).encode("utf-8"))
    return _png_chunk(b"tEXt", keyword.encode("latin-1") + b"\0" + encoded)


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


def portrait_png(persona: Persona, assets: dict[str, bytes] | None = None) -> bytes:
    """The persona's picture for a gallery: its card's own image, else one drawn from its look."""
    return _embedded_icon(persona, assets or {}) or render_portrait(persona.appearance)


def _embedded_icon(persona: Persona, assets: dict[str, bytes]) -> bytes | None:
    """The card's main icon as PNG bytes, if it carries one."""
    data = persona.card.get("data") if isinstance(persona.card.get("data"), dict) else {}
    for asset in data.get("assets") or []:
        if (
            isinstance(asset, dict)
            and asset.get("type") == "icon"
            and str(asset.get("uri", "")).startswith(_EMBEDDED_URI)
        ):
            blob = assets.get(asset["uri"][len(_EMBEDDED_URI) :])
            if blob and blob.startswith(_PNG_SIGNATURE):
                return blob
    blob = assets.get(PNG_IMAGE_ASSET)
    return blob if blob and blob.startswith(_PNG_SIGNATURE) else None


# A reference image a CHARX export carries that the source card named as a file.
_REFERENCE_ASSET_DIR = "assets/other/images"
_REFERENCE_ASSET_TYPE = "x-reference"


def _find_asset(value: str, card: dict[str, Any], assets: dict[str, bytes]) -> str | None:
    """The archive path `value` names among `assets`, else None (never raises)."""
    try:
        return _asset_for(value, card, assets, "")
    except CardReferenceError:
        return None


def _same_picture(a: bytes, b: bytes) -> bool:
    """The same image bytes, ignoring a PNG's card chunks (a PNG card's image is kept without them)."""
    if a == b:
        return True
    if not (a.startswith(_PNG_SIGNATURE) and b.startswith(_PNG_SIGNATURE)):
        return False
    try:
        return _strip_card_chunks(a) == _strip_card_chunks(b)
    except CardFormatError:
        return False


def _carry(blob: bytes, suffix: str, card: dict[str, Any], out: dict[str, bytes]) -> str:
    """The archive path of `blob` in a CHARX being written: an asset already holding those
    bytes, else a new one (added to `out` and listed in `card`'s `data.assets`)."""
    for name, held in out.items():
        if held == blob:
            return name
    ext = suffix if _SUFFIX.match(suffix) else ""
    name = f"{_REFERENCE_ASSET_DIR}/reference-{hashlib.sha256(blob).hexdigest()[:16]}{ext}"
    out[name] = blob
    data = card["data"]
    listed = data.get("assets") if isinstance(data.get("assets"), list) else []
    entry = {"type": _REFERENCE_ASSET_TYPE, "uri": _EMBEDDED_URI + name, "name": "reference", "ext": ext[1:]}
    data["assets"] = [*listed, entry]
    return name


def _exported_reference(
    persona: Persona,
    format: CardFormat,
    card: dict[str, Any],
    out: dict[str, bytes],
    source: dict[str, bytes],
    card_dir: Path | None,
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
    blob = source[inside] if inside is not None else None
    if blob is None and file is not None:
        with contextlib.suppress(OSError):
            blob = file.read_bytes()
    kept = _find_asset(value, card, out)
    if kept is not None and (blob is None or out[kept] == blob):
        return written
    if blob is not None:
        default = _default_image(card, out)
        if default is not None and _same_picture(out[default], blob):
            return _DEFAULT_URI
        if format == "charx":
            suffix = Path(inside if inside is not None else str(file)).suffix.lower()
            return _EMBEDDED_URI + _carry(blob, suffix, card, out)
    extracted = file is not None and file.resolve().parent == card_asset_dir().resolve()
    carried = inside is not None or extracted or value == _DEFAULT_URI or value.startswith(_EMBEDDED_URI)
    if not carried and not _URI_SCHEME.match(value):
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


def _dangling(asset: Any, files: dict[str, bytes]) -> bool:
    """A `data.assets` entry whose `embeded://` file is not among `files`."""
    uri = asset.get("uri") if isinstance(asset, dict) else None
    return isinstance(uri, str) and uri.startswith(_EMBEDDED_URI) and uri[len(_EMBEDDED_URI) :] not in files


def _store_reference(card: dict[str, Any], reference: str | None) -> None:
    card["data"]["extensions"][EXTENSION_KEY]["appearance"]["reference_image"] = reference


def dump_card(
    persona: Persona,
    format: CardFormat = "json",
    assets: dict[str, bytes] | None = None,
    *,
    card_dir: str | Path | None = None,
) -> bytes:
    """The card file's bytes in `format` (JSON and CHARX are V3; PNG carries V2 and V3).

    `card_dir` is the folder the file will live in (`write_card` passes it): a reference
    written as a relative path is kept only if it finds the same file from there. The
    look's reference image is written so that reading the file back finds the same picture
    (see `_exported_reference`); a JSON or PNG file that cannot carry an image the persona's
    card carried raises `CardReferenceError` (export as CHARX), and nothing is written.
    """
    source = dict(assets or {})
    base = Path(card_dir).expanduser().resolve() if card_dir is not None else None
    if format == "json":
        card = persona_to_card(persona, "v3")
        _store_reference(card, _exported_reference(persona, format, card, {}, source, base))
        return json.dumps(card, ensure_ascii=False, indent=2).encode("utf-8") + b"\n"
    if format == "png":
        image = _strip_card_chunks(_embedded_icon(persona, source) or render_portrait(persona.appearance))
        v2, v3 = persona_to_card(persona, "v2"), persona_to_card(persona, "v3")
        reference = _exported_reference(persona, format, v3, {PNG_IMAGE_ASSET: image}, source, base)
        for card in (v2, v3):
            _store_reference(card, reference)
        iend = image.rindex(b"IEND") - 4
        chunks = _text_chunk("chara", v2) + _text_chunk("ccv3", v3)
        return image[:iend] + chunks + image[iend:]
    if format == "charx":
        out = dict(source)
        card = persona_to_card(persona, "v3")
        data = card["data"]
        listed = data.get("assets")
        if isinstance(listed, list):
            # Entries naming files this archive lacks (a PNG or JSON card read from a CHARX)
            # name nothing, and would make the CHARX one our reader refuses.
            listed = data["assets"] = [a for a in listed if not _dangling(a, out)]
        if not isinstance(listed, list) or not any(
            isinstance(a, dict) and a.get("type") == "icon" for a in listed
        ):
            icon = PNG_IMAGE_ASSET
            out.setdefault(icon, _embedded_icon(persona, source) or render_portrait(persona.appearance))
            entry = {"type": "icon", "uri": _EMBEDDED_URI + icon, "name": "main", "ext": "png"}
            data["assets"] = [*(listed if isinstance(listed, list) else []), entry]
        _store_reference(card, _exported_reference(persona, format, card, out, source, base))
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            archive.writestr("card.json", json.dumps(card, ensure_ascii=False, indent=2))
            for name, blob in sorted(out.items()):
                if not _safe_zip_name(name) or name == "card.json":
                    raise CardArchiveError(f"refusing to write unsafe asset path {name!r}")
                archive.writestr(name, blob)
        return buffer.getvalue()
    raise CardFormatError(f"unknown card format {format!r}; use json, png or charx")


def write_card(
    persona: Persona, path: str | Path, format: CardFormat = "json", assets: dict[str, bytes] | None = None
) -> Path:
    """Write `persona` as a card file; returns the path written. The bytes are made first
    (`dump_card`, its reference checked for that folder), so a refused card writes nothing."""
    path = Path(path)
    path.write_bytes(dump_card(persona, format, assets, card_dir=path.expanduser().resolve().parent))
    return path
