"""Every CLI error a user can cause is one line on stderr naming the problem, a non-zero
exit and no traceback (issue 17). Each case runs `persona` as a real subprocess."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest


def _persona(*argv: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "comfyui_persona.headless", *argv],
        capture_output=True, text=True, timeout=300, env=env, cwd=cwd,
    )


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """A user with an empty persona folder of their own (never the developer's)."""
    values = {k: v for k, v in os.environ.items() if k != "PERSONA_DIR"}
    values["XDG_DATA_HOME"] = str(tmp_path / "data")
    values["COLUMNS"] = "60"  # a narrow terminal must not wrap the line either
    return values


def _assert_one_line(result: subprocess.CompletedProcess, *names: str) -> str:
    assert result.returncode != 0, result
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    line = lines[0]
    assert "error:" in line
    for name in names:
        assert name in line, line
    return line


def test_port_in_use_is_one_line(env):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = _persona("serve", "--no-warm-up", "--host", "127.0.0.1", "--port", str(port), env=env)
    line = _assert_one_line(result, f"port {port} is in use", "--port")
    assert line.startswith("persona: error:")


@pytest.mark.parametrize(
    ("argv", "names"),
    [
        (["serve", "--port", "99999"], ["port", "65535", "99999"]),
        (["serve", "--port", "abc"], ["port", "integer"]),
        (["serve", "--max-sessions", "-3"], ["max-sessions", "-3"]),
        (["serve", "--workflow", "{tmp}/nope.json"], ["--workflow", "nope.json"]),
        (["serve", "--config", "{tmp}/missing.toml"], ["missing.toml"]),
        (["serve", "--config", "{tmp}/bad.toml"], ["bad.toml", "TOML"]),
        (["serve", "--config", "{tmp}/bad.json"], ["bad.json", "JSON"]),
        (["serve", "--config", "{tmp}/unknown.json"], ["bogus_key".replace("_", "-")]),
        (["serve", "--cache", "sometimes"], ["--cache", "sometimes"]),
        (["serve", "--host", "8.8.8.8"], ["8.8.8.8", "token"]),
        (["serve", "--comfyui-output-dir", "{tmp}/saved"], ["comfyui_output_dir", "--comfyui PATH"]),
        (["render", "--persona", "mira", "--script", "{tmp}/missing.jsonl", "-o", "{tmp}/o.mp4"],
         ["--script", "missing.jsonl"]),
        (["render", "--persona", "mira", "--script", "{tmp}/bad.jsonl", "-o", "{tmp}/o.mp4"], ["bad.jsonl:2"]),
        (["render", "--persona", "mira", "--script", "{tmp}/bad-directive.jsonl", "-o", "{tmp}/o.mp4"],
         ["bad-directive.jsonl:1", "intensity", "Field required"]),
        (["render", "--persona", "mira", "--script", "{tmp}/ok.jsonl", "-o", "{tmp}/a-file/o.mp4"], ["-o", "a-file"]),
        (["render", "--persona", "mira", "--script", "{tmp}/ok.jsonl", "-o", "{tmp}"], ["-o"]),
        (["render", "--persona", "zed", "--script", "{tmp}/ok.jsonl", "-o", "{tmp}/o.mp4"], ["unknown persona 'zed'"]),
        (["render", "--persona", "mira", "--script", "{tmp}/ok.jsonl", "-o", "{tmp}/o.mp4", "--fps", "0"], ["fps"]),
        (["render", "--persona", "mira", "--script", "{tmp}/ok.jsonl", "-o", "{tmp}/o.mp4", "--fps", "abc"], ["--fps"]),
        (["render", "--persona", "mira", "--script", "{tmp}/ok.jsonl", "-o", "{tmp}/o.mp4", "--seed", "-1"], ["--seed"]),
        (["render", "--persona", "mira", "--script", "{tmp}/ok.jsonl", "-o", "{tmp}/o.mp4", "--size", "big"], ["--size"]),
        (["render", "--persona", "mira", "--script", "{tmp}/ok.jsonl", "-o", "{tmp}/o.mp4", "--size", "3x3"], ["width"]),
        (["interpret", "--persona", "zed", "hi"], ["unknown persona 'zed'"]),
        (["interpret", "--backend", "nope", "hi"], ["nope"]),
        (["interpret", "--option", "novalue", "hi"], ["KEY=VALUE"]),
        (["chat", "--persona", "zed"], ["unknown persona 'zed'"]),
        (["personas", "show", "zed"], ["unknown persona 'zed'"]),
        (["personas", "import", "{tmp}/missing.json"], ["missing.json"]),
        (["personas", "import", "{tmp}/ok.jsonl"], ["Character Card"]),
        (["personas", "export", "zed", "-o", "{tmp}/z.json"], ["zed"]),
        (["personas", "export", "mira", "-o", "{tmp}/a-file/m.json"], ["a-file"]),
        (["identity-drift", "{tmp}/missing.mp4", "--self"], ["missing.mp4"]),
        (["identity-drift", "{tmp}/missing.mp4", "--self", "--fps", "0"], ["--fps"]),
        (["identity-drift", "{tmp}/missing.mp4", "--self", "--det-size", "33"], ["--det-size"]),
        (["models", "frobnicate"], ["frobnicate"]),
        (["no-such-command"], ["no-such-command"]),
    ],
    ids=lambda value: " ".join(value) if isinstance(value, list) and value and "error" not in value[0] else None,
)
def test_bad_invocation_is_one_line(argv, names, env, tmp_path):
    (tmp_path / "a-file").write_text("not a folder")
    (tmp_path / "bad.toml").write_text("port = [\n")
    (tmp_path / "bad.json").write_text("{port: 1}")
    (tmp_path / "unknown.json").write_text('{"port": 8200, "bogus_key": 1}')
    (tmp_path / "ok.jsonl").write_text('{"wait_s": 0.1}\n')
    (tmp_path / "bad.jsonl").write_text('{"wait_s": 0.1}\n{"jump": 1}\n')
    (tmp_path / "bad-directive.jsonl").write_text('{"directive": {"action": "wave", "expression": "smile"}}\n')
    argv = [part.replace("{tmp}", str(tmp_path)) for part in argv]
    _assert_one_line(_persona(*argv, env=env), *names)


def test_an_error_quoting_a_file_carries_no_terminal_escapes(env, tmp_path):
    """A shared workflow's unknown node type holding an OSC title and a clear-screen sequence
    was printed raw in `persona: error: ...`: it set the window title and cleared the screen."""
    import json

    hostile = "Evil\x1b]0;PWNED\x07\x1b[2J\u202eNode"
    (tmp_path / "w.json").write_text(json.dumps({"1": {"class_type": hostile, "inputs": {}}}))
    result = _persona("serve", "--workflow", str(tmp_path / "w.json"), env=env)
    assert result.returncode == 2 and "persona: error:" in result.stderr and "Traceback" not in result.stderr
    assert not {"\x1b", "\x07", "\u202e"} & set(result.stderr), repr(result.stderr)


def test_debug_flag_shows_the_traceback(env, tmp_path):
    result = _persona("--debug", "personas", "show", "zed", env=env)
    assert result.returncode != 0
    assert "Traceback" in result.stderr and "UnknownPersonaError" in result.stderr


def test_a_reader_that_goes_away_is_not_an_error(env):
    """`persona personas show mira | head -c1` printed "persona: error: Broken pipe" (status 2)
    when the reader closed first. Here the reader is gone before anything is written."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        result = subprocess.run([sys.executable, "-m", "comfyui_persona.headless", "personas", "show", "mira"],
                                stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=300, env=env)
    finally:
        os.close(write_end)
    assert result.returncode == 141 and result.stderr == "", result.stderr
