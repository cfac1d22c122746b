"""Shared fixtures. Collecting the tests imports no torch (tests/test_packaging.py checks)."""

import os
import tempfile

import pytest

# The real-ComfyUI fixtures (`comfyui`, `comfyui_server`) live in tests/comfyui_harness.py.
pytest_plugins = ["comfyui_harness"]


def pytest_configure(config):
    """The user data folders (personas, recordings, the asset cache) point into a folder of
    this run, for the tests and every server they start: a card in the real
    ~/.local/share/comfyui-persona/personas must never shadow a built-in in a test."""
    if "PERSONA_TEST_KEEP_XDG" not in os.environ:
        os.environ["XDG_DATA_HOME"] = tempfile.mkdtemp(prefix="persona-test-data-")
        os.environ.pop("PERSONA_DIR", None)


@pytest.fixture
def one_torch_thread():
    """Tiny tensors: a second intra-op thread only adds contention on the shared 2-core box."""
    import torch  # here, not at module level: collecting the tests imports no torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
