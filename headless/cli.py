"""The `persona` command line: one subcommand per module in `headless/commands/`.

Each command module defines `HELP` (one line), `add_arguments(parser)` and
`run(args) -> int`, and imports anything heavy inside `run`, so `persona --help`
starts instantly.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from .. import __version__

#: subcommand name → module under `headless/commands/`
COMMANDS: dict[str, str] = {
    "serve": "serve",
    "chat": "chat",
    "interpret": "interpret",
    "render": "render",
    "personas": "personas",
    "models": "models",
    "identity-drift": "identity_drift",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="persona",
        description="comfyui-persona: chat with a character and watch it act, live.",
    )
    parser.add_argument("--version", action="version", version=f"comfyui-persona {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(f"{__package__}.commands.{module_name}")
        command = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(command)
        command.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
