"""The headless workflow runner: load a saved ComfyUI workflow and run it in streaming mode.

`load_workflow` reads API or UI format, `WorkflowGraph` validates and builds it once,
`StreamingRunner` runs it for one session (turn lane per message, stream lane per tick).
"""

from __future__ import annotations

from .cache import CACHE_POLICIES, ClassicCache, LRUCache, NullCache, OutputCache, make_cache
from .errors import (
    BadLinkError,
    DependencyCycleError,
    InputTypeMismatchError,
    InvalidInputValueError,
    MissingInputError,
    NodeExecutionError,
    UnknownNodeTypeError,
    WorkflowError,
    WorkflowFormatError,
)
from .executor import NO_TURN, StreamingRunner, TickResult, WorkflowGraph
from .workflow import load_workflow, to_api, ui_to_api, validate

__all__ = [
    "CACHE_POLICIES",
    "NO_TURN",
    "BadLinkError",
    "ClassicCache",
    "DependencyCycleError",
    "InputTypeMismatchError",
    "InvalidInputValueError",
    "LRUCache",
    "MissingInputError",
    "NodeExecutionError",
    "NullCache",
    "OutputCache",
    "StreamingRunner",
    "TickResult",
    "UnknownNodeTypeError",
    "WorkflowError",
    "WorkflowFormatError",
    "WorkflowGraph",
    "load_workflow",
    "make_cache",
    "to_api",
    "ui_to_api",
    "validate",
]
