"""The `persona` command line: one subcommand per module in `headless/commands/`.

Each command module defines `HELP` (one line), `add_arguments(parser)` and
`run(args) -> int`, and imports anything heavy inside `run`, so `persona --help`
starts instantly.

Errors a user can cause (a bad flag, a missing file, a port in use, an unknown persona)
end the command here, in one place: `main` turns the project's error root
(`comfyui_persona.errors.PersonaError`), a pydantic `ValidationError` and an `OSError` into
one line on stderr (`persona: error: ...`) and exit status 2, so commands raise and never
print their own tracebacks. Anything else is a bug and keeps its traceback. `--debug`
shows the traceback of the one-line errors too (for a bug report).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import signal
import sys
from collections.abc import Sequence

from .. import __version__
from ..errors import PersonaError
from ..persona.text import printable_text

__all__ = ["COMMANDS", "CommandLineError", "build_parser", "error_line", "main"]

#: subcommand name → module under `headless/commands/`
COMMANDS: dict[str, str] = {
    "serve": "serve",
    "deploy": "deploy",
    "chat": "chat",
    "interpret": "interpret",
    "render": "render",
    "personas": "personas",
    "models": "models",
    "identity-drift": "identity_drift",
}

#: exit status of every one-line error (argparse's own usage errors use it too)
USAGE_ERROR = 2


class CommandLineError(PersonaError, ValueError):
    """Something on the command line that cannot work (a port in use, an unwritable output);
    the message names it and says what to do instead."""

    code = "command_line"


class _Parser(argparse.ArgumentParser):
    """argparse, with a usage error as one line that points at `--help` instead of the
    whole usage block (`persona serve` has dozens of flags)."""

    def error(self, message: str):  # noqa: D102 - argparse's hook
        self.exit(USAGE_ERROR, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="persona",
        description="comfyui-persona: chat with a character and watch it act, live.",
        epilog="A mistake on the command line, a missing file or a port in use prints one line "
        "(persona: error: ...) and exits with status 2; --debug (before COMMAND) shows the traceback. "
        "See docs/cli.md.",
    )
    parser.add_argument("--version", action="version", version=f"comfyui-persona {__version__}")
    parser.add_argument("--debug", action="store_true",
                        help="show the Python traceback of an error instead of its one-line message")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(f"{__package__}.commands.{module_name}")
        command = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(command)
        command.set_defaults(_run=module.run)
    return parser


def error_line(exc: BaseException) -> str | None:
    """The one line a user sees for `exc`, or None when it is a bug (keep the traceback)."""
    if isinstance(exc, PersonaError):
        text = str(exc)
    elif isinstance(exc, OSError):
        # e.g. "Permission denied: /out/x.mp4"; the errno number means nothing to a user
        text = exc.strerror or str(exc)
        if exc.filename is not None:
            text += f": {exc.filename}"
    else:
        pydantic = sys.modules.get("pydantic")
        if pydantic is None or not isinstance(exc, pydantic.ValidationError):
            return None
        from .settings_args import validation_message

        text = validation_message(exc)
    if isinstance(exc, KeyError) and len(exc.args) == 1 and text == repr(exc.args[0]):
        text = str(exc.args[0])  # KeyError quotes its message
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    return lines[0] if len(lines) == 1 else f"{lines[0]} {'; '.join(lines[1:])}"


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`persona personas list | head -1`): not an error to print. Later
        # writes (the interpreter's last flush) go nowhere; the status is a SIGPIPE's, as a
        # shell reports for other tools.
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE
    except Exception as exc:
        line = error_line(exc)
        if line is None or args.debug:
            raise
        # a workflow's node type, a card's name: text from a file may hold terminal escapes
        print(f"persona: error: {printable_text(line)}", file=sys.stderr, flush=True)
        return USAGE_ERROR


if __name__ == "__main__":
    sys.exit(main())
