"""`persona interpret "text"`: one utterance through an interpreter backend.

Prints the directives and the reply; with `--json`, exactly one JSON object on stdout:
`{"directives": [...], "reply": "...", "note": "...", "backend": "..."}`.
Exit status: 0 interpreted, 2 bad arguments (unknown persona or backend, bad option).
"""

from __future__ import annotations

import argparse
import json
import sys

HELP = "Interpret one utterance: print the directives and the persona's reply."


def add_backend_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments shared with `persona chat`."""
    parser.add_argument(
        "--persona", default=None,
        help="persona id (built-in, or a card in the user folder: see persona personas --help) or card file "
        "(default: the default persona)",
    )
    parser.add_argument(
        "--backend", default="embedded", help="interpreter backend: embedded, openai, llamacpp"
    )
    parser.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="backend option, repeatable (embedded: use_embedding, map_threshold; "
        "openai: base_url, model, api_key, timeout; llamacpp: model_path)",
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_backend_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print exactly one JSON object")
    parser.add_argument("text", help="what the user says ('-' reads stdin)")


def build(args: argparse.Namespace):
    """(persona, interpreter) from the shared arguments; raises SystemExit(2) with a message."""
    from ...persona.cards import CardError
    from ...persona.interpreter import UnknownBackendError, get_interpreter
    from ...persona.library import DEFAULT_PERSONA_ID, UnknownPersonaError, load_persona

    options: dict[str, str] = {}
    for item in args.option:
        key, sep, value = item.partition("=")
        if not sep or not key:
            _fail(f"--option must look like KEY=VALUE, got {item!r}")
        options[key.strip()] = value
    try:
        persona = load_persona(args.persona or DEFAULT_PERSONA_ID)
    except (UnknownPersonaError, CardError, OSError) as error:
        _fail(str(error))
    try:
        interpreter = get_interpreter(args.backend, **options)
    except (UnknownBackendError, TypeError, ValueError, ImportError, FileNotFoundError) as error:
        _fail(f"backend {args.backend!r}: {error}")
    return persona, interpreter


def _fail(message: str) -> None:
    print(f"persona: error: {message}", file=sys.stderr)
    raise SystemExit(2)


def run(args: argparse.Namespace) -> int:
    from ...persona.interpreter import InterpretRequest

    persona, interpreter = build(args)
    text = sys.stdin.read() if args.text == "-" else args.text
    result = interpreter.interpret(InterpretRequest(text=text, persona=persona))
    payload = {
        "directives": [d.model_dump(mode="json") for d in result.directives],
        "reply": result.reply,
        "note": result.note,
        "backend": result.backend,
    }
    if args.json:
        sys.stdout.write(json.dumps(payload, ensure_ascii=False) + "\n")
        return 0
    from rich.console import Console
    from rich.markup import escape

    # Card text and replies are data, not markup: "[/]" in a name crashed, ":x:" became an emoji.
    console = Console(highlight=False, emoji=False)
    for d in result.directives:
        console.print(
            f"[bold]{escape(d.action)}[/]  {escape(d.expression)}  intensity {d.intensity:.2f}  "
            f"{d.duration_s or 0:.1f}s"
        )
    if not result.directives:
        console.print("[dim](no action)[/]")
    console.print(f"[cyan]{escape(persona.name)}:[/] {escape(result.reply)}")
    if result.note:
        console.print(f"[dim]note: {escape(result.note)}[/]")
    return 0
