"""A viewer session's voice: the reply text spoken, the mouth moved, the audio stamped.

`SessionSpeech` lives in the session store as the session's `"speech"` resource, so the
two sides that need it meet there without importing each other:

- the preview renderer node (`nodes/stream_nodes.py`) calls `render(backend, fps)` instead
  of `backend.next_chunk()`: a `video.voice.SpeechDriver` hands the renderer the mouth
  timeline of whatever is queued, on the render thread;
- the server (`session.py`) calls `speak(text, ...)` on a worker thread (synthesis blocks):
  sentence by sentence, each sentence is put on the session clock behind what is already
  queued and its PROTOCOL kind-2 packets are handed back as soon as it is synthesised.

Mouth and audio come from one start time per sentence (`SpeechQueue`), so they share the
session clock (`pts_ms`) by construction; see docs/voice.md.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

log = logging.getLogger("comfyui_persona.serve")

#: How far after the next rendered frame a fresh sentence starts: room for its first
#: packet to reach the viewer before its pts is due (the frame queue is ~2–8 frames).
SPEECH_LEAD_MS = 150
#: Speech queued further ahead than this is not spoken (replies asked for faster than they
#: can be said would otherwise pile up without end); the log says so.
MAX_BACKLOG_MS = 60_000


class SessionSpeech:
    """One session's speech state. Thread-safe: render thread, TTS thread, event loop."""

    def __init__(self, voice: Any, synthesizer: Any | None = None, lead_ms: int = SPEECH_LEAD_MS) -> None:
        """`voice`: a `video.voice.VoiceSpec` (from the card's `voice` block)."""
        self.voice = voice
        self.lead_ms = int(lead_ms)
        self._synthesizer = synthesizer
        self._lock = threading.Lock()
        self._driver = None
        self._silence = False
        self._generation = 0  # bumped by stop(): a sentence synthesised before it is dropped
        self._queued_end_ms = 0  # session pts where the queued speech ends
        self.fps: float | None = None
        self.frame_shape: tuple[int, int] | None = None  # (height, width) of the last chunk

    # -- render thread --------------------------------------------------------------------

    def render(self, backend: Any, fps: float):
        """The next chunk of `backend`, with the mouth following the queued speech."""
        driver = self._driver_for(backend, fps)
        if self._silence:
            self._silence = False
            backend.set_speech([], 0)
        chunk = driver.next_chunk()
        if len(chunk.frames):
            self.frame_shape = (int(chunk.frames[0].shape[0]), int(chunk.frames[0].shape[1]))
        return chunk

    def _driver_for(self, backend: Any, fps: float):
        with self._lock:
            driver = self._driver
            if driver is None or driver.fps != float(fps):
                from ...video.voice import SpeechDriver

                if self._synthesizer is None:
                    self._synthesizer = _synthesizer_for(self)
                # (A renderer restarted at another fps starts a new driver: speech queued for
                # the old one is dropped, its frame clock restarts with the renderer's.)
                driver = SpeechDriver(backend, fps, self.voice, synthesizer=self._synthesizer, lead_ms=self.lead_ms)
                self._driver = driver
                self.fps = float(fps)
            elif driver.renderer is not backend:  # renderer restarted (size, seed…): same queue
                driver.renderer = backend
            return driver

    # -- TTS thread -----------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        """Whether a renderer has asked for a chunk (before that there is no clock to speak on)."""
        return self._driver is not None

    def speak(
        self,
        text: str,
        on_sentence: Callable[[Any, list], None],
        cancelled: Callable[[], bool] = lambda: False,
    ) -> int:
        """Synthesise `text` sentence by sentence; for each, `on_sentence(scheduled, packets)`
        right after it is queued (its mouth shapes are then picked up by the next chunk).
        Blocks: call on a worker thread. Returns the number of sentences spoken."""
        from ...video.voice import stream_utterances

        driver = self._driver
        if driver is None:
            log.warning("speech skipped: no renderer has drawn a frame for this session yet")
            return 0
        generation = self._generation
        count = 0
        for utterance in stream_utterances(driver.synthesizer, text, self.voice):
            if cancelled() or generation != self._generation:
                break
            if self._queued_end_ms - driver.next_frame_ms > MAX_BACKLOG_MS:
                log.warning("speech backlog over %d s: a sentence is not spoken", MAX_BACKLOG_MS // 1000)
                break
            scheduled, packets = driver.queue.push(utterance, driver.next_frame_ms)
            self._queued_end_ms = scheduled.end_ms
            on_sentence(scheduled, packets)
            count += 1
        return count

    def next_frame_ms(self) -> float:
        driver = self._driver
        return driver.next_frame_ms if driver is not None else 0.0

    # -- event loop -----------------------------------------------------------------------

    def stop(self) -> None:
        """Stop talking now (`reset`): forget queued sentences, close the mouth on the next chunk."""
        self._generation += 1
        self._queued_end_ms = 0
        driver = self._driver
        if driver is not None:
            driver.queue.clear()
        self._silence = True

    def close(self) -> None:
        self.stop()


def _synthesizer_for(speech: SessionSpeech):
    """The card's engine, else espeak (a card naming piper where the extra is missing
    still speaks, and the log says why it sounds different)."""
    from dataclasses import replace

    from ...video.voice import VoiceError, get_synthesizer

    try:
        return get_synthesizer(speech.voice.engine)
    except VoiceError as exc:
        log.warning("voice engine %r unavailable (%s); speaking with espeak en-us", speech.voice.engine, exc)
        speech.voice = replace(speech.voice, engine="espeak", voice="en-us")
        return get_synthesizer("espeak")
