"""The package is laid out as ARCHITECTURE.md says and installs the way ComfyUI needs."""

from __future__ import annotations

import subprocess
import sys
import tomllib

from paths import REPO

LAYERS = ("persona", "video", "nodes", "headless")


def _pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def test_every_python_package_is_listed_in_pyproject():
    listed = set(_pyproject()["tool"]["setuptools"]["packages"])
    found = {"comfyui_persona"}
    for layer in LAYERS:
        for init in (REPO / layer).rglob("__init__.py"):
            rel = init.parent.relative_to(REPO).parts
            found.add(".".join(("comfyui_persona", *rel)))
    assert found == listed


def test_registry_metadata_is_complete():
    meta = _pyproject()
    project = meta["project"]
    assert isinstance(project["license"], dict)
    assert "Repository" in project["urls"]
    major, minor, patch = project["version"].split(".")
    assert all(part.isdigit() for part in (major, minor, patch))
    assert meta["tool"]["comfy"]["PublisherId"]
    assert meta["tool"]["comfy"]["DisplayName"]


def test_importing_the_conversation_side_loads_no_torch():
    code = (
        "import sys, comfyui_persona, comfyui_persona.persona.schema, comfyui_persona.persona.card;"
        "import comfyui_persona.persona.interpreter.base;"
        "bad = [m for m in ('torch', 'diffusers', 'transformers', 'comfyui_persona.nodes') if m in sys.modules];"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_cli_help_lists_every_command():
    from comfyui_persona.headless.cli import COMMANDS

    result = subprocess.run(
        [sys.executable, "-m", "comfyui_persona.headless", "--help"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    for name in COMMANDS:
        assert name in result.stdout


def test_the_wheel_carries_the_data_folders_and_no_top_level_nodes_module(tmp_path):
    """A plain (non-editable) install must still find the default workflow and the ComfyUI
    panel, and must not install a top-level `nodes` module (ComfyUI has its own)."""
    import zipfile

    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(tmp_path), str(REPO)],
        capture_output=True, text=True, timeout=300,
    )
    assert built.returncode == 0, built.stderr
    (wheel,) = tmp_path.glob("comfyui_persona-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {name.split("/")[0] for name in names} == {"comfyui_persona", wheel.name.split("-py3")[0] + ".dist-info"}
    for needed in ("workflows/persona_preview_chat.json", "web_extension/persona_panel.js",
                   "headless/static/index.html", "persona/builtin/mira.json"):
        assert f"comfyui_persona/{needed}" in names, needed


def test_requirements_txt_is_the_projects_dependencies():
    """ComfyUI-Manager and the Comfy Registry install requirements.txt (and run install.py):
    without it a Registry install had no skia and the preview failed at run time."""
    lines = [line.strip() for line in (REPO / "requirements.txt").read_text().splitlines()]
    listed = [line for line in lines if line and not line.startswith("#")]
    assert listed == _pyproject()["project"]["dependencies"]

