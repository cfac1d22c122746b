"""`persona chat`'s slash commands, through a real process reading a pipe (issue 17): only
lines starting with "/" are commands, so "quit" and "exit" still reach the character."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from comfyui_persona.headless.commands.chat import HINT, parse_command


def _chat(lines: str, tmp_path: Path, *argv: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PERSONA_DIR"}
    env.update(PYTHONIOENCODING="utf-8", COLUMNS="200", XDG_DATA_HOME=str(tmp_path / "data"))
    return subprocess.run(
        [sys.executable, "-m", "comfyui_persona.headless", "chat", "--persona", "mira", *argv],
        input=lines, capture_output=True, text=True, timeout=120, env=env,
    )


def test_hint_help_and_quit(tmp_path):
    result = _chat("/help\n/quit\nhello after quit\n", tmp_path)
    assert result.returncode == 0, result.stderr
    out = result.stdout.splitlines()
    assert out[1] == HINT and "/help" in HINT and "Ctrl-D" in HINT
    assert any(line.strip().startswith("/persona [NAME]") for line in out)
    assert any("even 'quit' or 'exit'" in line for line in out)
    assert "hello after quit" not in result.stdout  # /quit ended the chat before it was read
    assert "Traceback" not in result.stderr


def test_quit_and_exit_words_are_chat_not_commands(tmp_path):
    result = _chat("quit\nexit\n", tmp_path)
    assert result.returncode == 0, result.stderr
    replies = [line for line in result.stdout.splitlines() if line.startswith("Mira:")]
    assert len(replies) == 3  # the greeting, then a reply to each word: both reached the character


def test_end_of_input_quits(tmp_path):
    result = _chat("hi", tmp_path)  # no /quit, no trailing newline: EOF ends the chat
    assert result.returncode == 0, result.stderr
    assert "→ wave" in result.stdout


def test_persona_switch_reset_and_unknown(tmp_path):
    result = _chat("/persona\n/persona zed\n/persona ada\nhi\n/reset\n/nonsense\n/exit\n", tmp_path)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "talking to mira; personas:" in out and "ada" in out
    assert "unknown persona 'zed'" in out  # an error in the chat, which goes on
    assert "Professor Ada (ada)" in out
    lines = out.splitlines()
    greeting = lines[lines.index("Professor Ada (ada)") + 1]
    assert greeting.startswith("Professor Ada: Good afternoon")  # the greeting on switching...
    assert lines[lines.index("(reset)") + 1] == greeting  # ...and again after /reset
    assert "unknown command /nonsense; /help lists them" in out
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("line", "name", "argument"),
    [("/quit", "/quit", ""), ("  /EXIT ", "/quit", ""), ("/persona  ada ", "/persona", "ada"), ("/?", "/help", "")],
)
def test_parse_command(line, name, argument):
    command = parse_command(line)
    assert command is not None and (command.name, command.argument) == (name, argument)


@pytest.mark.parametrize("line", ["quit", "exit", "help", "please /quit", ""])
def test_words_are_not_commands(line):
    assert parse_command(line) is None
