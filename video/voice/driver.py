"""`SpeechDriver`: the glue a render loop needs to make a backend speak, and optionally
record what it shows and says. The server, the `persona render` command and the
benchmarks use the same loop, so what is measured is what ships.

    driver = SpeechDriver(renderer, fps, voice=VoiceSpec.from_dict(card_voice), recorder=rec)
    for packet in driver.say("Hello there. How are you?"):  # sentence by sentence
        send(encode_media_frame(MEDIA_AUDIO, i, packet.pts_ms, packet.payload()))
    chunk = driver.next_chunk()                              # frames, mouth in sync

`say` synthesises on the calling thread (run it off the event loop); `next_chunk` is for
the render thread. Both are safe to call concurrently.
"""

from __future__ import annotations

from collections.abc import Iterator

from ..backend import Chunk, RendererBackend
from .base import Synthesizer, VoiceSpec
from .engines import get_synthesizer
from .packets import AudioPacket
from .schedule import SpeechQueue
from .sentences import stream_utterances

__all__ = ["SpeechDriver"]


class SpeechDriver:
    def __init__(
        self,
        renderer: RendererBackend,
        fps: float,
        voice: VoiceSpec | None = None,
        *,
        synthesizer: Synthesizer | None = None,
        recorder: object | None = None,  # video.recording.SessionRecorder
        lead_ms: int = 0,
        mouth_lead_ms: float | None = None,
    ) -> None:
        """`mouth_lead_ms`: how much earlier than its sound each mouth shape starts.
        None = half a frame period (frame quantisation centred on zero, see
        `SpeechQueue`) plus half the renderer's shape cross-fade (`speech_blend_ms`;
        the preview renderer eases shapes over 55 ms, so a change is half done
        27.5 ms after it starts)."""
        self.renderer = renderer
        self.fps = float(fps)
        self.voice = voice or VoiceSpec()
        self.synthesizer = synthesizer or get_synthesizer(self.voice.engine)
        self.recorder = recorder
        if mouth_lead_ms is None:
            mouth_lead_ms = default_mouth_lead_ms(self.fps, _blend_ms(renderer))
        lead = float(mouth_lead_ms)
        self.queue = SpeechQueue(lead_ms=lead_ms, mouth_lead_ms=lead)
        self._next_index = 0

    @property
    def next_frame_ms(self) -> float:
        return self._next_index * 1000.0 / self.fps

    def say(self, text: str, voice: VoiceSpec | None = None) -> Iterator[AudioPacket]:
        """Speak `text`: yields each sentence's audio packets as soon as it is synthesised
        (pts on the session clock); the mouth follows from the next chunk on."""
        for utterance in stream_utterances(self.synthesizer, text, voice or self.voice):
            _, packets = self.queue.push(utterance, self.next_frame_ms)
            if self.recorder is not None:
                self.recorder.push_audio(utterance.pcm, packets[0].pts_ms)
            yield from packets

    def stop_speaking(self) -> None:
        self.queue.clear()
        self.renderer.set_speech([], 0)

    def next_chunk(self) -> Chunk:
        update = self.queue.take_update(self.next_frame_ms)
        if update is not None:
            self.renderer.set_speech(update, 0)
        chunk = self.renderer.next_chunk()
        self._next_index = chunk.first_index + len(chunk.frames)
        if self.recorder is not None:
            self.recorder.push_chunk(chunk.frames, chunk.pts_ms)
        return chunk


def default_mouth_lead_ms(fps: float, blend_ms: float) -> float:
    """The mouth lead `SpeechDriver` takes by default: half a frame period plus half the
    renderer's shape cross-fade (`blend_ms`)."""
    return 500.0 / fps + 0.5 * blend_ms


def _blend_ms(renderer: RendererBackend) -> float:
    """How long the renderer eases from one mouth shape to the next (ms)."""
    blend = getattr(renderer, "speech_blend_ms", None)
    if blend is None and getattr(renderer, "name", "") == "preview":
        from ..preview.visemes import SHAPE_BLEND_MS

        blend = SHAPE_BLEND_MS
    return float(blend or 0.0)
