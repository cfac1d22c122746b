"""`persona chat`: talk to a persona in the terminal and watch its directives and state.

Each line you type goes through the interpreter with the conversation history; the
directives are planned by the state tracker (which inserts "stand" before "walk" when
sitting, drops no-ops) and the state changes they cause are printed on the chat's own
clock, which jumps to the end of each plan. Works from a pipe as well as a terminal
(`printf 'hi\\nsit down\\n' | persona chat`).

Only lines starting with "/" are commands (`/help` lists them): anything else a user types,
"quit" and "exit" included, is something said to the character, so a word of the
conversation is never taken for a command. Ctrl-D (end of input) quits too.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass

from .interpret import add_backend_arguments, build

HELP = "Chat with a persona in the terminal, showing its directives and state."

#: printed once at the start, so nobody has to guess how to leave
HINT = "(/help for commands, /quit or Ctrl-D to quit; everything else is said to the character)"

#: the commands, in the order /help lists them: name → (argument, what it does)
COMMANDS: dict[str, tuple[str, str]] = {
    "/help": ("", "this list"),
    "/quit": ("", "end the chat (also /exit, or Ctrl-D)"),
    "/reset": ("", "forget the conversation and start the character over"),
    "/persona": ("[NAME]", "talk to another persona (without NAME: list them)"),
    "/state": ("", "the character's current pose, action and expression"),
}
_ALIASES = {"/exit": "/quit", "/q": "/quit", "/?": "/help"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_backend_arguments(parser)
    parser.add_argument("--no-color", action="store_true", help="plain text output")
    parser.epilog = "In the chat: " + "; ".join(
        f"{name}{' ' + arg if arg else ''}: {what}" for name, (arg, what) in COMMANDS.items()
    ) + ". Only lines starting with / are commands; Ctrl-D quits."


@dataclass(frozen=True)
class Command:
    """A line that is a command: its canonical name and the rest of the line."""

    name: str
    argument: str


def parse_command(line: str) -> Command | None:
    """The command a line asks for, or None when it is chat. Any line starting with "/" is
    a command (an unknown one gets an answer, never sent to the character as chat)."""
    text = line.strip()
    if not text.startswith("/"):
        return None
    name, _, argument = text.partition(" ")
    name = name.lower()
    return Command(_ALIASES.get(name, name), argument.strip())


def help_text() -> str:
    width = max(len(name) + len(arg) + 1 for name, (arg, _) in COMMANDS.items())
    rows = [f"  {(name + ' ' + arg).strip():<{width}}  {what}" for name, (arg, what) in COMMANDS.items()]
    rows.append("  Anything else (even 'quit' or 'exit') is said to the character. Ctrl-D quits.")
    return "\n".join(rows)


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.markup import escape

    from ...errors import PersonaError
    from ...persona.conversation import Conversation
    from ...persona.interpreter import Interpretation, InterpretRequest
    from ...persona.library import PersonaLibrary, load_persona
    from ...persona.state import StateTracker
    from ..cli import error_line

    persona, interpreter = build(args)
    interactive = sys.stdin.isatty()
    console = Console(highlight=False, emoji=False, no_color=args.no_color or not interactive, soft_wrap=True)
    now_ms = 0

    def show_state(state) -> None:
        console.print(
            f"  [dim]t={state.since_ms / 1000:6.2f}s[/] state: pose={state.pose.value} action={state.action} "
            f"expression={state.expression} activity={state.activity.value}"
        )

    def start(new_persona) -> tuple[Conversation, StateTracker]:
        """A fresh conversation with `new_persona`: its greeting and its first state."""
        conversation = Conversation(new_persona)
        tracker = StateTracker(new_persona.vocabulary(), clock_ms=now_ms)
        greeting = conversation.greeting()
        if greeting:
            conversation.add_persona(greeting)
            console.print(f"[cyan]{escape(new_persona.name)}:[/] {escape(greeting)}")
        for state in tracker.advance(now_ms):
            show_state(state)
        return conversation, tracker

    console.print(f"[bold]{escape(persona.name)}[/] ({escape(persona.id)}, backend {interpreter.name})")
    console.print(f"[dim]{escape(HINT)}[/]")
    conversation, tracker = start(persona)

    def read_line() -> str | None:
        if interactive:
            try:
                return console.input("[bold green]you>[/] ")
            except EOFError:
                return None
        line = sys.stdin.readline()
        if not line:
            return None
        line = line.rstrip("\n")
        console.print(f"you> {escape(line)}")
        return line

    def switch(argument: str) -> None:
        nonlocal persona, conversation, tracker
        if not argument:
            ids = ", ".join(p.id for p in PersonaLibrary.default().list())
            console.print(f"[dim]talking to {escape(persona.id)}; personas: {escape(ids)}[/]")
            return
        try:
            chosen = load_persona(argument)
        except PersonaError as exc:
            console.print(f"[red]{escape(error_line(exc) or str(exc))}[/]")  # the chat goes on
            return
        persona = chosen
        console.print(f"[bold]{escape(persona.name)}[/] ({escape(persona.id)})")
        conversation, tracker = start(persona)

    def reset(_argument: str) -> None:
        nonlocal conversation, tracker
        console.print("[dim](reset)[/]")
        conversation, tracker = start(persona)

    handlers: dict[str, Callable[[str], None]] = {
        "/help": lambda _argument: console.print(escape(help_text())),
        "/reset": reset,
        "/persona": switch,
        "/state": lambda _argument: show_state(tracker.state_at(now_ms)),
    }

    while (line := read_line()) is not None:
        command = parse_command(line)
        if command is not None:
            if command.name == "/quit":
                break
            handler = handlers.get(command.name)
            if handler is None:
                console.print(f"[red]unknown command {escape(command.name)}[/]; /help lists them")
            else:
                handler(command.argument)
            continue
        if not line.strip():
            continue
        request = InterpretRequest(
            text=line, persona=persona, state=tracker.state_at(now_ms), history=conversation.history
        )
        result: Interpretation | None = None
        streamed = False
        for part in interpreter.stream_reply(request):
            if isinstance(part, str):
                if not streamed:
                    console.print(f"[cyan]{escape(persona.name)}:[/] ", end="")
                    streamed = True
                console.print(escape(part), end="")
            else:
                result = part
        assert result is not None, "stream_reply must end with an Interpretation"
        if streamed:
            console.print()
        conversation.add_user(line)
        conversation.add_persona(result.reply)
        planned = tracker.plan(result.directives, now_ms)
        for d in planned:
            console.print(
                f"  [bold]→ {d.action}[/] expression={d.expression} intensity={d.intensity:.2f} "
                f"duration={d.duration_s or 0:.1f}s"
            )
        if not planned:
            console.print("  [dim]→ (no action)[/]")
        for note in [result.note, *tracker.notes]:
            if note:
                console.print(f"  [dim]note: {escape(note)}[/]")
        end_ms = max(tracker.busy_until_ms(), now_ms) + 1
        for state in tracker.advance(end_ms):
            show_state(state)
        now_ms = end_ms
    return 0
