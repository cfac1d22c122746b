"""What every benchmark result file records besides its numbers: machine, versions, commit.

Shared by the scripts in this folder (run as `python benchmarks/<name>.py`, which puts this
folder on the import path). Result files are shaped as ARCHITECTURE.md says:
`{"benchmark", "device", "torch", "commit", "dirty", "date", "config", "metrics"}`, and are
written by `write_result` (one place that stamps provenance, so no script hand-writes a commit
or a date).

Provenance is read, never typed: `commit` is `git rev-parse HEAD` of the measured tree,
`dirty` is False for a clean tree or `"sha256:<hash of git diff HEAD plus untracked files>"`,
and `date`/`run_at` are the clock's. Where there is no git (the GPU machine receives a copy of
the tree without `.git`), the caller exports `PERSONA_COMMIT` and `PERSONA_DIRTY` from the
checkout that was sent (`provenance_env()` prints them); without them both read "unknown".

Files written before `dirty` was stamped say so instead of guessing: `python
benchmarks/record.py label` adds `"dirty": null` and a `provenance` line to each (tested: every
file under `benchmarks/results/` carries every field, `tests/test_benchmark_results.py`).
"""

from __future__ import annotations

import datetime
import hashlib
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=REPO, capture_output=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.decode("utf-8", "replace") if out.returncode == 0 else None


def git_commit(explicit: str | None = None) -> str:
    """The measured tree's commit: `explicit`, else $PERSONA_COMMIT, else git's HEAD."""
    if explicit or os.environ.get("PERSONA_COMMIT"):
        return explicit or os.environ["PERSONA_COMMIT"]
    head = _git("rev-parse", "--short=12", "HEAD")
    return head.strip() if head and head.strip() else "unknown"


def tree_dirty() -> bool | str:
    """False for a clean tree, else "sha256:<hash>" of the diff against HEAD and the untracked
    files (so two runs on the same dirty tree say so); $PERSONA_DIRTY where there is no git."""
    if os.environ.get("PERSONA_DIRTY"):
        value = os.environ["PERSONA_DIRTY"]
        return False if value.lower() in ("false", "0", "clean") else value
    diff = _git("diff", "HEAD", "--binary")
    untracked = _git("ls-files", "--others", "--exclude-standard", "-z")
    if diff is None or untracked is None:
        return "unknown"
    names = [n for n in untracked.split("\0") if n]
    if not diff and not names:
        return False
    digest = hashlib.sha256(diff.encode())
    for name in sorted(names):
        digest.update(name.encode())
        try:
            digest.update((REPO / name).read_bytes())
        except OSError:
            pass
    return f"sha256:{digest.hexdigest()[:16]}"


def provenance_env() -> str:
    """`PERSONA_COMMIT=... PERSONA_DIRTY=...` for a command run on a copy of this tree."""
    return f"PERSONA_COMMIT={git_commit()} PERSONA_DIRTY={tree_dirty() or 'false'}"


def today() -> str:
    """The run's real date (UTC), as result files and their names carry it."""
    return datetime.datetime.now(datetime.timezone.utc).date().isoformat()


def result_path(benchmark: str, device: str, suffix: str = "", folder: Path | None = None) -> Path:
    """`benchmarks/results/<benchmark>-<device>-<date>[-<suffix>].json`."""
    name = f"{benchmark}-{device}-{today()}" + (f"-{suffix}" if suffix else "")
    return (folder or REPO / "benchmarks" / "results") / f"{name}.json"


def write_result(
    path: Path, benchmark: str, device: str, config: dict[str, Any], metrics: dict[str, Any], **extra: Any
) -> dict[str, Any]:
    """Write one result file (atomically) with provenance stamped here; returns the record."""
    record = {
        "benchmark": benchmark,
        "device": device,
        "torch": torch_version(),
        "python": sys.version.split()[0],
        "commit": git_commit(),
        "dirty": tree_dirty(),
        "date": today(),
        "run_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        **extra,
        "config": config,
        "metrics": metrics,
    }
    ensure_package()
    from comfyui_persona.durable import atomic_write_text

    atomic_write_text(path, json.dumps(record, indent=2) + "\n")
    return record


def ensure_package() -> None:
    """Make `comfyui_persona` importable from this checkout, installed or not (the
    repository root is the package; the GPU machine gets the tree without an install)."""
    try:
        import comfyui_persona  # noqa: F401
    except ImportError:
        import importlib.util

        spec = importlib.util.spec_from_file_location(
            "comfyui_persona", REPO / "__init__.py", submodule_search_locations=[str(REPO)]
        )
        module = importlib.util.module_from_spec(spec)
        sys.modules["comfyui_persona"] = module
        spec.loader.exec_module(module)


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (the platform's name elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"


def kernel_device(torch, smoke: bool):
    """(device, card name, short name for result files) for the kernel benchmarks: the CUDA
    card unless `smoke` or none is there, else the CPU."""
    device = torch.device("cuda" if torch.cuda.is_available() and not smoke else "cpu")
    card = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    short = "h100" if "H100" in card else "h200" if "H200" in card else "cpu" if device.type == "cpu" else "gpu"
    return device, card, short


def torch_version() -> str | None:
    """The installed torch's version, without importing it (None when absent)."""
    try:
        return importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        return None


#: Fields every result file carries (ARCHITECTURE.md).
FIELDS = ("benchmark", "device", "torch", "commit", "dirty", "date", "config", "metrics")
UNSTAMPED = ("recorded before record.py stamped whether the tree was clean: dirty is unknown; "
             "the commit is the one the run recorded")


def label_unstamped(folder: Path | None = None) -> list[Path]:
    """Mark result files that predate the `dirty` stamp (see the module docstring); returns them."""
    ensure_package()
    from comfyui_persona.durable import atomic_write_text

    labelled = []
    for path in sorted((folder or REPO / "benchmarks" / "results").glob("*.json")):
        record = json.loads(path.read_text())
        if "dirty" in record:
            continue
        out = {}
        for key, value in record.items():  # keep the file's order; the label goes after the commit
            out[key] = value
            if key == "commit":
                out["dirty"] = None
                out["provenance"] = UNSTAMPED
        atomic_write_text(path, json.dumps(out, indent=2) + "\n")
        labelled.append(path)
    return labelled


if __name__ == "__main__":
    if sys.argv[1:] != ["label"]:
        sys.exit("usage: python benchmarks/record.py label   (mark result files that predate the dirty stamp)")
    for path in label_unstamped():
        print(f"labelled {path.relative_to(REPO)}")
