"""A viewer session's voice: the reply text spoken, the mouth moved, the audio stamped and paced.

`SessionSpeech` lives in the session store as the session's `"speech"` resource, so the
two sides that need it meet there without importing each other:

- the preview renderer node (`nodes/stream_nodes.py`) calls `render(backend, fps)` instead
  of `backend.next_chunk()`: a `video.voice.SpeechDriver` hands the renderer the mouth
  timeline of whatever is queued, on the render thread; after the chunk, the audio due
  within `AUDIO_AHEAD_MS` of the next frame is released to the listener (`listen`);
- the server (`session.py`) calls `speak(text, ...)` on a worker thread (synthesis blocks):
  sentence by sentence, each sentence is put on the session clock behind what is already
  queued, and its PROTOCOL kind-2 packets wait there until they are due;
- the server's event loop calls `stop()`: on `reset`, and when a new reply barges in.

Why packets are paced instead of sent the moment a sentence is synthesised: a packet a
client holds cannot be recalled (PROTOCOL.md has no cancel message), and espeak makes a
20-second reply in milliseconds. Released at most `AUDIO_AHEAD_MS` ahead of the render
clock, a reply that a new one cuts off has at most that much (plus one packet) of itself
at the client; the cut lands exactly where the released audio ends, and the new reply's
first sentence starts there, so a player that plays packets at their pts goes from the old
reply to the new one without overlap and without being told.

Mouth and audio come from one start time per sentence (`SpeechQueue`), so they share the
session clock (`pts_ms`) by construction; see docs/voice.md.
"""

from __future__ import annotations

import collections
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("comfyui_persona.serve")

#: How far after the next rendered frame a fresh sentence starts: room for its first
#: packet to reach the viewer before its pts is due (the frame queue is ~2–8 frames).
SPEECH_LEAD_MS = 150
#: Audio is released to the viewer this far ahead of the next frame to render (the client
#: also holds the frames queued before it, so it has this plus the frame queue in hand).
#: It is also the most of a cut-off reply the viewer may still hear after the cut.
AUDIO_AHEAD_MS = 500
#: Speech queued further ahead than this is not spoken (replies asked for faster than they
#: can be said would otherwise pile up without end); the log says so.
MAX_BACKLOG_MS = 60_000

#: espeak-ng's voice for each language the interpreter answers in (persona.interpreter.languages).
LANGUAGE_VOICES = {"en": "en-us", "es": "es", "de": "de", "fr": "fr-fr", "pt": "pt-br", "it": "it", "ja": "ja",
                   "zh": "cmn"}
_VOICE_LANGUAGE = {"cmn": "zh", "yue": "zh"}  # espeak-ng voice prefixes that are not language codes

#: `on_audio(packets)`: released `AudioPacket`s, in pts order, on the render thread.
AudioListener = Callable[[list], None]
#: `on_speaking(start_ms, end_ms)`: a sentence sounds from `start_ms` to `end_ms`; with
#: `start_ms` None, speech stops at `end_ms` (a cut). Called under the speech lock, in the
#: order the events happen: it must only hand them on (e.g. `call_soon_threadsafe`).
SpeakingListener = Callable[[int | None, int], None]


def voice_for(text: str, voice: Any) -> Any:
    """The voice to say `text` with: the persona's own when it speaks the language `text` is
    in, else espeak-ng's voice for that language with the persona's variant, rate and pitch.
    A reply follows the user's language, and an English voice reads Japanese as "Japanese
    letter, Japanese letter" and German with English sounds. Piper voices here are English.
    A short reply in a Latin script may be taken for English (the interpreter's detector)."""
    from ...persona.interpreter.languages import detect_language
    from ...video.voice import VoiceSpec

    language = detect_language(text)
    wanted = LANGUAGE_VOICES.get(language)
    if wanted is None:
        return voice
    name, _, variant = voice.voice.partition("+")
    prefix = name.split("-")[0].lower()
    spoken = _VOICE_LANGUAGE.get(prefix, prefix) if voice.engine == "espeak" else "en"
    if spoken == language:
        return voice
    variant = f"+{variant}" if variant and voice.engine == "espeak" else ""
    return VoiceSpec(engine="espeak", voice=wanted + variant, rate=voice.rate, pitch=voice.pitch)


@dataclass
class _Pending:
    """A queued sentence's packets not yet released to the viewer."""

    scheduled: Any  # ScheduledUtterance
    packets: list
    released: int = 0


class SessionSpeech:
    """One session's speech state. Thread-safe: render thread, TTS thread, event loop."""

    def __init__(
        self, voice: Any, synthesizer: Any | None = None, lead_ms: int = SPEECH_LEAD_MS, ahead_ms: int = AUDIO_AHEAD_MS,
        voices: dict[str, Any] | None = None,
    ) -> None:
        """`voice`: a `video.voice.VoiceSpec` (from the card's `voice` block). `voices`: a
        scene's voice per persona id; a line naming its speaker is spoken with that voice,
        queued behind what is queued like any sentence (so two voices never overlap)."""
        self.voice = voice
        self.voices = dict(voices or {})
        #: (start pts, end pts, speaker) of each scene line queued: whose mouth moves when.
        self._speakers: collections.deque[tuple[int, int, str]] = collections.deque(maxlen=256)
        self._engines: dict[str, Any] = {}  # synthesizers of scene voices on another engine
        self.lead_ms = int(lead_ms)
        self.ahead_ms = int(ahead_ms)
        self._synthesizer = synthesizer
        # Guards the driver, the generation, the pending packets and the released end, so a
        # push (TTS thread), a release (render thread) and a cut (event loop) never interleave.
        self._lock = threading.Lock()
        self._driver = None
        self._generation = 0  # bumped by stop(): a sentence synthesised before it is dropped
        self._queued_end_ms = 0  # session pts where the queued speech ends
        self._pending: collections.deque[_Pending] = collections.deque()
        self._released_end_ms = 0  # session pts where the audio released so far ends
        # While a chunk renders, its mouth timeline is already fixed: "now" for new speech and
        # cuts is the end of that chunk (estimated by the last chunk's length), not its start.
        self._in_flight_end_ms: float | None = None
        self._last_chunk_ms = 0.0
        self._on_audio: AudioListener | None = None
        self._on_speaking: SpeakingListener | None = None
        self.fps: float | None = None
        self.frame_shape: tuple[int, int] | None = None  # (height, width) of the last chunk

    def listen(self, on_audio: AudioListener | None, on_speaking: SpeakingListener | None = None) -> None:
        """Where released audio and speaking times go (the server session); see the aliases."""
        with self._lock:
            self._on_audio, self._on_speaking = on_audio, on_speaking

    # -- render thread --------------------------------------------------------------------

    def render(self, backend: Any, fps: float):
        """The next chunk of `backend`, with the mouth following the queued speech; then the
        audio now due is released to the listener."""
        driver = self._driver_for(backend, fps)
        before = driver.next_frame_ms
        if self.voices and hasattr(backend, "set_speakers"):  # a scene renderer: route the mouths
            with self._lock:
                backend.set_speakers(list(self._speakers))
        with self._lock:  # the chunk's mouth timeline is fixed now: speech pushed meanwhile goes after it
            self._in_flight_end_ms = before + self._last_chunk_ms
        try:
            chunk = driver.next_chunk()
        finally:
            with self._lock:
                self._in_flight_end_ms = None
        if len(chunk.frames):
            self.frame_shape = (int(chunk.frames[0].shape[0]), int(chunk.frames[0].shape[1]))
        if driver.next_frame_ms < before:  # the renderer restarted its clock: queued times mean nothing
            self.stop()
        with self._lock:
            if driver.next_frame_ms > before:
                self._last_chunk_ms = driver.next_frame_ms - before
            packets = self._release(driver.next_frame_ms + self.ahead_ms)
            on_audio = self._on_audio
        if packets and on_audio is not None:
            on_audio(packets)
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
                self._generation += 1
                self._pending.clear()
                self._queued_end_ms = self._released_end_ms = 0
                self.fps = float(fps)
            elif driver.renderer is not backend:  # renderer restarted (size, seed…): same queue
                driver.renderer = backend
            return driver

    def _release(self, until_ms: float) -> list:
        """Under the lock: the pending packets whose pts is before `until_ms`, in order; a
        sentence's first packet also tells the listener when it sounds."""
        out = []
        while self._pending:
            sentence = self._pending[0]
            packets = sentence.packets
            while sentence.released < len(packets) and packets[sentence.released].pts_ms < until_ms:
                if sentence.released == 0 and self._on_speaking is not None:
                    self._on_speaking(sentence.scheduled.start_ms, sentence.scheduled.end_ms)
                out.append(packets[sentence.released])
                sentence.released += 1
            if sentence.released < len(packets):
                break
            self._pending.popleft()
        if out:
            last = out[-1]
            self._released_end_ms = last.pts_ms + int(round(last.end_ms - last.pts_ms))
        return out

    # -- TTS thread -----------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        """Whether a renderer has asked for a chunk (before that there is no clock to speak on)."""
        return self._driver is not None

    @property
    def generation(self) -> int:
        """Bumped by every `stop()`: speech asked for under an older one is not spoken."""
        return self._generation

    def speak(
        self,
        text: str,
        on_sentence: Callable[[Any, list], None] | None = None,
        cancelled: Callable[[], bool] = lambda: False,
        generation: int | None = None,
        character: str | None = None,
    ) -> int:
        """Synthesise `text` sentence by sentence and queue each behind what is queued; then
        `on_sentence(scheduled, packets)` if given (its mouth shapes are picked up by the next
        chunk, its packets released as they fall due). `generation`: the `generation` the
        text was asked for under (default: now); after a `stop()` nothing more of it is
        queued, even a sentence whose synthesis was under way. Blocks: call on a worker
        thread. Returns the number of sentences queued."""
        from ...video.voice import stream_utterances

        with self._lock:
            driver = self._driver
            if generation is None:
                generation = self._generation
        if driver is None:
            log.warning("speech skipped: no renderer has drawn a frame for this session yet")
            return 0
        count = 0
        voice = voice_for(text, self.voices.get(character, self.voice) if character is not None else self.voice)
        synthesizer = driver.synthesizer
        if voice.engine != self.voice.engine:  # a scene's persona, or a language, on another engine than the lead's
            from ...video.voice import get_synthesizer

            synthesizer = self._engines.get(voice.engine) or self._engines.setdefault(
                voice.engine, get_synthesizer(voice.engine))
        for utterance in stream_utterances(synthesizer, text, voice):
            if cancelled():
                break
            with self._lock:  # checked and queued in one step: a stop() lands before or after both
                if generation != self._generation or driver is not self._driver:
                    break
                now = self._now_ms(driver)
                if self._queued_end_ms - now > MAX_BACKLOG_MS:
                    log.warning("speech backlog over %d s: a sentence is not spoken", MAX_BACKLOG_MS // 1000)
                    break
                scheduled, packets = driver.queue.push(utterance, now)
                self._queued_end_ms = scheduled.end_ms
                self._pending.append(_Pending(scheduled, packets))
                if character is not None:
                    self._speakers.append((scheduled.start_ms, scheduled.end_ms, character))
            if on_sentence is not None:
                on_sentence(scheduled, packets)
            count += 1
        return count

    def speaker_at(self, start_ms: int) -> str | None:
        """Who speaks the scene line starting at `start_ms` (None: not a scene line)."""
        with self._lock:
            return next((who for start, _, who in reversed(self._speakers) if start == start_ms), None)

    def _now_ms(self, driver) -> float:
        """Under the lock: the first frame whose mouth timeline can still change."""
        return max(driver.next_frame_ms, self._in_flight_end_ms or 0.0)

    def next_frame_ms(self) -> float:
        driver = self._driver
        return driver.next_frame_ms if driver is not None else 0.0

    def scheduled(self) -> list:
        """The queued sentences (`ScheduledUtterance`s on the session clock), oldest first."""
        driver = self._driver
        return driver.queue.scheduled() if driver is not None else []

    def speaking(self) -> bool:
        """Whether queued speech sounds at the next frame to render."""
        driver = self._driver
        return driver is not None and driver.queue.speaking(driver.next_frame_ms)

    # -- event loop -----------------------------------------------------------------------

    def stop(self, *, finish_sent: bool = False) -> int | None:
        """Stop talking: nothing queued is spoken past the cut, no sentence whose synthesis
        is under way is queued after it, and the mouth follows on the next chunk.

        The cut is at the next frame whose mouth can still change (`reset`: the client was
        told and drops what it holds), or with `finish_sent` where the audio already released
        ends (a new reply barging in: the viewer hears what it holds, then the new reply from
        that point). Either way the next speech starts no earlier than the released audio
        ends, so it never overlaps packets already sent (or recorded).
        Returns the cut's pts, or None before any renderer ran."""
        with self._lock:
            self._generation += 1
            self._pending.clear()
            driver = self._driver
            if driver is None:
                return None
            at = int(self._now_ms(driver))
            if finish_sent:
                at = max(at, self._released_end_ms)
            if driver.queue.cut(at, resume_ms=self._released_end_ms) and self._on_speaking is not None:
                self._on_speaking(None, at)
            self._queued_end_ms = min(self._queued_end_ms, at)
            return at

    def close(self) -> None:
        self.stop()
        self.listen(None, None)


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
