"""`persona chat`: talk to a persona in the terminal and watch its directives and state.

Each line you type goes through the interpreter with the conversation history; the
directives are planned by the state tracker (which inserts "stand" before "walk" when
sitting, drops no-ops) and the state changes they cause are printed on the chat's own
clock, which jumps to the end of each plan. Works from a pipe as well as a terminal
(`printf 'hi\\nsit down\\n' | persona chat`). Commands: /reset, /state, /quit.
"""

from __future__ import annotations

import argparse
import sys

from .interpret import add_backend_arguments, build

HELP = "Chat with a persona in the terminal, showing its directives and state."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_backend_arguments(parser)
    parser.add_argument("--no-color", action="store_true", help="plain text output")


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.markup import escape

    from ...persona.conversation import Conversation
    from ...persona.interpreter import Interpretation, InterpretRequest
    from ...persona.state import StateTracker

    persona, interpreter = build(args)
    interactive = sys.stdin.isatty()
    console = Console(highlight=False, no_color=args.no_color or not interactive, soft_wrap=True)
    conversation = Conversation(persona)
    tracker = StateTracker(persona.vocabulary(), clock_ms=0)
    now_ms = 0

    def show_state(state) -> None:
        console.print(
            f"  [dim]t={state.since_ms / 1000:6.2f}s[/] state: pose={state.pose.value} action={state.action} "
            f"expression={state.expression} activity={state.activity.value}"
        )

    console.print(f"[bold]{escape(persona.name)}[/] ({escape(persona.id)}, backend {interpreter.name})")
    greeting = conversation.greeting()
    if greeting:
        conversation.add_persona(greeting)
        console.print(f"[cyan]{escape(persona.name)}:[/] {escape(greeting)}")
    for state in tracker.advance(now_ms):
        show_state(state)
    while True:
        if interactive:
            try:
                line = console.input("[bold green]you>[/] ")
            except EOFError:
                break
        else:
            line = sys.stdin.readline()
            if not line:
                break
            line = line.rstrip("\n")
            console.print(f"you> {escape(line)}")
        command = line.strip().lower()
        if command in ("/quit", "/exit"):
            break
        if command == "/reset":
            conversation.reset()
            tracker.reset(now_ms)
            console.print("[dim](reset)[/]")
            continue
        if command == "/state":
            show_state(tracker.state_at(now_ms))
            continue
        if not command:
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
