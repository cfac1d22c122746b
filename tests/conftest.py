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


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """A test that failed against the shared ComfyUI server carries the server's log tail (its
    sessions, WebRTC and prompt lines): on CI that log is the only view of the server side."""
    report = yield
    if report.failed and "comfyui_server" in getattr(item, "fixturenames", ()):
        from comfyui_harness import server_log_tail

        tail = server_log_tail(item.funcargs.get("comfyui_server", ""))
        if tail:
            report.sections.append(("ComfyUI server log (last lines)", tail))
    return report


@pytest.fixture
def one_torch_thread():
    """Tiny tensors: a second intra-op thread only adds contention on the shared 2-core box."""
    import torch  # here, not at module level: collecting the tests imports no torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _fresh_aioice_mdns_lock():
    """aioice keeps one asyncio.Lock per thread for its mDNS resolver (`aioice.ice._mdns`); once
    two resolutions contend, the lock is bound to that test's event loop, and in the next test's
    loop every mDNS candidate (Chromium hides host addresses behind them) fails to resolve, so
    WebRTC never connects. A server runs one loop; pytest runs one per test. After each test,
    with no resolver left open, forget the lock so the next loop makes its own."""
    yield
    import sys

    ice = sys.modules.get("aioice.ice")
    state = getattr(ice, "_mdns", None) if ice is not None else None
    if state is not None and getattr(state, "protocol", None) is None and hasattr(state, "lock"):
        del state.lock


@pytest.fixture(scope="session")
def tiny_models_dir(tmp_path_factory):
    """The tiny LongLive model set (generator, LoRA, UMT5, TAE, Wan VAE in their real formats),
    written once per test session; tests that only read it share it (one that changes its
    files makes its own with `write_tiny_models`)."""
    from comfyui_persona.video.longlive.testing import write_tiny_models

    directory = tmp_path_factory.mktemp("tiny-models")
    write_tiny_models(directory)
    return directory


@pytest.fixture(scope="session")
def embedded_eval():
    """(items, outputs): every utterance of the labelled evaluation set
    (benchmarks/data/interpreter_eval.jsonl) and what the embedded interpreter read in it, for
    a plain persona. Reading all of it takes tens of seconds on the shared box: the overall
    guard (test_interpreter_embedded.py) and the per split, category and language guards
    (test_interpreter_eval_guard.py) score the same reading."""
    from interpreter import load_eval

    from comfyui_persona.persona.card import Persona
    from comfyui_persona.persona.interpreter import InterpretRequest, get_interpreter

    interp = get_interpreter("embedded")
    persona = Persona(id="eval", name="Eval")
    items = load_eval()
    return items, [interp.interpret(InterpretRequest(text=i["text"], persona=persona)) for i in items]
