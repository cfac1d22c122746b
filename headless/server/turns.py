"""A viewer session's turn lane: chat and action messages, one at a time.

Each message becomes a numbered turn run through the workflow host's turn lane on the
worker pool (an interpreter may block for seconds: frames keep flowing meanwhile). When a
turn's plan lands, frames rendered before it are stale (`FrameQueue.invalidate`), so the
next tick renders the new plan at once: directive-to-frame latency stays near one render.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

from .frames import FrameQueue
from .protocol import failure_code

log = logging.getLogger("comfyui_persona.serve")

__all__ = ["TURN_QUEUE_LIMIT", "TurnLane", "TurnRequest"]

#: Pending chat/action turns per session before `rate_limited`.
TURN_QUEUE_LIMIT = 16


@dataclass
class TurnRequest:
    kind: str  # "chat" | "action"
    value: Any
    turn: int
    message_id: str
    received: float  # loop time
    directive: dict | None = None


class TurnLane:
    """See module docstring. `run_turn(kind, value, turn)` blocks (it runs on the pool)."""

    def __init__(self, session_id: str, run_turn: Callable[[str, Any, int], Any], frames: FrameQueue,
                 pool: Executor, send: Callable[[dict], None], report: Callable[..., None]) -> None:
        self.session_id = session_id
        self._run_turn = run_turn
        self.frames = frames
        self._pool = pool
        self._send = send
        self._report = report
        self.queue: asyncio.Queue[TurnRequest] = asyncio.Queue(maxsize=TURN_QUEUE_LIMIT)
        self.last_turn = 0  # the newest turn number handed out
        self._ids: dict[int, str] = {}  # turn → the client's message id (for `reply_to`)
        # Set by the session: how a manual directive will be performed, and what speaks it.
        self.as_performed: Callable[[dict], list[dict]] = lambda directive: [directive]
        self.say: Callable[..., None] = lambda text, turn, character=None: None

    def reply_to(self, turn: int | None) -> str | None:
        return self._ids.get(turn) if turn is not None else None

    def enqueue(self, kind: str, value: Any, message_id: str, directive: dict | None = None) -> bool:
        """Queue a message as the next turn; False when the queue is full (`rate_limited`)."""
        self.last_turn += 1
        request = TurnRequest(kind, value, self.last_turn, message_id, asyncio.get_running_loop().time(), directive)
        try:
            self.queue.put_nowait(request)
        except asyncio.QueueFull:
            return False
        self._ids[request.turn] = message_id
        if len(self._ids) > 4 * TURN_QUEUE_LIMIT:
            for old in sorted(self._ids)[: -2 * TURN_QUEUE_LIMIT]:
                self._ids.pop(old, None)
        return True

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            request = await self.queue.get()
            if request.kind == "action":
                # No interpreter runs: announce the directive as the tracker will perform it.
                self._send({"type": "directives", "reply_to": request.message_id,
                            "directives": self.as_performed(request.directive)})
                dialogue = request.directive.get("dialogue")
                if dialogue:
                    character = request.directive.get("character")  # 1.1: who says it, in a scene
                    reply = {"type": "reply", "reply_to": request.message_id, "text": dialogue, "done": True}
                    self._send({**reply, "character": character} if character else reply)
                    self.say(dialogue, request.turn, character)
                self.frames.directives_known(request.turn, request.received)
            try:
                await loop.run_in_executor(self._pool, self._run_turn, request.kind, request.value, request.turn)
            except Exception as exc:
                log.warning("session %s turn %d failed: %s", self.session_id[:8], request.turn, exc)
                self._report(failure_code(exc), f"interpreting message failed: {exc}", request.message_id)
                continue
            self.frames.invalidate()  # rendered before this plan: stale
