"""The media tracks a WebRTC peer sends: the session's frames and its spoken audio, on its clock.

aiortc pulls a track (`recv`) from its sender task and encodes what it gets (H.264 through
PyAV's libx264, VP8 through libvpx, Opus through libopus). The video track is a small queue
the connection's pump pushes into (connection.py paces the frames at the stream rate, as it
does for the WebSocket); `recv` turns one queued frame into a PyAV frame stamped with its pts
on the session clock (90 kHz ticks). The audio track is a continuous 20 ms-frame stream on
the loop clock, silence between utterances, each utterance placed where its pts falls.

A/V sync: a browser aligns the two streams by mapping each one's RTP timestamps to the
sender's wall clock through the RTCP sender reports, and aiortc's reports pair the last packet's
RTP timestamp with the wall time it left. So both tracks send by one `MediaClock`, a mapping
from the session clock to the loop clock: the video track holds each picture until its time
on that clock and stamps it with that time, the audio track starts each stretch of speech at
the same clock's time for its pts. The pump's hand-over moments do not define the mapping
(they jump: queued frames are dropped for a new plan, the loop stalls); the mapping follows
them only while nobody speaks, so a stretch of speech and its pictures stay on one mapping.
Measured in a browser: benchmarks/webrtc_av_sync.py.
"""

from __future__ import annotations

import asyncio
import collections
import fractions
from typing import Any

import av
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from .frames import EncodedFrame
from .protocol import parse_media_frame

__all__ = ["AudioTrack", "MediaClock", "VideoTrack"]

VIDEO_CLOCK_HZ = 90_000
#: aiortc's H.264 encoder counts time in 1/30 s: frames closer than that would share a pts.
MIN_FRAME_GAP_MS = 34
#: Longest speech waits for its picture (a stalled picture must not silence speech).
MAX_AUDIO_HOLD_S = 1.0
#: The audio clock gives up catching up after a loop stall this long (no burst of old frames).
MAX_LAG_S = 0.2
#: A packet whose pts is this close to the end of the previous one continues it (ms rounding).
CONTIGUOUS_MS = 5
#: Audio frame length handed to the Opus encoder (one Opus packet), and of the PCM chunks.
FRAME_MS = 20
#: Opus runs at 48 kHz, and its RTP clock does for every input rate (RFC 7587).
OPUS_RATE = 48_000
OPUS_TIME_BASE = fractions.Fraction(1, OPUS_RATE)
#: Speech is mono; 48 kbit/s is transparent for a voice (aiortc's own default: 96 kbit/s stereo).
OPUS_BITRATE = 48_000
#: Pictures leave this long after their first hand-over (room for the pump's usual jitter).
MEDIA_DELAY_S = 0.02
#: While nobody speaks, a picture this much earlier than its time pulls the mapping back.
EARLY_TOLERANCE_S = 0.05
#: During speech the mapping holds unless a picture is this far off (a stall, a clock restart).
MAX_SKEW_S = 0.5
#: Speech keeps the clock locked this long after its last sample (a pause between sentences).
SPEECH_GAP_S = 0.3


class MediaClock:
    """The one mapping from the session clock to the loop clock that both tracks send by.

    Set by the first picture (its hand-over plus `delay_s`), moved by the video track when a
    picture comes later than its time or far earlier (the pump's hand-overs jump) but only
    while `speaking` is False: during speech the pictures keep the mapping the audio started
    on (a late one leaves late, stamped with its time; an early one waits). A stretch of speech
    that comes later than its picture moves it later (`delay_by`): the picture waits for it."""

    def __init__(self, delay_s: float = MEDIA_DELAY_S) -> None:
        self.delay_s = delay_s
        self._offset: float | None = None  # loop time = offset + pts
        self.speaking = False  # set by the audio track: speech is on the wire
        self.moves = 0  # times the mapping was moved (diagnostics)
        #: Speech leaves this much before its picture: how much later the viewer hears a sound
        #: than it sees the picture sent with it, as its receiver reported (`webrtc.playout`).
        #: A browser's lip-sync aligns the two streams' playout by the sender reports but leaves
        #: out the sound's output latency (the audio device's buffer, ~30 ms); sent that much
        #: earlier, the sound is heard with its picture (docs/server.md "WebRTC media"). Taken
        #: at the start of each stretch of speech, so a stretch plays on one mapping. 0: none
        #: reported (a client that does not measure keeps the streams as sent).
        self.audio_lead_s = 0.0

    def due(self, pts_ms: float) -> float | None:
        """Loop time at which `pts_ms` leaves; None before the first picture."""
        return None if self._offset is None else self._offset + pts_ms / 1000.0

    def place(self, pts_ms: int, ready: float) -> float:
        """The loop time the picture `pts_ms` leaves at, when it could leave at `ready`."""
        anchored = ready - pts_ms / 1000.0 + self.delay_s
        if self._offset is None:
            self._offset = anchored
        else:
            late = ready - (self._offset + pts_ms / 1000.0)
            early = self._offset - anchored
            late_limit, early_limit = (MAX_SKEW_S, MAX_SKEW_S) if self.speaking else (0.0, EARLY_TOLERANCE_S)
            if late > late_limit or early > early_limit:
                self._offset = anchored
                self.moves += 1
        return self._offset + pts_ms / 1000.0

    def delay_by(self, seconds: float) -> None:
        if self._offset is not None and seconds > 0:
            self._offset += seconds
            self.moves += 1


class _PushTrack(MediaStreamTrack):
    """A bounded queue aiortc pulls from (oldest dropped when the encoder falls behind)."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self._items: collections.deque[Any] = collections.deque(maxlen=limit)
        self._ready = asyncio.Event()
        self.pushed = 0
        self.dropped = 0

    def push(self, item: Any) -> None:
        if len(self._items) == self._items.maxlen:
            self.dropped += 1
        self._items.append(item)
        self.pushed += 1
        self._ready.set()

    async def _next(self) -> Any:
        while not self._items:
            if self.readyState != "live":
                raise MediaStreamError
            self._ready.clear()
            await self._ready.wait()
        if self.readyState != "live":
            raise MediaStreamError
        return self._items.popleft()

    def stop(self) -> None:
        super().stop()
        self._ready.set()  # a sender waiting in recv ends


class VideoTrack(_PushTrack):
    """The session's pictures (`EncodedFrame.rgb`), each leaving at its time on the media clock.

    The RTP timestamp is that time (90 kHz ticks of the loop clock), so the sender reports,
    which pair a packet's timestamp with the wall time it left, describe the clock the audio
    is sent by. aiortc encodes after `recv` returns: the track returns a picture that long
    (`_busy`, smoothed) before its time, so that its packets leave at it."""

    kind = "video"

    def __init__(self, clock: MediaClock | None = None, limit: int = 4) -> None:
        super().__init__(limit)
        self.clock = clock if clock is not None else MediaClock()
        self._last_pts_ms: int | None = None
        self._last_due: float | None = None
        self._returned: float | None = None  # loop time the last picture was handed to aiortc
        self._busy = 0.0  # seconds aiortc takes to encode and send a picture (smoothed)
        self.late = 0  # pictures that left after their time (during speech)
        self.skipped = 0  # pictures due too soon after the last one (the mapping was pulled back)

    def accepts(self, frame: EncodedFrame) -> bool:
        """False for a frame too close to the previous one for the encoder's clock (skipped)."""
        return self._last_pts_ms is None or frame.pts_ms - self._last_pts_ms >= MIN_FRAME_GAP_MS

    def push(self, item: EncodedFrame) -> None:
        self._last_pts_ms = item.pts_ms
        super().push(item)

    async def recv(self) -> av.VideoFrame:
        loop = asyncio.get_running_loop()
        if self._returned is not None:  # aiortc calls recv again once the last picture is sent
            self._busy += 0.2 * (loop.time() - self._returned - self._busy)
        frame: EncodedFrame = await self._next()
        due = self.clock.place(frame.pts_ms, loop.time() + self._busy)
        # The mapping was pulled back (in silence, after queued pictures were dropped for a new
        # plan): a picture due before the encoder's clock allows (1/30 s after the last one)
        # is skipped, not sent late. Sent late and stamped later than its time, it and the
        # pictures after it would lag the speech placed by the new mapping until the gap had
        # caught up (about 0.7 s for the usual 120 ms pull-back at 24 fps: the first sentence
        # of every reply was seen 40 ms late against its sound).
        while self._last_due is not None and due < self._last_due + MIN_FRAME_GAP_MS / 1000.0:
            self.skipped += 1
            frame = await self._next()
            due = self.clock.place(frame.pts_ms, loop.time() + self._busy)
        wait = due - self._busy - loop.time()
        if wait > 0:
            await asyncio.sleep(wait)
        elif wait < -0.001:
            self.late += 1
        if self.readyState != "live":
            raise MediaStreamError
        self._last_due = due
        picture = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame.rgb), format="rgb24")
        picture.pts = round(due * VIDEO_CLOCK_HZ)
        picture.time_base = fractions.Fraction(1, VIDEO_CLOCK_HZ)
        self._returned = loop.time()
        return picture


def _opus_encoder() -> av.AudioCodecContext:
    encoder = av.CodecContext.create("libopus", "w")
    encoder.sample_rate = OPUS_RATE
    encoder.layout = "mono"
    encoder.format = "s16"
    encoder.bit_rate = OPUS_BITRATE
    encoder.time_base = OPUS_TIME_BASE
    encoder.options = {"application": "voip"}
    return encoder


class _Speech:
    """One stretch of contiguous speech: where it starts on the session clock, its samples."""

    def __init__(self, start: int, samples: np.ndarray, arrived: float) -> None:
        self.start = start  # samples on the session clock
        self.end = start + samples.size  # just after the last sample pushed
        self.arrived = arrived  # loop time its first packet came
        self.chunks: collections.deque[np.ndarray] = collections.deque([samples])
        self.begun = False  # its first sample is on the wire

    def append(self, samples: np.ndarray) -> None:
        self.chunks.append(samples)
        self.end += samples.size

    def read(self, count: int) -> np.ndarray:
        parts, got = [], 0
        while self.chunks and got < count:
            chunk = self.chunks[0]
            part = chunk[: count - got]
            if part.size == chunk.size:
                self.chunks.popleft()
            else:
                self.chunks[0] = chunk[part.size :]
            parts.append(part)
            got += part.size
        return np.concatenate(parts) if parts else np.zeros(0, dtype="<i2")

    @property
    def queued(self) -> int:
        return sum(c.size for c in self.chunks)


class AudioTrack(MediaStreamTrack):
    """The session's speech (kind-2 packets: s16 mono PCM) as a continuous stream of Opus packets.

    Continuous, as a microphone's: one 20 ms packet after another on the loop clock, silence
    where no one speaks, so the RTP timestamps advance with the wall clock. A browser aligns
    audio and video by mapping each stream's RTP timestamps to the sender's wall clock (RTCP
    sender reports); an audio stream sent only while speaking, its timestamps running on across
    the pauses, cannot be mapped and was measured out of sync (docs/server.md "WebRTC media").
    Each stretch of speech starts in the 20 ms chunk, at the sample, where the picture with its
    pts is handed over (`MediaClock.due`), less the receiver's reported audio lag
    (`MediaClock.audio_lead_s`), and then plays on contiguously (`pcm_chunk`). Speech that
    comes after that time starts at once and the pictures wait for it (`MediaClock.delay_by`).

    Why the track encodes Opus itself and returns packets (aiortc sends a packet's pts as its
    RTP timestamp): aiortc's own audio path stamped the sound later than it is. aiortc pairs an
    RTP timestamp with the wall time its packet leaves (the sender reports); its Opus encoder
    resamples to 48 kHz through a resampler that holds back a few samples, so a 20 ms frame only
    comes out of the encoder with the next one, 20 ms after its time; and it stamps a packet
    with its input frame's pts although the decoded sound starts the encoder's lookahead (312
    samples, 6.5 ms) before it. Receivers so heard every sound 26.5 ms (plus the encoder's
    thread hop) after its picture (benchmarks/webrtc_av_sync.py, docs/server.md). Here each
    packet carries the pts libopus gives it (the decoded sound's own time), the resampler is fed
    far enough ahead that a packet is complete before its time, and the packet leaves at its
    time on the loop clock: the sender reports pair every timestamp with the time of its sound.
    """

    kind = "audio"

    def __init__(self, rate: int, clock: MediaClock, limit_s: float = 30.0) -> None:
        super().__init__()
        self.rate = rate
        self.clock = clock
        self.frame_samples = rate * FRAME_MS // 1000  # one chunk of the session's PCM
        self.limit = int(limit_s * rate)  # speech samples held at most (oldest dropped)
        self._speech: collections.deque[_Speech] = collections.deque()
        self._start: float | None = None  # loop time of the stream's first sample
        self._chunks = 0  # PCM chunks made (`pcm_chunk`)
        self._sounded: float | None = None  # loop time of the last chunk that held speech
        self._resampler = av.AudioResampler(format="s16", layout="mono", rate=OPUS_RATE)
        self._encoder = _opus_encoder()
        self._pcm = np.zeros(0, dtype="<i2")  # at OPUS_RATE, not yet encoded
        self._encoded = 0  # OPUS_RATE samples handed to the encoder
        self._packets: collections.deque[av.Packet] = collections.deque()
        self.pushed = 0  # packets
        self.dropped = 0  # samples dropped for the limit
        #: Speech starts this much later than its picture: 0 in service; a benchmark plants an
        #: offset with it to show that its meters recover one (benchmarks/webrtc_av_sync.py).
        self.speech_delay_s = 0.0

    def push_packet(self, packet: bytes) -> None:
        _, _, pts_ms, pcm = parse_media_frame(packet)
        samples = np.frombuffer(pcm, dtype="<i2")
        if not samples.size:
            return
        self.pushed += 1
        start = round(pts_ms * self.rate / 1000)
        tail = self._speech[-1] if self._speech else None
        # Packets are stamped in whole ms: one that starts where the last ended continues it
        # exactly (a gapless stream for the encoder); a real gap (silence) keeps its own pts.
        if tail is not None and (abs(start - tail.end) <= self.rate * CONTIGUOUS_MS // 1000 or start < tail.end):
            tail.append(samples)
        else:
            self._speech.append(_Speech(start, samples, asyncio.get_running_loop().time()))
        excess = sum(s.queued for s in self._speech) - self.limit
        while excess > 0 and len(self._speech) > 1:
            excess -= self._speech[0].queued
            self.dropped += self._speech.popleft().queued

    def drop_speech(self) -> None:
        """Forget the speech not yet made into PCM (a reset cut the reply: the WebSocket page
        stops its player; here the next chunks are silence). What is already encoded, a
        packet or two, still goes."""
        self.dropped += sum(s.queued for s in self._speech)
        self._speech.clear()

    async def recv(self) -> av.Packet:
        """The next Opus packet (pts in 1/48000 s), once its time on the loop clock has come."""
        if self.readyState != "live":
            raise MediaStreamError
        loop = asyncio.get_running_loop()
        if self._start is None:
            self._start = loop.time()
        while not self._packets:
            self._encode_frame(loop.time())
        packet = self._packets.popleft()
        wait = self._start + packet.pts / OPUS_RATE - loop.time()
        if wait > 0:
            await asyncio.sleep(wait)
        elif wait < -MAX_LAG_S:  # the loop stalled: go on from now, no burst of old packets
            self._start -= wait
        if self.readyState != "live":
            raise MediaStreamError
        return packet

    def _encode_frame(self, now: float) -> None:
        """Encode the next Opus frame (FRAME_MS at OPUS_RATE), making the PCM it needs."""
        size = OPUS_RATE * FRAME_MS // 1000
        while self._pcm.size < size:
            chunk = av.AudioFrame.from_ndarray(self.pcm_chunk(now).reshape(1, -1), format="s16", layout="mono")
            chunk.sample_rate = self.rate
            chunk.pts = (self._chunks - 1) * self.frame_samples
            chunk.time_base = fractions.Fraction(1, self.rate)
            self._pcm = np.concatenate([self._pcm, *(f.to_ndarray().reshape(-1) for f in self._resampler.resample(chunk))])
        frame = av.AudioFrame.from_ndarray(self._pcm[None, :size], format="s16", layout="mono")
        frame.sample_rate = OPUS_RATE
        frame.pts = self._encoded
        frame.time_base = OPUS_TIME_BASE
        self._pcm = self._pcm[size:]
        self._encoded += size
        for packet in self._encoder.encode(frame):
            packet.time_base = OPUS_TIME_BASE
            self._packets.append(packet)

    def pcm_chunk(self, now: float) -> np.ndarray:
        """The next FRAME_MS of the session's PCM (at `rate`): silence, or the speech due in it.

        The resampler to OPUS_RATE holds back none of the sound's timing (its output sample i is
        input time i / OPUS_RATE), so chunk k sounds from `_start` + k · FRAME_MS on."""
        if self._start is None:
            self._start = now
        at = self._start + self._chunks * FRAME_MS / 1000
        samples = np.zeros(self.frame_samples, dtype="<i2")
        if self._fill(samples, at, now):
            self._sounded = at
        self.clock.speaking = any(s.begun and s.queued for s in self._speech) or (
            self._sounded is not None and at - self._sounded < SPEECH_GAP_S)
        self._chunks += 1
        return samples

    def _fill(self, out: np.ndarray, at: float, now: float) -> bool:
        """Put into `out` (the frame sounding from loop time `at`) the speech due in it; True if any."""
        filled = 0
        sounded = False
        while filled < out.size and self._speech:
            speech = self._speech[0]
            if not speech.begun:
                due = self.clock.due(speech.start * 1000 / self.rate)
                if due is None or now - speech.arrived >= MAX_AUDIO_HOLD_S:
                    due = at  # no picture yet, or a stalled one: speech must not wait for it
                else:
                    due += self.speech_delay_s - self.clock.audio_lead_s
                offset = round((due - at) * self.rate)
                if offset >= out.size:
                    return sounded  # it starts in a later frame
                if offset < filled:  # it came after its picture's time: the picture waits for it
                    self.clock.delay_by((filled - offset) / self.rate)
                filled = max(filled, offset)
                speech.begun = True
            part = speech.read(out.size - filled)
            out[filled : filled + part.size] = part
            filled += part.size
            sounded = sounded or part.size > 0
            if not speech.queued:
                if len(self._speech) == 1:
                    return sounded  # the stretch may go on (its next packet is late): keep it open
                self._speech.popleft()
        return sounded
