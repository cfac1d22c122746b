"""Putting utterances on the session clock: when each sentence's audio starts, which audio
packets to send, and which visemes to hand the renderer.

The renderer plays visemes as offsets from "now" (the next frame it draws,
`RendererBackend.set_speech`) and the audio packets carry `pts_ms`; both are derived here
from one start time per utterance, so mouth and sound share the session clock by
construction. Sentences queue back to back: sentence k+1 starts where sentence k's audio
ends (or later, if it was synthesised late), never overlapping. `cut(at_ms)` ends speech
at a point on that clock (a new reply barging in, a reset): later sentences are dropped,
the one under way is shortened, and the next `push` starts no earlier than the cut.

Render-loop use (one call per chunk, before `next_chunk`):

    update = queue.take_update(next_frame_pts_ms)
    if update is not None:
        renderer.set_speech(update, 0)
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, replace

from .base import Utterance
from .packets import AudioPacket, packetize

__all__ = ["ScheduledUtterance", "SpeechQueue"]


@dataclass(frozen=True)
class ScheduledUtterance:
    utterance: Utterance
    start_ms: int  # session pts of the utterance's first sample

    @property
    def end_ms(self) -> int:
        return self.start_ms + self.utterance.duration_ms


class SpeechQueue:
    """Thread-safe: the TTS thread `push`es, the render loop calls `take_update`, a host's
    event loop may `cut` and anyone may read `scheduled()`."""

    def __init__(self, lead_ms: int = 0, packet_ms: int = 100, mouth_lead_ms: float = 0.0) -> None:
        """`lead_ms`: how far after "now" a freshly synthesised utterance starts (room
        for the first audio packet to reach a client before its pts is due).
        `mouth_lead_ms`: show each mouth shape this much before its sound. A frame shows
        a shape that began anywhere in the frame period before it, so with 0 the mouth
        lags the sound by 0..1 frame; half a frame period centres the error on 0
        (±half a frame), and a slightly early mouth is the less noticeable direction
        (docs/voice.md; measured by benchmarks/av_sync.py)."""
        self.lead_ms = int(lead_ms)
        self.packet_ms = int(packet_ms)
        self.mouth_lead_ms = float(mouth_lead_ms)
        self._lock = threading.Lock()
        self._items: list[ScheduledUtterance] = []
        self._end_ms = 0
        self._dirty = False

    def push(self, utterance: Utterance, now_ms: float) -> tuple[ScheduledUtterance, list[AudioPacket]]:
        """Schedule `utterance` after whatever is queued; returns it and its audio packets."""
        with self._lock:
            start = max(int(round(now_ms)) + self.lead_ms, self._end_ms)
            item = ScheduledUtterance(utterance, start)
            self._end_ms = item.end_ms
            self._items.append(item)
            self._dirty = True
        return item, packetize(utterance.pcm, utterance.sample_rate, start, self.packet_ms)

    def take_update(self, now_ms: float) -> list[tuple[int, str]] | None:
        """The whole mouth timeline from `now_ms` on, if it changed since the last call
        (else None): visemes of every scheduled utterance not yet over, as offsets from
        `now_ms`, rests (`X`) in gaps, ending at rest. A shape that began before `now_ms`
        is kept at offset 0, so a timeline handed over mid-sentence continues it."""
        with self._lock:
            if not self._dirty:
                return None
            self._dirty = False
            # Kept until its last sample has sounded (a recorder reads the audio from
            # `scheduled()`); the mouth is done with it `mouth_lead_ms` earlier.
            self._items = [s for s in self._items if s.end_ms > now_ms]
            items = [s for s in self._items if s.end_ms - self.mouth_lead_ms > now_ms]
        out: list[tuple[int, str]] = []
        for item in items:
            base = item.start_ms - self.mouth_lead_ms - now_ms
            for offset, shape in item.utterance.visemes:
                at = int(round(base + offset))
                if at <= 0:
                    out = [(0, shape)]
                elif not out or out[-1][1] != shape:
                    out.append((at, shape))
        return out

    def speaking(self, now_ms: float) -> bool:
        with self._lock:
            return now_ms < self._end_ms

    def scheduled(self) -> list[ScheduledUtterance]:
        """A copy of the queued utterances, oldest first. One is forgotten only when
        `take_update` hands over a changed timeline after its audio has ended, so every
        utterance sounding at the next frame is here (and one just over may be)."""
        with self._lock:
            return list(self._items)

    def cut(self, at_ms: float, resume_ms: float | None = None) -> bool:
        """End speech at `at_ms` (session pts): utterances starting there or later are
        dropped, one that plays across it is shortened to end there (its samples, phonemes
        and visemes cut, the mouth at rest from `at_ms`), and the next `push` starts no
        earlier than `resume_ms` (default `at_ms`; later where audio past the cut already
        left and must not be overlapped). The render loop's next `take_update` hands the
        shortened timeline over. Returns whether anything queued was cut."""
        at = int(round(at_ms))
        resume = at if resume_ms is None else max(at, int(round(resume_ms)))
        with self._lock:
            kept = [item for item in self._items if item.end_ms <= at]
            changed = len(kept) < len(self._items)
            under_way = [item for item in self._items if item.start_ms < at < item.end_ms]
            kept += [
                ScheduledUtterance(_shortened(item.utterance, at - item.start_ms), item.start_ms) for item in under_way
            ]
            self._items = kept
            self._end_ms = max(min(self._end_ms, at), resume)
            self._dirty = self._dirty or changed
        return changed

    def clear(self) -> None:
        """Stop: forget every utterance (the caller also calls `set_speech([])`)."""
        with self._lock:
            self._items.clear()
            self._end_ms = 0
            self._dirty = False


def _shortened(utterance: Utterance, keep_ms: int) -> Utterance:
    """The first `keep_ms` of `utterance`, its phoneme and viseme lists ending at rest there."""
    samples = int(round(keep_ms * utterance.sample_rate / 1000.0))
    visemes = [(t, shape) for t, shape in utterance.visemes if t < keep_ms]
    if not visemes or visemes[-1][1] != "X":
        visemes.append((keep_ms, "X"))
    return replace(
        utterance,
        pcm=utterance.pcm[:samples],
        phonemes=[(t, p) for t, p in utterance.phonemes if t < keep_ms],
        visemes=visemes,
    )
