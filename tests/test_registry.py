"""Renderer backends by name."""

from __future__ import annotations

import subprocess
import sys

import pytest

from comfyui_persona.video.backend import RendererBackend, RenderError
from comfyui_persona.video.registry import UnknownRendererError, backend_names, create_backend


def test_preview_is_registered_and_implements_the_backend_protocol():
    assert "preview" in backend_names()
    backend = create_backend("preview")
    assert isinstance(backend, RendererBackend)
    assert backend.name == "preview"


def test_options_reach_the_backend_constructor():
    assert create_backend("preview", chunk_frames=12).chunk_frames == 12
    with pytest.raises(RenderError, match="chunk_frames"):
        create_backend("preview", chunk_frames=0)


def test_unknown_backend_names_the_known_ones():
    with pytest.raises(UnknownRendererError, match="known: .*preview"):
        create_backend("vhs")


def test_listing_and_creating_preview_imports_no_torch():
    code = (
        "import sys; from comfyui_persona.video.registry import create_backend, backend_names; "
        "backend_names(); create_backend('preview'); print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "False"
