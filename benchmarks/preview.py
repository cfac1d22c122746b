"""Preview renderer speed on ONE CPU core, and smoothness over every transition.

    .venv/bin/python benchmarks/preview.py                     # full run, writes the JSON (~4 min; the sweep alone took 184 s)
    .venv/bin/python benchmarks/preview.py --quick --out /tmp  # seconds
    .venv/bin/python benchmarks/preview.py --scene             # scenes of 1, 2 and 4 characters only (~2 min)

Scenes (`--scene`, issue 20): the same mix on a `ScenePreviewRenderer` of 2 and 4 characters
at 512², every character getting its own directives (the k-th submission goes to character
k mod n, each a whole directive, so all of them are mid-gesture most of the time) and the
speaker changing with each talking cycle; the single `PreviewRenderer` is measured in the same
run as the anchor. Written with `record.write_result` to `preview-cpu-<date>-scene.json`.

Speed: the process is pinned to one core (`os.sched_setaffinity`) and BLAS/OpenMP pools
are set to one thread before numpy loads; Skia's raster backend draws on the calling
thread. Each run renders `--seconds` of a realistic mix at 16 fps in 4-frame chunks (the
server's default): a new directive every ~1.5 s cycling through all 16 actions and 12
expressions (so most frames are mid-transition or mid-gesture), interruptions, posture
changes, walking (scrolling scene) and speech (talking cycle) half of the time. fps is
frames / wall time of `next_chunk` calls; the median of `--runs` runs is quoted. On a
shared machine other processes steal the core, so fps by the thread's own CPU time
(`time.thread_time`) is recorded beside it: that is what one free core would give.

Smoothness: `video/preview/smoothness.py`'s sweep (every action→action and
expression→expression pair plus interruptions) at `--smooth-size`, with the bounds.

`--compare-libs` repeats the measurement behind the choice of Skia over Pillow
(video/preview/draw.py): 60 ovals and round-capped strokes on a 512×512 canvas.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import importlib.metadata  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from comfyui_persona.persona.schema import CORE_ACTIONS, CORE_EXPRESSIONS, ActionDirective  # noqa: E402
from comfyui_persona.video.backend import SessionSpec  # noqa: E402
from comfyui_persona.video.preview import PreviewRenderer, ScenePreviewRenderer, smoothness  # noqa: E402
from record import cpu_model, result_path, today, write_result  # noqa: E402
from record import torch_version as torch_version_of  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
LOOK = {"hair_style": "long", "name_tag": True}


def pin_one_core() -> int:
    core = min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {core})
    return core


def realistic_mix(renderer: PreviewRenderer, frames: int, fps: float) -> tuple[float, float]:
    """Render `frames` frames of the mix; returns (wall, thread CPU) seconds in next_chunk."""
    actions = [e.name for e in CORE_ACTIONS]
    expressions = [e.name for e in CORE_EXPRESSIONS]

    def submit(k: int) -> None:
        action, expression = actions[k % len(actions)], expressions[(k * 5) % len(expressions)]
        renderer.submit([ActionDirective(action=action, expression=expression, intensity=0.8)], seq=k)
        if k % 2 == 0:
            renderer.set_speech(None, 1200)

    return _timed_mix(renderer, frames, int(1.5 * fps), submit)


def _timed_mix(renderer, frames: int, every: int, submit) -> tuple[float, float]:
    """Render `frames` frames, calling `submit(k)` every `every` frames; (wall, thread CPU)
    seconds spent in next_chunk."""
    spent = cpu = 0.0
    done = k = 0
    while done < frames:
        if done % every < renderer.chunk_frames:
            submit(k)
            k += 1
        start, start_cpu = time.perf_counter(), time.thread_time()
        chunk = renderer.next_chunk()
        spent += time.perf_counter() - start
        cpu += time.thread_time() - start_cpu
        done += chunk.frames.shape[0]
    return spent, cpu


def speed(width: int, height: int, seconds: float, runs: int, fps: float = 16.0) -> dict:
    results, cpu_results = [], []
    for run in range(runs):
        renderer = PreviewRenderer(chunk_frames=4)
        renderer.start_session(SessionSpec("bench", "Ada", LOOK, width, height, fps, seed=run))
        renderer.next_chunk()  # warm-up (font, first surface use)
        frames = int(seconds * fps)
        spent, cpu = realistic_mix(renderer, frames, fps)
        results.append(frames / spent)
        cpu_results.append(frames / cpu)
    return {
        "fps_median": statistics.median(results),
        "fps_runs": results,
        "ms_per_frame_median": 1000.0 / statistics.median(results),
        "fps_cpu_time_median": statistics.median(cpu_results),
    }


SCENE_CAST = ("ada", "mira", "bjorn", "kai")
SCENE_LOOKS = (
    {"hair_style": "long", "outfit_colour": "#d14a4a"},
    {"hair_style": "ponytail", "outfit_colour": "#4a7bd1"},
    {"hair_style": "short", "outfit_colour": "#4ad17b"},
    {"hair_style": "bun", "outfit_colour": "#d1c24a"},
)


def scene_mix(renderer: ScenePreviewRenderer, frames: int, fps: float) -> tuple[float, float]:
    """`realistic_mix` for a scene: submission k goes to character k mod n, and every other
    one makes that character speak (the others turn to look)."""
    actions = [e.name for e in CORE_ACTIONS]
    expressions = [e.name for e in CORE_EXPRESSIONS]
    cast = renderer.cast

    def submit(k: int) -> None:
        who = cast[k % len(cast)]
        action, expression = actions[k % len(actions)], expressions[(k * 5) % len(expressions)]
        renderer.submit([ActionDirective(action=action, expression=expression, intensity=0.8, character=who)], seq=k)
        if k % 2 == 0:
            renderer.set_speech(None, 1200, character=who)

    # each character still gets a new directive every ~1.5 s
    return _timed_mix(renderer, frames, max(1, int(1.5 * fps / len(cast))), submit)


def scene_speed(characters: int, size: int, seconds: float, runs: int, fps: float = 16.0) -> dict:
    results, cpu_results = [], []
    for run in range(runs):
        renderer = ScenePreviewRenderer(chunk_frames=4)
        renderer.start_scene([SessionSpec(SCENE_CAST[i], SCENE_CAST[i].title(), dict(SCENE_LOOKS[i], name_tag=True),
                                          size, size, fps, seed=run) for i in range(characters)])
        renderer.next_chunk()  # warm-up
        frames = int(seconds * fps)
        spent, cpu = scene_mix(renderer, frames, fps)
        results.append(frames / spent)
        cpu_results.append(frames / cpu)
    return {"fps_median": statistics.median(results), "fps_runs": results,
            "ms_per_frame_median": 1000.0 / statistics.median(results),
            "fps_cpu_time_median": statistics.median(cpu_results)}


def scenes(args: argparse.Namespace, core: int) -> int:
    """`--scene`: 1 (the single renderer), 2 and 4 characters at 512², one core."""
    size = 512
    metrics: dict = {}
    for characters in (1, 2, 4):
        if characters == 1:
            result = speed(size, size, args.seconds, args.runs)
        else:
            result = scene_speed(characters, size, args.seconds, args.runs)
        key = f"fps_{size}x{size}_{characters}_characters"
        metrics[key] = result["fps_median"]
        metrics[f"{key}_runs"] = result["fps_runs"]
        metrics[f"{key}_by_thread_cpu_time"] = result["fps_cpu_time_median"]
        metrics[f"ms_per_frame_{size}x{size}_{characters}_characters"] = result["ms_per_frame_median"]
        print(f"{characters} character(s) at {size}x{size}: {result['fps_median']:.1f} fps median on one core "
              f"({result['fps_cpu_time_median']:.1f} fps by CPU time; runs {[round(x, 1) for x in result['fps_runs']]})")
    config = {"seconds_per_run": args.seconds, "runs": args.runs, "fps_clock": 16.0, "chunk_frames": 4,
              "size": size, "characters": [1, 2, 4], "goal_fps_4_characters": 30,
              "mix": "per character a directive every ~1.5 s cycling 16 actions x 12 expressions; "
                     "every other one makes that character speak (a talking cycle); 1 character = PreviewRenderer",
              "skia": importlib.metadata.version("skia-python")}
    path = result_path("preview", "cpu", "scene", folder=args.out)
    write_result(path, "preview", f"{cpu_model()} (1 core: cpu {core})", config, metrics)
    print(f"wrote {path}")
    return 0


def compare_libs(repeats: int = 100) -> dict:
    import skia
    from PIL import Image, ImageDraw

    size = 512
    shapes = np.random.default_rng(0).uniform(50, 450, (60, 4))

    def with_skia() -> np.ndarray:
        pixels = np.zeros((size, size, 4), np.uint8)
        canvas = skia.Surface(pixels).getCanvas()
        canvas.clear(0xFFDFE8F1)
        fill = skia.Paint(AntiAlias=True, Color=0xFF4A7BD1)
        line = skia.Paint(
            AntiAlias=True,
            Color=0xFF2F3542,
            Style=skia.Paint.kStroke_Style,
            StrokeWidth=18,
            StrokeCap=skia.Paint.kRound_Cap,
        )
        for i, (a, b, c, d) in enumerate(shapes):
            if i % 2:
                canvas.drawOval(skia.Rect(a, b, a + 40, b + 30), fill)
            else:
                canvas.drawLine(a, b, c, d, line)
        return pixels[..., :3].copy()

    def with_pillow(supersample: int) -> np.ndarray:
        s = supersample
        image = Image.new("RGB", (size * s, size * s), (223, 232, 241))
        draw = ImageDraw.Draw(image)
        for i, (a, b, c, d) in enumerate(shapes):
            if i % 2:
                draw.ellipse([a * s, b * s, (a + 40) * s, (b + 30) * s], fill=(74, 123, 209))
            else:
                draw.line([a * s, b * s, c * s, d * s], fill=(47, 53, 66), width=18 * s)
        if s > 1:
            image = image.resize((size, size), Image.BILINEAR)
        return np.asarray(image)

    out = {}
    for name, fn in (
        ("skia_aa", with_skia),
        ("pillow_no_aa", lambda: with_pillow(1)),
        ("pillow_aa_2x_supersampled", lambda: with_pillow(2)),
    ):
        fn()
        times = []
        for _ in range(5):
            start = time.perf_counter()
            for _ in range(repeats // 5):
                fn()
            times.append((time.perf_counter() - start) / (repeats // 5) * 1000.0)
        out[f"{name}_ms_median"] = statistics.median(times)
    return out


def smooth(size: int) -> dict:
    steady = smoothness.sweep(width=size, height=size, cases=list(smoothness.steady_cases()))
    start = time.perf_counter()
    moving = smoothness.sweep(width=size, height=size)
    snapped = smoothness.sweep(width=size, height=size, blend_scale=0.0)
    return {
        "cases": moving.cases,
        "frames": moving.frames,
        "max_pose_step": moving.max_pose_step,
        "max_pose_step_case": moving.max_pose_case,
        "max_pose_step_bound": smoothness.MAX_POSE_STEP,
        "steady_max_pose_step": steady.max_pose_step,
        "steady_max_pose_step_case": steady.max_pose_case,
        "max_pixel_mean_step_0_255": moving.max_pixel_mean,
        "max_pixel_mean_step_case": moving.max_pixel_case,
        "max_pixel_changed_fraction": moving.max_pixel_changed,
        "steady_max_pixel_mean_step_0_255": steady.max_pixel_mean,
        "steady_max_pixel_mean_step_case": steady.max_pixel_case,
        "pixel_mean_step_bound_0_255": smoothness.PIXEL_RATIO_BOUND * steady.max_pixel_mean,
        "jump_cut_max_pose_step": snapped.max_pose_step,
        "jump_cut_cases_over_pose_bound": sum(
            v > smoothness.MAX_POSE_STEP for v in snapped.per_case.values()
        ),
        "jump_cut_max_pixel_mean_step_0_255": snapped.max_pixel_mean,
        "sweep_seconds": time.perf_counter() - start,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="video seconds per run")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--smooth-size", type=int, default=256)
    parser.add_argument("--compare-libs", action="store_true")
    parser.add_argument("--quick", action="store_true", help="a few seconds, for a smoke test")
    parser.add_argument("--scene", action="store_true",
                        help="only scenes: 1, 2 and 4 characters at 512x512 (issue 20), written as <...>-scene.json")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.runs, args.smooth_size = 2.0, 1, 64

    core = pin_one_core()
    if args.scene:
        return scenes(args, core)
    metrics: dict = {}
    for width, height in ((512, 512), (832, 480)):
        result = speed(width, height, args.seconds, args.runs)
        metrics[f"fps_{width}x{height}"] = result["fps_median"]
        metrics[f"ms_per_frame_{width}x{height}"] = result["ms_per_frame_median"]
        metrics[f"fps_{width}x{height}_runs"] = result["fps_runs"]
        metrics[f"fps_{width}x{height}_by_thread_cpu_time"] = result["fps_cpu_time_median"]
        print(
            f"{width}x{height}: {result['fps_median']:.1f} fps median on one core "
            f"({result['ms_per_frame_median']:.2f} ms/frame; {result['fps_cpu_time_median']:.1f} fps by CPU time; runs {[round(x, 1) for x in result['fps_runs']]})"
        )
    if args.compare_libs:
        metrics["library_comparison"] = compare_libs()
        print("library comparison (ms/frame):", metrics["library_comparison"])
    metrics["smoothness"] = smooth(args.smooth_size)
    print("smoothness:", json.dumps(metrics["smoothness"], indent=2))

    torch_version = torch_version_of()
    record = {
        "benchmark": "preview",
        "device": f"{cpu_model()} (1 core: cpu {core})",
        "torch": torch_version,
        "config": {
            "seconds_per_run": args.seconds,
            "runs": args.runs,
            "fps_clock": 16.0,
            "chunk_frames": 4,
            "mix": "directive every 1.5 s cycling 16 actions x 12 expressions, talking cycle every other one",
            "smoothness_size": args.smooth_size,
            "skia": importlib.metadata.version("skia-python"),
            "python": platform.python_version(),
        },
        "metrics": metrics,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"preview-cpu-{today()}.json"
    record = write_result(path, **record)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
