"""The card errors: every problem with a card file is a `CardError` whose message names it.

All derive from `comfyui_persona.errors.PersonaError` (one `except` for "the user's file
was refused and we said why") and keep `ValueError` as a base, which callers caught before
the error root existed.
"""

from __future__ import annotations

from ...errors import PersonaError

__all__ = [
    "CardArchiveError",
    "CardEncodingError",
    "CardError",
    "CardFormatError",
    "CardJSONError",
    "CardLimitsError",
    "CardMissingError",
    "CardQuotaError",
    "CardReferenceError",
    "CardSpecError",
    "CardStorageError",
    "CardTooLargeError",
    "CardValidationError",
]


class CardError(PersonaError, ValueError):
    """A card file that cannot be used; the message says what is wrong with it."""

    code = "bad_card"


class CardTooLargeError(CardError):
    """The file or one of its parts is over a size, count or compression-ratio limit."""


class CardFormatError(CardError):
    """Not a card file at all: neither JSON, PNG nor a CHARX zip, or a corrupt container."""


class CardMissingError(CardError):
    """A container without a card in it (PNG without `chara`/`ccv3`, zip without card.json),
    or a card file that is not (or no longer) there."""


class CardEncodingError(CardError):
    """The card text is not valid base64 or not UTF-8."""


class CardJSONError(CardError):
    """The card text is not valid JSON, or not a JSON object."""


class CardSpecError(CardError):
    """Valid JSON that is not a Character Card V2/V3 (wrong `spec`, missing `data`, bad field type)."""


class CardArchiveError(CardError):
    """A CHARX zip that is unsafe or inconsistent (path traversal, zip bomb, missing asset)."""


class CardValidationError(CardError):
    """Our `comfyui_persona` extension (or a field it feeds) fails validation."""


class CardReferenceError(CardValidationError):
    """The look's `reference_image` names no usable image (no such asset or file, not an
    image, a URL we do not fetch); the message names the card, the field and what was looked for."""


class CardQuotaError(CardError):
    """Storing the card would put the user folder over its card-count or total-size quota."""

    code = "quota"


class CardStorageError(CardError, OSError):
    """The card could not be written (disk full, read-only folder); what was there is intact."""

    code = "storage"


class CardLimitsError(PersonaError, ValueError):
    """A limit set in the environment is not a number in its range; the message names the variable."""

    code = "bad_setting"
