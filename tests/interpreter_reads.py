"""What the interpreter round tests ask of the embedded backend: the directives it gives a text,
and the actions among them (idle left out), with one plain test persona."""

from __future__ import annotations

from comfyui_persona.persona.card import Persona
from comfyui_persona.persona.interpreter import InterpretRequest, get_interpreter

PERSONA = Persona(id="t", name="T")


def rules_only():
    """The embedded backend without its sentence model: the rules alone, as the tests pin them."""
    return get_interpreter("embedded", use_embedding=False)


def read(interp, text: str):
    return interp.interpret(InterpretRequest(text=text, persona=PERSONA)).directives


def moves(interp, text: str) -> list[str]:
    return [d.action for d in read(interp, text) if d.action != "idle"]
