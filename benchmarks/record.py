"""What every benchmark result file records besides its numbers: machine, versions, commit.

Shared by the scripts in this folder (run as `python benchmarks/<name>.py`, which puts this
folder on the import path). Result files are shaped as ARCHITECTURE.md says:
`{"benchmark", "device", "torch", "commit", "date", "config", "metrics"}`.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def git_commit(explicit: str | None = None) -> str:
    """The checkout's short commit (or `explicit`, or $PERSONA_COMMIT where there is no git)."""
    if explicit or os.environ.get("PERSONA_COMMIT"):
        return explicit or os.environ["PERSONA_COMMIT"]
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, timeout=10
        )
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (the platform's name elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"


def torch_version() -> str | None:
    """The installed torch's version, without importing it (None when absent)."""
    try:
        return importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        return None
