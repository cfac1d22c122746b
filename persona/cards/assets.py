"""A card's binary files (pictures, sounds, other tools' modules), read lazily.

A card keeps `LoadedCard.assets`: a mapping from the path inside the card
(`assets/icon/images/main.png`) to an `Asset`, which knows its size and how to open a
stream of its bytes; it does not hold them. A library of cards with images therefore costs
memory for the card texts only, and each image is read from its file when something needs
it (a portrait, an export, the reference image cache), a chunk at a time where it can be.

- `ZipMemberAsset`: an entry of a CHARX, inflated while it is read and never past the size
  its header declared (a lying header cannot make us inflate more); the zip is opened per
  read, from the card file (checked to be the same file it was indexed from) or from the
  upload's bytes.
- `PngImageAsset`: a PNG card's own image without its card chunks (made when read: a PNG
  card is bounded by `CardLimits.max_png_bytes`).
- `FileAsset`: a picture on disk (a reference image given as a path).
- `BytesAsset`: bytes already in memory (a portrait we drew, assets passed in code).
"""

from __future__ import annotations

import hashlib
import io
import os
import threading
import zipfile
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import BinaryIO

from .errors import CardFormatError, CardMissingError, CardTooLargeError

__all__ = [
    "CHUNK_BYTES",
    "OPEN_ARCHIVES",
    "ArchiveSource",
    "Asset",
    "BytesAsset",
    "FileAsset",
    "PngImageAsset",
    "ZipMemberAsset",
    "as_assets",
    "source_key",
]

#: How much of an asset is held at once while it is streamed.
CHUNK_BYTES = 64 * 1024


def source_key(path: Path) -> tuple[int, int, int, int]:
    """(device, inode, size, mtime ns): what makes a file the same file it was."""
    info = path.stat()
    return (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)


class Asset(ABC):
    """One file a card carries. `size` is its length in bytes; `open()` gives a fresh stream."""

    size: int

    @abstractmethod
    def open(self) -> BinaryIO:
        """A binary stream of the bytes (close it after use)."""

    def chunks(self) -> Iterator[bytes]:
        with self.open() as stream:
            while True:
                block = stream.read(CHUNK_BYTES)
                if not block:
                    return
                yield block

    def read(self) -> bytes:
        """All the bytes at once: only for callers that bound `size` first (a PNG to strip)."""
        with self.open() as stream:
            return stream.read()

    def digest(self) -> str:
        """SHA-256 of the bytes (hex), computed once a chunk at a time, then remembered."""
        cached = getattr(self, "_digest", None)
        if cached is None:
            hasher = hashlib.sha256()
            for block in self.chunks():
                hasher.update(block)
            cached = self._digest = hasher.hexdigest()
        return cached

    def startswith(self, prefix: bytes) -> bool:
        if self.size < len(prefix):
            return False
        with self.open() as stream:
            return stream.read(len(prefix)) == prefix

    def same_bytes(self, other: Asset) -> bool:
        return self is other or (self.size == other.size and self.digest() == other.digest())


class BytesAsset(Asset):
    def __init__(self, data: bytes) -> None:
        self._data = bytes(data)
        self.size = len(self._data)

    def open(self) -> BinaryIO:
        return io.BytesIO(self._data)

    def read(self) -> bytes:
        return self._data

    def __repr__(self) -> str:
        return f"BytesAsset({self.size} bytes)"


class FileAsset(Asset):
    """A file on disk, read when used."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.size = self.path.stat().st_size

    def open(self) -> BinaryIO:
        return self.path.open("rb")

    def __repr__(self) -> str:
        return f"FileAsset({str(self.path)!r})"


#: Card files whose zip is held open (its central directory parsed once, one descriptor
#: each); the least recently used beyond this many are closed (reopened when read again).
OPEN_ARCHIVES = 16
_open_archives: OrderedDict[int, ArchiveSource] = OrderedDict()
_open_lock = threading.Lock()


class ArchiveSource:
    """One CHARX, shared by all its entries: the card file (checked to be the file it was
    indexed from) or an upload's bytes. Its `ZipFile` is opened once and reused, so reading
    n entries parses the central directory once, not n times (a 1000-entry card would
    otherwise cost a million header parses); a file's is closed when it falls out of the
    `OPEN_ARCHIVES` most recently used (zipfile keeps a member being read usable until it
    is closed)."""

    def __init__(self, source: Path | bytes, filename: str, key: tuple | None = None) -> None:
        self.source = source
        self.filename = filename
        self.key = key if key is not None or not isinstance(source, Path) else source_key(source)
        self._zip: zipfile.ZipFile | None = None
        self._lock = threading.Lock()

    def archive(self) -> zipfile.ZipFile:
        from .charx import ZIP_ERRORS  # charx imports this module

        with self._lock:
            if self._zip is None:
                where = f"{self.filename}: CHARX"
                if isinstance(self.source, Path):
                    try:
                        if source_key(self.source) != self.key:
                            raise CardMissingError(f"{where}: the card file changed since it was read (read it again)")
                        self._zip = zipfile.ZipFile(self.source)
                    except FileNotFoundError:
                        raise CardMissingError(f"{where}: the card file {self.source} is gone") from None
                    except ZIP_ERRORS as error:
                        raise CardFormatError(f"{where}: not a readable zip ({error})") from None
                else:
                    try:
                        self._zip = zipfile.ZipFile(io.BytesIO(self.source))
                    except ZIP_ERRORS as error:
                        raise CardFormatError(f"{where}: not a readable zip ({error})") from None
            archive = self._zip
        if isinstance(self.source, Path):
            _mark_open(self)
        return archive

    def close(self) -> None:
        with self._lock:
            if self._zip is not None:
                self._zip.close()
                self._zip = None


def _mark_open(source: ArchiveSource) -> None:
    evicted = []
    with _open_lock:
        _open_archives[id(source)] = source
        _open_archives.move_to_end(id(source))
        while len(_open_archives) > OPEN_ARCHIVES:
            evicted.append(_open_archives.popitem(last=False)[1])
    for old in evicted:
        old.close()


class _MemberStream(io.RawIOBase):
    """A zip entry's stream that turns zipfile's errors into card errors (a CRC mismatch,
    a truncated entry)."""

    def __init__(self, archive: zipfile.ZipFile, info: zipfile.ZipInfo, where: str) -> None:
        from .charx import ZIP_ERRORS

        self._where = where
        try:
            self._stream = archive.open(info)
        except ZIP_ERRORS as error:
            raise CardFormatError(f"{where} is unreadable ({error})") from None

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        from .charx import ZIP_ERRORS

        try:
            data = self._stream.read(len(buffer))
        except ZIP_ERRORS as error:
            raise CardFormatError(f"{self._where} is unreadable ({error})") from None
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self._stream.close()
        super().close()


class ZipMemberAsset(Asset):
    """An entry of a CHARX, read through its card's shared `ArchiveSource`."""

    def __init__(self, source: ArchiveSource, info: zipfile.ZipInfo) -> None:
        self._source = source
        self._info = info
        self.name = info.filename
        self.size = info.file_size

    @property
    def _filename(self) -> str:
        return self._source.filename

    def open(self) -> BinaryIO:
        # ZipExtFile returns at most `file_size` bytes, inflating a bounded block at a time.
        raw = _MemberStream(self._source.archive(), self._info, f"{self._filename}: CHARX entry {self.name!r}")
        return io.BufferedReader(raw, CHUNK_BYTES)

    def verify(self, budget: int) -> int:
        """Inflate the whole entry (a chunk at a time, nothing kept): raises if it is corrupt
        or inflates to more than `budget` bytes; returns its size."""
        total = 0
        for block in self.chunks():
            total += len(block)
            if total > budget:
                raise CardTooLargeError(
                    f"{self._filename}: CHARX entry {self.name!r} inflates past its limit (zip bomb?)"
                )
        if total != self.size:
            raise CardFormatError(
                f"{self._filename}: CHARX entry {self.name!r} holds {total} bytes, not the {self.size} its header says"
            )
        return total

    def __repr__(self) -> str:
        return f"ZipMemberAsset({self._filename!r}, {self.name!r}, {self.size} bytes)"


class PngImageAsset(Asset):
    """A PNG card's image without its `chara`/`ccv3` chunks, made from the card when read."""

    def __init__(self, source: Path | bytes, *, filename: str, size_limit: int, key: tuple | None = None) -> None:
        self._source = source
        self._filename = filename
        self._size_limit = size_limit
        self._key = key
        self._size: int | None = None

    def _png(self) -> bytes:
        from .png import strip_card_chunks  # png imports this module

        if isinstance(self._source, Path):
            try:
                if self._key is not None and source_key(self._source) != self._key:
                    raise CardMissingError(f"{self._filename}: the card file changed since it was read (read it again)")
                if self._source.stat().st_size > self._size_limit:
                    raise CardTooLargeError(f"{self._filename}: PNG is over the {self._size_limit}-byte limit")
                data = self._source.read_bytes()
            except FileNotFoundError:
                raise CardMissingError(f"{self._filename}: the card file {self._source} is gone") from None
        else:
            data = self._source
        return strip_card_chunks(data, self._filename)

    @property
    def size(self) -> int:  # type: ignore[override]
        if self._size is None:
            self._size = len(self._png())
        return self._size

    def open(self) -> BinaryIO:
        return io.BytesIO(self._png())

    def __repr__(self) -> str:
        return f"PngImageAsset({self._filename!r})"


def as_assets(assets: Mapping[str, Asset | bytes] | None) -> dict[str, Asset]:
    """Assets given as `Asset`s or as bytes (tests, code), as `Asset`s."""
    out: dict[str, Asset] = {}
    for name, value in (assets or {}).items():
        out[name] = value if isinstance(value, Asset) else BytesAsset(value)
    return out
