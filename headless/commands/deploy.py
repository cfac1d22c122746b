"""`persona deploy`: the persona service on a Ray cluster (docs/scaling.md).

The same protocol, page and settings as `persona serve` (every serve setting is a flag here
too, and the same `--config` file works), plus the cluster's: `--cluster local` starts Ray in
this process, `--cluster auto` or an address joins a running cluster. Renderer replicas run
as a Ray Serve deployment; this process is the ingress clients connect to.
"""

from __future__ import annotations

import argparse

HELP = "Serve the chat page and /persona/ws from renderer replicas on a Ray cluster (needs the cluster extra)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..cluster.settings import ClusterConfig
    from .serve import add_service_arguments

    add_service_arguments(parser, ClusterConfig, cluster=True)


def run(args: argparse.Namespace) -> int:
    import asyncio

    from ..cli import CommandLineError
    from ..cluster.settings import ClusterConfig
    from ..server.config import is_loopback
    from .serve import _hosts, checked_settings

    config = checked_settings(ClusterConfig, args)

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
    from .serve import serve_until_stopped

    config = deployment.config
    await serve_until_stopped(deployment.app(), deployment.ingress.gate, config.host, config.port,
                              lambda url, ws: f"persona deploy: {url}  (WebSocket {ws}) on Ray cluster "
                              f"{config.cluster!r}, app {config.app_name!r}")
