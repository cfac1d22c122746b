"""`ComfyPromptHost`'s pause and resume around ComfyUI's Cancel, at exact interleavings.

The ComfyUI tests (test_comfyui_native.py, test_comfyui_panel.py) press the real Cancel, but
a real queue cannot be made to land a Cancel, a message or a Resume at a chosen point of a
chunk. Here the prompts run on `ScriptedPrompts`, a `PromptRunner` whose chunks end as each
test says (the only part that stands in for ComfyUI); the host, its template and the pack's
workflow are the real ones.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from comfyui_persona.headless.runner.comfy_host import (
    CANCELLED,
    ComfyPromptHost,
    PromptOutcome,
    StreamInterrupted,
)
from comfyui_persona.headless.runner.prompts import PromptTemplate
from comfyui_persona.headless.runner.workflow import load_workflow
from comfyui_persona.nodes import NODE_CLASS_MAPPINGS
from comfyui_persona.nodes.runtime import SessionStore

WORKFLOW = Path(__file__).resolve().parents[1] / "workflows" / "persona_preview_chat.json"


class ScriptedPrompts:
    """Chunks end as scripted (`ends`: "success" or "interrupted", then success); `during`
    runs inside the next chunk, as a Cancel, a message or a Resume from another thread would."""

    def __init__(self) -> None:
        self.cancels = 0
        self.ends: list[str] = []
        self.during = None
        self.executed = 0

    def validate(self, prompt) -> list[str]:
        return [next(iter(prompt))]

    def execute(self, prompt, outputs, *, keep, client_id) -> PromptOutcome:
        self.executed += 1
        if self.during is not None:
            during, self.during = self.during, None
            during()
        return PromptOutcome("p", self.ends.pop(0) if self.ends else "success")


@pytest.fixture
def host_and_prompts():
    prompts = ScriptedPrompts()
    template = PromptTemplate(load_workflow(WORKFLOW, NODE_CLASS_MAPPINGS), NODE_CLASS_MAPPINGS)
    host = ComfyPromptHost(template, prompts, SessionStore(), "s1", "mira")
    yield host, prompts
    host.close()


def test_a_cancel_before_the_first_chunk_starts_the_session_paused(host_and_prompts):
    host, prompts = host_and_prompts
    prompts.ends = ["interrupted"]
    assert host.start() is None  # the session starts; it does not fail as a bad workflow
    assert host.paused == CANCELLED
    with pytest.raises(StreamInterrupted):
        host.tick()
    host.resume()
    assert host.tick().status == "success"


def test_a_message_sent_after_a_cancel_but_before_the_next_chunk_goes_on(host_and_prompts):
    host, prompts = host_and_prompts
    host.start()
    prompts.cancels += 1  # Cancel while the viewer has frames in hand: no chunk in flight
    host.turn("chat", "hola, ¿qué tal?", 1)  # the message is newer than the Cancel
    assert host.tick().status == "success" and host.paused is None


def test_a_cancel_between_chunks_pauses_at_the_next_one(host_and_prompts):
    host, prompts = host_and_prompts
    host.start()
    prompts.cancels += 1
    executed = prompts.executed
    with pytest.raises(StreamInterrupted):
        host.tick()
    assert prompts.executed == executed and host.paused == CANCELLED  # no prompt queued for it


def test_a_resume_while_the_cancelled_chunk_stops_is_not_lost(host_and_prompts):
    host, prompts = host_and_prompts
    host.start()
    prompts.ends = ["interrupted"]
    prompts.during = host.resume  # Resume (or a message) lands while the chunk is being stopped
    assert host.tick().status == "success"  # the chunk is made again, not paused after the resume
    assert host.paused is None


def test_a_cancel_pressed_while_paused_is_spent_by_the_resume(host_and_prompts):
    host, prompts = host_and_prompts
    host.start()
    prompts.ends = ["interrupted"]
    with pytest.raises(StreamInterrupted):
        host.tick()
    prompts.cancels += 1  # for another tab's stream
    host.resume()
    assert host.tick().status == "success"
