"""The card image cache: a card's reference image as a file the engine can open.

A look's `reference_image` may name an image inside a card; the engine needs a file. Such
an image is written once to `card_asset_dir()/<sha256 of its bytes><suffix>`, so one image
gives one path however many cards carry it, and a file that no longer holds those bytes
(damaged, planted, a link) is written again rather than trusted.

The folder is a cache, not the library: every file can be made again from its card
(`reference.resolve_reference`), which is why it is bounded strictly. Reusing a file marks
it used (its mtime); before a new file is written, files unused for
`CARD_ASSET_MAX_AGE_DAYS` go, then the least recently used until the new file fits under
`CARD_ASSET_MAX_MB` (PERSONA_CARD_ASSETS_MAX_DAYS / PERSONA_CARD_ASSETS_MAX_MB; 0 turns a
bound off). Recently used files are not spared: uploads of distinct images must not grow
the folder past its bound, and a reference pruned while its persona is still listed is
written back at the same path the next time the library hands that persona out
(`PersonaLibrary.get_card`). An image larger than the whole bound is refused.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import re
import stat
import time
from pathlib import Path

from ...durable import TEMP_PREFIX, open_atomic
from .assets import CHUNK_BYTES, Asset
from .errors import CardLimitsError, CardReferenceError

__all__ = [
    "CARD_ASSET_MAX_AGE_DAYS",
    "CARD_ASSET_MAX_MB",
    "ENV_ASSET_MAX_DAYS",
    "ENV_ASSET_MAX_MB",
    "cache_asset",
    "card_asset_bounds",
    "card_asset_dir",
]

#: The cache's bounds (environment: `ENV_ASSET_MAX_DAYS`, `ENV_ASSET_MAX_MB`; 0 turns one off).
#: A month keeps the images of every card in use (each load marks its file used); 256 MiB
#: holds hundreds of photo-sized references and is small beside the model files the same
#: machine keeps.
CARD_ASSET_MAX_AGE_DAYS = 30.0
CARD_ASSET_MAX_MB = 256.0
ENV_ASSET_MAX_DAYS = "PERSONA_CARD_ASSETS_MAX_DAYS"
ENV_ASSET_MAX_MB = "PERSONA_CARD_ASSETS_MAX_MB"

_SUFFIX = re.compile(r"^\.[a-z0-9]{1,8}$")
# The cache's own names: `<sha256><suffix>` and durable's temporaries for them. Pruning
# touches nothing else in the folder.
_CACHE_NAME = re.compile(r"^[0-9a-f]{64}(\.[a-z0-9]{1,8})?$")
_TEMP_NAME = re.compile(rf"^{re.escape(TEMP_PREFIX)}[0-9a-f]{{1,40}}-[A-Za-z0-9_]+$")
# A temporary this old belongs to a writer that died (a live one renames it within seconds).
_STALE_TEMP_SECONDS = 60 * 60


def card_asset_dir() -> Path:
    """`card-assets/` in the user cache ($PERSONA_CACHE_DIR, else $XDG_CACHE_HOME/comfyui-persona,
    else ~/.cache/comfyui-persona). A cache rather than the card's folder: card folders may
    be read-only (the built-ins, a shared PERSONA_DIR) and an upload has no folder."""
    from ..embedding import cache_dir  # the project's one cache location (imports numpy: only here)

    return cache_dir() / "card-assets"


def _bound(variable: str, default: float, unit: str) -> float:
    text = os.environ.get(variable, "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise CardLimitsError(
            f"{variable} must be a number of {unit}, 0 or more (0: no limit), not {text!r}; "
            f"unset it for the default ({default:g})"
        )
    return value


def card_asset_bounds() -> tuple[float, int]:
    """(max age in seconds, max total bytes) of `card_asset_dir()`, each 0 for no limit: the
    module defaults, or PERSONA_CARD_ASSETS_MAX_DAYS / PERSONA_CARD_ASSETS_MAX_MB (MiB). A
    value that is not a number ≥ 0 raises `CardLimitsError` (a `ValueError`) naming the variable."""
    days = _bound(ENV_ASSET_MAX_DAYS, CARD_ASSET_MAX_AGE_DAYS, "days")
    megabytes = _bound(ENV_ASSET_MAX_MB, CARD_ASSET_MAX_MB, "MiB")
    return days * 86400.0, int(megabytes * 1024 * 1024)


def _holds(path: Path, asset: Asset) -> bool:
    """Whether `path` is a regular file (not a link to one) holding exactly the asset's bytes."""
    try:
        info = path.lstat()
        if not stat.S_ISREG(info.st_mode) or info.st_size != asset.size:
            return False
        hasher = hashlib.sha256()
        with path.open("rb") as handle:
            while block := handle.read(CHUNK_BYTES):
                hasher.update(block)
        return hasher.hexdigest() == asset.digest()
    except FileNotFoundError:
        return False


def cache_asset(asset: Asset, suffix: str, where: str) -> Path:
    """A file holding the asset's bytes, named by their SHA-256: written once (through
    `durable.open_atomic`, a chunk at a time), then reused while it still holds them.
    Reuse marks the file used; a new file first prunes the folder to make room for itself."""
    max_age, max_bytes = card_asset_bounds()  # a misconfiguration is named before anything is written
    if max_bytes and asset.size > max_bytes:
        raise CardReferenceError(
            f"{where}: the image is {asset.size} bytes, more than the whole card image cache may hold "
            f"({max_bytes} bytes, {ENV_ASSET_MAX_MB})"
        )
    digest = asset.digest()
    folder = card_asset_dir()
    name = f"{digest}{suffix if _SUFFIX.match(suffix) else ''}"
    try:
        folder = folder.resolve()
        path = folder / name
        if _holds(path, asset):
            with contextlib.suppress(OSError):  # a read-only shared cache: still usable, just not marked
                os.utime(path)
            return path
        folder.mkdir(parents=True, exist_ok=True)
        _prune(folder, keep=name, max_age=max_age, budget=max_bytes - asset.size if max_bytes else None)
        hasher = hashlib.sha256()
        with open_atomic(path) as out:
            for block in asset.chunks():
                hasher.update(block)
                out.write(block)
            if hasher.hexdigest() != digest:  # the source changed under us: nothing is renamed
                raise CardReferenceError(f"{where}: the card's image changed while it was being copied")
    except OSError as error:
        raise CardReferenceError(
            f"{where}: cannot write the card's image to {folder} ({error.strerror or error}); "
            "set PERSONA_CACHE_DIR to a writable folder"
        ) from None
    return path


def _prune(folder: Path, *, keep: str, max_age: float, budget: int | None) -> None:
    """Delete cache files unused for longer than `max_age` seconds (0: no age bound), then the
    least recently used until the rest total at most `budget` bytes (None: no size bound).
    `keep` (the file about to be written) is neither counted nor removed. Only our own names
    are touched, links and folders never; a stale temporary (a writer that died) goes. Other
    processes prune the same folder, so a file that vanishes or cannot be read is passed
    over: pruning never fails the write that started it."""
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
        elif _CACHE_NAME.match(entry.name) and entry.name != keep:
            files.append((info.st_mtime, info.st_size, entry.name))
    files.sort()  # least recently used first
    total = sum(size for _, size, _ in files)
    for used, size, name in files:
        expired = max_age > 0 and now - used > max_age
        if (expired or (budget is not None and total > budget)) and _remove(folder / name, used):
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
