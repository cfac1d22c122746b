"""A viewer session's speech lane: replies spoken in order, cut off by the next one or a reset.

Texts queue per reply (a streamed reply arrives sentence by sentence: each complete sentence
goes at once, so speech starts before an LLM finishes); the first part of a new reply cuts
off whatever the previous one has not said yet (barge-in), and a reset silences the replies
asked for so far. Synthesis runs on the speech pool (it blocks); a reply cut off is not
waited for: the sentence it is synthesising is dropped when done (`SessionSpeech.speak`
checks the generation), so the next reply starts on another pool thread at once.

Audio falling due (`SessionSpeech.render`, on the render thread) goes to the viewer and to
the recording's recent-audio buffer; speaking times go to the state tracker (the character's
`speaking` flag and its mouth follow the voice).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
from collections.abc import Callable
from concurrent.futures import Executor
from typing import TYPE_CHECKING

from .protocol import MEDIA_AUDIO, media_frame
from .turns import TURN_QUEUE_LIMIT

if TYPE_CHECKING:
    from ...nodes.runtime import Session
    from .speech import SessionSpeech

log = logging.getLogger("comfyui_persona.serve")

__all__ = ["SpeechLane"]

#: Where a streamed reply's text has a complete sentence (same rule as video.voice.sentences).
_SENTENCE_END = re.compile(r"(?<=[.!?…])[\"')\]]*\s+|\n+")


class SpeechLane:
    """See module docstring. Everything but the listeners runs on the event loop."""

    def __init__(self, session_id: str, speech: SessionSpeech, runtime: Session, speech_pool: Executor,
                 send_audio: Callable[[list[bytes]], None], on_audio: Callable[[list], None],
                 report: Callable[[str, str], None]) -> None:
        self.session_id = session_id
        self.speech = speech
        self._runtime = runtime
        self._pool = speech_pool
        self._send_audio = send_audio
        self._on_audio = on_audio  # e.g. the recording's recent audio (render thread)
        self._report = report
        self._loop = asyncio.get_running_loop()
        # (speech generation, text): a text asked for before a cut is not spoken (see `say`).
        # A scene's line also names its speaker (whose voice and mouth), else None.
        self._texts: asyncio.Queue[tuple[int, str, str | None]] = asyncio.Queue(maxsize=TURN_QUEUE_LIMIT)
        self._cut = asyncio.Event()  # set by `stop`: the reply being synthesised is over
        self._turn: int | None = None  # the turn whose reply is being spoken
        self.muted_through = 0  # replies to turns up to this one are not spoken (a reset came after)
        self._audio_index = 0
        self._spoken: dict[int, str] = {}  # turn → reply text already handed to speech
        self.closed = False
        speech.listen(self._released, self._speaking)

    # -- what to say --------------------------------------------------------------------------

    def say(self, text: str, turn: int, character: str | None = None) -> None:
        """Speak `text`, part of the reply to `turn`. Parts of one reply queue back to back
        (in a scene, each speaker's line after the previous one's: voices never overlap);
        the first part of a new reply cuts off whatever the previous one has not said yet."""
        if self.closed or not text.strip() or turn <= self.muted_through:
            return
        if turn != self._turn:
            self._turn = turn
            self.stop(finish_sent=True)
        try:
            self._texts.put_nowait((self.speech.generation, text, character))
        except asyncio.QueueFull:
            log.warning("session %s: speech queue full, a reply is not spoken", self.session_id[:8])

    def speak_streamed(self, turn: int, text: str, done: bool) -> None:
        """Speak a reply as it streams: each partial `reply` (cumulative text) hands over the
        sentences it completed, the final one the rest."""
        spoken = self._spoken.pop(turn, "") if done else self._spoken.get(turn, "")
        if spoken and not text.startswith(spoken):
            return  # the final text was rewritten: what was said stays said, nothing repeats
        rest = text[len(spoken) :]
        if done:
            self.say(rest, turn)
            return
        ends = [m.end() for m in _SENTENCE_END.finditer(rest)]
        if ends:
            self.say(rest[: ends[-1]], turn)
            self._spoken[turn] = spoken + rest[: ends[-1]]
            while len(self._spoken) > 4 * TURN_QUEUE_LIMIT:  # turns that never finished
                self._spoken.pop(next(iter(self._spoken)))

    def pending_sentences(self) -> dict[int, str]:
        """Turn → the part of its streamed reply already handed to speech, for replies whose
        final text has not come yet."""
        return dict(self._spoken)

    def mute_through(self, turn: int) -> None:
        """A reset: replies to turns up to `turn` are not spoken any more, also the parts of a
        reply still streaming in and replies whose interpretation is still under way."""
        self.muted_through = turn
        self.stop()

    def stop(self, finish_sent: bool = False) -> None:
        """Stop talking: `reset` (cut at the next frame) and a new reply barging in
        (`finish_sent`: cut where the audio already sent ends) take this one path. Texts
        still waiting are dropped; a sentence being synthesised is not queued after the cut
        (`SessionSpeech.stop` bumps the generation every text is tagged with)."""
        while not self._texts.empty():
            self._texts.get_nowait()
        self.speech.stop(finish_sent=finish_sent)
        self._cut.set()

    # -- the loop -----------------------------------------------------------------------------

    async def run(self) -> None:
        """Speak queued texts one at a time; a cut does not wait for the sentence in synthesis."""
        while True:
            generation, text, character = await self._texts.get()
            if generation != self.speech.generation:
                continue  # cut off before its turn came
            self._cut.clear()
            speak = functools.partial(self.speech.speak, text, generation=generation)
            if character is not None:
                speak = functools.partial(speak, character=character)
            speaking = self._loop.run_in_executor(self._pool, speak)
            cut = self._loop.create_task(self._cut.wait())
            try:
                await asyncio.wait({speaking, cut}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                cut.cancel()
            if not speaking.done():
                speaking.add_done_callback(self._done)  # finishes on its own, unheard
                continue
            self._done(speaking)

    def _done(self, speaking: asyncio.Future) -> None:
        exc = None if speaking.cancelled() else speaking.exception()
        if exc is not None:  # a voice the engine lacks, a native failure: say so, go on
            log.warning("session %s: speaking failed: %s", self.session_id[:8], exc)
            self._report("internal", f"speaking the reply failed: {type(exc).__name__}: {exc}")

    # -- listeners (any thread) ---------------------------------------------------------------

    def _released(self, packets: list) -> None:
        """On the render thread, audio falling due: sent, and held for the recording."""
        frames = []
        for packet in packets:
            frames.append(media_frame(MEDIA_AUDIO, self._audio_index, packet.pts_ms, packet.payload()))
            self._audio_index += 1
        self._on_audio(packets)
        self._loop.call_soon_threadsafe(self._send_audio, frames)

    def _speaking(self, start_ms: int | None, end_ms: int) -> None:
        """Under the speech lock (any thread): speaking times go to the loop in order."""
        self._loop.call_soon_threadsafe(self._mark_speaking, start_ms, end_ms)

    def _mark_speaking(self, start_ms: int | None, end_ms: int) -> None:
        """Tell the state tracker when the persona talks (its clock is the runtime session's):
        from `start_ms` to `end_ms`, or with `start_ms` None, no longer from `end_ms` (a cut)."""
        runtime = self._runtime
        if self.closed:
            return
        with runtime.lock:
            tracker = runtime.tracker
            if tracker is None:
                return
            offset = runtime.now_ms() - self.speech.next_frame_ms()
            if runtime.cast:  # a scene: the line's speaker talks (a cut silences everyone)
                who = self.speech.speaker_at(start_ms) if start_ms is not None else None
                if start_ms is not None:
                    tracker.set_speaking(True, int(start_ms + offset), character=who)
                tracker.set_speaking(False, int(end_ms + offset), character=who)
                return
            if start_ms is not None:
                tracker.set_speaking(True, int(start_ms + offset))
            tracker.set_speaking(False, int(end_ms + offset))
