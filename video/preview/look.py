"""The persona's appearance, read from `SessionSpec.look` (a plain dict) with defaults.

video/ may not import persona cards (import-linter), so the keys of the card's
`Appearance` model are read here by name; a missing or malformed colour falls back to
the default rather than failing a live stream, and an unknown hair style draws `short`
(both are noted in `Look.warnings` for the caller to log once).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

__all__ = ["HAIR_STYLES", "Look", "mix", "rgb"]

HAIR_STYLES = ("short", "long", "bun", "bald", "ponytail", "curly")
_HEX = re.compile(r"^#[0-9a-fA-F]{6}$")

_DEFAULTS = {
    "skin_colour": "#f1c9a5",
    "hair_colour": "#3b2a20",
    "eye_colour": "#3a5f8a",
    "outfit_colour": "#4a7bd1",
    "outfit_accent_colour": "#f4f4f4",
    "trousers_colour": "#2f3542",
    "background_colour": "#dfe8f1",
}

RGB = tuple[int, int, int]


def rgb(hex_colour: str) -> RGB:
    return int(hex_colour[1:3], 16), int(hex_colour[3:5], 16), int(hex_colour[5:7], 16)


def mix(a: RGB, b: RGB, t: float) -> RGB:
    """`a` moved a fraction `t` towards `b` (t=0.2 towards white lightens by 20%)."""
    return tuple(int(round(x + (y - x) * t)) for x, y in zip(a, b, strict=True))  # type: ignore[return-value]


@dataclass(frozen=True)
class Look:
    skin: RGB
    hair: RGB
    eyes: RGB
    outfit: RGB
    accent: RGB
    trousers: RGB
    background: RGB
    hair_style: str
    name: str
    name_tag: bool
    warnings: tuple[str, ...] = field(default=())

    @classmethod
    def from_spec(cls, look: dict, name: str) -> Look:
        warnings: list[str] = []
        colours: dict[str, RGB] = {}
        for key, default in _DEFAULTS.items():
            value = look.get(key, default)
            if not isinstance(value, str) or not _HEX.match(value):
                warnings.append(f"look.{key}={value!r} is not #rrggbb; using {default}")
                value = default
            colours[key] = rgb(value)
        style = str(look.get("hair_style", "short")).strip().lower()
        if style not in HAIR_STYLES:
            warnings.append(
                f"look.hair_style={style!r} unknown (known: {', '.join(HAIR_STYLES)}); drawing 'short'"
            )
            style = "short"
        return cls(
            skin=colours["skin_colour"],
            hair=colours["hair_colour"],
            eyes=colours["eye_colour"],
            outfit=colours["outfit_colour"],
            accent=colours["outfit_accent_colour"],
            trousers=colours["trousers_colour"],
            background=colours["background_colour"],
            hair_style=style,
            name=name,
            name_tag=bool(look.get("name_tag", True)),
            warnings=tuple(warnings),
        )
