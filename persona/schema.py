"""The contract between the conversation side and the video side.

`ActionDirective` is the only structure that crosses from `persona/` to `video/`
(see ARCHITECTURE.md). It mirrors `directive.schema.json` field for field; a test
compares `ActionDirective.model_json_schema()` with that file so the two never drift.
Version 1.1 adds one optional field, `character` (who performs it in a scene of several
personas, `persona/scene.py`); a v1 payload is a valid 1.1 payload meaning the same.

The core vocabulary lives here as data, not code, because both sides need it: the
interpreter matches user text against `synonyms`, the state tracker reads poses and
durations, the preview renderer keys its keyframes on the names and the LongLive prompt
composer uses `phrase`. Personas may add actions and expressions of their own
(`VocabularyEntry` is public for that); the core ones always work.

This module must stay cheap to import: stdlib and pydantic only.
"""

from __future__ import annotations

from enum import Enum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_serializer

__all__ = [
    "CORE_ACTIONS",
    "CORE_EXPRESSIONS",
    "ActionDirective",
    "Activity",
    "CharacterState",
    "Pose",
    "Vocabulary",
    "VocabularyEntry",
    "core_vocabulary",
]

#: Longest dialogue a directive may carry (directive.schema.json `dialogue.maxLength`).
MAX_DIALOGUE_CHARS = 2000
#: Longest duration a directive may ask for, in seconds (`duration_s.maximum`).
MAX_DURATION_S = 60.0

_NAME_PATTERN = r"^[a-z][a-z0-9_]{0,47}$"
#: A persona's id (cards, scenes, `ActionDirective.character`).
PERSONA_ID_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"


class ActionDirective(BaseModel):
    """What the persona does next: one action, one expression, optional spoken line."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        title="ActionDirective",
        json_schema_extra={
            "description": (
                "What the persona does next. The only structure that crosses from the "
                "conversation side to the video side."
            )
        },
    )

    action: str = Field(
        description="Core vocabulary or a persona's own action. 'idle' means no new action "
        "(keep the current pose).",
        examples=["idle", "wave", "nod", "sit"],
    )
    expression: str = Field(
        description="Core vocabulary or a persona's own expression.",
        examples=["neutral", "smile", "surprised"],
    )
    dialogue: str = Field(default="", max_length=MAX_DIALOGUE_CHARS)
    intensity: Annotated[float, Field(ge=0.0, le=1.0)]
    duration_s: Annotated[float | None, Field(ge=0.0, le=MAX_DURATION_S)] = None
    character: Annotated[str | None, Field(pattern=PERSONA_ID_PATTERN)] = Field(
        default=None,
        description="v1.1: the persona of the scene who performs it (its id); absent or null: the "
        "scene's first persona, so every v1 payload means what it meant.",
    )

    @model_serializer(mode="wrap")
    def _v1_shape(self, handler):
        """Without a character the directive serialises exactly as v1 did (no `character` key),
        so a v1 client of a one-persona scene sees no difference on the wire."""
        data = handler(self)
        if isinstance(data, dict) and data.get("character") is None:
            data.pop("character", None)
        return data


class Pose(str, Enum):
    """Body posture the state tracker reasons about (the pose graph's nodes)."""

    STANDING = "standing"
    SITTING = "sitting"
    WALKING = "walking"


class Activity(str, Enum):
    """What the character is doing right now, as the `state` message reports it."""

    IDLE = "idle"
    ACTING = "acting"
    TRANSITIONING = "transitioning"


class CharacterState(BaseModel):
    """The character's state as PROTOCOL.md's `state` message carries it."""

    model_config = ConfigDict(extra="forbid")

    pose: Pose = Pose.STANDING
    action: str = "idle"
    expression: str = "neutral"
    activity: Activity = Activity.IDLE
    speaking: bool = False
    since_ms: Annotated[int, Field(ge=0)] = 0


class VocabularyEntry(BaseModel):
    """One action or expression: how people say it, how long it lasts, how to draw it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=_NAME_PATTERN)
    description: str
    synonyms: tuple[str, ...] = ()
    default_duration_s: Annotated[float, Field(ge=0.0, le=MAX_DURATION_S)] = 2.0
    phrase: str = Field(description="Text the video side puts in its prompt.")
    # Pose graph data (actions only): the poses it can start from, the pose it leaves.
    from_poses: tuple[Pose, ...] = (Pose.STANDING, Pose.SITTING)
    pose_after: Pose | None = None


class Vocabulary(BaseModel):
    """The actions and expressions a persona can perform (core plus its own)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    actions: tuple[VocabularyEntry, ...]
    expressions: tuple[VocabularyEntry, ...]

    def action(self, name: str) -> VocabularyEntry:
        return _find(self.actions, name, "action")

    def expression(self, name: str) -> VocabularyEntry:
        return _find(self.expressions, name, "expression")

    @property
    def action_names(self) -> list[str]:
        return [entry.name for entry in self.actions]

    @property
    def expression_names(self) -> list[str]:
        return [entry.name for entry in self.expressions]

    def extended(
        self,
        actions: tuple[VocabularyEntry, ...] = (),
        expressions: tuple[VocabularyEntry, ...] = (),
        allowed_actions: tuple[str, ...] | None = None,
    ) -> Vocabulary:
        """This vocabulary plus a persona's own words, optionally limited to `allowed_actions`.

        `idle` is always kept: it is how any persona returns to rest.
        """
        merged_actions = _merge(self.actions, actions)
        if allowed_actions is not None:
            keep = set(allowed_actions) | {"idle"}
            unknown = keep - {entry.name for entry in merged_actions}
            if unknown:
                raise ValueError(f"allowed_actions names unknown actions: {sorted(unknown)}")
            merged_actions = tuple(entry for entry in merged_actions if entry.name in keep)
        return Vocabulary(actions=merged_actions, expressions=_merge(self.expressions, expressions))


def _find(entries: tuple[VocabularyEntry, ...], name: str, kind: str) -> VocabularyEntry:
    for entry in entries:
        if entry.name == name:
            return entry
    known = ", ".join(entry.name for entry in entries)
    raise KeyError(f"unknown {kind} {name!r}; known: {known}")


def _merge(
    base: tuple[VocabularyEntry, ...], extra: tuple[VocabularyEntry, ...]
) -> tuple[VocabularyEntry, ...]:
    by_name = {entry.name: entry for entry in base}
    for entry in extra:
        by_name[entry.name] = entry
    return tuple(by_name.values())


_S, _T, _W = Pose.STANDING, Pose.SITTING, Pose.WALKING

CORE_ACTIONS: tuple[VocabularyEntry, ...] = (
    VocabularyEntry(
        name="idle",
        description="No new action: rest in the current pose, breathing and blinking.",
        synonyms=("relax", "rest", "stay still", "do nothing", "chill", "stop", "calm down", "at ease"),
        default_duration_s=0.0,
        phrase="standing relaxed, breathing calmly",
        from_poses=(_S, _T, _W),
    ),
    VocabularyEntry(
        name="wave",
        description="Raise a hand and wave it side to side, a greeting or goodbye.",
        synonyms=("wave", "say hi", "say hello", "greet", "wave hello", "wave goodbye", "say bye", "hi", "hello", "bye"),
        default_duration_s=2.0,
        phrase="waving one hand in greeting",
    ),
    VocabularyEntry(
        name="nod",
        description="Tilt the head down and up, agreeing.",
        synonyms=("nod", "agree", "say yes", "nod your head", "yes"),
        default_duration_s=1.5,
        phrase="nodding the head in agreement",
    ),
    VocabularyEntry(
        name="shake_head",
        description="Turn the head left and right, disagreeing.",
        synonyms=("shake your head", "shake head", "disagree", "say no", "headshake", "no"),
        default_duration_s=1.5,
        phrase="shaking the head from side to side",
    ),
    VocabularyEntry(
        name="sit",
        description="Sit down on a chair or the ground and stay seated.",
        synonyms=("sit", "sit down", "take a seat", "have a seat", "be seated"),
        default_duration_s=1.5,
        phrase="sitting down on a chair",
        from_poses=(_S,),
        pose_after=_T,
    ),
    VocabularyEntry(
        name="stand",
        description="Get up and stand upright.",
        synonyms=("stand", "stand up", "get up", "rise", "on your feet"),
        default_duration_s=1.5,
        phrase="standing up straight",
        from_poses=(_S, _T),
        pose_after=_S,
    ),
    VocabularyEntry(
        name="turn_left",
        description="Turn the body to the character's left.",
        synonyms=("turn left", "face left", "look left", "rotate left"),
        default_duration_s=1.5,
        phrase="turning the body to the left",
    ),
    VocabularyEntry(
        name="turn_right",
        description="Turn the body to the character's right.",
        synonyms=("turn right", "face right", "look right", "rotate right"),
        default_duration_s=1.5,
        phrase="turning the body to the right",
    ),
    VocabularyEntry(
        name="walk",
        description="Walk a few steps through the scene, then stop standing.",
        synonyms=("walk", "walk around", "take a walk", "stroll", "step forward", "move", "go for a walk", "pace"),
        default_duration_s=4.0,
        phrase="walking forward with natural steps",
        from_poses=(_S, _W),
        pose_after=_S,
    ),
    VocabularyEntry(
        name="point",
        description="Point with one arm extended.",
        synonyms=("point", "point at", "point to", "show me", "indicate"),
        default_duration_s=2.0,
        phrase="pointing forward with an outstretched arm",
    ),
    VocabularyEntry(
        name="shrug",
        description="Lift both shoulders with open palms: not knowing.",
        synonyms=("shrug", "shrug your shoulders", "who knows", "dunno"),
        default_duration_s=1.5,
        phrase="shrugging both shoulders with open palms",
    ),
    VocabularyEntry(
        name="bow",
        description="Bend forward at the waist, a polite greeting or thanks.",
        synonyms=("bow", "take a bow", "curtsy", "bow down"),
        default_duration_s=2.0,
        phrase="bowing politely from the waist",
        from_poses=(_S,),
    ),
    VocabularyEntry(
        name="clap",
        description="Clap the hands together several times.",
        synonyms=("clap", "applaud", "clap your hands", "give a round of applause", "bravo"),
        default_duration_s=2.0,
        phrase="clapping both hands together",
    ),
    VocabularyEntry(
        name="think",
        description="Hand to the chin, looking up, pondering.",
        synonyms=("think", "ponder", "consider", "think about it", "contemplate", "hmm", "wonder"),
        default_duration_s=3.0,
        phrase="thinking with a hand on the chin",
    ),
    VocabularyEntry(
        name="dance",
        description="Sway and move arms to a beat.",
        synonyms=("dance", "boogie", "bust a move", "groove", "dance for me", "party"),
        default_duration_s=5.0,
        phrase="dancing joyfully to music",
        from_poses=(_S,),
    ),
    VocabularyEntry(
        name="look_around",
        description="Turn the head to look around the surroundings.",
        synonyms=("look around", "look about", "scan the room", "glance around", "search", "explore"),
        default_duration_s=3.0,
        phrase="looking around curiously",
    ),
)

CORE_EXPRESSIONS: tuple[VocabularyEntry, ...] = (
    VocabularyEntry(
        name="neutral",
        description="A calm, relaxed face.",
        synonyms=("neutral", "calm", "straight face", "blank", "serious", "poker face", "relaxed"),
        default_duration_s=0.0,
        phrase="with a calm neutral expression",
    ),
    VocabularyEntry(
        name="smile",
        description="A warm closed-mouth smile.",
        synonyms=("smile", "grin", "happy", "beam", "look happy", "cheerful", "glad", "pleased"),
        default_duration_s=2.5,
        phrase="smiling warmly",
    ),
    VocabularyEntry(
        name="laugh",
        description="Open-mouthed laughter, eyes squeezed.",
        synonyms=("laugh", "giggle", "chuckle", "lol", "haha", "crack up", "funny"),
        default_duration_s=2.5,
        phrase="laughing out loud",
    ),
    VocabularyEntry(
        name="frown",
        description="Brows drawn together, mouth turned down: displeasure.",
        synonyms=("frown", "scowl", "grimace", "displeased", "annoyed", "disapprove"),
        default_duration_s=2.5,
        phrase="frowning with furrowed brows",
    ),
    VocabularyEntry(
        name="sad",
        description="Drooping brows and mouth, downcast eyes.",
        synonyms=("sad", "unhappy", "cry", "upset", "down", "depressed", "gloomy", "sorrowful", "heartbroken"),
        default_duration_s=3.0,
        phrase="looking sad with downcast eyes",
    ),
    VocabularyEntry(
        name="angry",
        description="Lowered brows, tight mouth: anger.",
        synonyms=("angry", "mad", "furious", "rage", "irritated", "livid", "cross"),
        default_duration_s=2.5,
        phrase="looking angry",
    ),
    VocabularyEntry(
        name="surprised",
        description="Raised brows, wide eyes, open mouth.",
        synonyms=("surprised", "shocked", "amazed", "astonished", "wow", "gasp", "startled", "stunned"),
        default_duration_s=2.0,
        phrase="looking surprised with wide eyes",
    ),
    VocabularyEntry(
        name="confused",
        description="One brow up, head tilted: puzzlement.",
        synonyms=("confused", "puzzled", "baffled", "perplexed", "lost", "huh"),
        default_duration_s=2.5,
        phrase="looking confused and puzzled",
    ),
    VocabularyEntry(
        name="thoughtful",
        description="Eyes up and to the side, lips pressed: considering.",
        synonyms=("thoughtful", "pensive", "contemplative", "reflective", "curious"),
        default_duration_s=3.0,
        phrase="with a thoughtful expression",
    ),
    VocabularyEntry(
        name="wink",
        description="One eye closed with a small smile.",
        synonyms=("wink", "winking", "cheeky", "playful"),
        default_duration_s=1.0,
        phrase="winking playfully",
    ),
    VocabularyEntry(
        name="shy",
        description="Eyes down, small smile, blushing.",
        synonyms=("shy", "bashful", "blush", "embarrassed", "timid", "coy"),
        default_duration_s=2.5,
        phrase="looking shy and blushing",
    ),
    VocabularyEntry(
        name="excited",
        description="Big smile, raised brows, bright eyes: enthusiasm.",
        synonyms=("excited", "thrilled", "enthusiastic", "pumped", "hyped", "eager", "overjoyed", "ecstatic"),
        default_duration_s=2.5,
        phrase="looking excited and enthusiastic",
    ),
)


def core_vocabulary() -> Vocabulary:
    """The 16 core actions and 12 core expressions every persona supports."""
    return Vocabulary(actions=CORE_ACTIONS, expressions=CORE_EXPRESSIONS)
