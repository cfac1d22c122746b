"""`persona serve`: run a saved workflow behind the chat protocol and serve the chat page."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

HELP = "Serve the chat page and /persona/ws, running a saved workflow in streaming mode."

DEFAULT_WORKFLOW = Path(__file__).resolve().parents[2] / "workflows" / "persona_preview_chat.json"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workflow", type=Path, default=DEFAULT_WORKFLOW,
                        help="saved workflow, API or UI format (default: workflows/persona_preview_chat.json)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8189, help="port (0: any free port; the real one is printed)")
    parser.add_argument("--token", default=None,
                        help="shared secret clients send in hello.token (default: env PERSONA_TOKEN); "
                        "required when binding beyond loopback")
    parser.add_argument("--max-sessions", type=int, default=8, help="concurrent sessions before `busy` (default 8)")
    parser.add_argument("--rate", type=int, default=20, help="messages per second per connection (default 20)")
    parser.add_argument("--resume-grace", type=float, default=30.0,
                        help="seconds a disconnected session waits to be resumed (default 30)")
    parser.add_argument("--jpeg-quality", type=int, default=80, help="JPEG quality 10..100 (default 80)")
    parser.add_argument("--encoder", default="simplejpeg", choices=["simplejpeg", "turbojpeg", "pillow"],
                        help="JPEG library (default simplejpeg, the fastest measured here)")
    parser.add_argument("--cache", default="classic", choices=["classic", "lru", "none"],
                        help="workflow executor cache policy (default classic)")
    parser.add_argument("--recordings", type=Path, default=None, metavar="DIR",
                        help="folder for `record` MP4s (default ~/.local/share/comfyui-persona/recordings)")
    parser.add_argument("--personas-dir", type=Path, default=None, metavar="DIR",
                        help="folder for cards imported through the page (default: first $PERSONA_DIR folder, "
                        "else ~/.local/share/comfyui-persona/personas)")
    parser.add_argument("--no-speech", action="store_true", help="do not speak replies (no audio, no lip-sync)")
    parser.add_argument("--no-warm-up", action="store_true", help="skip loading the interpreter before serving")
    parser.add_argument("--backend", default=None,
                        help="interpreter backend for the workflow's interpreter nodes: embedded, openai, "
                        "llamacpp (default: what the workflow says, embedded in the shipped ones)")
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                        help="interpreter option, repeatable (openai: base_url, model, api_key, timeout; "
                        "llamacpp: model_path); a failing LLM falls back to embedded per turn")
    parser.add_argument("--quiet", action="store_true", help="no progress display")


def run(args: argparse.Namespace) -> int:
    import asyncio
    import logging

    from rich.console import Console

    from ..runner import WorkflowError
    from ..server.config import InsecureBindError, ServerConfig, check_exposure

    console = Console(stderr=True, quiet=args.quiet)
    errors = Console(stderr=True)  # errors print even with --quiet
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    try:
        config = ServerConfig(
            host=args.host,
            port=args.port,
            token=args.token or os.environ.get("PERSONA_TOKEN") or None,
            max_sessions=args.max_sessions,
            messages_per_second=args.rate,
            resume_grace_s=args.resume_grace,
            jpeg_quality=args.jpeg_quality,
            encoder=args.encoder,
            cache_policy=args.cache,
            speech=not args.no_speech,
            recordings_dir=str(args.recordings) if args.recordings else None,
            personas_dir=str(args.personas_dir) if args.personas_dir else None,
        )
        check_exposure(config)
    except (InsecureBindError, ValueError) as exc:
        errors.print(f"[red]error:[/red] {exc}")
        return 2
    try:
        service = _load(args, config, console)
    except WorkflowError as exc:
        errors.print(f"[red]workflow error:[/red] {exc}")
        return 2
    try:
        asyncio.run(_serve(service, config))
    except KeyboardInterrupt:
        pass
    return 0


def _load(args: argparse.Namespace, config, console):
    """Load and validate the workflow, then warm the interpreter up, with progress shown."""
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from ...nodes import NODE_CLASS_MAPPINGS
    from ..runner import WorkflowGraph, load_workflow
    from ..server import PersonaService

    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                  console=console, transient=False) as progress:
        step = progress.add_task(f"loading workflow {args.workflow.name}", total=None)
        workflow = with_interpreter(load_workflow(args.workflow, NODE_CLASS_MAPPINGS), args.backend, args.option)
        graph = WorkflowGraph(workflow, NODE_CLASS_MAPPINGS)
        progress.update(step, description=f"workflow {args.workflow.name}: {len(graph.order)} nodes", total=1, completed=1)
        service = PersonaService(graph, config)
        if not args.no_warm_up:
            warm = progress.add_task("warming up (interpreter models, first frames)", total=None)
            service.warm_up()
            progress.update(warm, description="warmed up", total=1, completed=1)
    return service


def with_interpreter(workflow: dict, backend: str | None, options: list[str]) -> dict:
    """`workflow` (API format) with every interpreter node set to `backend` and `options`
    (`--backend`/`--option`); unchanged when neither is given. Raises WorkflowError for an
    unknown backend or a malformed option, before anything loads."""
    from ...persona.interpreter import BACKENDS, InterpreterOptionError, parse_options
    from ..runner import WorkflowError

    if backend is None and not options:
        return workflow
    if backend is not None and backend not in BACKENDS:
        raise WorkflowError(f"unknown interpreter backend {backend!r}; known: {', '.join(BACKENDS)}")
    try:
        parse_options(options)
    except InterpreterOptionError as exc:
        raise WorkflowError(str(exc)) from None
    found = False
    for node in workflow.values():
        if node.get("class_type") == "PersonaInterpreter":
            found = True
            if backend is not None:
                node["inputs"]["backend"] = backend
            if options:
                node["inputs"]["options"] = "\n".join(options)
    if not found:
        raise WorkflowError("--backend/--option given, but the workflow has no PersonaInterpreter node")
    return workflow


async def _serve(service, config) -> None:
    import asyncio
    import signal

    from aiohttp import web

    from ..server import create_app

    app = create_app(service)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, config.host, config.port)
    await site.start()
    sockets = site._server.sockets if site._server is not None else []  # the OS-chosen port for --port 0
    port = sockets[0].getsockname()[1] if sockets else config.port
    host = config.host if ":" not in config.host else f"[{config.host}]"
    print(f"persona serve: http://{host}:{port}/  (WebSocket ws://{host}:{port}/persona/ws)", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):
            pass
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
