"""`persona serve`: run a saved workflow behind the chat protocol and serve the chat page."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

HELP = "Serve the chat page and /persona/ws, running a saved workflow in streaming mode."

DEFAULT_WORKFLOW = Path(__file__).resolve().parents[2] / "workflows" / "persona_preview_chat.json"


#: Flag names users know from earlier versions, kept as aliases of the generated ones.
ALIASES = {
    "messages_per_second": ["--rate"],
    "resume_grace_s": ["--resume-grace"],
    "recordings_dir": ["--recordings"],
    "cache_policy": ["--cache"],
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..server.config import ServerConfig

    add_service_arguments(parser, ServerConfig)


def add_service_arguments(parser: argparse.ArgumentParser, settings: type, *, cluster: bool = False) -> None:
    """The flags of `persona serve`, or with `cluster` those of `persona deploy` (its own
    words where a flag means something else on a cluster), then one flag per field of
    `settings` (ServerConfig, or deploy's ClusterConfig): one place for what both accept."""
    from ..settings_args import add_model_arguments

    parser.add_argument("--workflow", type=Path, default=DEFAULT_WORKFLOW,
                        help=("saved workflow every replica runs" if cluster else "saved workflow, API or UI format")
                        + " (default: workflows/persona_preview_chat.json)")
    parser.add_argument("--config", type=Path, default=None, metavar="FILE",
                        help="settings file (TOML, or JSON by its .json suffix): the serve settings and the "
                        "cluster settings below, by the same names; flags override it" if cluster else
                        "settings file (TOML, or JSON by its .json suffix) with any of the settings below, "
                        "by the same names (max_sessions = 4); flags override it")
    parser.add_argument("--no-warm-up", action="store_true", help="skip loading the interpreter "
                        + ("in each replica" if cluster else "before serving"))
    if cluster:
        parser.add_argument("--attach", action="store_true",
                            help="start no replicas: serve one more ingress for the deployment already running "
                            "on the cluster (same --namespace and --app-name)")
    parser.add_argument("--backend", default=None,
                        help="interpreter backend for the workflow (as persona serve)" if cluster else
                        "interpreter backend for the workflow's interpreter nodes: embedded, openai, "
                        "llamacpp (default: what the workflow says, embedded in the shipped ones)")
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                        help="interpreter option, repeatable (as persona serve)" if cluster else
                        "interpreter option, repeatable (openai: base_url, model, api_key, timeout; "
                        "llamacpp: model_path); a failing LLM falls back to embedded per turn")
    if not cluster:
        parser.add_argument("--quiet", action="store_true", help="no progress display")
    add_model_arguments(parser, settings, ALIASES)


def run(args: argparse.Namespace) -> int:
    """Errors a user can cause (a bad setting, a port in use, a workflow that cannot run) are
    raised as `PersonaError`s and printed as one line by `headless/cli.py`."""
    import asyncio

    from rich.console import Console

    from ..server.config import ServerConfig
    from .native_output import quiet_fontconfig

    console = Console(stderr=True, quiet=args.quiet, soft_wrap=True)
    config = checked_settings(ServerConfig, args)
    quiet_fontconfig()  # before the progress display: the preview renderer's fonts warn on stderr
    from ..server.logs import install

    install(config.log_repeats, on_root_handlers=True)
    service = _load(args, config, console)
    try:
        asyncio.run(_serve(service, config))
    except KeyboardInterrupt:
        pass
    return 0



def checked_settings(settings: type, args: argparse.Namespace):
    """Logging as the servers log, then the settings of `settings` (the `--config` file, the
    flags, $PERSONA_TOKEN), each checked before anything slow: the bind address is safe,
    the workflow file exists, the port is free (a warm-up may take a minute)."""
    import logging

    from ..cli import CommandLineError
    from ..server.config import InsecureBindError, check_exposure
    from ..settings_args import settings_from_args

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    config = settings_from_args(settings, args, args.config, token=os.environ.get("PERSONA_TOKEN") or None)
    try:
        check_exposure(config)
    except InsecureBindError as exc:
        raise CommandLineError(str(exc)) from None
    if not args.workflow.is_file():
        raise CommandLineError(f"--workflow {args.workflow}: no such file")
    check_port_free(config.host, config.port)
    return config

def _port_error(host: str, port: int, exc: OSError) -> Exception:
    """The one-line error for a failed listen on host:port."""
    import errno

    from ..cli import CommandLineError

    if exc.errno == errno.EADDRINUSE:
        return CommandLineError(f"port {port} is in use (another server?); pick another with --port")
    if exc.errno == errno.EACCES:
        return CommandLineError(f"port {port} needs privileges on this system; pick one above 1023 with --port")
    return CommandLineError(f"cannot listen on {host}:{port}: {exc.strerror or exc}; check --host and --port")


def check_port_free(host: str, port: int) -> None:
    """Raise `CommandLineError` now if host:port cannot be listened on, the way the server
    will bind it (SO_REUSEADDR on POSIX, as asyncio does). The real bind still checks: this
    only saves the user a warm-up before hearing the port is taken."""
    import socket

    if port == 0:
        return
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        from ..cli import CommandLineError

        raise CommandLineError(f"--host {host!r} is not an address of this machine: {exc.strerror}") from None
    for family, kind, proto, _name, address in infos:
        with socket.socket(family, kind, proto) as probe:
            if os.name != "nt":
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(address)
            except OSError as exc:
                raise _port_error(host, port, exc) from None


def _load(args: argparse.Namespace, config, console):
    """Load and validate the workflow, then warm the interpreter up, with progress shown."""
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from ..server import PersonaService

    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                  console=console, transient=False) as progress:
        step = progress.add_task(f"loading workflow {args.workflow.name}", total=None)
        hosts, store, nodes = _hosts(args.workflow, config, args.backend, args.option)
        progress.update(step, description=f"workflow {args.workflow.name}: {nodes} nodes", total=1, completed=1)
        service = PersonaService(hosts, config, store=store)
        if not args.no_warm_up:
            warm = progress.add_task("warming up (interpreter models, first frames)", total=None)
            service.warm_up()
            progress.update(warm, description="warmed up", total=1, completed=1)
    return service


def _hosts(path: Path, config, backend: str | None = None, options: list[str] | None = None):
    """What runs the sessions: ComfyUI's executor and registry with `--comfyui PATH`, else
    the pack's own executor. Every node type the chosen registry lacks is named now, with the
    pack that provides it, never later per session."""
    import json

    from ...nodes.runtime import SessionStore
    from ..runner import WorkflowError, WorkflowGraph, load_workflow
    from ..runner.hosts import PromptHosts, RunnerHosts, unknown_node_types

    store = SessionStore()
    if config.comfyui:
        from ..runner.comfyui_embed import EmbeddedPrompts, load_comfyui

        comfy = load_comfyui(config.comfyui, output_dir=config.comfyui_output_dir)
        registry = comfy.registry
    else:
        from ...nodes import NODE_CLASS_MAPPINGS as registry
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise WorkflowError(f"cannot read the workflow {path}: {exc}") from None
    unknown = unknown_node_types(raw, registry)
    if unknown:
        raise WorkflowError(f"{path.name}: this server cannot run these node types:\n  " + "\n  ".join(unknown))
    workflow = with_interpreter(load_workflow(path, registry), backend, options or [])
    if config.comfyui:
        return PromptHosts(workflow, registry, EmbeddedPrompts(comfy, store), store), store, len(workflow)
    graph = WorkflowGraph(workflow, registry)
    return RunnerHosts(graph, config.cache_policy), store, len(graph.order)


def _raise_open_files_limit() -> None:
    """Use the hard limit of open files: the connection caps (max_connections) must bind
    before the process runs out of descriptors, never after."""
    try:
        import resource
    except ImportError:  # not on Windows
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard if hard != resource.RLIM_INFINITY else max(soft, 65536), hard))
        except (ValueError, OSError):
            pass


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
    from ..server import create_app

    _raise_open_files_limit()
    await serve_until_stopped(create_app(service), service.gate, config.host, config.port,
                              lambda url, ws: f"persona serve: {url}  (WebSocket {ws})")


async def serve_until_stopped(app, gate, host: str, port: int, banner) -> None:
    """Listen on host:port (port 0: any), print `banner(page URL, WebSocket URL)` with the
    port bound, and serve `app` until SIGINT or SIGTERM: the end of `persona serve` and
    `persona deploy` (a script reads the port from that line)."""
    import asyncio
    import signal

    from ..server.site import start_server

    try:
        runner, bound = await start_server(app, host, port, gate)
    except OSError as exc:  # taken between check_port_free and now
        raise _port_error(host, port, exc) from None
    shown = host if ":" not in host else f"[{host}]"
    print(banner(f"http://{shown}:{bound}/", f"ws://{shown}:{bound}/persona/ws"), flush=True)
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
