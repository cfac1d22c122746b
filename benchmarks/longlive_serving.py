"""LongLive as a service: sessions streaming at real-time pace on one GPU, as viewers feel them.

Used by `benchmarks/longlive.py --paced/--capacity/--interrupt` (see its --help). Every session is
a real `LongLiveBackend` (directives → prompt composer → conditioning blender → the engine's
`EngineHost`, batched with the other sessions → TAE decode → frames in host memory), on an
engine built exactly as `video/longlive/loader.load_engine` builds it (`prepare_runtime`,
`prepare_decoder`: q/k/v fused, FP8 and compile as the settings resolve on this card, CUDA
graphs), with random weights (speed does not depend on them) and a text encoder that maps each
prompt to a fixed random embedding (UMT5 runs once per distinct prompt and is cached; it is not
on the paced path).

- paced: each client plays its stream at 16 fps from the moment its first chunk arrives and asks
  for chunk k just in time (`lead` seconds before chunk k is due, learnt from its own arrivals),
  or at once when a directive arrives for it. Directives come at uniformly random times. Per
  directive: arrival on the client of the first frame whose conditioning moved (the chunk that
  first shows it: a half step of the blend), of the first frame fully on the new prompt, and
  when the first changed frame is shown (it may wait for the chunk playing). Stalls (a chunk
  arriving after it was due) are counted: a session is real time when it never stalls.
- capacity: N sessions asking for chunks back to back (no pacing), for the throughput each gets
  (frames on the host per second of wall time); the same with N separate processes (one engine
  each), and with CUDA MPS when the machine has it, side by side.
- interrupt: one paced session; an interrupt callback fires at a random moment during a chunk;
  the time until `next_chunk` raises, and the next call's first frame index (no gap).
"""

from __future__ import annotations

import os
import random
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FPS = 16.0
ACTIONS = (("wave", "smile"), ("nod", "neutral"), ("wave", "surprised"), ("nod", "smile"))


def pct(xs: list[float], q: float) -> float | None:
    if not xs:
        return None
    xs = sorted(xs)
    return round(xs[min(len(xs) - 1, max(0, int(round(q * len(xs))) - 1))], 2)


class FixedText:
    """Prompt → a fixed random embedding (1, text_len, text_dim), cached: UMT5's role with its
    cost left out (it is cached per prompt in the engine too)."""

    def __init__(self, torch, cfg, device, dtype) -> None:
        self.torch, self.cfg, self.device, self.dtype = torch, cfg, device, dtype
        self.cache: dict[str, object] = {}

    def encode(self, prompt: str):
        if prompt not in self.cache:
            gen = self.torch.Generator().manual_seed(abs(hash(prompt)) % (2**31))
            emb = self.torch.randn(1, min(64, self.cfg.text_len), self.cfg.text_dim, generator=gen)
            self.cache[prompt] = emb.to(self.device, self.dtype)
        return self.cache[prompt]


def build_engine(torch, *, smoke: bool, device, settings_kw: dict | None = None, max_sessions: int = 16):
    """A `LoadedEngine` with random weights, built the way `load_engine` builds one."""
    from comfyui_persona.video.decoders.taehv import build_taehv
    from comfyui_persona.video.longlive.config import WanConfig
    from comfyui_persona.video.longlive.host import EngineHost
    from comfyui_persona.video.longlive.loader import (
        EngineFiles,
        LoadedEngine,
        prepare_decoder,
        prepare_runtime,
    )
    from comfyui_persona.video.longlive.model import build_on_meta, cast_for_inference, init_random_
    from comfyui_persona.video.longlive.settings import LongLiveSettings

    settings = LongLiveSettings(**{"max_sessions": max_sessions, **(settings_kw or {})})
    cfg = WanConfig.from_name("tiny-engine" if smoke else "wan2.1-t2v-1.3b")
    dtype = torch.float32 if smoke else getattr(torch, settings.dtype)
    speed = settings.resolved(str(device), torch.cuda.get_device_capability() if device.type == "cuda" else None)
    model = build_on_meta(cfg).to_empty(device=device)
    init_random_(model)
    runtime = prepare_runtime(cast_for_inference(model, dtype).eval(), speed)
    decoder = prepare_decoder(build_taehv(device, torch.float32 if smoke else torch.float16,
                                          "tiny" if smoke else "taew2.1"), speed)
    host = EngineHost(runtime, decoder, max_sessions=max_sessions, preempt=settings.preempt)
    engine = LoadedEngine(settings, EngineFiles(), runtime, FixedText(torch, cfg, device, dtype), decoder, host)
    return engine, speed


def _spec(i: int, height: int, width: int):
    from comfyui_persona.video.backend import SessionSpec

    return SessionSpec(persona_id=f"p{i}", persona_name=f"Viewer {i}", look={"description": "a woman with red hair"},
                       width=width, height=height, seed=i)


def _directive(seq: int):
    from comfyui_persona.persona.schema import ActionDirective

    action, expression = ACTIONS[seq % len(ACTIONS)]
    return ActionDirective(action=action, expression=expression, intensity=0.8)


class PacedClient(threading.Thread):
    """One viewer: plays at 16 fps, asks for each chunk just in time, or at once after a directive."""

    def __init__(self, backend, index: int, stop: threading.Event, blend: int, *, passes_run, lock) -> None:
        super().__init__(daemon=True)
        self.backend, self.index, self.stop, self.blend = backend, index, stop, blend
        self.passes_run = passes_run  # the engine's pass counter (an int read: no lock needed)
        self.host_lock = lock  # the engine host's, to read the session's queue
        self.owed_at: dict[int, bool] = {}  # seq → whether its session owed passes when it came
        self.wake = threading.Event()
        self.sent: dict[int, float] = {}  # directive seq → when it was submitted
        self.sent_pass: dict[int, int] = {}  # directive seq → engine passes run before it came
        self.passes_until: dict[int, int] = {}  # seq → engine passes from it to its first frame
        self.first_changed: dict[int, tuple[float, float]] = {}  # seq → (arrival, shown)
        self.fully_new: dict[int, float] = {}
        self.stall_s = 0.0
        self.stalls = 0
        self.frames = 0
        self.started = self.ended = None
        self.error: BaseException | None = None
        self.lock = threading.Lock()

    def submit(self, seq: int) -> None:
        with self.lock:
            self.sent[seq] = time.perf_counter()
            self.sent_pass[seq] = self.passes_run()
        with self.host_lock:  # work left from the last chunk (a refresh, a re-cache) runs first
            self.owed_at[seq] = bool(self.backend.session.stream.owes_work)
        self.backend.submit([_directive(seq)], seq)
        self.wake.set()

    def run(self) -> None:
        try:
            self._run()
        except BaseException as exc:  # noqa: BLE001 - reported in the result
            self.error = exc

    def _run(self) -> None:
        t0 = None
        lead, made = 0.5, 0
        pending_full: list[tuple[int, int]] = []  # (seq, chunks to go) until fully on the new prompt
        while not self.stop.is_set():
            due = None if t0 is None else t0 + made / FPS + self.stall_s
            if due is not None:
                wait = due - lead - time.perf_counter()
                if wait > 0:
                    self.wake.wait(timeout=wait)
            self.wake.clear()
            asked = time.perf_counter()
            chunk = self.backend.next_chunk(deadline=None if due is None else time.monotonic() + (due - asked))
            arrived = time.perf_counter()
            took = arrived - asked
            # Ask a chunk's length of work early: room for a directive to restart it and still be on time.
            lead = max(0.15, 0.7 * lead + 0.3 * (2.0 * took + 0.05))
            if t0 is None:
                t0 = self.started = arrived
                due = arrived
            if arrived > due:  # the player waited for this chunk
                self.stall_s += arrived - due
                self.stalls += 1 if made else 0
                due = arrived
            with self.lock:
                for seq in chunk.shows_directives:
                    if seq in self.sent:
                        self.first_changed[seq] = (arrived - self.sent[seq], max(arrived, due) - self.sent[seq])
                        self.passes_until[seq] = self.passes_run() - self.sent_pass[seq]
                        pending_full.append((seq, self.blend - 1))
                still = []
                for seq, left in pending_full:
                    if left <= 0:
                        self.fully_new[seq] = arrived - self.sent[seq]
                    else:
                        still.append((seq, left - 1))
                pending_full = still
            made += chunk.frames.shape[0]
            self.frames = made
            self.ended = arrived


def paced(engine, torch, n: int, height: int, width: int, seconds: float, *, every_s: tuple[float, float],
          seed: int = 0, blend: int = 2, blend_recache: str = "last") -> dict:
    """`n` paced sessions for `seconds`, a directive to a random session every U(every_s) s."""
    from comfyui_persona.video.longlive.engine import LongLiveBackend

    rng = random.Random(seed)
    stop = threading.Event()
    clients = []
    for i in range(n):
        backend = LongLiveBackend(engine=engine, blend_chunks=blend, blend_recache=blend_recache)
        backend.start_session(_spec(i, height, width))
        clients.append(PacedClient(backend, i, stop, blend, passes_run=lambda: engine.host.runtime.passes_run,
                                   lock=engine.host._lock))
    stats0 = _host_counts(engine.host)
    for c in clients:
        c.start()
    time.sleep(min(3.0, seconds / 4))  # every stream running before the first directive
    seq, end = 0, time.perf_counter() + seconds
    while time.perf_counter() < end and not any(c.error for c in clients):
        time.sleep(rng.uniform(*every_s) / n)
        seq += 1
        clients[rng.randrange(n)].submit(seq)
    time.sleep(min(3.0, seconds / 2))  # the last directives' chunks
    stop.set()
    for c in clients:
        c.wake.set()
        c.join(timeout=30)
    for c in clients:
        c.backend.close()
    first = [v[0] * 1000 for c in clients for v in c.first_changed.values()]
    shown = [v[1] * 1000 for c in clients for v in c.first_changed.values()]
    full = [v * 1000 for c in clients for v in c.fully_new.values()]
    passes = [v for c in clients for v in c.passes_until.values()]
    owed = [(c.passes_until[seq], c.owed_at.get(seq)) for c in clients for seq in c.passes_until]
    per_session = []
    for c in clients:
        wall = (c.ended or 0) - (c.started or 0)
        per_session.append({"fps_video": round(c.frames / wall, 2) if wall > 0 else None, "frames": c.frames,
                            "stalls": c.stalls, "stall_s": round(c.stall_s, 3),
                            "error": f"{type(c.error).__name__}: {c.error}" if c.error else None})
    return {
        "sessions": n, "height": height, "width": width, "seconds": seconds,
        "directives": seq, "directives_measured": len(first),
        "directive_to_first_changed_frame_received_ms_p50": pct(first, 0.5),
        "directive_to_first_changed_frame_received_ms_p95": pct(first, 0.95),
        "directive_to_first_changed_frame_shown_ms_p50": pct(shown, 0.5),
        "directive_to_first_changed_frame_shown_ms_p95": pct(shown, 0.95),
        "directive_to_fully_new_frame_received_ms_p50": pct(full, 0.5),
        "directive_to_fully_new_frame_received_ms_p95": pct(full, 0.95),
        # Engine passes (all sessions') between a directive and its first frame: a chunk's own
        # passes from an idle engine; more when it came mid-chunk and that chunk was finished.
        "directive_engine_passes": sorted(passes),
        # (passes, whether the session still owed work from its last chunk when the directive came)
        "directive_engine_passes_and_owed_work": sorted(owed),
        "real_time": all(s["stalls"] == 0 and not s["error"] for s in per_session),
        "per_session": per_session,
        "host": _host_delta(engine.host, stats0),
    }


def _host_counts(host) -> dict:
    s = host.stats
    return {"passes": s.passes, "rows": s.rows, "preempted": s.preempted, "preempt_declined": s.preempt_declined,
            "prefetched": s.prefetched,
            "sat_out": s.sat_out, "replays": host.runtime.graph_replays,
            "graphs_captured": host.runtime.graphs_captured, "pass_gpu_s": s.pass_gpu_s,
            "graph_names": host.runtime.graph_names()}


def _host_delta(host, before: dict) -> dict:
    now = _host_counts(host)
    names = now.pop("graph_names")
    out = {k: now[k] - before[k] for k in now}
    out["graphs_captured_here"] = [name for name in names if name not in before["graph_names"]]
    out["pass_gpu_s"] = round(out["pass_gpu_s"], 3)
    out["mean_batch"] = round(out["rows"] / out["passes"], 2) if out["passes"] else None
    return out


def throughput(engine, torch, n: int, height: int, width: int, chunks: int) -> dict:
    """`n` sessions asking for chunks back to back (batched): frames on the host per second each."""
    from comfyui_persona.video.longlive.engine import LongLiveBackend

    backends = []
    for i in range(n):
        b = LongLiveBackend(engine=engine)
        b.start_session(_spec(i, height, width))
        backends.append(b)
    _run_threads(backends, 6)  # warm: fill the windows (every shape seen), not timed
    stats0 = _host_counts(engine.host)
    start = time.perf_counter()
    frames = _run_threads(backends, chunks)
    wall = time.perf_counter() - start
    for b in backends:
        b.close()
    each = [f / wall for f in frames]
    host = _host_delta(engine.host, stats0)
    # The share of the wall time the DiT passes kept the GPU busy (the decodes, on a side
    # stream, not counted): what is left is time the GPU waited for the host or the callers.
    host["pass_gpu_share"] = round(host["pass_gpu_s"] / wall, 4)
    return {"sessions": n, "height": height, "width": width, "chunks_each": chunks,
            "fps_video_per_session_min": round(min(each), 2), "fps_video_per_session_mean": round(sum(each) / n, 2),
            "fps_video_total": round(sum(frames) / wall, 2), "wall_s": round(wall, 3), "host": host}


def _run_threads(backends, chunks: int) -> list[int]:
    frames = [0] * len(backends)
    errors: list[BaseException] = []

    def run(i, b):
        try:
            for _ in range(chunks):
                frames[i] += b.next_chunk().frames.shape[0]
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i, b)) for i, b in enumerate(backends)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return frames


def interrupt_latency(engine, torch, height: int, width: int, samples: int, seed: int = 0) -> dict:
    """One session: an interrupt at a random moment of a chunk; time until `next_chunk` raises,
    and whether the next call continues at the next frame index."""
    from comfyui_persona.video.longlive.engine import LongLiveBackend
    from comfyui_persona.video.longlive.host import ChunkInterrupted

    rng = random.Random(seed)
    backend = LongLiveBackend(engine=engine)
    backend.start_session(_spec(0, height, width))
    for _ in range(3):
        backend.next_chunk()
    started = time.perf_counter()
    for _ in range(3):
        backend.next_chunk()
    chunk_s = (time.perf_counter() - started) / 3  # the interrupt lands inside a chunk
    expected = backend.frame_index
    latencies, gaps = [], 0
    attempts = 0
    while len(latencies) < samples and attempts < 3 * samples:
        attempts += 1
        fire = threading.Event()
        fired_at: list[float] = []

        def trigger(delay, fire=fire, fired_at=fired_at):
            time.sleep(delay)
            fired_at.append(time.perf_counter())
            fire.set()

        trigger_thread = threading.Thread(target=trigger, args=(rng.uniform(0.05, 0.5) * chunk_s,), daemon=True)
        trigger_thread.start()
        try:
            backend.next_chunk(interrupt=fire.is_set)
        except ChunkInterrupted:
            latencies.append((time.perf_counter() - fired_at[0]) * 1000)
        trigger_thread.join()
        expected = backend.frame_index  # moved on only if the chunk finished before the interrupt
        chunk = backend.next_chunk()
        gaps += int(chunk.first_index != expected)
    backend.close()
    return {"height": height, "width": width, "samples": samples, "attempts": attempts,
            "chunk_ms": round(chunk_s * 1000, 1), "interrupted": len(latencies),
            "interrupt_to_stop_ms_p50": pct(latencies, 0.5), "interrupt_to_stop_ms_max": round(max(latencies), 2)
            if latencies else None, "frame_gaps_after": gaps}


# --------------------------------------------------------------------------- separate processes


def child_main(argv: list[str]) -> int:
    """One engine process: one session, chunks back to back for `seconds` once every process is
    ready (a file barrier in `folder`); prints its frames per second as JSON."""
    import json

    import torch

    height, width, seconds, smoke, folder, index = (int(argv[0]), int(argv[1]), float(argv[2]), argv[3] == "1",
                                                    Path(argv[4]), argv[5])
    sys.path.insert(0, str(REPO / "benchmarks"))
    from record import ensure_package

    ensure_package()
    device = torch.device("cpu" if smoke else "cuda")
    with torch.inference_mode():
        engine, _ = build_engine(torch, smoke=smoke, device=device, max_sessions=1)
        from comfyui_persona.video.longlive.engine import LongLiveBackend

        backend = LongLiveBackend(engine=engine)
        backend.start_session(_spec(0, height, width))
        for _ in range(6):
            backend.next_chunk()
        (folder / f"ready-{index}").touch()
        while not (folder / "go").exists():
            time.sleep(0.01)
        frames, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            frames += backend.next_chunk().frames.shape[0]
        wall = time.perf_counter() - t0
    print(json.dumps({"fps_video": frames / wall}), flush=True)
    return 0


def separate_processes(n: int, height: int, width: int, seconds: float, *, smoke: bool, ready_timeout_s: float,
                       env: dict | None = None) -> dict:
    """`n` engine processes side by side (each one session), measured over the same window: they
    start timing together once every one has compiled and filled its window."""
    import json
    import shutil
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="persona-procs-"))
    procs = [subprocess.Popen([sys.executable, str(Path(__file__)), "child", str(height), str(width), str(seconds),
                               "1" if smoke else "0", str(folder), str(i)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env={**os.environ, **(env or {})}) for i in range(n)]
    started = time.perf_counter()
    while len(list(folder.glob("ready-*"))) < n and time.perf_counter() - started < ready_timeout_s:
        if any(p.poll() is not None for p in procs):
            break
        time.sleep(0.05)
    ready_s = time.perf_counter() - started
    (folder / "go").touch()
    results, errors = [], []
    for p in procs:
        try:
            out, err = p.communicate(timeout=seconds + 120)
        except subprocess.TimeoutExpired:
            p.kill()
            out, err = p.communicate()
        lines = [line for line in out.splitlines() if line.startswith("{")]
        if p.returncode == 0 and lines:
            results.append(json.loads(lines[-1]))
        else:
            errors.append(err[-600:])
    shutil.rmtree(folder, ignore_errors=True)
    fps = [r["fps_video"] for r in results]
    return {"processes": n, "height": height, "width": width, "seconds": seconds, "ready_s": round(ready_s, 1),
            "fps_video_per_process_min": round(min(fps), 2) if fps else None,
            "fps_video_per_process_mean": round(statistics.mean(fps), 2) if fps else None,
            "fps_video_total": round(sum(fps), 2) if fps else None, "errors": errors}


def mps_available() -> str | None:
    """None when CUDA MPS can be started here, else why not."""
    from shutil import which

    if which("nvidia-cuda-mps-control") is None:
        return "nvidia-cuda-mps-control is not on this machine"
    return None


def with_mps(run):
    """Run `run(env)` with an MPS control daemon of our own (pipe and log dirs in /tmp)."""
    pipe, logs = Path("/tmp/persona-mps/pipe"), Path("/tmp/persona-mps/log")
    pipe.mkdir(parents=True, exist_ok=True)
    logs.mkdir(parents=True, exist_ok=True)
    env = {"CUDA_MPS_PIPE_DIRECTORY": str(pipe), "CUDA_MPS_LOG_DIRECTORY": str(logs)}
    started = subprocess.run(["nvidia-cuda-mps-control", "-d"], env={**os.environ, **env}, capture_output=True,
                             text=True, timeout=30)
    if started.returncode != 0:
        return {"error": f"MPS daemon did not start: {started.stderr.strip()[:300]}"}
    try:
        return run(env)
    finally:
        subprocess.run(["nvidia-cuda-mps-control"], input="quit\n", env={**os.environ, **env}, capture_output=True,
                       text=True, timeout=30)


if __name__ == "__main__" and len(sys.argv) > 1 and sys.argv[1] == "child":
    sys.exit(child_main(sys.argv[2:]))
