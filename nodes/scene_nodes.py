"""The Persona Scene node: 2–4 personas on screen together (issue 20), built in ComfyUI.

`PersonaScene` loads the cards of a scene (persona ids, left to right, as a scene file or
`hello.scene` lists them) and gives a SCENE that the conversation and stream nodes take where
they take a PERSONA (their `persona` input has both types): the first persona leads, each
addressed persona answers and acts, all are drawn side by side (persona/scene.py,
video/preview/ensemble.py).

Which cast a session plays (`Session.cast`, what the nodes build a scene's interpreter,
tracker and renderer from) is settled by `lead_persona`, called by each node that takes
`persona` before it touches the session:
- a host that asked for a scene (`hello.scene`: the Persona tab streaming a canvas that holds
  this node sends its personas) has set the cast already, and it stays;
- a streamed session without one takes the graph's scene on first use;
- a queued Run (nobody streams the session) plays what its graph says, run after run: a scene
  with other personas, or a plain card after a scene, starts the session's character state
  and conversation afresh (the renderer restarts on its own: its key holds the cast);
- without a cast, another card than the one the session's character state and conversation
  were built for (the Card Loader switched, or the card file was edited) starts them afresh
  too: the new card's vocabulary applies at once.

Bad input is refused twice, with the same words: at validation (`VALIDATE_INPUTS`, so ComfyUI
refuses the prompt and marks the node before anything runs) and when the node runs (the
headless runner has no validation hook).
"""

from __future__ import annotations

import contextlib
import json
import re
from typing import Any

from ..errors import PersonaError
from .types import SCENE, SceneValue

__all__ = ["MAX_SCENE", "MIN_SCENE", "PersonaScene", "SceneInputError", "cast_ids", "lead_persona"]

#: A scene node's cast size: two at least (one persona is the Card Loader's job), at most
#: what the preview draws side by side (persona.scene.MAX_CAST).
MIN_SCENE = 2
MAX_SCENE = 4
_SEPARATORS = re.compile(r"[\s,;]+")


class SceneInputError(PersonaError, ValueError):
    """The scene node's personas cannot make a scene: too few or too many, a repeated one, an
    unknown one, or text that is not a persona id."""

    code = "bad_scene"


def _parse(text: str) -> list[str]:
    """Persona ids from the node's text: "mira, bjorn" (commas, semicolons or spaces between
    ids), or a scene file's JSON object (`{"personas": [...], "layout": "side_by_side"}`)."""
    text = text.strip()
    if text.startswith("{"):
        from ..persona.scene import Scene

        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise SceneInputError(f"the scene is not valid JSON: {exc.msg} at character {exc.pos}") from None
        if not isinstance(data, dict) or not isinstance(data.get("personas"), list):
            raise SceneInputError('a scene file is an object with "personas": a list of persona ids')
        layout = data.get("layout", "side_by_side")
        if layout != Scene.model_fields["layout"].default:
            raise SceneInputError(f"unknown layout {str(layout)[:40]!r}; the only layout is 'side_by_side'")
        if set(data) - {"personas", "layout"}:
            raise SceneInputError(f"a scene file has only personas and layout; got {', '.join(sorted(map(str, data)))}")
        return [str(item) for item in data["personas"]]
    return [item for item in _SEPARATORS.split(text) if item]


def cast_ids(text: str, known: list[str] | None = None) -> tuple[str, ...]:
    """The scene's persona ids, checked: 2–4, each a known persona id, none twice.
    `known`: the library's ids (default: the persona library the Card Loader lists)."""
    from ..persona.scene import cast_problem

    ids = _parse(text)
    if not MIN_SCENE <= len(ids) <= MAX_SCENE:
        listed = f" ({', '.join(ids)[:200]})" if ids else ""
        hint = "; for one persona use Persona Card Loader" if len(ids) == 1 else ""
        raise SceneInputError(f"a scene holds {MIN_SCENE} to {MAX_SCENE} personas; got {len(ids)}{listed}{hint}")
    problem = cast_problem(ids)
    if problem:
        raise SceneInputError(problem)
    if known is None:
        from ..persona.library import PersonaLibrary

        known = PersonaLibrary.default().ids()
    unknown = [p for p in ids if p not in known]
    if unknown:
        raise SceneInputError(f"unknown persona{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))} "
                              f"in the scene; known: {', '.join(known)}")
    return tuple(ids)


class PersonaScene:
    """Loads the cards of a scene; cached, since the cast does not change per turn."""

    DESCRIPTION = ("A scene of 2 to 4 personas on screen together, left to right: connect it where a "
                   "persona goes (turn, interpreter, state tracker, preview renderer). Address them by name "
                   "(\"Mira, wave; Bjorn, sit down\") or all at once (\"everyone clap\").")
    CATEGORY = "persona/conversation"
    RETURN_TYPES = (SCENE,)
    RETURN_NAMES = ("scene",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {
            "required": {
                "personas": ("STRING", {
                    "default": "mira, bjorn",
                    "tooltip": "Persona ids, left to right, 2 to 4, each once (built-ins or cards in the persona "
                    "folder), separated by commas; or a scene file's JSON ({\"personas\": [...], \"layout\": "
                    "\"side_by_side\"}). The first leads: it performs what names nobody.",
                }),
            }
        }

    @classmethod
    def VALIDATE_INPUTS(cls, personas: Any = None) -> bool | str:
        """ComfyUI's validation hook: True, or the message it shows on the node (a linked
        `personas` arrives only at run time: checked then)."""
        if not isinstance(personas, str):
            return True
        try:
            cast_ids(personas)
        except SceneInputError as exc:
            return str(exc)
        return True

    @classmethod
    def IS_CHANGED(cls, personas: str = "", **_: Any) -> Any:
        try:
            return cards_fingerprint(cast_ids(personas))
        except SceneInputError:
            return personas  # refused by VALIDATE_INPUTS, and by `load` when linked

    def load(self, personas: str) -> tuple:
        from ..persona.library import load_persona

        return (SceneValue(tuple(load_persona(persona_id) for persona_id in cast_ids(personas))),)


def cards_fingerprint(persona_ids) -> str:
    """The ids plus a hash of each card as loaded now: a loader node's `IS_CHANGED`, so an
    edited card file reaches the graph on the next Run (the library re-reads a changed file)
    while an unchanged one stays cached. A card that fails to load counts by its id alone:
    `load` reports it."""
    import hashlib

    from ..persona.cards import CardError
    from ..persona.library import load_persona

    digest = hashlib.sha256()
    for persona_id in persona_ids:
        digest.update(persona_id.encode("utf-8", "surrogatepass") + b"\0")
        with contextlib.suppress(CardError, KeyError):
            digest.update(load_persona(persona_id).model_dump_json().encode())
    return digest.hexdigest()


def lead_persona(value: Any, session) -> Any:
    """The persona a node works for (a scene's lead), with the session's cast settled from
    `value` (a Persona or a `SceneValue`) as the module docstring says."""
    wanted = value.cast if isinstance(value, SceneValue) else ()
    with session.lock:
        current = tuple(p.id for p in session.cast)
        if session.streamed:
            if not current and wanted:
                _recast(session, wanted)
        elif current != tuple(p.id for p in wanted):
            _recast(session, wanted)
        if not session.cast and not isinstance(value, SceneValue):
            if session.card is not None and not _same_character(session.card, value):
                _recast(session, ())  # the Card Loader switched persona (or the card was edited)
            session.card = value
        cast = session.cast
    if not isinstance(value, SceneValue):
        return value  # a card as before (the Card Loader's, its reference image and all)
    return cast[0] if cast else value.lead


def _same_character(a, b) -> bool:
    """The same card for the conversation and the character state: the look (a reference photo
    connected to the Card Loader) restarts only the renderer, not the chat."""
    if a is b:  # every tick of a streamed session: the Card Loader's cached output, unchanged
        return True
    return a.id == b.id and a.model_dump(exclude={"appearance"}) == b.model_dump(exclude={"appearance"})


def _recast(session, cast: tuple) -> None:
    """A new cast: the character state and the conversation start afresh (under the lock)."""
    from .runtime import TrackerMemory

    session.cast = tuple(cast)
    session.card = None
    session.scene_chat = None
    session.tracker = None
    session.tracker_memory = TrackerMemory()
    session.conversation = None
