"""Every bound on what a card may cost us: one pydantic model, one source of truth.

Card files come from anyone the server lets in (uploads) and from other tools, so each
limit is checked before anything large is read, inflated or decoded. The defaults are
safe for a server on the internet behind a token; a user with huge lorebooks or many cards
raises them with `PERSONA_CARDS_<FIELD>` environment variables (for example
`PERSONA_CARDS_MAX_CARDS=2000`), or a caller passes its own `CardLimits`.
"""

from __future__ import annotations

import os
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .errors import CardLimitsError

__all__ = [
    "ENV_PREFIX",
    "MAX_CARD_JSON_BYTES",
    "MAX_CHARX_BYTES",
    "MAX_CHARX_ENTRIES",
    "MAX_CHARX_UNCOMPRESSED_BYTES",
    "MAX_PNG_BYTES",
    "MAX_PNG_CHUNKS",
    "MAX_REFERENCE_PIXELS",
    "CardLimits",
    "current_limits",
]

MiB = 1024 * 1024
#: A card's JSON text. Lorebooks make real cards large; 4 MiB holds the biggest we know of.
MAX_CARD_JSON_BYTES = 4 * MiB
#: A PNG card file.
MAX_PNG_BYTES = 20 * MiB
#: Chunks in a PNG card. Encoders split the image data into IDAT chunks of 8-64 KiB, so a
#: 20 MiB PNG has a few thousand at most; a file of empty chunks is only CPU spent on CRCs.
MAX_PNG_CHUNKS = 10_000
#: A CHARX file on disk, its entries once uncompressed, and its entry count (zip bombs).
MAX_CHARX_BYTES = 50 * MiB
MAX_CHARX_UNCOMPRESSED_BYTES = 100 * MiB
MAX_CHARX_ENTRIES = 1000
#: A reference image's size (width × height, read from its header): far above any photo the
#: engine frames (it scales to the video size), far below what would exhaust memory decoded.
MAX_REFERENCE_PIXELS = 64_000_000

ENV_PREFIX = "PERSONA_CARDS_"


class CardLimits(BaseModel):
    """What one card, and the user's card folder, may cost."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_card_json_bytes: Annotated[int, Field(ge=64 * 1024, le=256 * MiB)] = Field(
        default=MAX_CARD_JSON_BYTES, description="Largest card JSON (a file, a PNG chunk once decoded, card.json)."
    )
    max_png_bytes: Annotated[int, Field(ge=64 * 1024, le=1024 * MiB)] = Field(
        default=MAX_PNG_BYTES, description="Largest PNG card file."
    )
    max_png_chunks: Annotated[int, Field(ge=16, le=10_000_000)] = Field(
        default=MAX_PNG_CHUNKS, description="Most chunks a PNG card may have (each costs a CRC check)."
    )
    max_charx_bytes: Annotated[int, Field(ge=64 * 1024, le=4096 * MiB)] = Field(
        default=MAX_CHARX_BYTES, description="Largest CHARX file (compressed)."
    )
    max_charx_uncompressed_bytes: Annotated[int, Field(ge=64 * 1024, le=16384 * MiB)] = Field(
        default=MAX_CHARX_UNCOMPRESSED_BYTES,
        description="Most bytes a CHARX's entries may hold once inflated, checked from the zip "
        "headers before inflating and again while reading.",
    )
    max_charx_entries: Annotated[int, Field(ge=2, le=100_000)] = Field(
        default=MAX_CHARX_ENTRIES, description="Most entries in a CHARX zip."
    )
    max_compression_ratio: Annotated[float, Field(ge=2, le=100_000)] = Field(
        default=100.0,
        description="Most an entry larger than `ratio_applies_above_bytes` may inflate per compressed "
        "byte. Pictures barely compress and text about tenfold; zeros deflate about a thousandfold.",
    )
    ratio_applies_above_bytes: Annotated[int, Field(ge=0, le=1024 * MiB)] = Field(
        default=1 * MiB, description="Entries at most this large (once inflated) skip the ratio check."
    )
    max_reference_pixels: Annotated[int, Field(ge=1_000_000, le=1_000_000_000)] = Field(
        default=MAX_REFERENCE_PIXELS, description="Largest reference image (width × height, from its header)."
    )
    max_portrait_pixels: Annotated[int, Field(ge=65_536, le=256_000_000)] = Field(
        default=4096 * 4096,
        description="Largest card picture decoded for the gallery; a larger one (a decompression "
        "bomb) is never decoded: the gallery shows a portrait drawn from the card's look instead.",
    )
    portrait_size: Annotated[int, Field(ge=32, le=4096)] = Field(
        default=512, description="The gallery portrait is re-encoded to fit this many pixels a side."
    )
    max_cards: Annotated[int, Field(ge=0, le=1_000_000)] = Field(
        default=500, description="Most cards in the user folder where imports land (0: no limit)."
    )
    max_total_mb: Annotated[float, Field(ge=0, le=1_048_576)] = Field(
        default=2048.0, description="Most MiB the card files in that folder may total (0: no limit)."
    )

    @property
    def max_total_bytes(self) -> int:
        return int(self.max_total_mb * MiB)

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> CardLimits:
        """The defaults, each overridden by `PERSONA_CARDS_<FIELD>` when set (e.g.
        `PERSONA_CARDS_MAX_CARDS`); a value out of range is a `CardLimitsError` naming it."""
        env = os.environ if environ is None else environ
        values: dict[str, str] = {}
        for name in cls.model_fields:
            text = env.get(ENV_PREFIX + name.upper(), "").strip()
            if text:
                values[name] = text
        try:
            return cls(**values)
        except ValidationError as error:
            first = error.errors()[0]
            field = str(first["loc"][0])
            variable = ENV_PREFIX + field.upper()
            raise CardLimitsError(
                f"{variable}={values.get(field)!r} is not allowed: {first['msg']}; unset it for the "
                f"default ({cls.model_fields[field].default})"
            ) from None


_cached: tuple[tuple[tuple[str, str], ...], CardLimits] | None = None


def current_limits() -> CardLimits:
    """`CardLimits.from_env()`, rebuilt only when a `PERSONA_CARDS_*` variable changed."""
    global _cached
    key = tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith(ENV_PREFIX)))
    cached = _cached
    if cached is not None and cached[0] == key:
        return cached[1]
    limits = CardLimits.from_env()
    _cached = (key, limits)
    return limits
