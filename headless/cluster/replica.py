"""The renderer replica: a Ray Serve deployment that runs one `ReplicaService`.

Each replica serves its sessions on an internal aiohttp port (the unchanged `/persona/ws`
handlers, so the protocol is the server's own), which only the ingress connects to. Ray Serve
is used for what it is good at: placing replicas with their resources (`num_gpus` per
LongLive replica), admission (`lease` is one long-running request per session, so
`max_ongoing_requests` = `max_sessions`), health
checks (a replica whose loop hangs stops answering `check_health` and is replaced),
autoscaling on ongoing + queued leases, and draining (a replica being removed waits for its
leases, i.e. its sessions, up to `graceful_shutdown_timeout_s`).

Why not Serve's own HTTP proxy for the WebSocket: it carries WebSockets only into
FastAPI/Starlette ingress deployments, while our handler set (limits, guard, protocol) is
aiohttp; and a frame path through the proxy and a handle per message would add a hop and a
serialisation per JPEG frame. Our ingress proxies bytes to one replica per session instead.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
from pathlib import Path
from typing import Any

from ray import serve

from .checkpoint import Placement, store_actor
from .settings import ClusterConfig

log = logging.getLogger("comfyui_persona.cluster")

__all__ = ["PersonaReplica", "deployment_options"]


@serve.deployment(name="PersonaReplica")
class PersonaReplica:
    """One replica. Built by `persona deploy` (or a test) with `deployment_options(config)`."""

    async def __init__(self, config_json: str, workflow: str, backend: str | None = None,
                       options: list[str] | None = None, warm_up: bool = True) -> None:
        import ray

        from ..commands.serve import _hosts
        from ..server import create_app
        from ..server.site import start_server
        from .replica_service import ReplicaService

        config = ClusterConfig.model_validate_json(config_json)
        server_config = config.server_config()
        hosts, store, _ = await asyncio.to_thread(_hosts, Path(workflow), server_config, backend, options or [])
        checkpoints = store_actor(config.namespace)
        self.service = await asyncio.to_thread(ReplicaService, hosts, server_config, store=store,
                                               checkpoints=checkpoints)
        if warm_up:
            await asyncio.to_thread(self.service.warm_up)
        app = create_app(self.service)
        app.router.add_get("/persona/cluster/sessions", self._sessions)
        host = config.replica_host or ray.util.get_node_ip_address()
        self.runner, port = await start_server(app, host, 0, self.service.gate)
        context = serve.get_replica_context()
        shown = host if ":" not in host else f"[{host}]"
        self.placement = Placement(replica=context.replica_id.unique_id, url=f"ws://{shown}:{port}/persona/ws",
                                   actor=ray.get_runtime_context().get_actor_name() or "")
        self.service.placement = self.placement
        self._exporter = asyncio.get_running_loop().create_task(self._export_metrics())
        log.info("replica %s serving on %s", self.placement.replica, self.placement.url)

    async def _export_metrics(self) -> None:
        """Per-replica sessions, fps and directive→frame latency into Ray's metrics (scraped
        from every node by Prometheus, docs/scaling.md), tagged with the replica's name."""
        from ray.util.metrics import Gauge

        tags = {"replica": self.placement.replica}
        gauges = {name: Gauge(f"persona_replica_{name}", description=text, tag_keys=("replica",))
                  for name, text in (("sessions", "Sessions on this replica (connected or in their grace)."),
                                     ("sessions_connected", "Sessions with a viewer connected."),
                                     ("fps_mean", "Mean frames per second sent per connected session."),
                                     ("latency_ms_mean", "Mean directive-to-frame latency so far, ms."))}
        loop = asyncio.get_running_loop()
        while True:
            service = self.service
            attached = [s for s in service.sessions.values() if s.connection is not None]
            fps = [s.stats.fps(loop.time()) for s in attached]
            metrics = service.metrics
            values = {"sessions": len(service.sessions), "sessions_connected": len(attached),
                      "fps_mean": sum(fps) / len(fps) if fps else 0.0,
                      "latency_ms_mean": metrics._latency_sum / metrics._latency_count if metrics._latency_count else 0.0}
            for name, value in values.items():
                gauges[name].set(value, tags=tags)
            await asyncio.sleep(5.0)

    async def lease(self, lease_id: str):
        """A session slot: yields this replica's placement, then lasts as long as the session."""
        lease = self.service.open_lease(lease_id)
        yield {"replica": self.placement.replica, "url": self.placement.url, "actor": self.placement.actor}
        await self.service.hold_lease(lease)

    async def _sessions(self, request) -> Any:
        """Operators' and tests' view of this replica (session ids are resume credentials:
        with a token configured, only a caller presenting it sees them)."""
        from aiohttp import web

        service = self.service
        token = service.config.token
        if token and not hmac.compare_digest(request.headers.get("Authorization", ""), f"Bearer {token}"):
            raise web.HTTPUnauthorized(text="this replica's session list needs the token (Authorization: Bearer)")
        return web.json_response({"replica": self.placement.replica, "sessions": service.session_ids(),
                                  "pid": os.getpid(), "rss_mib": _rss_mib(),
                                  "restored_total": service.restored_total,
                                  "checkpoints_total": service.checkpoints_total})

    async def check_health(self) -> None:
        if self.service.closing or not self.runner.sites:
            raise RuntimeError("the replica's session server is not running")

    async def __del__(self) -> None:
        exporter = getattr(self, "_exporter", None)
        if exporter is not None:
            exporter.cancel()
        runner = getattr(self, "runner", None)
        if runner is not None:
            await runner.cleanup()  # on_shutdown closes the service's sessions


def _rss_mib() -> float | None:
    """This process's resident memory, MiB (Linux; None elsewhere)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


def deployment_options(config: ClusterConfig) -> dict[str, Any]:
    """Ray Serve options of the replica deployment, all from `config` (one source)."""
    options: dict[str, Any] = {
        "max_ongoing_requests": config.max_sessions,
        # Not Serve's `max_queued_requests`: it counts requests not yet assigned, so a burst of
        # new sessions is refused while replicas have room; the ingress bounds its own queue.
        "ray_actor_options": {"num_cpus": config.replica_cpus, "num_gpus": config.replica_gpus},
        "health_check_period_s": config.health_check_period_s,
        "health_check_timeout_s": config.health_check_timeout_s,
        "graceful_shutdown_timeout_s": config.drain_timeout_s,
        "graceful_shutdown_wait_loop_s": 1.0,
    }
    if config.autoscale:
        options["autoscaling_config"] = {
            "min_replicas": config.min_replicas,
            "initial_replicas": config.replicas,
            "max_replicas": config.max_replicas,
            # A replica "wants" its full `max_sessions`: more are asked for only when sessions queue.
            "target_ongoing_requests": config.max_sessions,
            "upscale_delay_s": config.upscale_delay_s,
            "look_back_period_s": config.autoscale_window_s,
            # How often handles report queued sessions to Serve's controller (10 s at most).
            "metrics_interval_s": max(0.5, min(10.0, config.autoscale_window_s / 4)),
            "downscale_delay_s": config.downscale_delay_s,
        }
    else:
        options["num_replicas"] = config.replicas
    return options
