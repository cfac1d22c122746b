"""Where personas come from: the built-in gallery plus the user's card folder, one for all.

Built-ins are V3 JSON card files in `persona/builtin/` (shipped as package data). User
cards live in one folder shared by the chat page, the CLI and the ComfyUI Card Loader:
`$XDG_DATA_HOME/comfyui-persona/personas` (default `~/.local/share/comfyui-persona/personas`),
or the folders named by `PERSONA_DIR` (several joined by the OS path separator; imports go
to the first, which also wins over the others for an id they share). `PersonaLibrary.default()`
is that library, one instance per process and folder list, which every host uses. Any .json/.png/.charx file there is a card; a user card
with the same id as a built-in shadows it (a user can restyle a built-in on purpose).

The library follows its folders without a restart and without re-reading them: each
list/get stats the folders' card files (one `scandir` and a `stat` per file) and reads only
files that are new or changed (inode, size, mtime), dropping those that went. A card is held
as its text; its images stay in the file (`cards.assets`).

`add()` stores a card in the first user folder through `durable.open_atomic` (temporary,
fsync, rename), so a crash or a full disk mid-write keeps the card that was there. An id
that is taken (a built-in's included) is never replaced unless the caller says
`overwrite=True`: the card gets the next free id (`mira-2`) and the result says so. The
folder has quotas (`CardLimits.max_cards`, `max_total_mb`).

Every persona here has its look's `reference_image` resolved to an image file (see
`cards.resolve_reference`); a user card whose reference finds nothing loads without it, and
what was dropped is in `warnings` (a card that cannot be read at all is skipped, its error
in `errors`).
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass, replace
from pathlib import Path

from ..durable import open_atomic
from ..errors import PersonaError
from .card import ID_RE, Persona
from .cards import (
    CardError,
    CardLimits,
    CardQuotaError,
    CardReferenceError,
    CardStorageError,
    LoadedCard,
    card_asset_dir,
    current_limits,
    portrait_png,
    read_card_file,
    resolve_reference,
    write_card_to,
)

__all__ = [
    "BUILTIN_DIR",
    "CARD_SUFFIXES",
    "DEFAULT_PERSONA_ID",
    "ENV_PERSONA_DIR",
    "BuiltinPersonaError",
    "PersonaLibrary",
    "StoredCard",
    "UnknownPersonaError",
    "builtin_persona_ids",
    "default_user_dir",
    "default_user_dirs",
    "load_persona",
]

BUILTIN_DIR = Path(__file__).resolve().parent / "builtin"
#: The persona a session gets when it names none.
DEFAULT_PERSONA_ID = "mira"
CARD_SUFFIXES = (".json", ".png", ".charx")
ENV_PERSONA_DIR = "PERSONA_DIR"
#: How many `-N` suffixes `add` tries for a free id before giving up.
_MAX_RENAMES = 1000

_log = logging.getLogger(__name__)


class UnknownPersonaError(PersonaError, KeyError):
    """No persona with that id; the message lists the ids that exist."""

    code = "unknown_persona"

    def __init__(self, persona_id: str, known: list[str]):
        self.persona_id = persona_id
        self.known = known
        super().__init__(f"unknown persona {persona_id!r}; known: {', '.join(known) or '(none)'}")

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


class BuiltinPersonaError(PersonaError, PermissionError):
    """A built-in persona cannot be removed (a user card with its id can)."""


def default_user_dir() -> Path:
    """`$XDG_DATA_HOME/comfyui-persona/personas` (default ~/.local/share/...): kept across runs."""
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "comfyui-persona" / "personas"


def default_user_dirs() -> list[Path]:
    """The folders named by `PERSONA_DIR`, else `[default_user_dir()]`."""
    value = os.environ.get(ENV_PERSONA_DIR, "")
    dirs = [Path(part).expanduser() for part in value.split(os.pathsep) if part.strip()]
    return dirs or [default_user_dir()]


@dataclass(frozen=True)
class StoredCard:
    """What `add` stored: the persona as read back, its file, and what happened to its id."""

    persona: Persona
    path: Path
    #: The id the card asked for; differs from `persona.id` when that one was taken.
    requested_id: str
    #: True when an existing user card with this id was replaced (only with `overwrite=True`).
    replaced: bool
    warnings: tuple[str, ...] = ()

    @property
    def id(self) -> str:
        return self.persona.id

    @property
    def renamed(self) -> bool:
        return self.persona.id != self.requested_id


@dataclass
class _Entry:
    """One card file as last seen: its identity and what reading it gave."""

    path: Path
    folder: int  # index into the library's folders (see `_precedence`)
    key: tuple[int, int, int, int]
    mtime_ns: int
    loaded: LoadedCard | None
    error: str | None = None


def _file_key(info: os.stat_result) -> tuple[int, int, int, int]:
    return (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)


def _resolved_in(loaded: LoadedCard, folder: Path, filename: str) -> LoadedCard:
    """The card with its reference resolved, a value never resolved (a persona built in
    code, a reference set after loading) taken from `folder`, where the card will live, and
    refused if it finds nothing: the caller wrote it, so an error beats a silent drop.

    A reference resolved where the card was read stays as it is: the writer then stores
    it so that it finds the same picture from `folder` (a relative path that no longer does
    becomes absolute; an asset travels with the CHARX).
    """
    appearance = loaded.persona.appearance
    if appearance.reference_image and appearance.card_reference() != appearance.reference_image:
        return loaded
    return resolve_reference(loaded, card_dir=folder, filename=filename, strict=True)


def _with_id(loaded: LoadedCard, persona_id: str) -> LoadedCard:
    return replace(loaded, persona=loaded.persona.model_copy(update={"id": persona_id}))


class PersonaLibrary:
    """Built-in and user personas by id, following the folders as they change.

    A user card that fails to load is skipped and its error kept in `errors` (path →
    message), so one bad file never hides the others. A card that loaded with something
    dropped (its reference image found nothing) has its messages on `get_card(id).warnings`;
    `warnings` lists them by file. Safe to share between threads.
    """

    def __init__(
        self,
        user_dirs: list[str | Path] | None = None,
        *,
        include_builtin: bool = True,
        limits: CardLimits | None = None,
    ):
        self.user_dirs = [Path(d).expanduser() for d in user_dirs] if user_dirs is not None else default_user_dirs()
        self.include_builtin = include_builtin
        self._limits = limits
        self._lock = threading.RLock()
        self._entries: dict[Path, _Entry] = {}
        self._by_id: dict[str, _Entry] = {}
        self._builtins_read = False

    _defaults: dict[tuple[Path, ...], PersonaLibrary] = {}
    _defaults_lock = threading.Lock()

    @classmethod
    def default(cls, user_dir: str | Path | None = None) -> PersonaLibrary:
        """The library every host uses: built-ins plus `default_user_dirs()` (PERSONA_DIR,
        else the XDG data folder), with `user_dir` first when given (a server's
        `--personas-dir`, where its imports land). One shared instance per folder list."""
        dirs = default_user_dirs()
        if user_dir is not None:
            first = Path(user_dir).expanduser()
            dirs = [first, *(d for d in dirs if d != first)]
        key = tuple(dirs)
        with cls._defaults_lock:
            library = cls._defaults.get(key)
            if library is None:
                library = cls._defaults[key] = cls(user_dirs=list(dirs))
            return library

    @property
    def limits(self) -> CardLimits:
        return self._limits or current_limits()

    # -- following the folders ---------------------------------------------------------------

    def _folders(self) -> list[Path]:
        return ([BUILTIN_DIR] if self.include_builtin else []) + self.user_dirs

    def refresh(self) -> None:
        """Read every card again (the folders are otherwise followed by their files' stats)."""
        with self._lock:
            self._entries = {}
            self._builtins_read = False
            self._sync()

    def _sync(self) -> None:
        """Bring the held cards in line with the folders: stat every card file, read those
        that are new or changed, forget those that went."""
        with self._lock:
            seen: dict[Path, _Entry] = {}
            for index, folder in enumerate(self._folders()):
                builtin = self.include_builtin and index == 0
                if builtin and self._builtins_read:
                    seen.update({p: e for p, e in self._entries.items() if e.folder == 0})
                    continue
                for path, info in _card_files(folder):
                    key = _file_key(info)
                    entry = self._entries.get(path)
                    if entry is None or entry.key != key or entry.folder != index:
                        entry = self._read(path, index, key, info.st_mtime_ns, builtin)
                    seen[path] = entry
                if builtin:
                    self._builtins_read = True
            self._entries = seen
            by_id: dict[str, _Entry] = {}
            # The first user folder shadows the others, and any user folder the built-ins; in one
            # folder the newest file wins (an overwrite that changed the container leaves the old
            # file only if it was killed).
            for entry in sorted(seen.values(), key=lambda e: (self._precedence(e.folder), e.mtime_ns, e.path.name)):
                if entry.loaded is not None:
                    by_id[entry.loaded.persona.id] = entry
            self._by_id = by_id

    def _precedence(self, index: int) -> int:
        """Higher wins: the built-ins lowest, then the user folders from last to first. The
        first is where imports go (and `serve --personas-dir DIR` puts DIR): before, a later
        folder's card of the same id hid what `import --overwrite` had just stored there."""
        builtin = 1 if self.include_builtin else 0
        return 0 if index < builtin else len(self._folders()) - index

    def _read(self, path: Path, index: int, key: tuple, mtime_ns: int, builtin: bool) -> _Entry:
        try:
            loaded = read_card_file(path, limits=self.limits)
            if loaded.warnings and builtin:
                raise CardReferenceError(loaded.warnings[0])
        except CardError as error:
            if builtin:
                raise  # a broken built-in is our bug, not the user's
            return _Entry(path, index, key, mtime_ns, None, str(error))
        return _Entry(path, index, key, mtime_ns, loaded)

    # -- reading -----------------------------------------------------------------------------

    @property
    def errors(self) -> dict[Path, str]:
        """Cards that could not be read, by file, with the reason."""
        with self._lock:
            self._sync()
            return {e.path: e.error for e in sorted(self._entries.values(), key=lambda e: e.path) if e.error}

    @property
    def warnings(self) -> dict[Path, list[str]]:
        """What loading dropped, by card file (only cards that load, with a warning)."""
        with self._lock:
            self._sync()
            return {
                self._by_id[key].path: self._by_id[key].loaded.warnings  # type: ignore[union-attr]
                for key in sorted(self._by_id)
                if self._by_id[key].loaded.warnings  # type: ignore[union-attr]
            }

    def ids(self) -> list[str]:
        with self._lock:
            self._sync()
            return sorted(self._by_id)

    def list(self) -> list[Persona]:
        """Every persona, sorted by id."""
        with self._lock:
            self._sync()
            return [self._by_id[key].loaded.persona for key in sorted(self._by_id)]  # type: ignore[union-attr]

    def get(self, persona_id: str) -> Persona:
        return self.get_card(persona_id).persona

    def get_card(self, persona_id: str) -> LoadedCard:
        """The persona with the assets its file carries (for export).

        A reference image the card resolved into the card image cache is marked used on every
        get; if the cache pruned it (`cards.card_asset_bounds`), the card is resolved again,
        which writes the same file back at the same path."""
        with self._lock:
            self._sync()
            entry = self._by_id.get(persona_id)
            if entry is None:
                raise UnknownPersonaError(persona_id, sorted(self._by_id))
            loaded = entry.loaded
            assert loaded is not None
            image = loaded.persona.appearance.reference_image
            if image and Path(image).parent == card_asset_dir().resolve():
                try:
                    os.utime(image)  # used: the cache prunes what goes unused
                except FileNotFoundError:
                    loaded = resolve_reference(loaded, card_dir=entry.path.parent, filename=entry.path.name)
                    entry.loaded = loaded
                except OSError:
                    pass  # a read-only cache: still there, just not marked
            return loaded

    def path_of(self, persona_id: str) -> Path:
        with self._lock:
            self.get_card(persona_id)
            return self._by_id[persona_id].path

    def is_builtin(self, persona_id: str) -> bool:
        return self.path_of(persona_id).parent == BUILTIN_DIR

    def __contains__(self, persona_id: object) -> bool:
        with self._lock:
            self._sync()
            return persona_id in self._by_id

    def portrait(self, persona_id: str) -> bytes:
        """PNG bytes of the persona's picture: the card's image re-encoded at a bounded size
        (a decompression bomb is never decoded), else one drawn from its look."""
        loaded = self.get_card(persona_id)
        return portrait_png(loaded.persona, loaded.assets, self.limits)

    # -- writing -----------------------------------------------------------------------------

    def _target_folder(self) -> Path:
        if not self.user_dirs:
            raise CardStorageError("no user persona folder: set PERSONA_DIR or pass user_dirs to PersonaLibrary")
        return self.user_dirs[0]

    def _free_id(self, wanted: str, folder: Path) -> str:
        """`wanted` if no persona and no file in `folder` has it, else `wanted-2`, `-3`, ..."""
        for n in range(1, _MAX_RENAMES + 1):
            suffix = "" if n == 1 else f"-{n}"
            candidate = wanted[: 64 - len(suffix)] + suffix
            if candidate in self._by_id or not ID_RE.match(candidate):
                continue
            if any((folder / f"{candidate}{s}").exists() for s in CARD_SUFFIXES):
                continue
            return candidate
        raise CardQuotaError(f"no free id near {wanted!r} (tried {_MAX_RENAMES})")

    def _check_quota(self, folder: Path, persona_id: str, new_size: int | None) -> None:
        """Refuse a card that would put the folder over `max_cards` or `max_total_mb`. Files
        of the same id (which the card replaces) do not count."""
        limits = self.limits
        count = total = 0
        for path, info in _card_files(folder):
            if path.stem == persona_id:
                continue
            count += 1
            total += info.st_size
        if limits.max_cards and count + 1 > limits.max_cards:
            raise CardQuotaError(
                f"the persona folder {folder} holds {count} cards, the most it may "
                f"(PERSONA_CARDS_MAX_CARDS={limits.max_cards}); remove some first"
            )
        if new_size is not None and limits.max_total_bytes and total + new_size > limits.max_total_bytes:
            raise CardQuotaError(
                f"storing this card ({new_size} bytes) would put the persona folder {folder} at "
                f"{total + new_size} bytes, over its {limits.max_total_mb:g} MiB quota "
                "(PERSONA_CARDS_MAX_TOTAL_MB); remove some cards first"
            )

    def add(self, persona: Persona | LoadedCard, *, overwrite: bool = False) -> StoredCard:
        """Store a persona in the first user folder and make it available by id.

        A `LoadedCard` with assets is kept as CHARX (its images streamed from where they
        are), anything else as V3 JSON. The id is never taken from another card unless
        `overwrite` is true: a taken id (a built-in's, a user card's) gives the next free one
        (`mira-2`), said in the result's `renamed` and `warnings`. With `overwrite`, the user
        card with that id is replaced (a built-in is shadowed).

        The look's reference image is checked from the folder before anything is written
        (`CardReferenceError` when a value never resolved finds nothing). The file is written
        through `durable.open_atomic` and read back, so what the library holds is what a
        fresh library would read. Raises `CardError` subclasses: a bad card,
        `CardQuotaError` over a quota (nothing written), `CardStorageError` when the disk
        refuses the write (the previous card intact).
        """
        loaded = persona if isinstance(persona, LoadedCard) else LoadedCard(persona, "json")
        folder = self._target_folder()
        requested = loaded.persona.id
        fmt = "charx" if loaded.assets else "json"
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise CardStorageError(f"cannot create the persona folder {folder}: {error.strerror or error}") from None
        with self._lock:
            self._sync()
            for _attempt in range(_MAX_RENAMES):
                persona_id = requested if overwrite else self._free_id(requested, folder)
                self._check_quota(folder, persona_id, None)
                path = folder / f"{persona_id}.{fmt}"
                replaced = overwrite and any((folder / f"{persona_id}{s}").exists() for s in CARD_SUFFIXES)
                card = _resolved_in(_with_id(loaded, persona_id), folder, path.name)
                try:
                    with open_atomic(path, exclusive=not overwrite) as handle:
                        write_card_to(handle, card.persona, fmt, card.assets, card_dir=folder, limits=self.limits)
                        self._check_quota(folder, persona_id, handle.tell())
                except FileExistsError:
                    continue  # another writer took that id between our check and our link
                except CardError:
                    raise
                except OSError as error:
                    raise CardStorageError(f"cannot store the card in {path}: {error.strerror or error}") from None
                break
            else:
                raise CardStorageError(f"could not find a free file name for {requested!r} in {folder}")
            for other in CARD_SUFFIXES:  # one file per id in the user folder, once the new one is safe
                stale = folder / f"{persona_id}{other}"
                if stale != path and stale.exists():
                    stale.unlink()
            stored = read_card_file(path, limits=self.limits)
            warnings = list(loaded.warnings)
            if persona_id != requested:
                warnings.append(
                    f"a persona with id {requested!r} already exists, so this card was stored as "
                    f"{persona_id!r} (import with overwrite to replace it)"
                )
            stored.warnings[:0] = warnings
            self._sync()
            entry = self._entries.get(path)
            if entry is not None:
                entry.loaded = stored
            return StoredCard(stored.persona, path, requested, replaced, tuple(stored.warnings))

    def remove(self, persona_id: str) -> Path:
        """Delete a user persona's card file (a built-in it shadowed becomes visible again).

        Raises `UnknownPersonaError` for an unknown id and `BuiltinPersonaError` (a
        `PermissionError`) for a built-in.
        """
        with self._lock:
            path = self.path_of(persona_id)
            if path.parent == BUILTIN_DIR:
                raise BuiltinPersonaError(f"persona {persona_id!r} is built in and cannot be removed")
            path.unlink()
            self._sync()
            return path

    def import_file(self, path: str | Path, *, overwrite: bool = False) -> StoredCard:
        """Read a card file (V2/V3 JSON, PNG or CHARX; every CHARX entry checked) and `add` it.
        The count quota is checked before the reference image is resolved, so a refused
        import writes nothing, not even to the card image cache."""
        path = Path(path).expanduser()
        loaded = read_card_file(path, resolve=False, verify=True, limits=self.limits)
        folder = self._target_folder()
        with self._lock:
            self._sync()
            wanted = loaded.persona.id if overwrite else self._free_id(loaded.persona.id, folder)
            self._check_quota(folder, wanted, None)
        loaded = resolve_reference(loaded, card_dir=path.resolve().parent, filename=path.name)
        return self.add(loaded, overwrite=overwrite)


def _card_files(folder: Path) -> list[tuple[Path, os.stat_result]]:
    """(path, stat) of each card file in `folder` (links followed), by name; none if it is missing."""
    out: list[tuple[Path, os.stat_result]] = []
    try:
        with os.scandir(folder) as listing:
            for entry in listing:
                if entry.name.startswith(".") or os.path.splitext(entry.name)[1].lower() not in CARD_SUFFIXES:
                    continue
                try:
                    info = entry.stat()
                except OSError:
                    continue
                if info.st_mode & 0o170000 == 0o100000:  # a regular file
                    out.append((folder / entry.name, info))
    except (FileNotFoundError, NotADirectoryError):
        return []
    out.sort(key=lambda item: item[0].name)
    return out


def builtin_persona_ids() -> list[str]:
    """Ids of the personas shipped in `persona/builtin/`, sorted."""
    return PersonaLibrary(user_dirs=[], include_builtin=True).ids()


def load_persona(id_or_path: str | Path) -> Persona:
    """A persona by id (from `PersonaLibrary.default()`) or from a card file path.

    Anything ending in .json/.png/.charx, or any existing file, is read as a path.
    Raises `UnknownPersonaError` for an unknown id and `CardError` for a bad file; what
    loading dropped (a reference image that finds nothing) is logged as a warning.
    """
    text = str(id_or_path)
    candidate = Path(text).expanduser()
    if candidate.suffix.lower() in CARD_SUFFIXES or candidate.is_file():
        loaded = read_card_file(candidate)
    else:
        loaded = PersonaLibrary.default().get_card(text)
    for warning in loaded.warnings:
        _log.warning("%s", warning)
    return loaded.persona
