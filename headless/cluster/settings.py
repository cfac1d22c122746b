"""Cluster settings: the server's settings plus where the cluster is and what a replica takes.

One model, one file format: `ClusterConfig` *is* a `ServerConfig` (every field of
`persona serve`, with the same names, bounds and `--config` file), plus the fields below,
so a settings file written for a local run deploys unchanged (house rule 2: extra="forbid",
bounded, described). Every replica runs its `PersonaService` with the `ServerConfig` part;
`max_sessions` there is the per-replica limit (Ray Serve's `max_ongoing_requests`).
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, model_validator

from ..server.config import ServerConfig

__all__ = ["ClusterConfig", "DEPLOYMENT_ONLY_FIELDS"]

#: Settings read only by the ingress and by Serve's deployment options, never inside a
#: replica. They are left out of what each replica is built with, so changing them (scaling
#: to more or fewer replicas, a new queue limit) is no new replica version: Serve updates the
#: running replicas in place instead of replacing (and draining) every one of them.
DEPLOYMENT_ONLY_FIELDS = frozenset({
    "cluster", "app_name", "replicas", "autoscale", "min_replicas", "max_replicas", "upscale_delay_s",
    "downscale_delay_s", "autoscale_window_s", "max_queued_sessions", "queue_timeout_s", "retry_after_s",
    "health_check_period_s", "health_check_timeout_s", "drain_timeout_s", "upstream_timeout_s",
    "cluster_check_period_s", "cluster_check_timeout_s",
})


class ClusterConfig(ServerConfig):
    """`persona deploy`'s settings: `ServerConfig` + the cluster (docs/scaling.md)."""

    cluster: str = Field(
        default="local",
        description="The Ray cluster: `local` starts one in this process, `auto` joins the one "
        "`ray start` runs on this machine, else its address (`HOST:6379` or `ray://HOST:10001`).",
    )
    namespace: str = Field(default="persona", pattern=r"^[A-Za-z0-9_-]{1,64}$",
                           description="Ray namespace of the deployment and its checkpoint store.")
    app_name: str = Field(default="persona", pattern=r"^[A-Za-z0-9_-]{1,64}$",
                          description="Ray Serve application name of the renderer replicas.")
    replicas: Annotated[int, Field(ge=1, le=1000)] = Field(
        default=2, description="Renderer replicas to start with (and to keep, without autoscaling).")
    autoscale: bool = Field(default=False, description="Let Ray Serve add replicas when sessions queue "
                            "and remove idle ones (between min_replicas and max_replicas).")
    min_replicas: Annotated[int, Field(ge=0, le=1000)] = Field(default=1, description="Autoscaling floor.")
    max_replicas: Annotated[int, Field(ge=1, le=1000)] = Field(default=4, description="Autoscaling ceiling.")
    upscale_delay_s: Annotated[float, Field(ge=0.0, le=3600.0)] = Field(
        default=2.0, description="Sessions must queue this long before a replica is added.")
    downscale_delay_s: Annotated[float, Field(ge=0.0, le=36_000.0)] = Field(
        default=60.0, description="A replica must be idle this long (the grace period) before it is removed.")
    autoscale_window_s: Annotated[float, Field(gt=0.0, le=3600.0)] = Field(
        default=30.0, description="Sessions (ongoing and queued) are averaged over this window for autoscaling.")
    replica_cpus: Annotated[float, Field(ge=0.0, le=512.0)] = Field(
        default=1.0, description="CPUs Ray reserves per replica (the preview renderer draws on CPU).")
    replica_gpus: Annotated[float, Field(ge=0.0, le=16.0)] = Field(
        default=0.0, description="GPUs per replica: 1 for LongLive (one engine per GPU), 0 for preview.")
    max_queued_sessions: Annotated[int, Field(ge=1, le=100_000)] = Field(
        default=64, description="New sessions that may wait at the ingress for a replica slot (being "
        "placed included); beyond it, or past queue_timeout_s, a client gets `busy` with a retry hint.")
    queue_timeout_s: Annotated[float, Field(gt=0.0, le=600.0)] = Field(
        default=20.0, description="Longest a new session waits for a replica slot before `busy`.")
    retry_after_s: Annotated[int, Field(ge=1, le=3600)] = Field(
        default=5, description="The retry hint a `busy` answer carries (`retry_after_s`).")
    health_check_period_s: Annotated[float, Field(gt=0.0, le=600.0)] = Field(
        default=5.0, description="How often Ray Serve asks each replica whether it still serves.")
    health_check_timeout_s: Annotated[float, Field(gt=0.0, le=600.0)] = Field(
        default=10.0, description="A replica that does not answer its health check within this is replaced.")
    drain_timeout_s: Annotated[float, Field(ge=0.0, le=86_400.0)] = Field(
        default=600.0, description="A replica being removed finishes its sessions for up to this long.")
    replica_hang_timeout_s: Annotated[float, Field(ge=0.0, le=3600.0)] = Field(
        default=30.0, description="A replica whose event loop stands still this long ends its own process, "
        "so its sessions fail over at once (Serve's health check would stop it only after drain_timeout_s); "
        "0 turns this watchdog off.")
    upstream_timeout_s: Annotated[float, Field(gt=0.0, le=600.0)] = Field(
        default=10.0, description="Longest the ingress waits for a replica's WebSocket handshake or the "
        "session directory. A replica that times out is not taken for dead: the client gets `busy`.")
    cluster_check_period_s: Annotated[float, Field(gt=0.0, le=600.0)] = Field(
        default=2.0, description="How often the ingress checks that the Ray cluster (its head and the "
        "session directory) answers; while it does not, new sessions get `busy` and /health answers 503.")
    cluster_check_timeout_s: Annotated[float, Field(gt=0.0, le=600.0)] = Field(
        default=5.0, description="A cluster check not answered within this counts as the cluster gone.")
    fault_injection: bool = Field(
        default=False, description="Testing only: replicas accept POST /persona/cluster/fault (freeze "
        "their event loop) so the failover paths can be exercised. Never on in production.")
    replica_host: str = Field(
        default="", description="Address replicas bind their internal session port to (empty: the "
        "node's Ray address). Only the ingress connects there; never expose it.")

    @model_validator(mode="after")
    def _bounds(self) -> ClusterConfig:
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas ({self.min_replicas}) is above max_replicas ({self.max_replicas})")
        if self.autoscale and not self.min_replicas <= self.replicas <= self.max_replicas:
            raise ValueError(f"replicas ({self.replicas}) must lie between min_replicas and max_replicas")
        return self

    def server_config(self) -> ServerConfig:
        """The part every replica's `PersonaService` runs with. Every connection reaches a
        replica from the ingress's address, so the per-address caps are the ingress's to
        enforce on real client addresses: a replica gets its whole limits per address.
        WebRTC is off behind a cluster (docs/scaling.md)."""
        values = {name: getattr(self, name) for name in ServerConfig.model_fields}
        values.update(max_sessions_per_ip=self.max_sessions, max_connections_per_ip=self.max_connections)
        # WebRTC media would flow from the replica's node straight to the browser, around the
        # ingress (and through no firewall a cluster normally has): off until that is built.
        values.update(webrtc=False)
        return ServerConfig(**values)
