"""`LoadedCard`: a persona read from a card file, with the files the card carried."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from ..card import Persona
from .assets import Asset

__all__ = ["PNG_IMAGE_ASSET", "CardFormat", "LoadedCard"]

CardFormat = Literal["json", "png", "charx"]

#: Asset key under which a PNG card's image (without its card chunks) is kept.
PNG_IMAGE_ASSET = "assets/icon/images/main.png"


@dataclass
class LoadedCard:
    """A persona read from a file, with the binary assets the file carried.

    `assets` maps a path inside the card (`assets/icon/images/main.png`) to an `Asset`,
    which reads its bytes from the card when asked (see `assets`); a PNG card's own image is
    kept under `PNG_IMAGE_ASSET` so a PNG export reuses it. `warnings` says what reading it
    dropped (a reference image that finds nothing), for a UI to show: the persona works
    without it.
    """

    persona: Persona
    format: CardFormat
    assets: dict[str, Asset] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
