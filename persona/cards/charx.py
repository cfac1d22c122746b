"""CHARX cards (V3): a zip with `card.json` at its root and assets under `assets/`,
referenced from `data.assets[].uri` as `embeded://assets/...` (sic, the spec's spelling).

Read with bounded memory: the zip's headers are checked first (entry count, safe names, no
duplicates, the declared inflated total, and each large entry's compression ratio) so a
zip bomb is refused before a byte is inflated; only `card.json` is read (up to the card
JSON limit); the assets stay in the zip as `ZipMemberAsset`s, inflated a chunk at a time
when something reads them and never past their declared size. `verify=True` (uploads,
imports) inflates every entry once, keeping nothing, to refuse a corrupt archive before it
is stored. Written streaming too: each asset is copied a chunk at a time.
"""

from __future__ import annotations

import json
import struct
import zipfile
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

from .assets import ArchiveSource, Asset, ZipMemberAsset
from .errors import CardArchiveError, CardFormatError, CardMissingError, CardTooLargeError
from .limits import CardLimits

__all__ = ["ZIP_ERRORS", "ZIP_SIGNATURE", "read_charx", "safe_zip_name", "write_charx"]

#: What `zipfile` raises on hostile archives besides `BadZipFile` (found by fuzzing: a
#: corrupt header offset makes it seek to -1, a ValueError; bad sizes give struct and
#: overflow errors). Every zipfile call on a card's bytes turns these into `CardFormatError`.
ZIP_ERRORS = (
    zipfile.BadZipFile,
    zipfile.LargeZipFile,
    zlib.error,
    NotImplementedError,
    RuntimeError,
    EOFError,
    ValueError,
    OverflowError,
    struct.error,
    OSError,
)

ZIP_SIGNATURE = b"PK\x03\x04"
CARD_JSON = "card.json"


def safe_zip_name(name: str) -> bool:
    if not name or "\0" in name or "\\" in name or name.startswith("/"):
        return False
    parts = name.split("/")
    return not any(part in ("..", ".") or ":" in part for part in parts)


def _check_headers(infos: list[zipfile.ZipInfo], filename: str, limits: CardLimits) -> None:
    if len(infos) > limits.max_charx_entries:
        raise CardTooLargeError(
            f"{filename}: CHARX has {len(infos)} entries, over the {limits.max_charx_entries}-entry limit"
        )
    declared = 0
    seen: set[str] = set()
    for info in infos:
        if not safe_zip_name(info.filename):
            raise CardArchiveError(
                f"{filename}: CHARX entry {info.filename!r} is an unsafe path (absolute, '..' or drive)"
            )
        if info.filename in seen:
            raise CardArchiveError(f"{filename}: CHARX has two entries named {info.filename!r}")
        seen.add(info.filename)
        declared += info.file_size
        if (
            info.file_size > limits.ratio_applies_above_bytes
            and info.file_size > limits.max_compression_ratio * max(info.compress_size, 1)
        ):
            raise CardTooLargeError(
                f"{filename}: CHARX entry {info.filename!r} would inflate from {info.compress_size} to "
                f"{info.file_size} bytes, over the {limits.max_compression_ratio:g}:1 ratio limit (zip bomb?)"
            )
    if declared > limits.max_charx_uncompressed_bytes:
        raise CardTooLargeError(
            f"{filename}: CHARX would uncompress to {declared} bytes, over the "
            f"{limits.max_charx_uncompressed_bytes}-byte limit (zip bomb?)"
        )


def read_charx(
    source: Path | bytes, filename: str, limits: CardLimits, *, verify: bool = False
) -> tuple[bytes, dict[str, ZipMemberAsset]]:
    """(card.json's bytes, the other entries as lazy assets) of a CHARX file or upload."""
    try:
        shared = ArchiveSource(source, filename)
    except FileNotFoundError:
        raise CardMissingError(f"card file not found: {source}") from None
    archive = shared.archive()
    infos = archive.infolist()
    _check_headers(infos, filename, limits)
    entries = {info.filename: info for info in infos if not info.is_dir()}
    info = entries.pop(CARD_JSON, None)
    if info is None:
        raise CardMissingError(f"{filename}: CHARX has no card.json at its root")
    if info.file_size > limits.max_card_json_bytes:
        raise CardTooLargeError(
            f"{filename}: card.json is {info.file_size} bytes, over the {limits.max_card_json_bytes}-byte limit"
        )
    try:
        with archive.open(info) as handle:
            card_json = handle.read(info.file_size + 1)
    except ZIP_ERRORS as error:
        raise CardFormatError(f"{filename}: CHARX entry 'card.json' is unreadable ({error})") from None
    assets = {name: ZipMemberAsset(shared, entry) for name, entry in entries.items()}
    if verify:
        budget = limits.max_charx_uncompressed_bytes - len(card_json)
        for asset in assets.values():
            budget -= asset.verify(budget)
    return card_json, assets


def write_charx(handle: IO[bytes], card: dict[str, Any], assets: Mapping[str, Asset]) -> None:
    """Write a CHARX to `handle` (seekable): card.json, then each asset a chunk at a time."""
    with zipfile.ZipFile(handle, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(CARD_JSON, json.dumps(card, ensure_ascii=False, indent=2))
        for name, asset in sorted(assets.items()):
            if not safe_zip_name(name) or name == CARD_JSON:
                raise CardArchiveError(f"refusing to write unsafe asset path {name!r}")
            with archive.open(name, "w", force_zip64=asset.size >= zipfile.ZIP64_LIMIT) as out:
                for block in asset.chunks():
                    out.write(block)
