"""The Fontconfig warning of skia's bundled Fontconfig stays off the terminal of rendering
commands (issue 17). Fontconfig writes it to fd 2 from C, so only a real process shows it;
on a system whose fonts config does not trip it these tests have nothing to check and skip."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

_TYPEFACE = "import skia; skia.Typeface('DejaVu Sans', skia.FontStyle.Bold())"


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def fontconfig_warns() -> str:
    import skia  # noqa: F401  (the test extra installs it: missing is a failure)
    stderr = _python(_TYPEFACE).stderr
    if "Fontconfig" not in stderr:
        pytest.skip("this system's fonts config does not make skia's Fontconfig warn")
    return stderr


def test_quiet_fontconfig_captures_the_warning_and_later_typefaces_are_quiet(fontconfig_warns):
    code = (
        "import logging, sys\n"
        "logging.basicConfig(level=logging.DEBUG, stream=sys.stdout, format='%(name)s %(message)s')\n"
        "from comfyui_persona.headless.commands.native_output import quiet_fontconfig\n"
        "said = quiet_fontconfig()\n"
        "print('CAPTURED', 'Fontconfig' in said)\n"
        + _TYPEFACE + "\n"
        "print('stderr still works', file=sys.stderr)\n"
    )
    result = _python(code)
    assert result.returncode == 0, result.stderr
    assert "CAPTURED True" in result.stdout
    assert "native_output font manager said: Fontconfig" in result.stdout  # routed to logging
    assert "Fontconfig" not in result.stderr
    assert "stderr still works" in result.stderr  # fd 2 was given back


def test_render_prints_no_fontconfig_warning(fontconfig_warns, tmp_path: Path):
    script = tmp_path / "scene.jsonl"
    script.write_text('{"directive": {"action": "wave", "expression": "smile", "intensity": 0.8}}\n')
    out = tmp_path / "scene.mp4"
    result = subprocess.run(
        [sys.executable, "-m", "comfyui_persona.headless", "render", "--persona", "mira", "--script", str(script),
         "-o", str(out), "--size", "128x128", "--no-audio"],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "Fontconfig" not in result.stderr + result.stdout
    assert result.stdout.startswith(f"wrote {out}")
    assert out.stat().st_size > 0
