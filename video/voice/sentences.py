"""Sentence-by-sentence speech, so the persona starts talking after the first sentence
is synthesised instead of after the whole reply."""

from __future__ import annotations

import re
from collections.abc import Iterator

from .base import Synthesizer, Utterance, VoiceSpec

__all__ = ["MAX_SENTENCE_CHARS", "split_sentences", "stream_utterances"]

#: Longer sentences are cut at the last comma/semicolon/space before this length, which
#: bounds the time to first audio for a run-on reply.
MAX_SENTENCE_CHARS = 240

_END = re.compile(r"(?<=[.!?…])[\"')\]]*\s+|\n+")


def split_sentences(text: str) -> list[str]:
    """Sentences of `text`, in order, none empty, none longer than MAX_SENTENCE_CHARS."""
    out: list[str] = []
    for piece in _END.split(text):
        piece = " ".join(piece.split())
        while len(piece) > MAX_SENTENCE_CHARS:
            head = piece[:MAX_SENTENCE_CHARS]
            cut = max(head.rfind(", "), head.rfind("; "), head.rfind(": "))
            cut = cut + 1 if cut > MAX_SENTENCE_CHARS // 3 else head.rfind(" ")
            if cut <= 0:
                cut = MAX_SENTENCE_CHARS
            out.append(piece[:cut].strip())
            piece = piece[cut:].strip()
        if piece:
            out.append(piece)
    return out


def stream_utterances(synth: Synthesizer, text: str, voice: VoiceSpec) -> Iterator[Utterance]:
    """Yield one `Utterance` per sentence, each as soon as it is synthesised."""
    for sentence in split_sentences(text):
        utterance = synth.synthesize(sentence, voice)
        if utterance.pcm.size:
            yield utterance
