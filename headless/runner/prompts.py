"""A saved workflow as a prompt a host fills in: where each host value goes.

The headless runner executes a workflow itself (`StreamingRunner`); a ComfyUI host instead
submits *prompts* (API format) to ComfyUI's executor, one per turn and one per chunk. Both
read the same bindings from the node classes: `session_id` inputs get the session, a class's
`HEADLESS_BINDING` names the inputs a `chat` message, an `action` directive or a `persona`
fill, and the per-turn nodes' `turn` input gets the turn number (pinned between messages, so
ComfyUI's cache serves the turn lane while the stream lane runs on every prompt).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .executor import NO_TURN
from .workflow import ApiWorkflow, Registry, input_spec

__all__ = ["PromptTemplate"]


@dataclass
class PromptTemplate:
    """`workflow` (API format) and its bindings, from the classes in `registry`."""

    workflow: ApiWorkflow
    registry: Registry
    bindings: dict[str, list[tuple[str, tuple[str, ...]]]] = field(default_factory=dict)
    session_inputs: list[str] = field(default_factory=list)  # node ids with a `session_id` input
    turn_nodes: list[str] = field(default_factory=list)  # per-turn nodes (bound to chat/action, with `turn`)

    def __post_init__(self) -> None:
        for node_id, node in self.workflow.items():
            cls = self.registry.get(node["class_type"])
            if cls is None:
                continue
            names = {spec[0] for spec in input_spec(cls)}
            if "session_id" in names:
                self.session_inputs.append(node_id)
            kinds = getattr(cls, "HEADLESS_BINDING", {})
            for kind, bound in kinds.items():
                bound = (bound,) if isinstance(bound, str) else tuple(bound)
                self.bindings.setdefault(kind, []).append((node_id, bound))
            if "turn" in names and any(kind in ("chat", "action") for kind in kinds):
                self.turn_nodes.append(node_id)

    def accepts(self, kind: str) -> bool:
        return kind in self.bindings

    def render(self, session_id: str, values: Mapping[str, Any], turns: Mapping[str, int]) -> ApiWorkflow:
        """The prompt for one run: `values` by kind (`chat` text, `action` fields, `persona`
        id), `turns` by kind (the turn number each per-turn node gets; NO_TURN when absent)."""
        prompt = copy.deepcopy(self.workflow)
        for node_id in self.session_inputs:
            prompt[node_id]["inputs"]["session_id"] = session_id
        for kind, targets in self.bindings.items():
            value = values.get(kind)
            for node_id, names in targets:
                inputs = prompt[node_id]["inputs"]
                if value is not None:
                    if len(names) == 1:
                        inputs[names[0]] = value
                    else:
                        inputs.update({name: value[name] for name in names if name in value})
                if node_id in self.turn_nodes:
                    inputs["turn"] = turns.get(kind, NO_TURN)
        return prompt
