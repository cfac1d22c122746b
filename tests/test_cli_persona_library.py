"""One persona library for the CLI, the page and ComfyUI (issue 17): a card imported with
`persona personas import` (no PERSONA_DIR) lands in the XDG user folder, and every other
command finds it there by id. Each step is a real `persona` process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from comfyui_persona.persona.library import PersonaLibrary, default_user_dir


@pytest.fixture
def user(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PERSONA_DIR"}
    env.update(XDG_DATA_HOME=str(tmp_path / "data"), PYTHONIOENCODING="utf-8", COLUMNS="200")
    return env


def _persona(env: dict[str, str], *argv: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "comfyui_persona.headless", *argv], input=stdin,
                            capture_output=True, text=True, timeout=300, env=env)
    assert "Traceback" not in result.stderr, result.stderr
    return result


def _zed_card(path: Path) -> Path:
    card = {
        "spec": "chara_card_v2",
        "spec_version": "2.0",
        "data": {
            "name": "Zed",
            "description": "{{char}} is a quiet lighthouse keeper.",
            "personality": "calm",
            "scenario": "",
            "first_mes": "The lamp is lit. Come in out of the wind.",
            "mes_example": "",
        },
    }
    path.write_text(json.dumps(card), encoding="utf-8")
    return path


def test_import_through_the_cli_then_every_command_finds_it(user, tmp_path):
    imported = _persona(user, "personas", "import", str(_zed_card(tmp_path / "zed.json")))
    assert imported.returncode == 0, imported.stderr
    folder = tmp_path / "data" / "comfyui-persona" / "personas"
    assert f"imported zed (Zed) into {folder}" in imported.stdout  # the XDG folder, no PERSONA_DIR needed

    listed = _persona(user, "personas", "list", "--json")
    assert "zed" in [row["id"] for row in json.loads(listed.stdout)]

    interpreted = _persona(user, "interpret", "--json", "--persona", "zed", "please wave")
    assert interpreted.returncode == 0, interpreted.stderr
    assert [d["action"] for d in json.loads(interpreted.stdout)["directives"]] == ["wave"]

    chat = _persona(user, "chat", "--persona", "mira", stdin="/persona zed\n/quit\n")
    assert "Zed: The lamp is lit." in chat.stdout

    script = tmp_path / "scene.jsonl"
    script.write_text('{"wait_s": 0.2}\n')
    rendered = _persona(user, "render", "--persona", "zed", "--script", str(script), "-o",
                        str(tmp_path / "zed.mp4"), "--size", "128x128", "--no-audio")
    assert rendered.returncode == 0, rendered.stderr

    # ...and it is the folder the page and ComfyUI read: PersonaLibrary.default() in that environment
    probe = (
        "from comfyui_persona.persona.library import PersonaLibrary, default_user_dir;"
        "print(default_user_dir()); print('zed' in PersonaLibrary.default().ids())"
    )
    shown = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=user, timeout=120)
    assert shown.stdout.split() == [str(folder), "True"]


def test_persona_dir_overrides_the_user_folder(user, tmp_path):
    user["PERSONA_DIR"] = str(tmp_path / "elsewhere")
    imported = _persona(user, "personas", "import", str(_zed_card(tmp_path / "zed.json")))
    assert imported.returncode == 0, imported.stderr
    assert f"into {tmp_path / 'elsewhere'}" in imported.stdout
    assert not (tmp_path / "data" / "comfyui-persona" / "personas").exists()
    found = _persona(user, "interpret", "--persona", "zed", "hi")
    assert found.returncode == 0, found.stderr
    del user["PERSONA_DIR"]
    missing = _persona(user, "interpret", "--persona", "zed", "hi")
    assert missing.returncode != 0 and "unknown persona 'zed'" in missing.stderr


def test_default_library_is_the_xdg_folder(monkeypatch, tmp_path):
    monkeypatch.delenv("PERSONA_DIR", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    assert default_user_dir() == tmp_path / "comfyui-persona" / "personas"
    assert PersonaLibrary.default().user_dirs == [tmp_path / "comfyui-persona" / "personas"]


def test_import_and_export_refuse_what_is_not_a_regular_file(user, tmp_path):
    """`import /dev/zero` read without end (size 0) until killed; `export -o` replaced a pipe, a
    device node or a symlink with a file, and made a 0600 file world-readable."""
    fifo = tmp_path / "pipe.json"
    os.mkfifo(fifo)
    imported = _persona(user, "personas", "import", str(fifo))
    assert imported.returncode == 2 and "not a regular file" in imported.stderr, imported.stderr
    exported = _persona(user, "personas", "export", "mira", "-o", str(fifo))
    assert exported.returncode == 2 and "not a regular file" in exported.stderr, exported.stderr
    assert fifo.is_fifo()
    private = tmp_path / "mira.json"
    private.write_text("{}")
    private.chmod(0o600)
    exported = _persona(user, "personas", "export", "mira", "-o", str(private))
    assert exported.returncode == 0, exported.stderr
    assert json.loads(private.read_text())["data"]["name"] == "Mira" and (private.stat().st_mode & 0o777) == 0o600


def test_a_tilde_path_no_shell_expanded_means_home(user, tmp_path):
    """`--output=~/mira.json` is not expanded by the shell: it wrote ./~/mira.json."""
    home = tmp_path / "home"
    home.mkdir()
    env = {**user, "HOME": str(home)}
    exported = _persona(env, "personas", "export", "mira", "--output=~/mira.json")
    assert exported.returncode == 0 and (home / "mira.json").is_file(), exported.stderr
    imported = _persona(env, "personas", "import", "--overwrite", "~/mira.json")
    assert imported.returncode == 0, imported.stderr
