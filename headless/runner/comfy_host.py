"""A session's workflow run by ComfyUI's own executor: a prompt per chunk, turns in the next one.

Inside ComfyUI the Persona tab streams the graph the user is looking at (or a saved workflow)
through ComfyUI itself: every chunk is one prompt in ComfyUI's queue (`QueuePrompts`), so
ComfyUI's node registry, validation, caching, error reporting, progress and interrupt apply
to every node, core and third-party ones included, and the tab's prompts interleave with the
user's own in queue order. Headless, `persona serve --comfyui PATH` runs the same prompts on
ComfyUI's executor in-process (`EmbeddedPrompts`, comfyui_embed.py).

Turns and chunks: a chat or action message sets the per-turn nodes' inputs and turn number
(`PromptTemplate.render`), and the next chunk's prompt carries it, so the turn lane runs once
(interpreter, directives, reply) and the same prompt renders the chunk that shows it; later
prompts keep that turn number, so ComfyUI's cache serves the turn lane while the stream
lane (IS_CHANGED new on every run) renders the next chunk. The per-turn nodes are idempotent
per turn number as well (nodes/conversation_nodes.py), so a cache eviction (the user ran
another workflow meanwhile) never adds a message twice.

A prompt that carries a turn stays in ComfyUI's history; the chunk-only ones are removed from
it when done (an hour of streaming would otherwise be thousands of entries).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import math
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Protocol

from ...nodes.runtime import SessionStore
from .errors import NodeExecutionError, UnknownNodeTypeError, WorkflowError
from .prompts import PromptTemplate
from .workflow import ApiWorkflow

__all__ = ["ComfyPromptHost", "PromptOutcome", "PromptRunner", "QueuePrompts", "StreamInterrupted"]


class StreamInterrupted(WorkflowError):
    """The chunk in flight was interrupted (ComfyUI's Cancel): the stream pauses."""

    code = "interrupted"


@dataclass
class PromptOutcome:
    """How one prompt ended: `status` success | error | interrupted."""

    prompt_id: str
    status: str
    node_id: str | None = None
    class_type: str | None = None
    message: str = ""
    ui: dict = field(default_factory=dict)


class PromptRunner(Protocol):
    """Where prompts run: ComfyUI's queue, or its executor in this process."""

    #: How many times the user cancelled streaming (ComfyUI's Cancel); each pauses every
    #: stream once, at its next chunk if none was in flight.
    cancels: int

    def validate(self, prompt: ApiWorkflow) -> list[str]:
        """The output node ids to execute; raises a `WorkflowError` naming every bad node."""

    def execute(self, prompt: ApiWorkflow, outputs: list[str], *, keep: bool, client_id: str | None) -> PromptOutcome:
        """Run `prompt` to its end (blocking); `keep`: leave it in the history."""


def validation_error(prompt: ApiWorkflow, error: dict | None, node_errors: dict) -> WorkflowError:
    """ComfyUI's validation answer as one error naming each bad node (id, class, title)."""

    def name(node_id: str) -> str:
        node = prompt.get(node_id, {})
        title = (node.get("_meta") or {}).get("title")
        return f"node {node_id} ({node.get('class_type', '?')}{f' {title!r}' if title else ''})"

    lines = []
    for node_id, entry in node_errors.items():
        for reason in entry.get("errors", []):
            lines.append(f"{name(node_id)}: {reason.get('message', '')}: {reason.get('details', '')}".rstrip(": "))
    if not lines and error:
        lines.append(f"{error.get('message', 'invalid prompt')}: {error.get('details', '')}".rstrip(": "))
    first = next(iter(node_errors), None)
    cls = UnknownNodeTypeError if error and "does not exist" in error.get("message", "") else WorkflowError
    return cls("; ".join(lines) or "the workflow failed ComfyUI's validation", first,
               prompt.get(first, {}).get("class_type") if first else None)


CANCELLED = "the stream was cancelled in ComfyUI; send a message (or press Resume) to go on"


class ComfyPromptHost:
    """A `WorkflowHost` whose runs are prompts (see module docstring). Thread-safe: the
    session's turn lane calls `turn` while its render loop calls `tick`."""

    def __init__(self, template: PromptTemplate, runner: PromptRunner, store: SessionStore, session_id: str,
                 persona: str | None = None, client_id: str | None = None) -> None:
        self.template = template
        self.runner = runner
        self.store = store
        self.session_id = session_id
        self.client_id = client_id  # ComfyUI frontend client whose canvas shows a message's run
        self._values: dict[str, Any] = {"persona": persona} if persona is not None else {}
        self._turns: dict[str, int] = {}
        self._fresh_turn = False  # the next prompt carries a turn: it stays in the history
        self._lock = threading.Lock()
        self._tick_lock = threading.Lock()
        self._pause_lock = threading.Lock()  # paused, _cancels_seen, _resumes: tick vs resume
        self._reset = threading.Event()
        self._outputs: list[str] | None = None
        self._closed = False
        self.paused: str | None = None  # why the stream is paused (an interrupt), else None
        self._cancels_seen = runner.cancels
        self._resumes = 0

    def accepts(self, kind: str) -> bool:
        return self.template.accepts(kind)

    def _prompt(self) -> tuple[ApiWorkflow, bool]:
        with self._lock:
            prompt = self.template.render(self.session_id, self._values, self._turns)
            fresh, self._fresh_turn = self._fresh_turn, False
        return prompt, fresh

    def start(self) -> Any:
        """Validate once (bad nodes named at start, not per chunk), then the first chunk. A
        Cancel (or the prompt cleared from ComfyUI's queue) before that chunk came starts the
        session paused: its render loop tells the viewer, who may resume."""
        prompt, _ = self._prompt()
        self._outputs = self.runner.validate(prompt)
        try:
            return self.tick()
        except StreamInterrupted:
            return None

    def turn(self, kind: str, value: Any, turn: int) -> None:
        """The next chunk's prompt carries this message (returns at once: the interpreter runs
        in that prompt, which renders the chunk showing its directives)."""
        if not self.template.accepts(kind):
            raise WorkflowError(f"this workflow has no node that takes {kind!r} input")
        with self._lock:
            self._values[kind] = value
            self._turns[kind] = turn
            self._fresh_turn = True
        self.resume()  # a message resumes an interrupted stream

    def tick(self) -> Any:
        with self._tick_lock:
            if self._closed:
                return None
            with self._pause_lock:
                if self.paused:
                    raise StreamInterrupted(self.paused)
                if self.runner.cancels != self._cancels_seen:  # cancelled between two chunks
                    self._cancels_seen = self.runner.cancels
                    self.paused = CANCELLED
                    raise StreamInterrupted(self.paused)
                resumes = self._resumes
            if self._reset.is_set():
                self._reset.clear()
                self.store.get(self.session_id).reset()
            prompt, fresh = self._prompt()
            if self._outputs is None:
                self._outputs = self.runner.validate(prompt)
            outcome = self.runner.execute(prompt, self._outputs, keep=fresh, client_id=self.client_id)
        if outcome.status == "interrupted":
            with self._pause_lock:
                self._cancels_seen = self.runner.cancels  # the Cancel landed on this chunk
                resumed = self._resumes != resumes
                if not resumed:
                    self.paused = CANCELLED
            if resumed:  # a resume or a message came while the chunk was being stopped: go on
                return self.tick()
            raise StreamInterrupted(CANCELLED, outcome.node_id, outcome.class_type)
        if outcome.status != "success":
            raise NodeExecutionError(outcome.message, outcome.node_id, outcome.class_type)
        return outcome

    def resume(self) -> None:
        """Go on (Resume, or a message). A Cancel pressed before is spent: while paused it was
        for another stream; unpaused, the message is newer than it."""
        with self._pause_lock:
            self._cancels_seen = self.runner.cancels
            self._resumes += 1
            self.paused = None

    def request_reset(self) -> None:
        self._reset.set()

    def close(self) -> None:
        with self._tick_lock:
            self._closed = True
            self.store.drop(self.session_id)


#: The client id of the chunk-only prompts: no ComfyUI page holds it, so their events go nowhere.
NO_PAGE_CLIENT_ID = "comfyui-persona-stream"


class QueuePrompts:
    """Prompts through ComfyUI's own queue (`PromptServer.instance.prompt_queue`), as the
    frontend's Run does: validated by ComfyUI, run by its worker in queue order.

    Streaming counts as one running item in the queue status ComfyUI broadcasts, not as a
    dozen prompts a second. ComfyUI sends every open page a `status` event each time a
    prompt is queued, started or done, and its frontend answers each one by fetching `/queue`
    and `/history` (64 entries): per chunk prompt that was about a hundred requests a second
    from every page, enough to freeze the tab's own page on a 2-core box, and the Run bar's
    Cancel, enabled while the queue is not empty, flickered on and off. So the server's
    `queue_updated` and `get_queue_info` are wrapped (ComfyUI has no hook for this):
    `queue_remaining` is the user's prompts and the messages' prompts, plus one while chunk
    prompts keep coming (the last ended less than `STREAM_IDLE_S` ago), and a status event
    goes out only when that changes. `/queue` still lists a running chunk prompt.

    For the same reason Cancel is wrapped (`nodes.interrupt_processing`): a stream spends
    most of its time between chunk prompts (the viewer has frames in hand), and ComfyUI
    clears an interrupt when the next prompt starts, so a Cancel pressed then was lost. A
    Cancel while streaming and no other prompt runs counts in `cancels`, and each stream
    pauses at its next chunk (`ComfyPromptHost.tick`); one landing inside a chunk interrupts
    it as ComfyUI does.
    """

    POLL_S = 0.005
    #: Streaming stops counting this long after its last chunk prompt ended (a stream that
    #: paused, closed or waits for its viewer to read frames).
    STREAM_IDLE_S = 1.0

    _made = threading.Lock()

    @classmethod
    def of(cls, server: Any) -> QueuePrompts:
        """The server's one instance: its wrappers go in once, however often the service is
        built (a build that fails, on a workflow ComfyUI refuses, is tried again per request)."""
        with cls._made:
            prompts = getattr(server, "_persona_queue_prompts", None)
            if prompts is None:
                prompts = server._persona_queue_prompts = cls(server)
            return prompts

    def __init__(self, server: Any) -> None:
        import execution  # ComfyUI's: this class only exists inside a running ComfyUI

        self.server = server
        self.execution = execution
        self.cancels = 0
        comfy_nodes = sys.modules["nodes"]  # ComfyUI's nodes.py, where its /interrupt goes
        self._interrupt = comfy_nodes.interrupt_processing
        comfy_nodes.interrupt_processing = self._on_interrupt
        self._streaming: set[str] = set()  # chunk-only prompt ids queued or running
        self._last_chunk_end = -math.inf  # time.monotonic() when the last one ended
        self._idle_check: asyncio.TimerHandle | None = None  # on the server's loop
        self._shown = self._shown_queue()  # the queue pages were last told of
        self._broadcast_status = server.queue_updated
        server.queue_updated = self._queue_updated
        server.get_queue_info = self._queue_info
        # ComfyUI logs "Prompt executed in …" for every prompt: a dozen lines a second while a
        # session streams. Those of chunk-only prompts are dropped; a turn's prompt still logs.
        self._quiet: set[str] = set()
        self._quiet_order: collections.deque[str] = collections.deque()
        logging.getLogger().addFilter(self._drop_chunk_log)

    def _drop_chunk_log(self, record: logging.LogRecord) -> bool:
        if self._quiet and isinstance(record.msg, str) and record.msg.startswith("Prompt executed in"):
            return getattr(self.server, "last_prompt_id", None) not in self._quiet
        return True

    def _shown_queue(self) -> tuple[bool, tuple[str, ...], tuple[str, ...]]:
        """(streaming, ids of the running and of the queued prompts that are not chunk-only)."""
        running, queued = self.server.prompt_queue.get_current_queue_volatile()
        streaming = bool(self._streaming) or time.monotonic() - self._last_chunk_end < self.STREAM_IDLE_S
        return (streaming, tuple(item[1] for item in running if item[1] not in self._streaming),
                tuple(sorted(item[1] for item in queued if item[1] not in self._streaming)))

    def _queue_info(self) -> dict:
        streaming, running, queued = self._shown_queue()
        return {"exec_info": {"queue_remaining": int(streaming) + len(running) + len(queued)}}

    def _queue_updated(self) -> None:
        # ComfyUI calls this under its queue's lock (an RLock), from whichever thread changed it.
        shown = self._shown_queue()
        if shown != self._shown:
            self._shown = shown
            self._broadcast_status()

    def _on_interrupt(self, value: bool = True) -> None:
        """ComfyUI's Cancel (`/interrupt`), and its own reset of the flag before each prompt."""
        if value:
            streaming, running, _ = self._shown_queue()
            if streaming and not running:  # no Run of the user's (nor a message's prompt) to stop
                self.cancels += 1
        self._interrupt(value)

    def _chunk_ended(self) -> None:
        """On the server's loop: look again once streaming may have stopped counting."""
        if self._idle_check is not None:
            self._idle_check.cancel()
        # A margin: asyncio may run a timer up to its clock resolution early.
        self._idle_check = self.server.loop.call_later(self.STREAM_IDLE_S + 0.1, self._look_again)

    def _look_again(self) -> None:
        self._idle_check = None
        with self.server.prompt_queue.mutex:
            self._queue_updated()

    def _on_server_loop(self, coroutine) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.server.loop).result(timeout=120)

    def validate(self, prompt: ApiWorkflow) -> list[str]:
        valid = self._on_server_loop(self.execution.validate_prompt(str(uuid.uuid4()), prompt, None))
        if not valid[0]:
            raise validation_error(prompt, valid[1], valid[3])
        return list(valid[2])

    def execute(self, prompt: ApiWorkflow, outputs: list[str], *, keep: bool, client_id: str | None) -> PromptOutcome:
        prompt_id = str(uuid.uuid4())
        # Whose page hears the run's events (executing, progress, executed with its outputs):
        # a message's prompt, the tab's (its canvas shows that run); a chunk-only prompt, no
        # page's. Several of those a second froze the tab's ComfyUI page (its frontend applies
        # every event), and one without a client id is broadcast to every open page.
        extra = {"create_time": int(time.time() * 1000),
                 "client_id": client_id if keep and client_id else NO_PAGE_CLIENT_ID}
        queue = self.server.prompt_queue
        if not keep:  # "Prompt executed" is logged after the history entry appears: keep the last few ids
            self._quiet.add(prompt_id)
            self._quiet_order.append(prompt_id)
            while len(self._quiet_order) > 64:
                self._quiet.discard(self._quiet_order.popleft())
            self._streaming.add(prompt_id)  # the queue status counts it as streaming, not on its own
        number = self.server.number
        self.server.number += 1
        try:
            queue.put((number, prompt_id, prompt, extra, outputs, {}))
            checked = time.monotonic()
            while prompt_id not in queue.history:
                time.sleep(self.POLL_S)
                if time.monotonic() - checked > 0.5:  # still queued or running? (a user may clear the queue)
                    checked = time.monotonic()
                    running, queued = queue.get_current_queue_volatile()
                    if not any(item[1] == prompt_id for item in (*running, *queued)) and prompt_id not in queue.history:
                        return PromptOutcome(prompt_id, "interrupted", message="the prompt was removed from ComfyUI's queue")
        finally:
            if not keep:  # the end time first: in between, another thread must still see streaming
                self._last_chunk_end = time.monotonic()
                self._streaming.discard(prompt_id)
                self.server.loop.call_soon_threadsafe(self._chunk_ended)
        entry = queue.get_history(prompt_id=prompt_id).get(prompt_id, {})
        if not keep:
            queue.delete_history_item(prompt_id)
        return outcome_of(prompt_id, entry.get("status") or {}, entry.get("outputs") or {})


def outcome_of(prompt_id: str, status: dict, ui: dict) -> PromptOutcome:
    """A `PromptOutcome` from ComfyUI's status messages (`execution_error`, `execution_interrupted`)."""
    for event, data in status.get("messages", []):
        if event == "execution_interrupted":
            return PromptOutcome(prompt_id, "interrupted", data.get("node_id"), data.get("node_type"), "interrupted", ui)
        if event == "execution_error":
            message = f"{data.get('exception_type', 'error')}: {data.get('exception_message', '')}"
            return PromptOutcome(prompt_id, "error", data.get("node_id"), data.get("node_type"), message, ui)
    if status.get("status_str", "success") != "success":
        return PromptOutcome(prompt_id, "error", message="the prompt failed", ui=ui)
    return PromptOutcome(prompt_id, "success", ui=ui)

