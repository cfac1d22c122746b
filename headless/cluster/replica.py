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
import threading
import time
from pathlib import Path
from typing import Any

from ray import serve

from .checkpoint import Placement, store_actor
from .settings import ClusterConfig

log = logging.getLogger("comfyui_persona.cluster")

__all__ = ["PersonaReplica", "deployment_options"]

#: How often a replica sets its Ray metrics (Ray reports them on its own interval after that).
METRICS_PERIOD_S = 2.0


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
        if config.fault_injection:
            app.router.add_post("/persona/cluster/fault", self._fault)
        host = config.replica_host or ray.util.get_node_ip_address()
        self.runner, port = await start_server(app, host, 0, self.service.gate)
        context = serve.get_replica_context()
        shown = host if ":" not in host else f"[{host}]"
        self.placement = Placement(replica=context.replica_id.unique_id, url=f"ws://{shown}:{port}/persona/ws",
                                   actor=ray.get_runtime_context().get_actor_name() or "")
        self.service.place(self.placement)
        self._exporter = asyncio.get_running_loop().create_task(self._export_metrics())
        self._watchdog = LoopWatchdog(config.replica_hang_timeout_s, self.placement.replica)
        self._watchdog.start()
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
            await asyncio.sleep(METRICS_PERIOD_S)

    async def lease(self, lease_id: str):
        """A session slot: yields this replica's placement, then lasts as long as the session."""
        lease = self.service.open_lease(lease_id)
        yield {"replica": self.placement.replica, "url": self.placement.url, "actor": self.placement.actor}
        await self.service.hold_lease(lease)

    def _authorize(self, request) -> None:
        from aiohttp import web

        token = self.service.config.token
        if token and not hmac.compare_digest(request.headers.get("Authorization", ""), f"Bearer {token}"):
            raise web.HTTPUnauthorized(text="this replica's cluster routes need the token (Authorization: Bearer)")

    async def _sessions(self, request) -> Any:
        """Operators' and tests' view of this replica (session ids are resume credentials:
        with a token configured, only a caller presenting it sees them)."""
        from aiohttp import web

        self._authorize(request)
        service = self.service
        return web.json_response({"replica": self.placement.replica, "sessions": service.session_ids(),
                                  "pid": os.getpid(), "rss_mib": _rss_mib(),
                                  "restored_total": service.restored_total,
                                  "checkpoints_total": service.checkpoints_total})

    async def _fault(self, request) -> Any:
        """`fault_injection` only (tests): freeze this replica's event loop for `freeze_s`, as a
        deadlock or a runaway call on the loop would: no socket is read, no health check
        answered. Answered first, then the loop stops (a tenth of a second later)."""
        from aiohttp import web

        self._authorize(request)
        try:
            freeze_s = float((await request.json())["freeze_s"])
        except (ValueError, KeyError, TypeError):
            raise web.HTTPBadRequest(text='send {"freeze_s": seconds}') from None
        if not 0.0 < freeze_s <= 3600.0:
            raise web.HTTPBadRequest(text="freeze_s must lie in (0, 3600]")
        log.warning("replica %s: freezing its event loop for %.1f s (fault injection)", self.placement.replica, freeze_s)
        asyncio.get_running_loop().call_later(0.1, time.sleep, freeze_s)
        return web.json_response({"replica": self.placement.replica, "freeze_s": freeze_s}, status=202)

    async def check_health(self) -> None:
        if self.service.closing or not self.runner.sites:
            raise RuntimeError("the replica's session server is not running")

    async def __del__(self) -> None:
        watchdog = getattr(self, "_watchdog", None)
        if watchdog is not None:
            watchdog.stop()
        exporter = getattr(self, "_exporter", None)
        if exporter is not None:
            exporter.cancel()
        runner = getattr(self, "runner", None)
        if runner is not None:
            await runner.cleanup()  # on_shutdown closes the service's sessions


class LoopWatchdog:
    """Ends this replica's process when its event loop stands still for `timeout_s`.

    Why: every session of a replica lives on its one event loop. When that loop hangs (a
    deadlock, a blocking call), Serve's health check notices after three missed checks but
    then stops the replica *gracefully*: it waits up to `drain_timeout_s` (minutes) for its
    sessions to finish, which they never will, while their viewers watch a frozen picture.
    Ending the process closes every session socket at once: the ingress sees each one go
    (close 1012), the clients resume elsewhere from their checkpoints, and Serve, seeing
    the actor gone, starts a replacement. A thread, because the loop cannot watch itself;
    `os._exit`, because nothing that waits on that loop may run."""

    def __init__(self, timeout_s: float, name: str) -> None:
        self.timeout_s = timeout_s
        self.name = name
        self.last_turn = time.monotonic()
        self._stop = threading.Event()
        self._beat: asyncio.Task | None = None

    def start(self) -> None:
        if self.timeout_s <= 0:
            return
        self._beat = asyncio.get_running_loop().create_task(self._turn())
        threading.Thread(target=self._watch, name="persona-loop-watchdog", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()
        if self._beat is not None:
            self._beat.cancel()

    async def _turn(self) -> None:
        step = min(1.0, self.timeout_s / 4)
        while True:
            self.last_turn = time.monotonic()
            await asyncio.sleep(step)

    def _watch(self) -> None:
        step = min(1.0, self.timeout_s / 4)
        while not self._stop.wait(step):
            still = time.monotonic() - self.last_turn
            if still > self.timeout_s:
                log.error("replica %s: its event loop has not turned for %.1f s (over %.1f s); ending the "
                          "process so its sessions fail over", self.name, still, self.timeout_s)
                for handler in logging.getLogger().handlers:
                    handler.flush()
                os._exit(70)


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


async def replica_reports(store, *, token: str | None = None, timeout_s: float = 10.0) -> dict[str, dict]:
    """What every live replica says of itself (its `/persona/cluster/sessions` answer: the
    sessions it holds, pid, RSS, restores, checkpoints), by replica id, for operators,
    benchmarks and tests. A replica that does not answer (killed, frozen) is left out."""
    import aiohttp

    placements = await asyncio.wait_for(store.sessions.remote(), timeout_s)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    reports: dict[str, dict] = {}
    async with aiohttp.ClientSession(headers=headers) as http:
        for placement in {p.replica: p for p in placements.values()}.values():
            url = placement.url.replace("ws://", "http://").replace("/persona/ws", "/persona/cluster/sessions")
            try:
                async with http.get(url, timeout=aiohttp.ClientTimeout(total=timeout_s)) as answer:
                    body = await answer.json()
            except (aiohttp.ClientError, asyncio.TimeoutError):
                continue
            reports[body["replica"]] = body
    return reports
