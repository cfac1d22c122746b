"""HTTP routes beside the socket: the persona gallery, card import, recording downloads.

    GET  /persona/personas                     → [{id, name, description, builtin, portrait}]
    GET  /persona/personas/{id}/portrait.png   → the card's picture (or one drawn from its look)
    POST /persona/personas  (multipart `card`) → 201 {id, name, warnings} | 400 {code: "bad_card", message}
    GET  /persona/recordings/{token}.mp4       → a finished recording (video/mp4) | 404

Card files come from users: the upload is size-capped while it streams in, then read by
`persona.cards.read_card_bytes` and stored by `PersonaLibrary.add` (their limits and
messages), off the event loop. An upload never replaces a persona: a taken id (`mira`)
gets the next free one (`mira-2`), which the 201's `id` and a warning say. A card that imports with something dropped (its reference
image found nothing) is still a 201; `warnings` (a list of messages, empty when nothing
was dropped) says what, for the UI to show.
"""

from __future__ import annotations

import asyncio
import collections
import threading
from concurrent.futures import Executor
from pathlib import Path
from typing import Any

from aiohttp import web

from ...persona.card import ID_RE
from .config import ServerConfig
from .recording import STILL_RECORDING, TOKEN_PATTERN, RecordingDesk

#: Portraits kept drawn (at most 512 px each, so a few MB in all).
PORTRAIT_CACHE_ENTRIES = 64
#: The largest card accepted (CHARX archives with images are the big ones).
MAX_UPLOAD_BYTES = 50 * 1024 * 1024
_SUFFIXES = {".json", ".png", ".charx"}


def _bad_card(message: str) -> web.Response:
    return web.json_response({"code": "bad_card", "message": message}, status=400)


def _sniff_suffix(filename: str | None, head: bytes) -> str | None:
    """The card container from its first bytes (the file name is only a hint)."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return ".png"
    if head.startswith(b"PK\x03\x04"):
        return ".charx"
    if head.lstrip()[:1] in (b"{", b"["):
        return ".json"
    suffix = Path(filename or "").suffix.lower()
    return suffix if suffix in _SUFFIXES else None


async def _read_card_field(request: web.Request):
    """(the `card` part, its bytes), or a 400 answer; the size is capped while it streams in."""
    reader = await request.multipart()
    part = None
    async for candidate in reader:
        if getattr(candidate, "name", None) == "card":
            part = candidate
            break
        await candidate.release()
    if part is None:
        return _bad_card("no field named 'card' in the upload")
    chunks: list[bytes] = []
    size = 0
    while True:
        block = await part.read_chunk(256 * 1024)
        if not block:
            break
        size += len(block)
        if size > MAX_UPLOAD_BYTES:
            return _bad_card(f"the card file is over the {MAX_UPLOAD_BYTES // (1024 * 1024)} MiB limit")
        chunks.append(block)
    data = b"".join(chunks)
    if not data:
        return _bad_card("the card file is empty")
    return part, data


class GalleryRoutes:
    """The handlers, given the persona library, the worker pool (file I/O), the settings and the
    recordings desk: never the service."""

    def __init__(self, library: Any, pool: Executor, config: ServerConfig, recordings: RecordingDesk) -> None:
        self.library = library
        self.pool = pool
        self.config = config
        self.recordings = recordings
        # (persona id, card file's stat) → PNG: a card edited in place gets a new picture;
        # bounded, least recently used first out.
        self._portraits: collections.OrderedDict[tuple, bytes] = collections.OrderedDict()
        self._portraits_lock = threading.Lock()  # worker threads share it

    async def _run(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)

    async def list_personas(self, request: web.Request) -> web.Response:
        def listing() -> list[dict]:
            from ...persona.library import BUILTIN_DIR

            library = self.library
            out = []
            for persona in library.list():
                out.append(
                    {
                        "id": persona.id,
                        "name": persona.name,
                        "description": persona.description,
                        "builtin": library.path_of(persona.id).parent == BUILTIN_DIR,
                        "portrait": f"/persona/personas/{persona.id}/portrait.png",
                    }
                )
            return out

        return web.json_response(await self._run(listing))

    async def portrait(self, request: web.Request) -> web.Response:
        from ...persona.library import UnknownPersonaError

        persona_id = request.match_info["id"]
        if not ID_RE.match(persona_id):
            raise web.HTTPNotFound(text="no such persona")
        try:
            key, data = await self._run(self._portrait, persona_id)
        except UnknownPersonaError:
            raise web.HTTPNotFound(text=f"no persona {persona_id!r}") from None
        return web.Response(body=data, content_type="image/png", headers={"Cache-Control": "max-age=300"})

    async def import_card(self, request: web.Request) -> web.Response:
        if not request.content_type.startswith("multipart/"):
            return _bad_card("send the card as multipart/form-data in a field named 'card'")
        timeout = self.config.body_timeout_s
        try:
            upload = await asyncio.wait_for(_read_card_field(request), timeout)
        except asyncio.TimeoutError:
            return _bad_card(f"the upload did not arrive within {timeout:g} s")
        if isinstance(upload, web.Response):
            return upload
        part, data = upload
        suffix = _sniff_suffix(part.filename, data[:16])
        if suffix is None:
            return _bad_card("not a character card: expected V2/V3 JSON, a PNG card or a CHARX archive")
        try:
            persona, warnings = await self._run(self._import, data, part.filename or f"card{suffix}")
        except Exception as exc:
            from ...persona.cards import CardError

            if isinstance(exc, CardError):
                return _bad_card(str(exc))
            raise
        return web.json_response({"id": persona.id, "name": persona.name, "warnings": warnings}, status=201)

    def _portrait(self, persona_id: str) -> tuple[tuple, bytes]:
        """Worker thread: the persona's PNG, from the cache while its card file is unchanged."""
        path = self.library.path_of(persona_id)
        try:
            info = path.stat()
            key = (persona_id, str(path), info.st_mtime_ns, info.st_size)
        except OSError:
            key = (persona_id, str(path))
        with self._portraits_lock:
            data = self._portraits.get(key)
            if data is not None:
                self._portraits.move_to_end(key)
                return key, data
        data = self.library.portrait(persona_id)
        with self._portraits_lock:
            self._portraits[key] = data
            while len(self._portraits) > PORTRAIT_CACHE_ENTRIES:
                self._portraits.popitem(last=False)
        return key, data

    def _import(self, data: bytes, filename: str):
        """Read the card (its name in messages is the user's file name) and store it;
        returns the persona and what reading it dropped."""
        from ...persona.cards import read_card_bytes

        stored = self.library.add(read_card_bytes(data, filename=filename))
        return stored.persona, list(stored.warnings)

    async def recording(self, request: web.Request) -> web.StreamResponse:
        token = request.match_info["token"]
        if not TOKEN_PATTERN.match(token):
            raise web.HTTPNotFound(text="no such recording")
        await self._run(self.recordings.recover)  # a file a dead process left is repaired first
        path = self.recordings.folder / f"{token}.mp4"
        if await self._run(self.recordings.being_written, token, path):
            return web.json_response(STILL_RECORDING, status=409)  # another process sharing the folder, too
        exists = await self._run(path.is_file)
        if not exists:
            raise web.HTTPNotFound(text="no such recording")
        return web.FileResponse(
            path,
            headers={
                "Content-Type": "video/mp4",
                "Content-Disposition": f'attachment; filename="persona-{token[:8]}.mp4"',
            },
        )
