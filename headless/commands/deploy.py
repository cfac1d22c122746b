"""`persona deploy`: the persona service on a Ray cluster (docs/scaling.md).

The same protocol, page and settings as `persona serve` (every serve setting is a flag here
too, and the same `--config` file works), plus the cluster's: `--cluster local` starts Ray in
this process, `--cluster auto` or an address joins a running cluster. Renderer replicas run
as a Ray Serve deployment; this process is the ingress clients connect to.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

HELP = "Serve the chat page and /persona/ws from renderer replicas on a Ray cluster (needs the cluster extra)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..cluster.settings import ClusterConfig
    from ..settings_args import add_model_arguments
    from .serve import ALIASES, DEFAULT_WORKFLOW

    parser.add_argument("--workflow", type=Path, default=DEFAULT_WORKFLOW,
                        help="saved workflow every replica runs (default: workflows/persona_preview_chat.json)")
    parser.add_argument("--config", type=Path, default=None, metavar="FILE",
                        help="settings file (TOML, or JSON by its .json suffix): the serve settings and the "
                        "cluster settings below, by the same names; flags override it")
    parser.add_argument("--no-warm-up", action="store_true", help="skip loading the interpreter in each replica")
    parser.add_argument("--attach", action="store_true",
                        help="start no replicas: serve one more ingress for the deployment already running on "
                        "the cluster (same --namespace and --app-name)")
    parser.add_argument("--backend", default=None, help="interpreter backend for the workflow (as persona serve)")
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                        help="interpreter option, repeatable (as persona serve)")
    add_model_arguments(parser, ClusterConfig, ALIASES)


def run(args: argparse.Namespace) -> int:
    import asyncio
    import logging

    from ..cli import CommandLineError
    from ..cluster.settings import ClusterConfig
    from ..server.config import InsecureBindError, check_exposure, is_loopback
    from ..settings_args import settings_from_args
    from .serve import check_port_free

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    config = settings_from_args(ClusterConfig, args, args.config, token=os.environ.get("PERSONA_TOKEN") or None)
    try:
        check_exposure(config)
    except InsecureBindError as exc:
        raise CommandLineError(str(exc)) from None
    if not args.workflow.is_file():
        raise CommandLineError(f"--workflow {args.workflow}: no such file")
    check_port_free(config.host, config.port)
    from .serve import _hosts

    if not args.attach:
        _hosts(args.workflow, config.server_config(), args.backend, args.option)  # a bad workflow: one line, before Ray
    try:
        import ray  # noqa: F401
        from ray import serve  # noqa: F401
    except ImportError:
        raise CommandLineError("persona deploy needs Ray Serve: pip install 'comfyui-persona[cluster]'") from None
    from ..cluster.deploy import ClusterError, attach, connect_ray, deploy, leave_cluster

    if config.cluster == "local" and not config.replica_host:
        config = config.model_copy(update={"replica_host": "127.0.0.1"})  # one machine: replicas stay local
    if not config.token and not is_loopback(config.replica_host):
        # Replicas on a node address serve sessions to whoever reaches their port: the same
        # rule as the ingress's own address (docs/security.md).
        raise CommandLineError(
            f"refusing to run replicas on {config.replica_host or 'the nodes’ Ray addresses'} without a token: "
            "set PERSONA_TOKEN (or --token), or --replica-host 127.0.0.1 on a one-machine cluster"
        )
    connect_ray(config)
    deployment = None
    try:
        if args.attach:
            try:
                deployment = attach(config)
            except ClusterError as exc:
                raise CommandLineError(str(exc)) from None
        else:
            deployment = deploy(config, args.workflow, backend=args.backend, options=args.option,
                                warm_up=not args.no_warm_up)
        try:
            asyncio.run(_serve(deployment))
        except KeyboardInterrupt:
            pass
        finally:
            deployment.shutdown()
    finally:
        leave_cluster(deployment)
    return 0


async def _serve(deployment) -> None:
    import asyncio
    import signal

    from ..server.site import start_server
    from .serve import _port_error

    config = deployment.config
    try:
        runner, port = await start_server(deployment.app(), config.host, config.port, deployment.ingress.gate)
    except OSError as exc:
        raise _port_error(config.host, config.port, exc) from None
    host = config.host if ":" not in config.host else f"[{config.host}]"
    print(f"persona deploy: http://{host}:{port}/  (WebSocket ws://{host}:{port}/persona/ws) on Ray cluster "
          f"{config.cluster!r}, app {config.app_name!r}", flush=True)
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
