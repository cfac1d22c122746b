"""The card asset cache (`card_asset_dir()`) is bounded: the headless service takes card
uploads, and every new image would otherwise stay on disk forever. Real cards resolved into
a real cache folder in tmp_path; ages are set with os.utime, never waited for."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import pytest
from test_card_assets import FACE, _card, _charx, _image

from comfyui_persona.persona.cards import (
    CARD_ASSET_MAX_AGE_DAYS,
    CARD_ASSET_MAX_MB,
    ENV_ASSET_MAX_DAYS,
    ENV_ASSET_MAX_MB,
    card_asset_bounds,
    card_asset_dir,
    read_card_bytes,
    resolve_reference,
)
from comfyui_persona.persona.library import PersonaLibrary

DAY = 86400.0
ASSET = [{"type": "x-face", "uri": "embeded://" + FACE, "name": "face", "ext": "png"}]


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch) -> Path:
    """Every test prunes its own cache, with the default bounds unless it sets them."""
    monkeypatch.setenv("PERSONA_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv(ENV_ASSET_MAX_DAYS, raising=False)
    monkeypatch.delenv(ENV_ASSET_MAX_MB, raising=False)
    return tmp_path / "cache"


def _charx_with(shade: int) -> bytes:
    """A CHARX whose reference is a picture of its own (one shade, one picture, one cache file)."""
    return _charx(_card("face", ASSET), {FACE: _image((shade, 40, 90))})


def _resolve(shade: int) -> Path:
    """Load a card as an upload does; the path of its reference in the cache."""
    return Path(read_card_bytes(_charx_with(shade), filename="up.charx").persona.appearance.reference_image)


def _last_used(path: Path, seconds_ago: float) -> None:
    stamp = time.time() - seconds_ago
    os.utime(path, (stamp, stamp), follow_symlinks=False)


def _names() -> set[str]:
    return {p.name for p in card_asset_dir().iterdir()}


# --------------------------------------------------------------------------- age


def test_files_unused_past_the_max_age_go_when_a_new_file_is_written():
    expired, recent = _resolve(1), _resolve(2)
    _last_used(expired, (CARD_ASSET_MAX_AGE_DAYS + 1) * DAY)
    _last_used(recent, (CARD_ASSET_MAX_AGE_DAYS - 1) * DAY)
    new = _resolve(3)
    assert _names() == {recent.name, new.name}


def test_reusing_a_file_marks_it_used_so_it_outlives_the_max_age():
    path = _resolve(1)
    _last_used(path, (CARD_ASSET_MAX_AGE_DAYS + 1) * DAY)
    assert _resolve(1) == path  # the same picture again: the file is reused...
    assert time.time() - path.stat().st_mtime < 60  # ...and counts as used now
    _resolve(2)
    assert path.name in _names()


# --------------------------------------------------------------------------- size


def test_over_the_cap_the_least_recently_used_go_first(monkeypatch):
    oldest, older, old = _resolve(1), _resolve(2), _resolve(3)
    for age, path in ((3, oldest), (2, older), (1, old)):
        _last_used(path, age * 3600)
    sizes = {p: p.stat().st_size for p in (oldest, older, old)}
    new_size = len(_image((4, 40, 90)))  # what the next file will take
    cap = sizes[older] + sizes[old] + new_size  # room for all but the oldest
    monkeypatch.setenv(ENV_ASSET_MAX_MB, repr(cap / (1024 * 1024)))
    new = _resolve(4)
    assert _names() == {older.name, old.name, new.name}


def test_the_bound_is_strict_recently_used_files_go_too(monkeypatch):
    """Decided (issue 18): recently used files were spared, so uploads of distinct images grew
    the folder past its bound. Now the least recently used go whatever their age, until the
    new file fits; a reference pruned while its persona is listed is written back on the
    next `get_card` (tested below)."""
    stale, in_use = _resolve(1), _resolve(2)
    _last_used(stale, 3600)
    _last_used(in_use, 5)
    new_size = len(_image((3, 40, 90)))
    monkeypatch.setenv(ENV_ASSET_MAX_MB, repr((new_size + in_use.stat().st_size - 1) / (1024 * 1024)))
    new = _resolve(3)
    assert _names() == {new.name}
    assert new.read_bytes() == _image((3, 40, 90))
    assert sum(p.stat().st_size for p in card_asset_dir().iterdir()) <= card_asset_bounds()[1]


def test_uploads_of_distinct_images_never_push_the_folder_over_its_bound(monkeypatch):
    sizes = [len(_image((shade, 40, 90))) for shade in range(1, 4)]
    cap = sum(sizes[:2])  # room for two pictures, never three
    monkeypatch.setenv(ENV_ASSET_MAX_MB, repr(cap / (1024 * 1024)))
    for shade in range(1, 30):
        _resolve(shade)
        assert sum(p.stat().st_size for p in card_asset_dir().iterdir()) <= cap


def test_an_image_larger_than_the_whole_cache_is_dropped_with_a_warning(monkeypatch):
    monkeypatch.setenv(ENV_ASSET_MAX_MB, repr(10 / (1024 * 1024)))  # ten bytes
    loaded = read_card_bytes(_charx_with(1), filename="up.charx")
    assert loaded.persona.appearance.reference_image is None
    assert "more than the whole card image cache may hold" in loaded.warnings[0]
    assert not card_asset_dir().exists() or _names() == set()


# --------------------------------------------------------------------------- what pruning never touches


def test_files_links_and_folders_that_are_not_the_caches_own_stay(tmp_path):
    folder = card_asset_dir()
    folder.mkdir(parents=True)
    outside = tmp_path / "outside.png"
    outside.write_bytes(b"precious")
    foreign = {
        "notes.txt": "file",
        "A" * 64 + ".png": "file",  # upper-case hex: not a name we write
        "a" * 64 + ".png.bak": "file",
        ".cafe.tmp": "file",  # not a temporary name of ours
        ".tmp-notes-abc": "file",  # durable's prefix, but not for one of our names
        "b" * 64 + ".png": "link",  # our name, but a link: never followed, never removed
        "c" * 64 + ".png": "folder",
    }
    for name, kind in foreign.items():
        path = folder / name
        if kind == "file":
            path.write_bytes(b"x" * 100)
        elif kind == "link":
            path.symlink_to(outside)
        else:
            path.mkdir()
        _last_used(path, 400 * DAY)
    _last_used(outside, 400 * DAY)
    expired = _resolve(1)  # one of ours, as old: it goes, so pruning did run
    _last_used(expired, 400 * DAY)
    new = _resolve(2)
    assert _names() == {*foreign, new.name}
    assert outside.read_bytes() == b"precious"


def test_stale_temporaries_go_and_fresh_ones_stay():
    """A temporary older than an hour belongs to a writer that died; a younger one may be
    being written right now."""
    folder = card_asset_dir()
    folder.mkdir(parents=True)
    digest = "0123456789abcdef" * 4
    stale, fresh = folder / f".tmp-{digest[:40]}-k2_x9qzp", folder / f".tmp-{digest[:40]}-a1b2c3d4"
    for path, age in ((stale, 2 * 3600), (fresh, 30 * 60)):
        path.write_bytes(b"partial")
        _last_used(path, age)
    new = _resolve(1)
    assert _names() == {fresh.name, new.name}


# --------------------------------------------------------------------------- configuration


def test_defaults_and_environment_overrides(monkeypatch):
    assert card_asset_bounds() == (CARD_ASSET_MAX_AGE_DAYS * DAY, int(CARD_ASSET_MAX_MB * 1024 * 1024))
    monkeypatch.setenv(ENV_ASSET_MAX_DAYS, "1.5")
    monkeypatch.setenv(ENV_ASSET_MAX_MB, " 2 ")
    assert card_asset_bounds() == (1.5 * DAY, 2 * 1024 * 1024)
    two_days = _resolve(1)
    _last_used(two_days, 2 * DAY)  # kept by the default month, not by a day and a half
    new = _resolve(2)
    assert _names() == {new.name}


def test_zero_turns_a_bound_off(monkeypatch):
    monkeypatch.setenv(ENV_ASSET_MAX_DAYS, "0")
    monkeypatch.setenv(ENV_ASSET_MAX_MB, "0")
    ancient = _resolve(1)
    _last_used(ancient, 1000 * DAY)
    new = _resolve(2)
    assert _names() == {ancient.name, new.name}


@pytest.mark.parametrize("variable", [ENV_ASSET_MAX_DAYS, ENV_ASSET_MAX_MB])
@pytest.mark.parametrize("value", ["abc", "-1", "nan", "inf", "30d"])
def test_a_bad_bound_is_an_error_naming_the_variable(monkeypatch, variable, value):
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValueError, match=f"{variable} must be a number .*{value!r}"):
        _resolve(1)
    assert not card_asset_dir().exists()  # refused before anything is written


# --------------------------------------------------------------------------- a pruned reference


def test_resolving_a_card_again_recreates_its_pruned_file_at_the_same_path():
    """A persona resolved long ago (an upload, a library entry) names a file that pruning may
    have removed; resolving it again goes from the card's own spelling and kept assets."""
    loaded = read_card_bytes(_charx_with(1), filename="up.charx")
    path = Path(loaded.persona.appearance.reference_image)
    _last_used(path, (CARD_ASSET_MAX_AGE_DAYS + 1) * DAY)
    _resolve(2)
    assert not path.exists()
    again = resolve_reference(loaded, card_dir=None, filename="up.charx", strict=True)
    assert again.persona.appearance.reference_image == str(path)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == path.name.removesuffix(".png")
    assert again.persona.appearance.card_reference() == "face"


def test_a_library_entry_is_resolved_again_from_the_card_it_keeps(tmp_path):
    folder = tmp_path / "personas"
    folder.mkdir()
    (folder / "vera.charx").write_bytes(_charx_with(1))
    library = PersonaLibrary([folder], include_builtin=False)
    path = Path(library.get("vera").appearance.reference_image)
    path.unlink()  # pruned while the library held the persona
    again = resolve_reference(library.get_card("vera"), card_dir=folder, filename="vera.charx", strict=True)
    assert again.persona.appearance.reference_image == str(path) and path.is_file()
