"""`persona render --persona ID --script script.jsonl -o out.mp4`: a scripted scene to MP4.

Renders with the preview backend (CPU, no weights) so anyone can see what a persona does.
Script lines (JSON Lines; blank lines and lines starting with # are skipped):

    {"directive": {"action": "wave", "expression": "smile", "intensity": 0.8}}
    {"say": "hello! can you sit down?"}     # interpreted by the embedded interpreter
    {"wait_s": 1.5}

A directive line plays for its `duration_s` (or the vocabulary default) before the next
line. A `say` line runs the embedded interpreter on the text, performs its directives and
speaks the in-character reply with the persona's voice (`video.voice`, lip-synced), so the
MP4 has H.264 video and AAC speech (`SessionRecorder`). With `--no-audio` the reply is
mouthed with a talking cycle instead (about 70 ms per character) and there is no audio
track. The clip ends with a short rest.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from fractions import Fraction
from pathlib import Path

from ...errors import PersonaError

HELP = "render a scripted sequence of directives and lines to an MP4 with the preview renderer"

MS_PER_CHAR = 70
TAIL_S = 1.0


class ScriptError(PersonaError, ValueError):
    """A script (or flag) that cannot be performed; the message names the line or flag.
    `headless/cli.py` prints it as one line."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--persona", required=True, help="persona id (built-in, or a card in the user folder: see persona personas --help) or card file")
    parser.add_argument("--script", required=True, type=Path, help="JSON Lines script (see docs/preview.md)")
    parser.add_argument("-o", "--output", required=True, type=Path, help="MP4 file to write")
    parser.add_argument("--size", default="512x512", help="WIDTHxHEIGHT, even numbers (default 512x512)")
    parser.add_argument("--fps", type=float, default=24.0,
                        help="frames per second (default 24: lip-sync holds p95 <= 45 ms from 24 fps up, docs/voice.md)")
    parser.add_argument("--no-audio", action="store_true",
                        help="no speech: video only, `say` lines mouth a talking cycle")
    parser.add_argument("--seed", type=_seed, default=0, help="animation seed (blinks, breathing), 0 or more")


def _seed(text: str) -> int:
    """argparse type: a non-negative integer (numpy's seeds are)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def _size(text: str) -> tuple[int, int]:
    match = re.fullmatch(r"\s*(\d+)\s*[xX×]\s*(\d+)\s*", text)
    if not match:
        raise ScriptError(f"--size {text!r} must look like 512x512")
    return int(match.group(1)), int(match.group(2))


#: The longest idle a script line may ask for (a clip is minutes at most).
MAX_WAIT_S = 3600


def read_script(path: Path) -> list[tuple[int, dict]]:
    """(line number, event) pairs; raises ScriptError naming the bad line."""
    events = []
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ScriptError(f"--script {path}: not a UTF-8 text file") from None
    except OSError as exc:
        raise ScriptError(f"--script {path}: {(exc.strerror or str(exc)).lower()}") from None
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            event = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ScriptError(f"{path}:{number}: not JSON ({exc.msg})") from None
        keys = set(event) if isinstance(event, dict) else set()
        if len(keys & {"directive", "say", "wait_s"}) != 1 or len(keys) != 1:
            raise ScriptError(
                f"{path}:{number}: expected one of {{'directive'|'say'|'wait_s': ...}}, got {line.strip()}"
            )
        if "wait_s" in event:
            wait = event["wait_s"]
            if isinstance(wait, bool) or not isinstance(wait, (int, float)) or not 0 <= wait <= MAX_WAIT_S:
                raise ScriptError(f"{path}:{number}: wait_s must be a number of seconds from 0 to {MAX_WAIT_S}")
        events.append((number, event))
    return events


def run(args: argparse.Namespace) -> int:
    """A bad script, flag or output raises a `PersonaError`; `headless/cli.py` prints it."""
    from .native_output import quiet_fontconfig

    quiet_fontconfig()  # the renderer's fonts would warn on stderr between our lines
    return render(args)


def check_output(path: Path) -> None:
    """Raise ScriptError now, before any rendering, if the MP4 cannot be written at `path`."""
    if path.suffix.lower() not in (".mp4", ".m4v", ".mov"):
        raise ScriptError(f"-o {path}: the output is an MP4; name it something.mp4")
    if path.is_dir():
        raise ScriptError(f"-o {path}: is a folder; name a file in it")
    blocker = next((p for p in path.parents if p.exists()), None)
    if blocker is not None and not blocker.is_dir():
        raise ScriptError(f"-o {path}: {blocker} is a file, not a folder")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ScriptError(f"-o {path}: cannot make its folder ({(exc.strerror or str(exc)).lower()})") from None
    if not os.access(path.parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise ScriptError(f"-o {path}: not writable (permission denied)")


def render(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from ...persona.interpreter import get_interpreter
    from ...persona.interpreter.base import InterpretRequest, Turn
    from ...persona.library import load_persona
    from ...persona.schema import ActionDirective, CharacterState, Pose
    from ...video.backend import RenderError, SessionSpec
    from ...video.registry import create_backend
    from ..settings_args import validation_message

    width, height = _size(args.size)
    events = read_script(args.script)
    check_output(args.output)
    persona = load_persona(args.persona)
    vocabulary = persona.vocabulary()
    spec = SessionSpec(
        persona_id=persona.id,
        persona_name=persona.name,
        look=persona.appearance.model_dump(),
        width=width,
        height=height,
        fps=args.fps,
        seed=args.seed,
        vocabulary={
            "actions": [e.model_dump(mode="json") for e in persona.extra_actions],
            "expressions": [e.model_dump(mode="json") for e in persona.extra_expressions],
        },
    )
    renderer = create_backend("preview", chunk_frames=1)
    try:
        renderer.start_session(spec)
    except RenderError as exc:
        raise ScriptError(str(exc)) from None
    interpreter = None
    history: list = []

    # Rendered beside the target and renamed over it only when the whole script played: a bad
    # line halfway keeps the file that was there (the muxer reads the format from the suffix).
    partial = args.output.with_name(f".{args.output.stem}.partial-{os.getpid()}{args.output.suffix}")
    try:
        writer = (_AudioWriter(args, partial, renderer, persona, width, height) if not args.no_audio
                  else _VideoWriter(args, partial, width, height))
    except BaseException:
        partial.unlink(missing_ok=True)
        raise

    def play(seconds: float) -> None:
        for _ in range(max(1, round(seconds * args.fps))):
            writer.frame(renderer)

    def duration_of(d: ActionDirective) -> float:
        if d.duration_s is not None:
            return d.duration_s
        action = vocabulary.action(d.action).default_duration_s if d.action != "idle" else 0.0
        return max(action, 0.6 if d.action != "idle" else 0.0)

    try:
        for seq, (number, event) in enumerate(events, start=1):
            try:
                if "wait_s" in event:
                    play(float(event["wait_s"]))
                elif "directive" in event:
                    directive = ActionDirective.model_validate(event["directive"])
                    renderer.submit([directive], seq)
                    play(max(duration_of(directive), 0.5))
                else:
                    text = str(event["say"])
                    if interpreter is None:
                        interpreter = get_interpreter("embedded")
                    state = CharacterState(pose=Pose.SITTING if renderer.sitting else Pose.STANDING)
                    result = interpreter.interpret(
                        InterpretRequest(text=text, persona=persona, state=state, history=tuple(history))
                    )
                    history = [
                        *history,
                        Turn(role="user", text=text),
                        Turn(role="persona", text=result.reply),
                    ][-8:]
                    print(
                        f"line {number}: {text!r} -> {[d.action + '/' + d.expression for d in result.directives]} "
                        f"reply {result.reply!r}"
                    )
                    if result.directives:
                        renderer.submit(result.directives, seq)
                    speech_s = writer.speak(result.reply) if result.reply else 0.0
                    busy = sum(duration_of(d) for d in result.directives)
                    play(max(busy, speech_s + 0.3, 0.8))
            except ValidationError as exc:
                raise ScriptError(f"{args.script}:{number}: {validation_message(exc)}") from None
            except (RenderError, KeyError, ValueError) as exc:
                raise ScriptError(f"{args.script}:{number}: {exc}") from None
        play(TAIL_S)
    except BaseException:
        try:
            writer.close()
        finally:
            partial.unlink(missing_ok=True)
        raise
    writer.close()
    os.replace(partial, args.output)
    frames_written = writer.frames
    print(
        f"wrote {args.output} ({frames_written} frames, {frames_written / args.fps:.1f} s, {width}x{height} "
        f"@ {args.fps:g} fps, {'no audio' if args.no_audio else 'speech audio'})"
    )
    return 0


class _VideoWriter:
    """`--no-audio`: H.264 only; `say` lines mouth a talking cycle (~70 ms per character)."""

    def __init__(self, args: argparse.Namespace, path: Path, width: int, height: int) -> None:
        import av

        self.fps = args.fps
        self.container = av.open(str(path), mode="w")
        self.stream = self.container.add_stream("libx264", rate=Fraction(args.fps).limit_denominator(1001))
        self.stream.width, self.stream.height, self.stream.pix_fmt = width, height, "yuv420p"
        self.stream.options = {"crf": "20", "preset": "veryfast"}
        self.frames = 0
        self._renderer = None

    def frame(self, renderer) -> None:
        import av

        self._renderer = renderer
        frame = av.VideoFrame.from_ndarray(renderer.next_chunk().frames[0], format="rgb24")
        self.container.mux(self.stream.encode(frame))
        self.frames += 1

    def speak(self, text: str) -> float:
        speech_ms = MS_PER_CHAR * len(text)
        if speech_ms and self._renderer is not None:
            self._renderer.set_speech(None, speech_ms)
        return speech_ms / 1000.0

    def close(self) -> None:
        self.container.mux(self.stream.encode(None))
        self.container.close()


class _AudioWriter:
    """Default: `say` replies spoken with the persona's voice (espeak, or piper when the card
    asks for it and it is installed), lip-synced, into H.264 + AAC (`SessionRecorder`)."""

    def __init__(self, args: argparse.Namespace, path: Path, renderer, persona, width: int, height: int) -> None:
        from ...video.recording import SessionRecorder
        from ...video.voice import STREAM_RATE, SpeechDriver, checked_voice, get_synthesizer

        # e.g. a piper card without the piper extra installed, or a voice espeak does not list
        voice, problem = checked_voice(persona.voice.model_dump())
        if problem:
            print(f"warning: {problem}", file=sys.stderr)
        synthesizer = get_synthesizer(voice.engine)
        self.recorder = SessionRecorder(path, width, height, args.fps, STREAM_RATE, crf=20)
        self.recorder.start()
        self.driver = SpeechDriver(renderer, args.fps, voice, synthesizer=synthesizer, recorder=self.recorder)

    @property
    def frames(self) -> int:
        return self.recorder.frames_written

    def frame(self, renderer) -> None:
        self.driver.next_chunk()

    def speak(self, text: str) -> float:
        """Queue `text`; returns how long from the next frame until it has been said (s)."""
        end = self.driver.next_frame_ms
        for packet in self.driver.say(text):
            end = max(end, packet.end_ms)
        return (end - self.driver.next_frame_ms) / 1000.0

    def close(self) -> None:
        if self.recorder.recording:
            self.recorder.stop()
