"""`persona render`: a scripted scene to an H.264 MP4 anyone can watch."""

from __future__ import annotations

import json

import av

from comfyui_persona.headless.cli import main
from paths import REPO


def _write(path, lines):
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    return path


def test_render_writes_an_h264_mp4_of_the_scripted_length(tmp_path):
    script = _write(
        tmp_path / "s.jsonl",
        [
            {"directive": {"action": "wave", "expression": "smile", "intensity": 0.8, "duration_s": 1.0}},
            {"wait_s": 0.5},
            {"directive": {"action": "sit", "expression": "shy", "intensity": 0.5, "duration_s": 1.0}},
        ],
    )
    out = tmp_path / "out.mp4"
    assert (
        main(
            [
                "render",
                "--persona",
                "ada",
                "--script",
                str(script),
                "-o",
                str(out),
                "--size",
                "128x96",
                "--fps",
                "10",
            ]
        )
        == 0
    )
    with av.open(str(out)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        assert (stream.width, stream.height) == (128, 96)
        frames = sum(1 for _ in container.decode(stream))
    assert frames == 10 + 5 + 10 + 10  # three lines, then a 1 s rest


def test_say_lines_are_interpreted_and_spoken(tmp_path, capsys):
    script = _write(tmp_path / "s.jsonl", [{"say": "please wave"}])
    out = tmp_path / "out.mp4"
    assert (
        main(["render", "--persona", "ada", "--script", str(script), "-o", str(out), "--size", "64x64"]) == 0
    )
    assert "wave" in capsys.readouterr().out


def test_a_bad_line_names_the_file_and_line(tmp_path, capsys):
    script = tmp_path / "s.jsonl"
    script.write_text(
        '{"wait_s": 0.1}\n{"directive": {"action": "moonwalk", "expression": "smile", "intensity": 1}}\n'
    )
    out = tmp_path / "o.mp4"
    out.write_bytes(b"an earlier clip")
    assert main(["render", "--persona", "ada", "--script", str(script), "-o", str(out)]) == 2
    assert "s.jsonl:2: unknown action 'moonwalk'" in capsys.readouterr().err
    # the clip that was there stays, and no partial file is left beside it
    assert out.read_bytes() == b"an earlier clip" and sorted(tmp_path.iterdir()) == [out, script]
    for wait in ("1e400", "Infinity", "-1", '"5"', "true"):
        script.write_text(f'{{"wait_s": {wait}}}\n')
        assert main(["render", "--persona", "ada", "--script", str(script), "-o", str(out)]) == 2, wait
        assert "s.jsonl:1: wait_s must be a number of seconds" in capsys.readouterr().err


def test_bad_size_is_a_clear_error(tmp_path, capsys):
    script = _write(tmp_path / "s.jsonl", [{"wait_s": 0.1}])
    assert (
        main(
            [
                "render",
                "--persona",
                "ada",
                "--script",
                str(script),
                "-o",
                str(tmp_path / "o.mp4"),
                "--size",
                "513x512",
            ]
        )
        == 2
    )
    assert "width=513 must be an even integer" in capsys.readouterr().err


def test_the_shipped_example_script_parses():
    from comfyui_persona.headless.commands.render import read_script

    events = read_script(REPO / "docs" / "examples" / "demo_script.jsonl")
    assert len(events) >= 10


def _decode(path):
    import numpy as np

    with av.open(str(path)) as container:
        video = container.streams.video[0]
        rate = float(video.average_rate)
        frames = sum(1 for _ in container.decode(video))
    with av.open(str(path)) as container:
        if not container.streams.audio:
            return rate, frames, None
        samples = np.concatenate([f.to_ndarray().reshape(-1) for f in container.decode(audio=0)])
    return rate, frames, samples


def test_say_lines_are_heard_in_the_mp4_at_24_fps_by_default(tmp_path):
    import numpy as np

    script = _write(tmp_path / "s.jsonl", [{"wait_s": 0.5}, {"say": "hello there, how are you?"}])
    out = tmp_path / "out.mp4"
    assert main(["render", "--persona", "ada", "--script", str(script), "-o", str(out), "--size", "96x96"]) == 0
    rate, frames, samples = _decode(out)
    assert abs(rate - 24.0) < 0.5  # the AAC priming shift stretches the first frame by 46 ms
    assert samples is not None
    # silence during the wait, speech after it
    quiet = samples[: int(0.4 * 22050)]
    assert float(np.abs(quiet).max(initial=0.0)) < 0.01
    assert float(np.sqrt(np.mean(samples.astype(np.float64) ** 2))) > 0.01
    assert abs(samples.size / 22050 - frames / 24.0) < 0.3


def test_no_audio_writes_video_only(tmp_path):
    script = _write(tmp_path / "s.jsonl", [{"say": "hello there"}])
    out = tmp_path / "out.mp4"
    args = ["render", "--persona", "ada", "--script", str(script), "-o", str(out), "--size", "64x64", "--no-audio"]
    assert main(args) == 0
    rate, frames, samples = _decode(out)
    assert samples is None and frames > 24
