"""Regenerate the README screenshots: `.venv/bin/python docs/images/make_images.py`.

preview-contact-sheet.png: 12 labelled stills (actions × expressions, several looks);
preview-demo.gif: a few seconds of a wave → sit → clap → stand → walk, with a blend
interrupted mid-way, at 256×256 and 12 fps to keep the file small.
workflows/<template>.jpg: the thumbnail ComfyUI's template browser shows for each saved
workflow: the persona the template starts with, doing what it shows, with the template's
engine written under it (a LongLive template runs on a GPU with weights; the picture is
the CPU preview's, and says so); the scene template's shows its two cards side by side.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from comfyui_persona.persona.schema import ActionDirective
from comfyui_persona.video.backend import SessionSpec
from comfyui_persona.video.preview import PreviewRenderer

HERE = Path(__file__).resolve().parent

LOOKS = [
    {"hair_style": "long", "hair_colour": "#5a3825", "outfit_colour": "#4a7bd1"},
    {
        "hair_style": "curly",
        "hair_colour": "#1f1a17",
        "skin_colour": "#8d5a3b",
        "outfit_colour": "#e07a3f",
        "outfit_accent_colour": "#fff1d6",
        "background_colour": "#f3e6d8",
    },
    {
        "hair_style": "bun",
        "hair_colour": "#c9a36b",
        "outfit_colour": "#3e9e6e",
        "background_colour": "#e3f0e6",
    },
    {
        "hair_style": "ponytail",
        "hair_colour": "#b8442e",
        "skin_colour": "#f6d7c3",
        "outfit_colour": "#8a5cc7",
        "background_colour": "#ece6f5",
    },
]
NAMES = ["Ada", "Sol", "Juno", "Mira"]
STILLS = [
    ("wave", "smile"),
    ("nod", "laugh"),
    ("think", "thoughtful"),
    ("shrug", "confused"),
    ("point", "surprised"),
    ("sit", "shy"),
    ("clap", "excited"),
    ("walk", "wink"),
    ("dance", "excited"),
    ("bow", "smile"),
    ("turn_left", "sad"),
    ("shake_head", "angry"),
]


def _still(index: int, action: str, expression: str, size: int = 320) -> np.ndarray:
    r = PreviewRenderer(chunk_frames=8)
    look = index % len(LOOKS)
    r.start_session(SessionSpec("demo", NAMES[look], LOOKS[look], size, size, 16.0, seed=index))
    r.submit([ActionDirective(action=action, expression=expression, intensity=0.9)], seq=1)
    for _ in range(2):
        frame = r.next_chunk().frames[-1]
    image = Image.fromarray(frame)
    draw = ImageDraw.Draw(image)
    draw.rectangle([0, size - 26, size, size], fill=(255, 255, 255))
    draw.text((8, size - 21), f"{action} · {expression}", fill=(40, 40, 40))
    return np.asarray(image)


def contact_sheet() -> None:
    tiles = [_still(i, a, e) for i, (a, e) in enumerate(STILLS)]
    rows = [np.concatenate(tiles[i : i + 4], axis=1) for i in range(0, len(tiles), 4)]
    Image.fromarray(np.concatenate(rows, axis=0)).save(HERE / "preview-contact-sheet.png", optimize=True)


def demo_gif() -> None:
    fps = 12.0
    r = PreviewRenderer(chunk_frames=1)
    r.start_session(SessionSpec("ada", "Ada", LOOKS[0], 256, 256, fps, seed=3))

    def d(action: str, expression: str, duration_s: float | None = None) -> list[ActionDirective]:
        return [ActionDirective(action=action, expression=expression, intensity=0.9, duration_s=duration_s)]

    plan = {
        0: d("wave", "smile", 1.6),
        20: d("nod", "laugh", 1.0),
        24: d("sit", "shy", 1.2),  # nod interrupted
        44: d("clap", "excited", 1.5),
        64: d("stand", "surprised", 1.0),
        78: d("walk", "wink", 2.0),
        104: d("shrug", "confused", 1.4),
    }
    frames = []
    for i in range(128):
        if i in plan:
            r.submit(plan[i], seq=i)
        if i == 26:
            r.set_speech(None, 1200)
        frames.append(
            Image.fromarray(r.next_chunk().frames[0]).convert("P", palette=Image.ADAPTIVE, colors=96)
        )
    frames[0].save(
        HERE / "preview-demo.gif",
        save_all=True,
        append_images=frames[1:],
        duration=int(1000 / fps),
        loop=0,
        optimize=True,
    )


#: template → (action, expression, caption)
TEMPLATES = {
    "persona_preview_chat": ("wave", "smile", "CPU preview · no weights"),
    "persona_longlive_chat": ("dance", "excited", "LongLive · NVIDIA GPU (picture: CPU preview)"),
    "persona_longlive_sparse": ("clap", "laugh", "LongLive sparse attention · GPU (picture: CPU preview)"),
}


def thumbnails() -> None:
    folder = HERE.parents[1] / "workflows"
    for index, (name, (action, expression, caption)) in enumerate(TEMPLATES.items()):
        r = PreviewRenderer(chunk_frames=8)
        r.start_session(SessionSpec("mira", "Mira", LOOKS[index % len(LOOKS)], 320, 320, 16.0, seed=index))
        r.submit([ActionDirective(action=action, expression=expression, intensity=0.9)], seq=1)
        for _ in range(2):
            frame = r.next_chunk().frames[-1]
        image = Image.fromarray(frame)
        draw = ImageDraw.Draw(image)
        draw.rectangle([0, 294, 320, 320], fill=(255, 255, 255))
        draw.text((8, 299), caption, fill=(40, 40, 40))
        image.save(folder / f"{name}.jpg", quality=85, optimize=True)


def scene_thumbnail() -> None:
    """persona_scene_chat.jpg: the template's cast (Mira and Bjorn, their cards' looks), she
    waving, he seated, drawn by the scene preview renderer."""
    from comfyui_persona.persona.library import load_persona
    from comfyui_persona.video.preview import ScenePreviewRenderer

    specs = []
    for persona_id in ("mira", "bjorn"):
        persona = load_persona(persona_id)
        vocabulary = persona.vocabulary()
        specs.append(SessionSpec(persona.id, persona.name, persona.appearance.model_dump(mode="json"), 320, 320, 16.0,
                                 vocabulary={"actions": [e.model_dump(mode="json") for e in vocabulary.actions],
                                             "expressions": [e.model_dump(mode="json") for e in vocabulary.expressions]}))
    r = ScenePreviewRenderer(chunk_frames=8)
    r.start_scene(specs)
    r.submit([ActionDirective(action="wave", expression="smile", intensity=0.9, character="mira"),
              ActionDirective(action="sit", expression="neutral", intensity=0.6, character="bjorn")], seq=1)
    for _ in range(3):
        frame = r.next_chunk().frames[-1]
    image = Image.fromarray(frame)
    draw = ImageDraw.Draw(image)
    draw.rectangle([0, 294, 320, 320], fill=(255, 255, 255))
    draw.text((8, 299), "Scene: Mira & Bjorn · CPU preview", fill=(40, 40, 40))
    image.save(HERE.parents[1] / "workflows" / "persona_scene_chat.jpg", quality=85, optimize=True)


if __name__ == "__main__":
    contact_sheet()
    demo_gif()
    thumbnails()
    scene_thumbnail()
    for name in ("preview-contact-sheet.png", "preview-demo.gif"):
        print(name, (HERE / name).stat().st_size // 1024, "KiB")
