"""What a workflow uploaded to a headless server may not do (`POST /persona/workflows`).

Its author is whoever reaches the upload route, not the operator, and the server runs it
with the operator's environment. So an upload may not choose where the conversation goes:
a Persona Interpreter in it uses the embedded backend or exactly the interpreter of the
server's own workflow (backend and options), else an `openai` backend with a `base_url` of
the uploader's sent the operator's `OPENAI_API_KEY` there. Nor may it write files: a
Persona Session Recorder in it is refused (the `record` message records, into the server's
recordings folder, within its limits). Inside ComfyUI the canvas's user is the operator
(ComfyUI runs any prompt they queue), so these rules apply to headless servers only.
"""

from __future__ import annotations

import json

from .errors import WorkflowError
from .workflow import ApiWorkflow

__all__ = ["check_upload", "interpreter_choices"]

_INTERPRETER = "PersonaInterpreter"
_RECORDER = "PersonaSessionRecorder"
_FREE = ("embedded", "")  # the embedded backend without options: nothing leaves the process


def interpreter_choices(workflow: ApiWorkflow) -> set[tuple[str, str]]:
    """(backend, options) of each Persona Interpreter of the operator's own workflow."""
    return {_choice(node) for node in workflow.values() if node.get("class_type") == _INTERPRETER}


def _choice(node: dict) -> tuple[str, str]:
    inputs = node.get("inputs") or {}
    backend, options = inputs.get("backend", "embedded"), inputs.get("options", "")
    # a link ([node, slot]) or any other value compares as its JSON: never equal to a literal's
    return (backend if isinstance(backend, str) else json.dumps(backend),
            options.strip() if isinstance(options, str) else json.dumps(options))


def check_upload(workflow: ApiWorkflow, allowed: set[tuple[str, str]]) -> None:
    """Raise `WorkflowError` naming each node the rules above refuse."""
    problems = []
    for node_id, node in workflow.items():
        kind = node.get("class_type")
        if kind == _RECORDER:
            problems.append(f"node {node_id} ({_RECORDER}): an uploaded workflow writes no files on this server; "
                            "record the session with the `record` message instead")
        elif kind == _INTERPRETER:
            choice = _choice(node)
            if choice != _FREE and choice not in allowed:
                problems.append(f"node {node_id} ({_INTERPRETER}): an uploaded workflow uses the embedded backend "
                                "with no options, or this server's own interpreter settings; its operator "
                                "chooses the LLM (persona serve --backend, --option)")
    if problems:
        raise WorkflowError("; ".join(problems))
