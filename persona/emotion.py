"""Which face the persona makes when nobody asked for one.

The embedded interpreter calls `infer_expression` when the user's words name no
expression. Order of evidence, strongest first: emotional cue words in the user's text
(a sad story gets a sad face, a joke a laugh), then cue words in the reply, then what the
persona is doing (dancing looks excited, shrugging confused), then, when the embedding
model is available, the expression whose description is nearest the user's text (only
above a similarity floor, because most small talk is emotionally flat). Otherwise neutral.
LLM backends get the expression from their structured output instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np

from .schema import Vocabulary
from .text import stem, tokenize

if TYPE_CHECKING:
    from .embedding import SentenceEncoder

__all__ = ["EmotionGuess", "infer_expression"]

#: Cue words (stemmed on use) → the expression the persona answers them with.
CUES: dict[str, tuple[str, ...]] = {
    "sad": (
        "sad",
        "died",
        "dead",
        "death",
        "die",
        "miss",
        "lonely",
        "crying",
        "cried",
        "depressed",
        "sorry",
        "awful",
        "terrible",
        "funeral",
        "sick",
        "hurt",
        "heartbroken",
        "upset",
        "unhappy",
        "tired",
        "exhausted",
        "lost",
        "fail",
        "failed",
        "bad",
        "worst",
        "grief",
        "cancer",
        "broke",
    ),
    "laugh": ("joke", "funny", "haha", "hahaha", "lol", "lmao", "rofl", "hilarious", "laugh", "kidding"),
    "smile": (
        "thank",
        "thanks",
        "love",
        "great",
        "nice",
        "awesome",
        "wonderful",
        "happy",
        "glad",
        "good",
        "beautiful",
        "cool",
        "sweet",
        "welcome",
        "congrats",
        "congratulations",
        "fantastic",
        "perfect",
        "lovely",
        "enjoy",
        "fun",
        "hello",
        "hi",
        "pleasure",
        "friend",
        "pizza",
    ),
    "excited": (
        "promotion",
        "won",
        "win",
        "party",
        "yay",
        "birthday",
        "vacation",
        "holiday",
        "excited",
        "awesome!",
        "incredible",
        "thrilled",
        "wait",
        "hooray",
        "woohoo",
    ),
    "surprised": ("wow", "whoa", "unbelievable", "shocking", "surprise", "omg", "seriously", "really?"),
    "frown": ("hate", "stupid", "idiot", "dumb", "shut", "annoying", "useless", "rude", "ugly"),
    "angry": ("angry", "furious", "rage", "mad"),
    "confused": ("confused", "confusing", "huh", "understand", "weird", "strange", "mean?"),
    "thoughtful": (
        "think",
        "wonder",
        "why",
        "future",
        "meaning",
        "philosophy",
        "consider",
        "idea",
        "opinion",
    ),
    "shy": ("cute", "pretty", "handsome", "gorgeous", "amazing", "compliment", "crush", "adorable"),
    "wink": ("secret", "wink", ";)"),
}

#: What an action looks like when no words say otherwise.
ACTION_DEFAULTS: dict[str, str] = {
    "wave": "smile",
    "bow": "smile",
    "nod": "smile",
    "clap": "excited",
    "dance": "excited",
    "think": "thoughtful",
    "shrug": "confused",
    "look_around": "thoughtful",
}

#: Cosine similarity the embedding fallback needs before it overrides "neutral".
EMBEDDING_FLOOR = 0.45


@dataclass(frozen=True)
class EmotionGuess:
    expression: str
    reason: str


@lru_cache(maxsize=1)
def _cue_index() -> dict[str, str]:
    index: dict[str, str] = {}
    for expression, words in CUES.items():
        for word in words:
            index.setdefault(stem(word.strip("!?;)")), expression)
    return index


def _from_cues(text: str, allowed: set[str]) -> str | None:
    index = _cue_index()
    votes: dict[str, int] = {}
    for token in tokenize(text):
        expression = index.get(stem(token))
        if expression and expression in allowed:
            votes[expression] = votes.get(expression, 0) + 1
    if not votes:
        return None
    # Most votes wins; ties go to the order of CUES (stronger feelings listed first).
    order = list(CUES)
    return max(votes, key=lambda e: (votes[e], -order.index(e)))


def infer_expression(
    user_text: str,
    reply: str,
    actions: Sequence[str],
    vocabulary: Vocabulary,
    encoder: SentenceEncoder | None = None,
) -> EmotionGuess:
    """The expression to show for this turn; always a name in `vocabulary`."""
    allowed = set(vocabulary.expression_names)
    fallback = "neutral" if "neutral" in allowed else vocabulary.expression_names[0]
    found = _from_cues(user_text, allowed)
    if found:
        return EmotionGuess(found, "cue words in the user's text")
    found = _from_cues(reply, allowed)
    if found:
        return EmotionGuess(found, "cue words in the reply")
    for action in actions:
        default = ACTION_DEFAULTS.get(action)
        if default in allowed:
            return EmotionGuess(default, f"default for {action}")
    if encoder is not None and len(user_text.split()) >= 3:
        entries = [e for e in vocabulary.expressions if e.name != fallback]
        if entries:
            matrix = _expression_matrix(encoder, tuple((e.name, e.description, e.synonyms) for e in entries))
            sims = matrix @ encoder.encode_one(user_text[:200])
            best = int(np.argmax(sims))
            if float(sims[best]) >= EMBEDDING_FLOOR:
                return EmotionGuess(entries[best].name, f"embedding similarity {float(sims[best]):.2f}")
    return EmotionGuess(fallback, "no emotional cue")


_MATRICES: dict[tuple, np.ndarray] = {}


def _expression_matrix(encoder: SentenceEncoder, key: tuple) -> np.ndarray:
    """One unit vector per expression: the mean of its description and synonyms."""
    cache_key = (id(encoder), key)
    matrix = _MATRICES.get(cache_key)
    if matrix is None:
        texts = [text for _name, description, synonyms in key for text in (description, *synonyms)]
        table = encoder.encode_table(texts)
        rows, start = [], 0
        for _name, _description, synonyms in key:
            mean = table[start : start + 1 + len(synonyms)].mean(axis=0)
            start += 1 + len(synonyms)
            rows.append(mean / max(float(np.linalg.norm(mean)), 1e-12))
        matrix = _MATRICES[cache_key] = np.stack(rows)
    return matrix
