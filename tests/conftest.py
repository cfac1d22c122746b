"""Shared fixtures. Collecting the tests imports no torch (tests/test_packaging.py checks)."""

# The real-ComfyUI fixtures (`comfyui`, `comfyui_server`) live in tests/comfyui_harness.py.
pytest_plugins = ["comfyui_harness"]
