"""Card object ↔ `Persona`: the Character Card V2/V3 fields and our own extension.

Our fields live under `data.extensions.comfyui_persona`; a card from another tool without
them maps with defaults. The whole card object stays on `Persona.card`, so writing a
persona back puts our fields over the original and keeps every field we do not model
(lorebooks, alternate greetings, other tools' extensions, unknown future fields).
"""

from __future__ import annotations

import copy
import hashlib
import re
from typing import Any, Literal

from pydantic import ValidationError

from ..card import Appearance, Persona
from ..text import transliterate
from .errors import CardSpecError, CardValidationError

__all__ = [
    "EXTENSION_KEY",
    "EXTENSION_VERSION",
    "REFERENCE_FIELD",
    "CardSpec",
    "card_to_persona",
    "normalise",
    "persona_to_card",
    "slug",
]

#: Where our fields live inside `data.extensions`.
EXTENSION_KEY = "comfyui_persona"
#: Version of our extension's layout (written, checked on read: newer major → error).
EXTENSION_VERSION = 1
#: Where a look's reference image sits in a card (named in `CardReferenceError` messages).
REFERENCE_FIELD = f"data.extensions.{EXTENSION_KEY}.appearance.reference_image"

CardSpec = Literal["v2", "v3"]

_SPECS = {"chara_card_v2": "2.0", "chara_card_v3": "3.0"}
_TEXT_FIELDS = ("name", "description", "personality", "scenario", "first_mes", "mes_example")
_ID_CLEAN = re.compile(r"[^a-z0-9_-]+")


def slug(text: str) -> str:
    """A file-safe id from a name: transliterated first, so "José" is `jose`, not `jos-`."""
    slug = _ID_CLEAN.sub("-", transliterate(text).lower()).strip("-_")[:64].rstrip("-_")
    return slug if slug and slug[0].isalnum() else ""


def _default_appearance(name: str, card_data: dict[str, Any]) -> Appearance:
    """A look for a card from another tool: varied by its name so two imports differ."""
    palette_hair = ["#2b1d14", "#6b3e1f", "#c9a25a", "#a33b20", "#1c1c1c", "#8c8c8c"]
    palette_outfit = ["#4a7bd1", "#2e8b57", "#8e44ad", "#c0392b", "#d35400", "#16a085"]
    styles = ["short", "long", "ponytail", "curly", "bun"]
    digest = hashlib.sha256(name.encode("utf-8")).digest()
    visual = card_data.get("extensions", {}).get("visual_description")
    description = visual if isinstance(visual, str) and visual.strip() else f"{name}, a friendly young adult"
    return Appearance(
        description=description.strip()[:1000],
        hair_colour=palette_hair[digest[0] % len(palette_hair)],
        hair_style=styles[digest[1] % len(styles)],
        outfit_colour=palette_outfit[digest[2] % len(palette_outfit)],
    )


def normalise(card: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """(spec, data) of a V2/V3 card; a V1 card (fields at the root, no spec) reads as V2."""
    if "spec" not in card and "data" not in card and isinstance(card.get("name"), str):
        return "chara_card_v2", card  # V1: everything at the root
    spec = card.get("spec")
    if spec not in _SPECS:
        raise CardSpecError(
            f"card spec is {spec!r}; expected 'chara_card_v2' or 'chara_card_v3' (Character Card V2/V3)"
        )
    data = card.get("data")
    if not isinstance(data, dict):
        raise CardSpecError(f"{spec} card has no 'data' object (got {type(data).__name__})")
    return spec, data


def card_to_persona(card: dict[str, Any], *, fallback_id: str = "") -> Persona:
    """Our persona from a card object (which `Persona.card` keeps verbatim).

    The id is our extension's `id`, else a slug of the name, else `fallback_id`, else
    `card-` plus a hash of the name (names in scripts that do not slug to ASCII).
    """
    _, data = normalise(card)
    for key in _TEXT_FIELDS:
        if key in data and data[key] is not None and not isinstance(data[key], str):
            raise CardSpecError(f"card field data.{key} must be a string, got {type(data[key]).__name__}")
    name = (data.get("name") or "").strip()
    if not name:
        raise CardSpecError("card field data.name is missing or empty")
    extensions = data.get("extensions") or {}
    if not isinstance(extensions, dict):
        raise CardSpecError(f"card field data.extensions must be an object, got {type(extensions).__name__}")
    ours = extensions.get(EXTENSION_KEY) or {}
    if not isinstance(ours, dict):
        raise CardSpecError(f"data.extensions.{EXTENSION_KEY} must be an object, got {type(ours).__name__}")
    version = ours.get("version", EXTENSION_VERSION)
    if not isinstance(version, int) or version > EXTENSION_VERSION:
        raise CardValidationError(
            f"data.extensions.{EXTENSION_KEY}.version is {version!r}; this release reads up to {EXTENSION_VERSION}"
        )
    known = set(Persona.model_fields) - {
        "name",
        "description",
        "personality",
        "backstory",
        "first_message",
        "card",
    }
    fields: dict[str, Any] = {key: value for key, value in ours.items() if key in known}
    # A name of symbols alone slugs to nothing: a stable hash keeps ids distinct.
    fields.setdefault(
        "id", slug(name) or fallback_id or "card-" + hashlib.sha256(name.encode()).hexdigest()[:8]
    )
    if "appearance" not in fields:
        fields["appearance"] = _default_appearance(name, {"extensions": extensions})
    try:
        return Persona(
            name=name,
            description=data.get("description") or "",
            personality=data.get("personality") or "",
            backstory=data.get("scenario") or "",
            first_message=data.get("first_mes") or "",
            card=card,
            **fields,
        )
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise CardValidationError(
            f"card field {where} is invalid: {first['msg']} ({error.error_count()} problem(s) in all)"
        ) from None


def _extension(persona: Persona) -> dict[str, Any]:
    dumped = persona.model_dump(
        mode="json",
        include={
            "id",
            "appearance",
            "voice",
            "lines",
            "constraints",
            "allowed_actions",
            "extra_actions",
            "extra_expressions",
        },
    )
    # The card's own spelling (an asset name, a relative path), not the file it resolved to.
    dumped["appearance"]["reference_image"] = persona.appearance.card_reference()
    return {"version": EXTENSION_VERSION, **dumped}


def persona_to_card(persona: Persona, spec: CardSpec = "v3") -> dict[str, Any]:
    """The card object for `persona`: its original card with our fields written over it."""
    spec_name = "chara_card_v3" if spec == "v3" else "chara_card_v2"
    source = copy.deepcopy(persona.card)
    if source:
        _, data = normalise(source)
        if data is source:  # V1: fields at the root; keep them there and nest a copy
            data = copy.deepcopy(source)
        card = source
    else:
        card, data = {}, {}
    card["spec"] = spec_name
    card["spec_version"] = _SPECS[spec_name]
    data.update(
        name=persona.name,
        description=persona.description,
        personality=persona.personality,
        scenario=persona.backstory,
        first_mes=persona.first_message,
    )
    for key, default in (
        ("mes_example", ""),
        ("creator_notes", ""),
        ("system_prompt", ""),
        ("post_history_instructions", ""),
        ("alternate_greetings", []),
        ("tags", []),
        ("creator", ""),
        ("character_version", ""),
    ):
        data.setdefault(key, default)
    if spec == "v3":
        data.setdefault("group_only_greetings", [])
    extensions = data.get("extensions")
    extensions = dict(extensions) if isinstance(extensions, dict) else {}
    previous = extensions.get(EXTENSION_KEY)
    extensions[EXTENSION_KEY] = {**(previous if isinstance(previous, dict) else {}), **_extension(persona)}
    data["extensions"] = extensions
    card["data"] = data
    # Tools that mirror V1 fields at the root: keep the mirror in step with `data`.
    for root_key in ("name", "description", "personality", "scenario", "first_mes"):
        if root_key in card and isinstance(card[root_key], str):
            card[root_key] = data[root_key]
    return card

