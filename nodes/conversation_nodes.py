"""Conversation-side nodes: persona card, user turn, interpreter, manual directive.

Classic ComfyUI node API (no ComfyUI import). Per-turn nodes take a `turn` number:
- `> 0`: the headless runner sets it for every chat/action message, so two identical
  messages are still two turns, and a tick without a new message hits the cache;
- `0`: inside ComfyUI, every queued run is a new turn (`runtime.per_turn`: IS_CHANGED is
  new on every run, so ComfyUI never serves the turn from its cache);
- `-1`: "no message yet": the node passes on an empty plan (the headless runner's
  starting value, so a fresh session does nothing until the viewer speaks).
"""

from __future__ import annotations

import threading
from typing import Any

from .runtime import current_store, per_turn
from .scene_nodes import cards_fingerprint, lead_persona
from .types import DIRECTIVES, PERSONA, PERSONA_OR_SCENE, TURN, DirectivePlan, TurnValue

_SESSION_INPUT = (
    "STRING",
    {
        "default": "default",
        "tooltip": "Which session's conversation and character this run belongs to. The headless "
        "server fills it per viewer; in ComfyUI any name keeps its own history.",
    },
)
_TURN_INPUT = (
    "INT",
    {
        "default": 0,
        "min": -1,
        "max": 2**31 - 1,
        "tooltip": "Turn number. 0: every queued run is a new turn; -1: no message (do nothing). "
        "The headless server sets it per message so repeated identical messages still count.",
    },
)


def _persona_choices() -> list[str]:
    """Built-in ids plus the user's cards: the one library the page and CLI use
    (`PersonaLibrary.default()`), which follows its folder without re-reading it."""
    from ..persona.library import PersonaLibrary

    return PersonaLibrary.default().ids()


def _default_persona() -> str:
    from ..persona.library import DEFAULT_PERSONA_ID

    return DEFAULT_PERSONA_ID


def _conversation(session, persona):
    from ..persona.conversation import Conversation

    with session.lock:
        if session.conversation is None:
            session.conversation = Conversation(persona)
        return session.conversation


class PersonaCardLoader:
    """Loads a persona card (built-in id); cached, since the card does not change per turn."""

    DESCRIPTION = "Load a persona card: who the character is, how it looks, which actions it may do."
    CATEGORY = "persona/conversation"
    RETURN_TYPES = (PERSONA,)
    RETURN_NAMES = ("persona",)
    FUNCTION = "load"
    #: The headless server may override this input with `hello.persona`.
    HEADLESS_BINDING = {"persona": "persona_id"}

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {
            "required": {
                "persona_id": (
                    _persona_choices(),
                    {"default": _default_persona(), "tooltip": "Persona to load: a built-in or a card in the persona folder (PERSONA_DIR, else ~/.local/share/comfyui-persona/personas)."},
                ),
            },
            "optional": {
                "reference": ("IMAGE", {"tooltip": "A face photo (e.g. from Load Image) to anchor the persona on, "
                                        "instead of the card's own reference image (LongLive's identity)."}),
            },
        }

    def load(self, persona_id: str, reference=None) -> tuple:
        from ..persona.library import load_persona

        persona = load_persona(persona_id)
        if reference is not None:
            persona = _with_reference(persona, reference)
        return (persona,)

    @classmethod
    def IS_CHANGED(cls, persona_id: str, **_: Any) -> Any:
        """The same card keeps ComfyUI's cached persona, whose reference image lives in the card
        asset cache, which prunes what goes unused: looking the card up again here writes a
        pruned image back at the same path (`PersonaLibrary.get_card`), so the cached output
        stays valid. An edited card file is a new persona (`cards_fingerprint`)."""
        return cards_fingerprint((persona_id,))


def _with_reference(persona, image):
    """`persona` whose look's reference is `image` (the first of a ComfyUI IMAGE batch),
    written as a PNG to the card image cache (content-named, bounded, durable)."""
    import io

    import numpy as np
    from PIL import Image

    from ..persona.cards.assets import BytesAsset
    from ..persona.cards.cache import cache_asset

    array = image.detach().cpu().numpy() if hasattr(image, "detach") else np.asarray(image)
    array = array[0] if array.ndim == 4 else array
    if array.ndim != 3 or array.shape[-1] not in (3, 4):
        raise ValueError(f"reference must be an RGB image; got shape {tuple(array.shape)}")
    rgb = (np.clip(array[..., :3], 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG")
    path = cache_asset(BytesAsset(buffer.getvalue()), ".png", f"{persona.id}: reference input")
    appearance = persona.appearance.with_resolved_reference(str(path), str(path))
    return persona.model_copy(update={"appearance": appearance})


class PersonaConversationTurn:
    """Appends one user utterance to the session's history and passes it on in context."""

    DESCRIPTION = "One user utterance: added to the session's conversation history, sent on with it."
    CATEGORY = "persona/conversation"
    RETURN_TYPES = (TURN,)
    RETURN_NAMES = ("turn",)
    FUNCTION = "turn"
    NOT_IDEMPOTENT = True
    #: The headless server binds a `chat` message's text and turn number here.
    HEADLESS_BINDING = {"chat": "text"}

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {
            "required": {
                "persona": (PERSONA_OR_SCENE, {"tooltip": "The persona the user is talking to, or a scene "
                                                "(Persona Scene: several personas, addressed by name)."}),
                "text": (
                    "STRING",
                    {"default": "", "multiline": True, "tooltip": "What the user says (≤ 4000 characters)."},
                ),
                "session_id": _SESSION_INPUT,
                "turn": _TURN_INPUT,
            }
        }

    @classmethod
    def IS_CHANGED(cls, turn: int = 0, **_: Any) -> Any:
        return per_turn(turn)

    def turn(self, persona, text: str, session_id: str, turn: int) -> tuple:
        session = current_store().get(session_id)
        persona = lead_persona(persona, session)
        conversation = _conversation(session, persona)
        if turn < 0 or not text.strip():
            return (TurnValue(session_id=session_id, turn=0, text="", history=tuple(conversation.history)),)
        with session.lock:
            done = session.turn_memo.get("user", turn) if turn > 0 else None
            if done is not None:  # this turn ran before (a host's cache was evicted): not twice
                return (done,)
            history = tuple(conversation.history)
            number = turn or session.next_turn()
            session.note_turn(number)
            conversation.add_user(text)
            value = TurnValue(session_id=session_id, turn=number, text=text, history=history)
            session.turn_memo.put("user", number, value)
        return (value,)


class PersonaInterpreter:
    """Maps the user's turn to directives and an in-character reply (embedded rules or an LLM)."""

    DESCRIPTION = (
        "Interpret a user turn: an ordered list of action directives plus the persona's reply. "
        "Unsupported requests map to the closest supported action, or none."
    )
    CATEGORY = "persona/conversation"
    RETURN_TYPES = (DIRECTIVES, "STRING")
    RETURN_NAMES = ("directives", "reply")
    FUNCTION = "interpret"

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {
            "required": {
                "persona": (PERSONA_OR_SCENE, {"tooltip": "The persona whose vocabulary and lines are used "
                                                "(a scene: each addressed persona's own)."}),
                "turn": (TURN, {"tooltip": "The user turn to interpret."}),
                "backend": (
                    _interpreter_choices(),
                    {"default": "embedded", "tooltip": "Interpreter backend: embedded (CPU, no weights) or an LLM."},
                ),
            },
            "optional": {
                "options": (
                    "STRING",
                    {
                        "default": "",
                        "multiline": True,
                        "tooltip": "Backend options, one KEY=VALUE per line (the CLI's --option). openai: "
                        "base_url=http://127.0.0.1:8080/v1, model=..., api_key=..., timeout=20; llamacpp: "
                        "model_path=/path/model.gguf; embedded: use_embedding=off. A failing LLM falls "
                        "back to embedded for that turn.",
                    },
                ),
            },
        }

    def interpret(self, persona, turn: TurnValue, backend: str, options: str = "") -> tuple:
        if turn.turn == 0 or not turn.text.strip():
            return (DirectivePlan(turn=0), "")
        from ..persona.interpreter.base import InterpretRequest

        session = current_store().get(turn.session_id)
        persona = lead_persona(persona, session)
        done = session.turn_memo.get("interpretation", turn.turn)
        if done is not None:  # interpreted before (a host's cache was evicted): no second reply
            return done
        if session.cast:
            return _scene_turn(session, turn, _interpreter(backend, options))
        request = InterpretRequest(
            text=turn.text, persona=persona, state=_current_state(session), history=turn.history
        )
        conversation = _conversation(session, persona)
        interpretation = _stream_interpretation(_interpreter(backend, options), request, session, turn.turn,
                                                before_done=lambda final: conversation.add_persona(final.reply))
        plan = DirectivePlan(
            turn=turn.turn, directives=tuple(interpretation.directives), source="chat", reply=interpretation.reply
        )
        session.turn_memo.put("interpretation", turn.turn, (plan, interpretation.reply))
        return (plan, interpretation.reply)


def _scene_turn(session, turn: TurnValue, interpreter) -> tuple:
    """A scene's turn (persona.scene.SceneChat): each addressed persona's directives, stamped
    with its id, then each speaker's line in order (`on_cast_reply`); the reply output joins
    the lines as "Name: line"."""
    from ..persona.scene import SceneChat

    with session.lock:
        if session.scene_chat is None:
            session.scene_chat = SceneChat(interpreter, session.cast)
        chat = session.scene_chat
        tracker = session.tracker
        states = tracker.states_at(session.now_ms()) if hasattr(tracker, "states_at") else {}
    response = chat.respond(turn.text, states, turn.history)
    session.listener.on_directives(turn.turn, session.as_performed(response.directives))
    on_line = getattr(session.listener, "on_cast_reply", None)
    names = {p.id: p.name for p in session.cast}
    reply = "\n".join(f"{names[who]}: {line}" for who, line in response.replies)
    _conversation(session, session.cast[0]).add_persona(reply)  # before the lines go out (see below)
    for who, line in response.replies:
        if on_line is not None:
            on_line(turn.turn, who, line)
    if on_line is None:  # a host that knows no scenes gets the lines as one reply
        session.listener.on_reply(turn.turn, reply, True)
    plan = DirectivePlan(turn=turn.turn, directives=tuple(response.directives), source="chat", reply=reply)
    session.turn_memo.put("interpretation", turn.turn, (plan, reply))
    return (plan, reply)


def _interpreter_choices() -> list[str]:
    from ..persona.interpreter import BACKENDS

    return list(BACKENDS)


_INTERPRETERS: dict[str, Any] = {}
_INTERPRETERS_LOCK = threading.Lock()


def _interpreter(name: str, options: str = ""):
    """Interpreters are loaded once per process and option set (models are slow to load)."""
    from ..persona.interpreter import get_interpreter, parse_options

    parsed = parse_options(options)
    key = f"{name}\0" + "\0".join(f"{k}={v}" for k, v in sorted(parsed.items()))
    with _INTERPRETERS_LOCK:  # two sessions' first turns must not load the models twice
        if key not in _INTERPRETERS:
            _INTERPRETERS[key] = get_interpreter(name, **parsed)
        return _INTERPRETERS[key]


def _current_state(session):
    from ..persona.schema import CharacterState

    with session.lock:
        if session.tracker is None:
            return CharacterState()
        return session.tracker.state_at(session.now_ms())


def _stream_interpretation(interpreter, request, session, turn: int, before_done=None):
    """Run the interpreter, emitting `directives` then reply text to the session's host.

    PROTOCOL.md wants the directives before any reply text. A backend that yields its
    directives early (a list of ActionDirective before the text) streams for real; one
    that only yields them last has its partial text held back until then. `before_done(final)`
    runs before the last reply event: what a host saves on that event (the conversation, for
    a later resume) is then already there.

    A backend yields each new piece of the reply; a partial `reply` event carries the text so
    far (PROTOCOL.md), which the history, the speech lane and the pages build on. Before, each
    piece went out alone: the bubble showed one word at a time and only the last sentence was
    spoken.
    """
    from ..persona.interpreter.base import Interpretation

    so_far = ""
    held: list[str] = []  # the text so far at each piece not sent yet (no directives sent)
    sent_directives = False
    final: Interpretation | None = None
    for item in interpreter.stream_reply(request):
        if isinstance(item, Interpretation):
            final = item
        elif isinstance(item, list):
            session.listener.on_directives(turn, session.as_performed(item))
            sent_directives = True
        elif isinstance(item, str) and item:
            so_far += item
            if sent_directives:
                session.listener.on_reply(turn, so_far, False)
            else:
                held.append(so_far)
    assert final is not None, "stream_reply must end with an Interpretation"
    if not sent_directives:
        session.listener.on_directives(turn, session.as_performed(final.directives))
    for text in held:
        session.listener.on_reply(turn, text, False)
    if before_done is not None:
        before_done(final)
    session.listener.on_reply(turn, final.reply, True)
    return final


class PersonaDirective:
    """A hand-made directive (a quick-action button): bypasses the interpreter."""

    DESCRIPTION = "A manual action directive, e.g. a quick-action button: wave, sit, smile..."
    CATEGORY = "persona/conversation"
    RETURN_TYPES = (DIRECTIVES,)
    RETURN_NAMES = ("directives",)
    FUNCTION = "make"
    #: The headless server binds an `action` message's directive and turn number here.
    HEADLESS_BINDING = {"action": ("action", "expression", "intensity", "duration_s", "dialogue", "character")}

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        from ..persona.schema import CORE_ACTIONS, CORE_EXPRESSIONS

        return {
            "required": {
                "action": (
                    [entry.name for entry in CORE_ACTIONS],
                    {"default": "idle", "tooltip": "What to do (core vocabulary)."},
                ),
                "expression": (
                    [entry.name for entry in CORE_EXPRESSIONS],
                    {"default": "neutral", "tooltip": "The face to make while doing it."},
                ),
                "intensity": (
                    "FLOAT",
                    {"default": 0.6, "min": 0.0, "max": 1.0, "step": 0.05, "tooltip": "How strongly, 0..1."},
                ),
                "duration_s": (
                    "FLOAT",
                    {
                        "default": 0.0,
                        "min": 0.0,
                        "max": 60.0,
                        "step": 0.1,
                        "tooltip": "Seconds; 0 uses the action's default duration.",
                    },
                ),
                "dialogue": ("STRING", {"default": "", "tooltip": "Optional line to speak."}),
                "turn": _TURN_INPUT,
            },
            "optional": {
                "session_id": _SESSION_INPUT,
                "character": ("STRING", {"default": "", "tooltip": "In a scene of several personas: the id of "
                                         "the one who does it (empty: the scene's first)."}),
            },
        }

    @classmethod
    def IS_CHANGED(cls, turn: int = 0, **_: Any) -> Any:
        return per_turn(turn)

    def make(
        self,
        action: str,
        expression: str,
        intensity: float,
        duration_s: float,
        dialogue: str,
        turn: int,
        session_id: str = "default",
        character: str = "",
    ) -> tuple:
        from ..persona.schema import ActionDirective

        if turn < 0:
            return (DirectivePlan(turn=0, source="action"),)
        if not turn:
            # A ComfyUI run with no host-assigned turn: still a new turn for this session.
            turn = current_store().get(session_id).next_turn()
        directive = ActionDirective(
            action=action,
            expression=expression,
            intensity=intensity,
            duration_s=duration_s or None,
            dialogue=dialogue,
            character=character.strip() or None,
        )
        return (DirectivePlan(turn=turn, directives=(directive,), source="action"),)
