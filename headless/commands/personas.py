"""`persona personas list|show ID|import FILE|export ID --format F -o OUT`: the persona gallery."""

from __future__ import annotations

import argparse
import json
import sys

HELP = "list, show, import and export persona cards (Character Card V2/V3: JSON, PNG, CHARX)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dir",
        action="append",
        default=None,
        metavar="DIR",
        help="user persona folder (repeatable; default: $PERSONA_DIR, else "
        "$XDG_DATA_HOME/comfyui-persona/personas, the folder the chat page and ComfyUI use). "
        "Imports go to the first.",
    )
    sub = parser.add_subparsers(dest="personas_command", metavar="ACTION", required=True)
    listing = sub.add_parser("list", help="every persona: id, name, look")
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    show = sub.add_parser("show", help="one persona's full config as JSON")
    show.add_argument("id", help="persona id, or a card file path")
    importing = sub.add_parser("import", help="add a V2/V3 card (.json, .png, .charx) to the user folder")
    importing.add_argument("file")
    importing.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the user card with the same id (default: a taken id gets the next free one, e.g. mira-2)",
    )
    export = sub.add_parser("export", help="write a persona as a card file")
    export.add_argument("id")
    export.add_argument("--format", choices=("json", "png", "charx"), default="json")
    export.add_argument("-o", "--output", required=True, help="file to write")


def run(args: argparse.Namespace) -> int:
    from ...persona.cards import read_card_file, write_card
    from ...persona.library import CARD_SUFFIXES, PersonaLibrary

    # a card that cannot be read or stored raises a PersonaError (or OSError): headless/cli.py
    # prints it as one line
    library = PersonaLibrary(user_dirs=args.dir) if args.dir else PersonaLibrary.default()
    if args.personas_command == "list":
        personas = library.list()
        if args.json:
            rows = [
                {
                    "id": p.id,
                    "name": p.name,
                    "description": p.description,
                    "look": p.appearance.description,
                }
                for p in personas
            ]
            print(json.dumps(rows, indent=2))
        else:
            width = max(len(p.id) for p in personas) if personas else 2
            for persona in personas:
                print(f"{persona.id:<{width}}  {persona.name}: {persona.appearance.description}")
        for path, message in library.errors.items():
            print(f"skipped {path}: {message}", file=sys.stderr)
        for path, messages in library.warnings.items():
            _warn(messages, f"{path}: ")
        return 0
    if args.personas_command == "show":
        if args.id.lower().endswith(CARD_SUFFIXES):
            loaded = read_card_file(args.id)
        else:
            loaded = library.get_card(args.id)
        _warn(loaded.warnings)
        print(loaded.persona.model_dump_json(indent=2, exclude={"card"}))
        return 0
    if args.personas_command == "import":
        stored = library.import_file(args.file, overwrite=args.overwrite)
        verb = "replaced" if stored.replaced else "imported"
        print(f"{verb} {stored.id} ({stored.persona.name}) into {stored.path}")
        _warn(list(stored.warnings))
        return 0
    if args.personas_command == "export":
        loaded = library.get_card(args.id)
        path = write_card(loaded.persona, args.output, args.format, loaded.assets)
        print(f"wrote {path}")
        return 0
    raise AssertionError(f"unhandled personas action {args.personas_command!r}")


def _warn(messages: list[str], prefix: str = "") -> None:
    """What loading a card dropped (it still loaded), on stderr."""
    for message in messages:
        print(f"warning: {prefix}{message}", file=sys.stderr)
