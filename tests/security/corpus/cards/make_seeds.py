"""Writes the fuzz target's seed cards into seeds/ (run once; the files are committed).

Small, valid cards of every container and spec the readers take, so mutations start from
inputs that reach deep into each reader: V1/V2/V3 JSON, a PNG card (both chunks), a CHARX
with an icon, a reference asset and another tool's module. Usage:
`.venv/bin/python tests/security/corpus/cards/make_seeds.py`.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

from PIL import Image

from comfyui_persona.persona.card import Appearance, Persona
from comfyui_persona.persona.cards import dump_card

SEEDS = Path(__file__).resolve().parent / "seeds"


def _png(colour: tuple[int, int, int], size: tuple[int, int] = (4, 3)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


def main() -> None:
    SEEDS.mkdir(exist_ok=True)
    persona = Persona(
        id="seed", name="Seed {{char}}", description="A seed card.", first_message="Hi {{user}}.",
        appearance=Appearance(reference_image="ccdefault:"),
    )
    icon = {"assets/icon/images/main.png": _png((200, 30, 30))}
    (SEEDS / "v3.json").write_bytes(dump_card(persona.model_copy(update={"appearance": Appearance()}), "json"))
    (SEEDS / "card.png").write_bytes(dump_card(persona, "png", icon))
    (SEEDS / "card.charx").write_bytes(dump_card(persona, "charx", icon))
    (SEEDS / "v1.json").write_text(json.dumps({"name": "Old", "description": "V1 fields at the root", "first_mes": "Yo"}))
    v2 = {
        "spec": "chara_card_v2", "spec_version": "2.0",
        "data": {"name": "Two", "alternate_greetings": ["a"], "character_book": {"entries": [{"keys": ["k"], "content": "c"}]},
                 "extensions": {"comfyui_persona": {"voice": {"engine": "espeak", "voice": "en-us"}, "allowed_actions": ["wave"]}}},
    }
    (SEEDS / "v2.json").write_text(json.dumps(v2))
    buffer = io.BytesIO()
    card = {"spec": "chara_card_v3", "spec_version": "3.0", "data": {
        "name": "Risu", "assets": [
            {"type": "icon", "uri": "embeded://assets/icon/images/a.png", "name": "main", "ext": "png"},
            {"type": "x-face", "uri": "embeded://assets/other/images/face.png", "name": "face", "ext": "png"},
        ], "extensions": {"comfyui_persona": {"appearance": {"reference_image": "face"}}}}}
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("card.json", json.dumps(card))
        archive.writestr("assets/icon/images/a.png", _png((10, 200, 10)))
        archive.writestr("assets/other/images/face.png", _png((10, 10, 200), (8, 8)))
        archive.writestr("module.risum", b"\x00\x01other tool's data")
    (SEEDS / "risu.charx").write_bytes(buffer.getvalue())


if __name__ == "__main__":
    main()
