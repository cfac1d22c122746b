"""Named errors for everything a saved workflow can get wrong, each naming the node.

The shape follows ComfyUI's error payloads (node id, class, what is wrong) so a user can
find the node in the editor: `error.node_id` and `error.class_type` are always set for
node errors.
"""

from __future__ import annotations

from typing import Any

from ...errors import PersonaError


class WorkflowError(PersonaError, ValueError):
    """A saved workflow cannot be loaded, validated or run."""

    code = "workflow"

    def __init__(self, message: str, node_id: str | None = None, class_type: str | None = None) -> None:
        where = f"node {node_id}" + (f" ({class_type})" if class_type else "") if node_id is not None else ""
        super().__init__(f"{where}: {message}" if where else message)
        self.node_id = node_id
        self.class_type = class_type
        self.detail = message

    def payload(self) -> dict[str, Any]:
        return {**super().payload(), "node_id": self.node_id, "class_type": self.class_type, "detail": self.detail}


class WorkflowFormatError(WorkflowError):
    """The file is not a workflow in ComfyUI's API or UI format."""


class UnknownNodeTypeError(WorkflowError):
    """A node's class is not registered (pack missing or node renamed)."""


class MissingInputError(WorkflowError):
    """A required input has neither a link nor a value."""

    def __init__(self, node_id: str, class_type: str, input_name: str) -> None:
        super().__init__(f"required input {input_name!r} is missing", node_id, class_type)
        self.input_name = input_name


class InputTypeMismatchError(WorkflowError):
    """A link or a value has the wrong type for the input it feeds."""

    def __init__(self, node_id: str, class_type: str, input_name: str, expected: str, got: str) -> None:
        super().__init__(f"input {input_name!r} expects {expected}, got {got}", node_id, class_type)
        self.input_name = input_name
        self.expected = expected
        self.got = got


class InvalidInputValueError(WorkflowError):
    """A widget value is out of range or not one of the allowed choices."""

    def __init__(self, node_id: str, class_type: str, input_name: str, message: str) -> None:
        super().__init__(f"input {input_name!r}: {message}", node_id, class_type)
        self.input_name = input_name


class BadLinkError(WorkflowError):
    """A link points at a node or output slot that does not exist."""


class DependencyCycleError(WorkflowError):
    """The links form a loop; `cycle` lists the node ids on it, in order."""

    def __init__(self, cycle: list[str], class_types: dict[str, str]) -> None:
        path = " -> ".join(f"{n} ({class_types.get(n, '?')})" for n in [*cycle, cycle[0]])
        super().__init__(f"dependency cycle: {path}", cycle[0], class_types.get(cycle[0]))
        self.cycle = cycle


class NodeExecutionError(WorkflowError):
    """A node raised while running; the original exception is `__cause__`."""

    code = "node_failed"  # the wire's code too (PROTOCOL.md): the message names the node
