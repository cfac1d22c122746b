"""Shared fixtures. Collecting the tests imports no torch (tests/test_packaging.py checks)."""

import pytest

# The real-ComfyUI fixtures (`comfyui`, `comfyui_server`) live in tests/comfyui_harness.py.
pytest_plugins = ["comfyui_harness"]


@pytest.fixture
def one_torch_thread():
    """Tiny tensors: a second intra-op thread only adds contention on the shared 2-core box."""
    import torch  # here, not at module level: collecting the tests imports no torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
