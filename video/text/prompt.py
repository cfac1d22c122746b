"""Directive → LongLive prompt text: who the persona is, what it does, how it looks doing it.

A prompt is built from fixed parts in a fixed order, so the same directive always gives the
same text (and so the same cached embedding):

    "<appearance>, <intensity word> <action phrase>, <expression phrase>[, <speaking cue>]. <scene>"

- appearance: the persona card's `look["description"]` (put first: Wan weights early tokens);
- action and expression phrases: `VocabularyEntry.phrase`, from the core vocabulary plus the
  persona's own words carried in `SessionSpec.vocabulary`;
- intensity: a word by band of `ActionDirective.intensity`, on the action (on the expression
  when the action is `idle`, and on nothing when both are at rest);
- speaking cue: while the persona talks, so the mouth moves;
- scene: a constant camera/framing sentence so that prompt switches change only the motion.
"""

from __future__ import annotations

from dataclasses import dataclass

from ...persona.schema import ActionDirective, Vocabulary, VocabularyEntry, core_vocabulary

__all__ = ["INTENSITY_BANDS", "PromptComposer", "intensity_word"]

#: (upper bound, word): the first band whose bound is above the intensity applies.
INTENSITY_BANDS: tuple[tuple[float, str], ...] = (
    (0.25, "slightly"),
    (0.6, ""),
    (0.85, "energetically"),
    (1.0 + 1e-9, "very energetically"),
)
SPEAKING_CUE = "talking, the mouth moving as they speak"
DEFAULT_APPEARANCE = "a friendly young adult"
DEFAULT_SCENE = "Medium shot, static camera, plain softly lit background."
REST_ACTION = "idle"
REST_EXPRESSION = "neutral"


def intensity_word(intensity: float) -> str:
    if not 0.0 <= intensity <= 1.0:
        raise ValueError(f"intensity must be in [0, 1], got {intensity}")
    for bound, word in INTENSITY_BANDS:
        if intensity < bound:
            return word
    return INTENSITY_BANDS[-1][1]


@dataclass(frozen=True)
class PromptComposer:
    """Composes prompts for one persona (one `SessionSpec`)."""

    appearance: str
    vocabulary: Vocabulary
    scene: str = DEFAULT_SCENE

    @classmethod
    def from_session(cls, spec, scene: str = DEFAULT_SCENE) -> PromptComposer:
        """From a `video.backend.SessionSpec`: its look and its extra vocabulary."""
        appearance = str((spec.look or {}).get("description") or "").strip() or DEFAULT_APPEARANCE
        words = spec.vocabulary or {}
        unknown = set(words) - {"actions", "expressions"}
        if unknown:
            raise ValueError(
                f"SessionSpec.vocabulary has unknown sections {sorted(unknown)}; expected actions, expressions"
            )
        vocab = core_vocabulary().extended(
            actions=tuple(_entry(e) for e in words.get("actions", ())),
            expressions=tuple(_entry(e) for e in words.get("expressions", ())),
        )
        return cls(appearance=appearance, vocabulary=vocab, scene=scene)

    def compose(self, directive: ActionDirective | None = None, speaking: bool = False) -> str:
        if directive is None:
            return self.compose_parts(REST_ACTION, REST_EXPRESSION, 0.5, speaking)
        return self.compose_parts(directive.action, directive.expression, directive.intensity, speaking)

    def compose_parts(self, action: str, expression: str, intensity: float, speaking: bool = False) -> str:
        """Raises KeyError naming the known words when `action` or `expression` is unknown."""
        action_phrase = self.vocabulary.action(action).phrase
        expression_phrase = self.vocabulary.expression(expression).phrase
        word = intensity_word(intensity)
        if word and action != REST_ACTION:
            action_phrase = f"{word} {action_phrase}"
        elif word and expression != REST_EXPRESSION:
            expression_phrase = f"{word} {expression_phrase}"
        parts = [self.appearance, action_phrase, expression_phrase]
        if speaking:
            parts.append(SPEAKING_CUE)
        text = ", ".join(p.strip().rstrip(",.") for p in parts if p.strip())
        return f"{text}. {self.scene}".strip() if self.scene else f"{text}."


def _entry(item) -> VocabularyEntry:
    return item if isinstance(item, VocabularyEntry) else VocabularyEntry.model_validate(item)
