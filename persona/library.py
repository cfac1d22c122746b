"""Where personas come from: the built-in gallery plus the user's own card folders.

Built-ins are V3 JSON card files in `persona/builtin/` (shipped as package data). User
cards live in folders named by the `PERSONA_DIR` environment variable (several joined by
the OS path separator) or passed in; any .json/.png/.charx file there is a card. A user
card with the same id as a built-in shadows it, so a user can restyle a built-in.

`add()` stores an imported persona in the first user folder (as V3 JSON, or in its
original container when assets came with it), which is how the UI's file drop lands.

Every persona here has its look's `reference_image` resolved to an image file (see
`card_formats.resolve_reference`); a user card whose reference finds nothing loads without
it, and what was dropped is in `warnings` (a card that cannot be read at all is skipped,
its error in `errors`).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from .card import Persona
from .card_formats import (
    CardError,
    CardReferenceError,
    LoadedCard,
    card_asset_dir,
    dump_card,
    portrait_png,
    read_card_file,
    resolve_reference,
)

__all__ = [
    "BUILTIN_DIR",
    "DEFAULT_PERSONA_ID",
    "CARD_SUFFIXES",
    "PersonaLibrary",
    "UnknownPersonaError",
    "builtin_persona_ids",
    "load_persona",
]

BUILTIN_DIR = Path(__file__).resolve().parent / "builtin"
#: The persona a session gets when it names none.
DEFAULT_PERSONA_ID = "mira"
CARD_SUFFIXES = (".json", ".png", ".charx")


class UnknownPersonaError(KeyError):
    """No persona with that id; the message lists the ids that exist."""

    def __init__(self, persona_id: str, known: list[str]):
        self.persona_id = persona_id
        self.known = known
        super().__init__(f"unknown persona {persona_id!r}; known: {', '.join(known) or '(none)'}")

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


def _card_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in CARD_SUFFIXES)


def _resolved_in(loaded: LoadedCard, folder: Path, filename: str) -> LoadedCard:
    """The card with its reference resolved, a value never resolved (a persona built in
    code, a reference set after loading) taken from `folder`, where the card will live, and
    refused if it finds nothing: the caller wrote it, so an error beats a silent drop.

    A reference resolved where the card was read stays as it is: `dump_card` then writes
    it so that it finds the same picture from `folder` (a relative path that no longer does
    becomes absolute; an asset travels with the CHARX).
    """
    appearance = loaded.persona.appearance
    if appearance.reference_image and appearance.card_reference() != appearance.reference_image:
        return loaded
    return resolve_reference(loaded, card_dir=folder, filename=filename, strict=True)


def _env_dirs() -> list[Path]:
    value = os.environ.get("PERSONA_DIR", "")
    return [Path(part).expanduser() for part in value.split(os.pathsep) if part.strip()]


class PersonaLibrary:
    """Built-in and user personas by id.

    Cards are read once, on first use; `refresh()` rereads the folders. A user card that
    fails to load is skipped and its error kept in `errors` (path → message), so one bad
    file never hides the others. A card that loaded with something dropped (its reference
    image found nothing) has its messages on `get_card(id).warnings`; `warnings` lists
    them by file.
    """

    def __init__(self, user_dirs: list[str | Path] | None = None, *, include_builtin: bool = True):
        self.user_dirs = [Path(d) for d in user_dirs] if user_dirs is not None else _env_dirs()
        self.include_builtin = include_builtin
        self.errors: dict[Path, str] = {}
        self._cards: dict[str, LoadedCard] | None = None
        self._paths: dict[str, Path] = {}

    def refresh(self) -> None:
        cards: dict[str, LoadedCard] = {}
        paths: dict[str, Path] = {}
        self.errors = {}
        folders = ([BUILTIN_DIR] if self.include_builtin else []) + self.user_dirs
        for folder in folders:
            for path in _card_files(folder):
                try:
                    loaded = read_card_file(path)
                    if loaded.warnings and folder == BUILTIN_DIR:
                        raise CardReferenceError(loaded.warnings[0])
                except CardError as error:
                    if folder == BUILTIN_DIR:
                        raise  # a broken built-in is our bug, not the user's
                    self.errors[path] = str(error)
                    continue
                cards[loaded.persona.id] = loaded  # later folders shadow earlier ones
                paths[loaded.persona.id] = path
        self._cards, self._paths = cards, paths

    @property
    def warnings(self) -> dict[Path, list[str]]:
        """What loading dropped, by card file (only cards that load, with a warning)."""
        cards = self._all()
        return {self._paths[key]: cards[key].warnings for key in sorted(cards) if cards[key].warnings}

    def _all(self) -> dict[str, LoadedCard]:
        if self._cards is None:
            self.refresh()
        assert self._cards is not None
        return self._cards

    def ids(self) -> list[str]:
        return sorted(self._all())

    def list(self) -> list[Persona]:
        """Every persona, sorted by id."""
        cards = self._all()
        return [cards[key].persona for key in sorted(cards)]

    def get(self, persona_id: str) -> Persona:
        return self.get_card(persona_id).persona

    def get_card(self, persona_id: str) -> LoadedCard:
        """The persona with the assets its file carried (for export).

        A reference image the card resolved into the asset cache is marked used on every get;
        if the cache pruned it (`card_formats.card_asset_bounds`), the card is resolved again,
        which writes the same file back at the same path."""
        cards = self._all()
        if persona_id not in cards:
            raise UnknownPersonaError(persona_id, sorted(cards))
        loaded = cards[persona_id]
        image = loaded.persona.appearance.reference_image
        if image and Path(image).parent == card_asset_dir().resolve():
            try:
                os.utime(image)  # used: the cache prunes what goes unused
            except FileNotFoundError:
                path = self._paths[persona_id]
                loaded = cards[persona_id] = resolve_reference(loaded, card_dir=path.parent, filename=path.name)
            except OSError:
                pass  # a read-only cache: still there, just not marked
        return loaded

    def path_of(self, persona_id: str) -> Path:
        self.get_card(persona_id)
        return self._paths[persona_id]

    def __contains__(self, persona_id: object) -> bool:
        return persona_id in self._all()

    def add(self, persona: Persona | LoadedCard, *, overwrite: bool = True) -> Path:
        """Store a persona in the first user folder and make it available by id.

        A `LoadedCard` with assets is kept as CHARX so its images survive; anything else
        is written as V3 JSON. The look's reference image is checked from the folder before
        anything is written (`CardReferenceError` when a value never resolved finds nothing)
        and stored so that it finds the same picture from there. The stored file is read
        back, so what the library holds is what a fresh library would read; its
        `warnings` are `persona`'s (what its import dropped). Raises `CardError` subclasses
        for a bad card and `FileExistsError` when `overwrite` is false and the id is taken.
        """
        loaded = persona if isinstance(persona, LoadedCard) else LoadedCard(persona, "json")
        if not self.user_dirs:
            raise CardError("no user persona folder: set PERSONA_DIR or pass user_dirs to PersonaLibrary")
        folder = self.user_dirs[0]
        folder.mkdir(parents=True, exist_ok=True)
        persona_id = loaded.persona.id
        self._check_room(persona_id, overwrite)
        fmt = "charx" if loaded.assets else "json"
        path = folder / f"{persona_id}.{fmt}"
        loaded = _resolved_in(loaded, folder, path.name)
        data = dump_card(loaded.persona, fmt, loaded.assets, card_dir=folder)
        for other in CARD_SUFFIXES:  # one file per id in the user folder
            stale = folder / f"{persona_id}{other}"
            if stale != path and stale.exists():
                stale.unlink()
        path.write_bytes(data)
        stored = read_card_file(path)
        stored.warnings[:0] = loaded.warnings
        cards = self._all()
        cards[persona_id] = stored
        self._paths[persona_id] = path
        return path

    def _check_room(self, persona_id: str, overwrite: bool) -> None:
        """Refuse a taken id before anything (the card, the asset cache) is written."""
        if not overwrite and persona_id in self._all():
            raise FileExistsError(f"a persona with id {persona_id!r} already exists")

    def remove(self, persona_id: str) -> Path:
        """Delete a user persona's card file (a built-in it shadowed becomes visible again).

        Raises `UnknownPersonaError` for an unknown id and `PermissionError` for a built-in.
        """
        path = self.path_of(persona_id)
        if path.parent == BUILTIN_DIR:
            raise PermissionError(f"persona {persona_id!r} is built in and cannot be removed")
        path.unlink()
        self.refresh()
        return path

    def portrait(self, persona_id: str) -> bytes:
        """PNG bytes of the persona's picture (the card's image, else drawn from its look)."""
        loaded = self.get_card(persona_id)
        return portrait_png(loaded.persona, loaded.assets)

    def import_file(self, path: str | Path, *, overwrite: bool = True) -> Persona:
        """Read a card file (V2/V3 JSON, PNG or CHARX) and `add` it; what the import dropped
        is on `get_card(id).warnings`. The id is checked before the reference image is
        resolved, so a refused import writes nothing, not even to the asset cache."""
        path = Path(path)
        loaded = read_card_file(path, resolve=False)
        self._check_room(loaded.persona.id, overwrite)
        loaded = resolve_reference(loaded, card_dir=path.resolve().parent, filename=path.name)
        self.add(loaded, overwrite=overwrite)
        return loaded.persona


_DEFAULT_LIBRARY: PersonaLibrary | None = None
_log = logging.getLogger(__name__)


def _default_library() -> PersonaLibrary:
    global _DEFAULT_LIBRARY
    if _DEFAULT_LIBRARY is None:
        _DEFAULT_LIBRARY = PersonaLibrary()
    return _DEFAULT_LIBRARY


def builtin_persona_ids() -> list[str]:
    """Ids of the personas shipped in `persona/builtin/`, sorted."""
    return PersonaLibrary(user_dirs=[], include_builtin=True).ids()


def load_persona(id_or_path: str | Path) -> Persona:
    """A persona by id (built-in or from `PERSONA_DIR`) or from a card file path.

    Anything ending in .json/.png/.charx, or any existing file, is read as a path.
    Raises `UnknownPersonaError` for an unknown id and `CardError` for a bad file; what
    loading dropped (a reference image that finds nothing) is logged as a warning.
    """
    text = str(id_or_path)
    candidate = Path(text).expanduser()
    if candidate.suffix.lower() in CARD_SUFFIXES or candidate.is_file():
        loaded = read_card_file(candidate)
    else:
        library = _default_library()
        if text not in library:
            library.refresh()  # a card may have been added to PERSONA_DIR since the first read
        loaded = library.get_card(text)
    for warning in loaded.warnings:
        _log.warning("%s", warning)
    return loaded.persona
