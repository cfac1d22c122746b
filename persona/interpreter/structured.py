"""What LLM backends ask for and how their answers become an `Interpretation`.

Both LLM backends (`openai`, `llamacpp`) constrain the model with the same JSON schema,
built from the persona's vocabulary: the ordered `actions` first, each with an action name,
an expression and an intensity, then the overall `expression` (the emotion inference of
issue item 8 is part of the structured output), then the spoken `reply` last. Why this
order: PROTOCOL.md sends `directives` before any reply text, and schema-enforcing servers
(llama.cpp's grammar, OpenAI strict mode) emit properties in schema order, so a streamed
answer has its directives complete a few tokens in and `AnswerStream` can hand them on
before the first word of the reply arrives. Enums make an out-of-vocabulary name impossible for a server that
enforces the schema; `parse_answer` checks again for servers that do not.
"""

from __future__ import annotations

import json
import re
import string
from collections.abc import Callable, Iterator
from typing import Any

from ...errors import PersonaError
from ..card import Persona
from ..schema import MAX_DIALOGUE_CHARS, ActionDirective, Vocabulary
from ..text import well_formed
from .base import Interpretation, InterpretRequest

__all__ = [
    "MAX_ACTIONS",
    "AnswerError",
    "AnswerStream",
    "ReplyExtractor",
    "answer_schema",
    "as_fallback",
    "build_messages",
    "directives_from",
    "finish_answer",
    "instructions",
    "parse_answer",
    "settle",
]

#: Most actions one answer may plan.
MAX_ACTIONS = 8


class AnswerError(PersonaError, ValueError):
    """The model's answer is not JSON, or does not match the answer schema."""


def answer_schema(vocabulary: Vocabulary, reply_max_chars: int | None = None) -> dict[str, Any]:
    """JSON schema of one answer (OpenAI strict-mode compatible: every property required,
    no additional properties, no numeric bounds; intensity is clamped on our side).

    `reply_max_chars` bounds the reply in the grammar (small local models otherwise ramble
    until the token limit and never close the JSON)."""
    actions = vocabulary.action_names
    expressions = vocabulary.expression_names
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["actions", "expression", "reply"],
        "properties": {
            "actions": {
                "type": "array",
                "description": "Actions to perform, in order; empty for plain conversation.",
                "maxItems": MAX_ACTIONS,
                "items": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["action", "expression", "intensity"],
                    "properties": {
                        "action": {"type": "string", "enum": actions},
                        "expression": {"type": "string", "enum": expressions},
                        "intensity": {"type": "number", "description": "0 (subtle) to 1 (very strong)"},
                    },
                },
            },
            "expression": {
                "type": "string",
                "enum": expressions,
                "description": "Your facial expression for this reply.",
            },
            "reply": {
                "type": "string",
                "description": "What you say aloud, in character, 1-3 sentences.",
                # Bounded for local models (which also get a floor: a small model that has
                # written its actions first otherwise tends to close an empty reply).
                **({"minLength": 2, "maxLength": reply_max_chars} if reply_max_chars else {}),
            },
        },
    }


def instructions(vocabulary: Vocabulary) -> str:
    """The part of the system prompt that explains the answer format."""
    return (
        "Answer with ONE JSON object and nothing else: "
        '{"actions": [{"action": str, "expression": str, "intensity": number}], '
        '"expression": str, "reply": str} (in this key order). '
        f"action must be one of: {', '.join(vocabulary.action_names)}. "
        f"expression must be one of: {', '.join(vocabulary.expression_names)}. "
        "List actions only when the user asks you to do something you can do, in the order asked; "
        "leave out anything the user says not to do; plain conversation has no actions. "
        "intensity is 0.5 normally, higher for 'excitedly' or shouting, lower for 'slowly' or 'slightly'."
    )


#: Worked answers shown to the model before the conversation (as earlier turns): small
#: local models copy a demonstrated format far more reliably than a described one.
FORMAT_EXAMPLES: tuple[tuple[str, dict[str, Any]], ...] = (
    (
        "wave and then sit down",
        {
            "actions": [
                {"action": "wave", "expression": "smile", "intensity": 0.5},
                {"action": "sit", "expression": "smile", "intensity": 0.5},
            ],
            "expression": "smile",
            "reply": "Hi! There, and now I'll take a seat.",
        },
    ),
    (
        "don't dance, just smile really big",
        {"actions": [], "expression": "smile", "reply": "No dancing, just my biggest smile!"},
    ),
    (
        "I had a rough day",
        {"actions": [], "expression": "sad", "reply": "Oh no, I'm sorry. Want to tell me what happened?"},
    ),
)


def build_messages(
    request: InterpretRequest, history_tokens: int = 1024, examples: bool = True
) -> list[dict[str, str]]:
    """OpenAI-style messages: the card's system prompt (with its example dialogue) plus the
    answer format, worked format examples, the history within `history_tokens` (estimated,
    oldest turns dropped first), then the utterance."""
    from ..conversation import CHARS_PER_TOKEN, Conversation

    conversation = Conversation(request.persona, budget_chars=max(1, history_tokens * CHARS_PER_TOKEN))
    for turn in request.history:
        if turn.role == "user":
            conversation.add_user(turn.text)
        elif turn.role == "persona":
            conversation.add_persona(turn.text)
    messages = conversation.chat_messages(request.text)
    vocabulary = request.persona.vocabulary()
    messages[0]["content"] += "\n\n" + instructions(vocabulary)
    if examples:
        shots: list[dict[str, str]] = []
        for text, answer in FORMAT_EXAMPLES:
            names = {a["action"] for a in answer["actions"]} | {answer["expression"]}
            if names <= set(vocabulary.action_names) | set(vocabulary.expression_names):
                shots += [
                    {"role": "user", "content": text},
                    {"role": "assistant", "content": json.dumps(answer)},
                ]
        messages[1:1] = shots
    return messages


def _strip_fences(text: str) -> str:
    text = text.strip()
    if text.startswith("```"):
        text = text.split("\n", 1)[1] if "\n" in text else ""
        if text.rstrip().endswith("```"):
            text = text.rstrip()[:-3]
    return text.strip()


def parse_answer(content: str, persona: Persona, backend: str) -> Interpretation:
    """An Interpretation from the model's answer; raises `AnswerError` naming what is wrong."""
    try:
        data = json.loads(_strip_fences(content))
    except (json.JSONDecodeError, TypeError) as error:
        raise AnswerError(f"answer is not JSON: {error}") from None
    if not isinstance(data, dict):
        raise AnswerError("answer is not a JSON object")
    missing = [k for k in ("reply", "actions", "expression") if k not in data]
    if missing:
        raise AnswerError(f"answer lacks {', '.join(missing)}")
    reply = data["reply"]
    if not isinstance(reply, str):
        raise AnswerError("reply is not a string")
    directives = directives_from(data["actions"], data["expression"], persona)
    return Interpretation(directives=directives, reply=reply.strip()[:MAX_DIALOGUE_CHARS], backend=backend)


def directives_from(actions: Any, expression: Any, persona: Persona) -> list[ActionDirective]:
    """The directives an answer's `actions` and overall `expression` stand for; raises
    `AnswerError` naming the first out-of-vocabulary or malformed entry."""
    vocabulary = persona.vocabulary()
    if not isinstance(actions, list):
        raise AnswerError("actions is not a list")
    if expression not in vocabulary.expression_names:
        raise AnswerError(f"expression {expression!r} is not one of {vocabulary.expression_names}")
    directives: list[ActionDirective] = []
    for i, item in enumerate(actions[:MAX_ACTIONS]):
        if not isinstance(item, dict):
            raise AnswerError(f"actions[{i}] is not an object")
        name = item.get("action")
        if name not in vocabulary.action_names:
            raise AnswerError(f"actions[{i}].action {name!r} is not one of {vocabulary.action_names}")
        face = item.get("expression", expression)
        if face not in vocabulary.expression_names:
            raise AnswerError(f"actions[{i}].expression {face!r} is not one of {vocabulary.expression_names}")
        intensity = item.get("intensity", 0.5)
        if isinstance(intensity, bool) or not isinstance(intensity, (int, float)) or intensity != intensity:
            raise AnswerError(f"actions[{i}].intensity is not a number")
        duration = vocabulary.action(name).default_duration_s if name != "idle" else None
        directives.append(
            ActionDirective(
                action=name,
                expression=face,
                intensity=round(min(1.0, max(0.0, float(intensity))), 3),
                duration_s=duration,
            )
        )
    if not directives and expression != "neutral":
        directives.append(
            ActionDirective(
                action="idle",
                expression=expression,
                intensity=0.5,
                duration_s=vocabulary.expression(expression).default_duration_s,
            )
        )
    return directives


class ReplyExtractor:
    """Pulls the `reply` string out of a JSON answer while it is still arriving.

    Feed it chunks of the answer; it returns the newly decoded reply text each time (the
    spoken text streams as it is generated; `AnswerStream` adds the early directives).
    """

    _ESCAPES = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}

    def __init__(self) -> None:
        self._buffer = ""
        self._pos = 0  # next unread index into _buffer
        self._state = "seek"  # seek → value → done
        self.text = ""

    @property
    def buffer(self) -> str:
        """Everything fed so far."""
        return self._buffer

    def feed(self, chunk: str) -> str:
        self._buffer += chunk
        out: list[str] = []
        if self._state == "seek":
            match = re.search(r'"reply"\s*:\s*"', self._buffer)
            if not match:
                return ""
            self._state, self._pos = "value", match.end()
        while self._state == "value" and self._pos < len(self._buffer):
            c = self._buffer[self._pos]
            if c == '"':
                self._state = "done"
                break
            if c == "\\":
                if self._pos + 1 >= len(self._buffer):
                    break  # wait for the escaped character
                e = self._buffer[self._pos + 1]
                if e == "u":
                    digits = self._buffer[self._pos + 2 : self._pos + 6]
                    if len(digits) < 4:
                        break
                    code, step = _hex4(digits), 6
                    if code is not None and 0xD800 <= code <= 0xDBFF:  # half an emoji: join the other half
                        after = self._buffer[self._pos + 6 : self._pos + 12]
                        if len(after) < 6 and (after in ("", "\\") or after.startswith("\\u")):
                            break  # the other half may still be on its way
                        low = _hex4(after[2:]) if after.startswith("\\u") else None
                        if low is not None and 0xDC00 <= low <= 0xDFFF:
                            code, step = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00), 12
                    if code is not None:  # an unpaired half: UTF-8 cannot carry it
                        out.append("\ufffd" if 0xD800 <= code <= 0xDFFF else chr(code))
                    self._pos += step
                    continue
                out.append(self._ESCAPES.get(e, e))
                self._pos += 2
                continue
            out.append(c)
            self._pos += 1
        new = "".join(out)
        self.text += new
        return new


def _hex4(digits: str) -> int | None:
    """The code unit of a `\\uXXXX` escape's four hex digits (None: not hex)."""
    return int(digits, 16) if len(digits) == 4 and all(c in string.hexdigits for c in digits) else None


_REPLY_KEY = re.compile(r'"reply"\s*:\s*"')


class AnswerStream:
    """Reads a JSON answer while it arrives: the directives as soon as they are complete,
    then the reply text piece by piece.

    `feed(chunk)` returns what became known: a `list[ActionDirective]` once (when the
    `"reply"` key is reached and everything before it, `actions` and `expression`, parses
    into vocabulary directives), then new reply text. A model that writes `reply` first
    (a server that does not keep schema order) gives no early directives: `directives`
    stays None and the caller takes them from the finished answer.
    """

    def __init__(self, persona: Persona) -> None:
        self.persona = persona
        self.text_stream = ReplyExtractor()
        self.directives: list[ActionDirective] | None = None
        self._checked = False

    @property
    def text(self) -> str:
        return self.text_stream.text

    def feed(self, chunk: str) -> list[list[ActionDirective] | str]:
        out: list[list[ActionDirective] | str] = []
        new = self.text_stream.feed(chunk)
        if not self._checked:
            match = _REPLY_KEY.search(self.text_stream.buffer)
            if match:
                self._checked = True
                self.directives = self._early(self.text_stream.buffer[: match.start()])
                if self.directives is not None:
                    out.append(list(self.directives))
        if new:
            out.append(new)
        return out

    def _early(self, prefix: str) -> list[ActionDirective] | None:
        """Directives from the answer's head `{"actions": [...], "expression": "x", `."""
        head = _strip_fences(prefix).rstrip().rstrip(",") + "}"
        try:
            data = json.loads(head)
        except json.JSONDecodeError:
            return None
        if not isinstance(data, dict) or "actions" not in data or "expression" not in data:
            return None
        try:
            return directives_from(data["actions"], data["expression"], self.persona)
        except AnswerError:
            return None  # the repair path of the finished answer deals with it


def finish_answer(
    stream: AnswerStream,
    content: str,
    backend: str,
    repair_or_fall_back: Callable[[AnswerError], Interpretation],
) -> Iterator[list[ActionDirective] | str | Interpretation]:
    """The end of a streamed answer: parse the whole `content`; when it is invalid, keep
    the directives already sent (they are being performed) or else repair / fall back."""
    try:
        result = parse_answer(content, stream.persona, backend)
    except AnswerError as error:
        if stream.directives is not None:
            yield Interpretation(
                directives=list(stream.directives),
                reply=stream.text.strip()[:MAX_DIALOGUE_CHARS],
                backend=backend,
                note=f"the answer broke off after its directives ({error}); kept what was streamed",
            )
            return
        result = repair_or_fall_back(error)
    yield from settle(stream, result)


def settle(stream: AnswerStream, result: Interpretation) -> Iterator[list[ActionDirective] | str | Interpretation]:
    """Yield what the listener has not had yet, then `result` made consistent with what
    was streamed: directives sent early and text already spoken are never contradicted.

    A directive list is only ever yielded before any text (a listener that got text first
    holds it until the final Interpretation, see `Interpreter.stream_reply`)."""
    if stream.directives is not None:
        result = result.model_copy(update={"directives": list(stream.directives)})
    elif not stream.text:
        yield list(result.directives)
    if stream.text:
        result = result.model_copy(update={"reply": stream.text.strip()[:MAX_DIALOGUE_CHARS]})
    elif result.reply:
        result = result.model_copy(update={"reply": well_formed(result.reply)})
        yield result.reply
    yield result


def as_fallback(result: Interpretation, backend: str, reason: str) -> Interpretation:
    """`result` of the embedded parser standing in for `backend`, which failed for `reason`:
    `backend` becomes "<backend>->embedded" and the note says why, before the parser's own note."""
    note = f"{backend} backend failed ({reason}); used embedded"
    return result.model_copy(
        update={"backend": f"{backend}->embedded", "note": f"{note}; {result.note}" if result.note else note}
    )
