"""Persona cards: Character Card V2/V3 as JSON, PNG and CHARX, read and written safely.

The community formats (SillyTavern, chub.ai, RisuAI...) store a character as a JSON object
`{"spec": "chara_card_v2" | "chara_card_v3", "spec_version", "data": {...}}`:

- JSON: the object as a file.
- PNG: an image whose `tEXt` chunk `chara` holds base64 of the V2 JSON, and `ccv3` base64
  of the V3 JSON (V3 readers prefer `ccv3`). We write both so older tools still read it.
- CHARX (V3 only): a zip with `card.json` at its root and assets under `assets/`.

One module per concern: `readers` (bytes/files → `LoadedCard`), `png` and `charx` (the
containers), `assets` (a card's files, read lazily), `mapping` (card object ↔ `Persona`),
`reference` (the look's reference image), `cache` (the bounded card image cache),
`portrait` (a safe gallery picture), `writers` (`Persona` → card file), `limits` (every
bound, one pydantic model) and `errors` (`CardError` and its kinds, all `PersonaError`s).
"""

from .assets import Asset, BytesAsset, FileAsset, PngImageAsset, ZipMemberAsset
from .cache import (
    CARD_ASSET_MAX_AGE_DAYS,
    CARD_ASSET_MAX_MB,
    ENV_ASSET_MAX_DAYS,
    ENV_ASSET_MAX_MB,
    card_asset_bounds,
    card_asset_dir,
)
from .errors import (
    CardArchiveError,
    CardEncodingError,
    CardError,
    CardFormatError,
    CardJSONError,
    CardLimitsError,
    CardMissingError,
    CardQuotaError,
    CardReferenceError,
    CardSpecError,
    CardStorageError,
    CardTooLargeError,
    CardValidationError,
)
from .limits import (
    MAX_CARD_JSON_BYTES,
    MAX_CHARX_BYTES,
    MAX_CHARX_ENTRIES,
    MAX_CHARX_UNCOMPRESSED_BYTES,
    MAX_PNG_BYTES,
    MAX_PNG_CHUNKS,
    MAX_REFERENCE_PIXELS,
    CardLimits,
    current_limits,
)
from .loaded import PNG_IMAGE_ASSET, CardFormat, LoadedCard
from .mapping import EXTENSION_KEY, REFERENCE_FIELD, card_to_persona, persona_to_card
from .portrait import portrait_png, render_portrait
from .readers import read_card_bytes, read_card_file
from .reference import REFERENCE_IMAGE_FORMATS, resolve_reference
from .writers import dump_card, write_card, write_card_to

__all__ = [
    "CARD_ASSET_MAX_AGE_DAYS",
    "CARD_ASSET_MAX_MB",
    "ENV_ASSET_MAX_DAYS",
    "ENV_ASSET_MAX_MB",
    "EXTENSION_KEY",
    "MAX_CARD_JSON_BYTES",
    "MAX_CHARX_BYTES",
    "MAX_CHARX_ENTRIES",
    "MAX_CHARX_UNCOMPRESSED_BYTES",
    "MAX_PNG_BYTES",
    "MAX_PNG_CHUNKS",
    "MAX_REFERENCE_PIXELS",
    "PNG_IMAGE_ASSET",
    "REFERENCE_FIELD",
    "REFERENCE_IMAGE_FORMATS",
    "Asset",
    "BytesAsset",
    "CardArchiveError",
    "CardEncodingError",
    "CardError",
    "CardFormat",
    "CardFormatError",
    "CardJSONError",
    "CardLimits",
    "CardLimitsError",
    "CardMissingError",
    "CardQuotaError",
    "CardReferenceError",
    "CardSpecError",
    "CardStorageError",
    "CardTooLargeError",
    "CardValidationError",
    "FileAsset",
    "LoadedCard",
    "PngImageAsset",
    "ZipMemberAsset",
    "card_asset_bounds",
    "card_asset_dir",
    "card_to_persona",
    "current_limits",
    "dump_card",
    "persona_to_card",
    "portrait_png",
    "read_card_bytes",
    "read_card_file",
    "render_portrait",
    "resolve_reference",
    "write_card",
    "write_card_to",
]
