"""PNG cards: the card is base64 JSON in `tEXt` chunks `ccv3` (V3) and `chara` (V2).

We walk the chunks with a few lines of `struct` instead of Pillow: the text chunks are read
without decoding the image (no decompression-bomb exposure, no Pillow text-size caps with
their generic errors), a bad CRC or a truncated chunk is named precisely, and export
replaces only our two chunks, leaving the user's image bytes as they were. Every chunk
costs a CRC, so their number is bounded (`CardLimits.max_png_chunks`).
"""

from __future__ import annotations

import base64
import json
import struct
import zlib
from collections.abc import Iterator
from typing import Any

from .errors import CardFormatError, CardMissingError, CardTooLargeError

__all__ = ["CARD_CHUNKS", "PNG_SIGNATURE", "card_text", "iter_chunks", "png_chunk", "strip_card_chunks", "text_chunk"]

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: Our chunks, in preference order on read.
CARD_CHUNKS = ("ccv3", "chara")


def iter_chunks(data: bytes, filename: str, max_chunks: int | None = None) -> Iterator[tuple[bytes, bytes, int, int]]:
    """Yield (type, payload, start, end) for each chunk, checking lengths, CRCs and the count."""
    if max_chunks is None:
        from .limits import current_limits

        max_chunks = current_limits().max_png_chunks
    offset = len(PNG_SIGNATURE)
    count = 0
    view = memoryview(data)
    while offset < len(data):
        count += 1
        if count > max_chunks:
            raise CardTooLargeError(
                f"{filename}: PNG has more than {max_chunks} chunks (the limit; an image needs a few thousand at most)"
            )
        if offset + 8 > len(data):
            raise CardFormatError(f"{filename}: PNG is truncated inside a chunk header at byte {offset}")
        (length,) = struct.unpack_from(">I", data, offset)
        kind = bytes(view[offset + 4 : offset + 8])
        end = offset + 12 + length
        if end > len(data):
            raise CardFormatError(
                f"{filename}: PNG chunk {kind!r} at byte {offset} claims {length} bytes, past the end of the file"
            )
        (crc,) = struct.unpack_from(">I", data, end - 4)
        if zlib.crc32(view[offset + 4 : end - 4]) & 0xFFFFFFFF != crc:
            raise CardFormatError(f"{filename}: PNG chunk {kind!r} at byte {offset} has a bad CRC")
        yield kind, bytes(view[offset + 8 : end - 4]) if kind == b"tEXt" else b"", offset, end
        offset = end
        if kind == b"IEND":
            return
    raise CardFormatError(f"{filename}: PNG has no IEND chunk (truncated file?)")


def _is_card_chunk(kind: bytes, payload: bytes) -> bool:
    return kind == b"tEXt" and payload.partition(b"\0")[0].decode("latin-1") in CARD_CHUNKS


def card_text(data: bytes, filename: str, max_json_bytes: int, max_chunks: int) -> tuple[str, bytes]:
    """(chunk name, base64 text) of the card a PNG carries: `ccv3` if there, else `chara`."""
    texts: dict[str, bytes] = {}
    for kind, payload, _, _ in iter_chunks(data, filename, max_chunks):
        if kind != b"tEXt":
            continue
        keyword, sep, value = payload.partition(b"\0")
        name = keyword.decode("latin-1")
        if sep and name in CARD_CHUNKS and name not in texts:
            texts[name] = value
    chunk = next((name for name in CARD_CHUNKS if name in texts), None)
    if chunk is None:
        raise CardMissingError(f"{filename}: PNG has no 'ccv3' or 'chara' tEXt chunk, so it holds no card")
    encoded = texts[chunk]
    if len(encoded) > max_json_bytes * 4 // 3 + 4:
        raise CardTooLargeError(f"{filename}: PNG chunk '{chunk}' is {len(encoded)} bytes, over the card JSON limit")
    return chunk, encoded


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF)


def strip_card_chunks(png: bytes, filename: str = "image") -> bytes:
    """The PNG without any `chara`/`ccv3` text chunks (the image and other metadata kept)."""
    out = [PNG_SIGNATURE]
    for kind, payload, start, end in iter_chunks(png, filename):
        if not _is_card_chunk(kind, payload):
            out.append(png[start:end])
    return b"".join(out)


def text_chunk(keyword: str, card: dict[str, Any]) -> bytes:
    encoded = base64.b64encode(json.dumps(card, ensure_ascii=False).encode("utf-8"))
    return png_chunk(b"tEXt", keyword.encode("latin-1") + b"\0" + encoded)
