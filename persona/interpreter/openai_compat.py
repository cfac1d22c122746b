"""The `openai` interpreter: any OpenAI-compatible chat endpoint (OpenAI, Ollama, the
llama.cpp server, vLLM) with JSON-schema structured output.

One call per utterance to `POST {base_url}/chat/completions` with
`response_format={"type": "json_schema", ...}` built from the persona's vocabulary
(`structured.answer_schema`). If the answer is not valid JSON or breaks the schema, the
backend asks once more, quoting the error (one repair attempt). If that fails too, or the
server errors or times out, the utterance goes to the `embedded` interpreter instead and
the result says so: `backend` is "openai->embedded" and `note` names the failure. It never
raises for a server problem.

`stream_reply` asks for `stream: true` (server-sent events). The schema puts `actions`
and `expression` before `reply`, so the directive list is yielded as soon as the model
reaches the `reply` key, and then the reply text as it arrives (PROTOCOL.md's order: the
server sends `directives` without holding any text back). A model that ignores the key
order, or a server that answers with plain JSON, gives the directives after the answer is
complete, still before any text.

Options (each also read from the environment): `base_url` (PERSONA_OPENAI_BASE_URL or
OPENAI_BASE_URL, default http://127.0.0.1:8080/v1, the llama.cpp server), `model`
(PERSONA_OPENAI_MODEL, default "default"), `api_key` (PERSONA_OPENAI_API_KEY or
OPENAI_API_KEY; sent as a Bearer token when set), `timeout` seconds (default 20),
`temperature` (0.3), `max_tokens` (400), `history_tokens` (1024: the conversation history
sent, estimated at 4 characters a token, oldest turns dropped first), `examples` (true: worked
format examples sent as earlier turns, which small local models need), `reply_max_chars`
(none: a bound on the reply in the schema, for servers that turn it into a grammar).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import httpx

from ...errors import PersonaError
from ..schema import ActionDirective
from . import InterpreterOptionError
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

__all__ = ["OpenAIInterpreter"]

DEFAULT_BASE_URL = "http://127.0.0.1:8080/v1"


def _env(*names: str) -> str | None:
    for name in names:
        value = os.environ.get(name)
        if value:
            return value
    return None


class _BackendFailure(PersonaError):
    """The endpoint could not give a usable answer (reason in the message)."""


class OpenAIInterpreter:
    """Interpreter backed by an OpenAI-compatible `/chat/completions` endpoint."""

    name = "openai"

    def __init__(
        self,
        *,
        base_url: str | None = None,
        model: str | None = None,
        api_key: str | None = None,
        timeout: float | str = 20.0,
        temperature: float | str = 0.3,
        max_tokens: int | str = 400,
        history_tokens: int | str = 1024,
        examples: bool | str = True,
        reply_max_chars: int | str | None = None,
        fallback: Any = None,
    ) -> None:
        self.base_url = (
            base_url or _env("PERSONA_OPENAI_BASE_URL", "OPENAI_BASE_URL") or DEFAULT_BASE_URL
        ).rstrip("/")
        if not self.base_url.startswith(("http://", "https://")):
            raise InterpreterOptionError(f"base_url must start with http:// or https://, got {self.base_url!r}")
        self.model = model or _env("PERSONA_OPENAI_MODEL") or "default"
        self.api_key = api_key or _env("PERSONA_OPENAI_API_KEY", "OPENAI_API_KEY")
        self.timeout = float(timeout)
        if not 0 < self.timeout <= 600:
            raise InterpreterOptionError(f"timeout must be in (0, 600] seconds, got {self.timeout}")
        self.temperature = float(temperature)
        self.max_tokens = int(max_tokens)
        self.history_tokens = int(history_tokens)
        self.examples = _flag(examples)
        self.reply_max_chars = int(reply_max_chars) if reply_max_chars not in (None, "", "0") else None
        if self.history_tokens < 0 or self.max_tokens < 1:
            raise InterpreterOptionError("history_tokens must be >= 0 and max_tokens >= 1")
        self._fallback = fallback
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        self._client = httpx.Client(base_url=self.base_url, headers=headers, timeout=self.timeout)

    # -- interface ----------------------------------------------------------------------

    def _messages(self, request: InterpretRequest) -> list[dict[str, str]]:
        return build_messages(request, self.history_tokens, self.examples)

    def _schema(self, request: InterpretRequest) -> dict[str, Any]:
        return answer_schema(request.persona.vocabulary(), self.reply_max_chars)

    def interpret(self, request: InterpretRequest) -> Interpretation:
        messages = self._messages(request)
        try:
            return self._complete(messages, request)
        except _BackendFailure as failure:
            return self._fall_back(request, str(failure))

    def stream_reply(self, request: InterpretRequest) -> Iterator[list[ActionDirective] | str | Interpretation]:
        messages = self._messages(request)
        body = self._body(messages, self._schema(request), stream=True)
        stream = AnswerStream(request.persona)
        content: list[str] = []
        try:
            with self._client.stream("POST", "/chat/completions", json=body) as response:
                if response.status_code != 200:
                    response.read()
                    raise _BackendFailure(f"HTTP {response.status_code}: {response.text[:200]}")
                if "text/event-stream" not in response.headers.get("content-type", ""):
                    response.read()
                    content.append(_message_content(_json(response)))
                else:
                    for delta in _sse_deltas(response.iter_lines()):
                        content.append(delta)
                        yield from stream.feed(delta)
        except (httpx.HTTPError, _BackendFailure) as error:
            partial = stream.directives is not None or stream.text
            reason = f"stream broke: {_describe(error)}" if partial else _describe(error)
            yield from settle(stream, self._fall_back(request, reason))
            return
        full = "".join(content)

        def repair_or_fall_back(error: AnswerError) -> Interpretation:
            try:
                return self._repair(messages, full, error, request)
            except _BackendFailure as failure:
                return self._fall_back(request, str(failure))

        yield from finish_answer(stream, full, self.name, repair_or_fall_back)

    # -- internals ----------------------------------------------------------------------

    def _body(self, messages: list[dict[str, str]], schema: dict[str, Any], stream: bool) -> dict[str, Any]:
        return {
            "model": self.model,
            "messages": messages,
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
            "stream": stream,
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "persona_answer", "strict": True, "schema": schema},
            },
        }

    def _post(self, messages: list[dict[str, str]], schema: dict[str, Any]) -> str:
        try:
            response = self._client.post("/chat/completions", json=self._body(messages, schema, stream=False))
        except httpx.TimeoutException:
            raise _BackendFailure(f"no answer within {self.timeout:g} s") from None
        except httpx.HTTPError as error:
            raise _BackendFailure(_describe(error)) from None
        if response.status_code != 200:
            raise _BackendFailure(f"HTTP {response.status_code}: {response.text[:200]}")
        return _message_content(_json(response))

    def _complete(self, messages: list[dict[str, str]], request: InterpretRequest) -> Interpretation:
        content = self._post(messages, self._schema(request))
        try:
            return parse_answer(content, request.persona, self.name)
        except AnswerError as error:
            return self._repair(messages, content, error, request)

    def _repair(
        self, messages: list[dict[str, str]], content: str, error: AnswerError, request: InterpretRequest
    ) -> Interpretation:
        retry = [
            *messages,
            {"role": "assistant", "content": content[:4000]},
            {
                "role": "user",
                "content": f"That answer was invalid ({error}). Reply again with only the JSON object, "
                "using only the listed action and expression names.",
            },
        ]
        second = self._post(retry, self._schema(request))
        try:
            result = parse_answer(second, request.persona, self.name)
        except AnswerError as again:
            raise _BackendFailure(f"invalid answer after one repair attempt: {again}") from None
        return result.model_copy(update={"note": f"repaired an invalid first answer ({error})"})

    def _fallback_interpreter(self):
        if self._fallback is None:
            from .embedded import EmbeddedInterpreter

            self._fallback = EmbeddedInterpreter()
        return self._fallback

    def _fall_back(self, request: InterpretRequest, reason: str) -> Interpretation:
        return as_fallback(self._fallback_interpreter().interpret(request), self.name, reason)

    def close(self) -> None:
        """Close the pooled HTTP connections (also done when the interpreter is collected)."""
        client = self.__dict__.get("_client")
        if client is not None:
            client.close()

    def __del__(self) -> None:
        try:
            self.close()
        except (AttributeError, TypeError):  # at interpreter exit httpx's modules may be gone already
            pass


def _flag(value: bool | str) -> bool:
    """An on/off option given as a bool or as text ("false", "0", "off", "no")."""
    if isinstance(value, str):
        return value.strip().lower() not in ("false", "0", "off", "no", "")
    return bool(value)


def _describe(error: BaseException) -> str:
    if isinstance(error, httpx.TimeoutException):
        return "timed out"
    return f"{type(error).__name__}: {error}"[:300]


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        raise _BackendFailure(f"server answer is not JSON: {response.text[:200]!r}") from None


def _message_content(data: Any) -> str:
    try:
        content = data["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        raise _BackendFailure("server answer has no choices[0].message.content") from None
    if not isinstance(content, str):
        raise _BackendFailure("choices[0].message.content is not a string")
    return content


def _sse_deltas(lines: Iterator[str]) -> Iterator[str]:
    """Content deltas from an OpenAI-style SSE stream (`data: {...}` ... `data: [DONE]`)."""
    for line in lines:
        if not line.startswith("data:"):
            continue
        payload = line[5:].strip()
        if payload == "[DONE]":
            return
        try:
            event = json.loads(payload)
            delta = event["choices"][0].get("delta", {}).get("content")
        except (ValueError, KeyError, IndexError, TypeError, AttributeError):
            continue
        if isinstance(delta, str) and delta:
            yield delta
