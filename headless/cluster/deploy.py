"""Start the persona service on a Ray cluster: the checkpoint store, the replica
deployment, and the ingress app in this process (`persona deploy`, the tests, the benchmark).
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...errors import PersonaError
from .checkpoint import store_actor
from .ingress import ClusterIngress, create_ingress_app
from .settings import DEPLOYMENT_ONLY_FIELDS, ClusterConfig

__all__ = ["ClusterError", "Deployment", "attach", "connect_ray", "deploy", "leave_cluster", "replica_config_json"]

log = logging.getLogger("comfyui_persona.cluster")


class ClusterError(PersonaError, RuntimeError):
    """The cluster could not run the service (replicas failing at start, Ray unreachable)."""


def connect_ray(config: ClusterConfig, **init_options: Any) -> None:
    """Join (or, for `local`, start) the Ray cluster `config.cluster` names."""
    import ray

    if ray.is_initialized():
        return
    address = None if config.cluster == "local" else config.cluster
    ray.init(address=address, namespace=config.namespace, include_dashboard=False,
             log_to_driver=False, **init_options)


@dataclass
class Deployment:
    """What `deploy` started: the ingress (serve `app` with `site.start_server`) and handles."""

    config: ClusterConfig
    ingress: ClusterIngress
    replicas: Any  # the Serve deployment handle
    store: Any  # the checkpoint store actor
    owner: bool = True  # started the replicas (False: `attach`ed to another process's deployment)

    def app(self):
        return create_ingress_app(self.ingress)

    def shutdown(self) -> None:
        """Delete the Serve application (replicas drain) and the checkpoint store; nothing when
        the ingress found the cluster gone (each call would wait on a head that is not there)."""
        import ray
        from ray import serve

        if self.ingress.cluster_problem or not self.owner:
            return
        if not _cluster_answers(self.config.cluster_check_timeout_s):  # gone since the last check
            self.ingress.cluster_problem = (f"the Ray cluster did not answer within "
                                            f"{self.config.cluster_check_timeout_s:g} s at shutdown")
            return
        serve.delete(self.config.app_name)
        ray.kill(self.store)


def replica_config_json(config: ClusterConfig) -> str:
    """What each replica is built with: the settings without `DEPLOYMENT_ONLY_FIELDS` (read only
    by the ingress and Serve's options), so a change to those alone reaches no replica."""
    return config.model_dump_json(exclude=set(DEPLOYMENT_ONLY_FIELDS))


def deploy(config: ClusterConfig, workflow: Path, *, backend: str | None = None,
           options: list[str] | None = None, warm_up: bool = True) -> Deployment:
    """Run the replica deployment on the connected cluster (blocks until its replicas serve)."""
    from ray import serve

    from .replica import PersonaReplica, deployment_options

    problem = _room_problem(config)
    if problem and config.cluster == "local":  # a cluster of this machine alone never grows
        raise ClusterError(problem)
    if problem:
        log.warning("%s: they start once the cluster's autoscaler adds nodes", problem)
    store = store_actor(config.namespace)
    serve.start(proxy_location="Disabled")  # our ingress is the only door
    with warnings.catch_warnings():
        # Ray 2.60 marks `metrics_interval_s` deprecated, yet it is still how often a handle
        # reports queued requests to the autoscaler (its replacement env vars do not reach it).
        warnings.filterwarnings("ignore", message=".*metrics_interval_s.*", category=DeprecationWarning)
        bound = PersonaReplica.options(**deployment_options(config)).bind(
            replica_config_json(config), str(Path(workflow).resolve()), backend, options or [], warm_up)
    try:
        handle = serve.run(bound, name=config.app_name, route_prefix=None)
    except RuntimeError as exc:  # Serve's "Deploying application ... failed" after its retries
        first = next((line for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
        raise ClusterError(f"the replicas did not start: {first} (see the Ray logs for the replica's traceback)") from exc
    return Deployment(config, ClusterIngress(config, handle, store), handle, store)


def _room_problem(config: ClusterConfig) -> str | None:
    """Why the cluster as it is cannot place the starting replicas, else None. Serve would wait
    for them for ever, saying nothing (Ray's controller log alone says they cannot be
    scheduled), and `serve.run` does not give way to Ctrl-C meanwhile."""
    import ray

    total = ray.cluster_resources()
    for resource, flag, each in (("CPU", "--replica-cpus", config.replica_cpus),
                                 ("GPU", "--replica-gpus", config.replica_gpus)):
        need, have = config.replicas * each, float(total.get(resource, 0.0))
        if need > have + 1e-9:
            return (f"{config.replicas} replicas need {need:g} {resource}s ({each:g} each, {flag}) and the "
                    f"cluster has {have:g}: start fewer (--replicas) or give each less")
    return None


def attach(config: ClusterConfig) -> Deployment:
    """One more ingress for the deployment another process runs (same `namespace` and
    `app_name`): nothing is started, the replicas and the session directory are found by
    name. Several ingresses behind one load balancer serve the same sessions: a client
    resuming through any of them reaches the replica holding its session."""
    import ray
    from ray import serve

    from .checkpoint import STORE_NAME

    try:
        store = ray.get_actor(STORE_NAME, namespace=config.namespace)
        handle = serve.get_app_handle(config.app_name)
    except (ValueError, KeyError, RuntimeError) as exc:
        raise ClusterError(f"no persona deployment {config.app_name!r} in namespace {config.namespace!r} on "
                           f"this cluster to attach to ({type(exc).__name__}: {exc})") from None
    return Deployment(config, ClusterIngress(config, handle, store), handle, store, owner=False)


def _cluster_answers(timeout_s: float) -> bool:
    """Whether the head answers a node-table request within `timeout_s` (a daemon thread: a
    request to a head that is gone never returns)."""
    import threading

    import ray

    answered = threading.Event()

    def ask() -> None:
        try:
            ray.nodes()
        except Exception:  # noqa: BLE001 - unreachable: no answer
            return
        answered.set()

    threading.Thread(target=ask, name="persona-ray-check", daemon=True).start()
    return answered.wait(timeout_s)


def leave_cluster(deployment: Deployment | None) -> None:
    """Disconnect this process from Ray, the last step of `persona deploy`.

    When the ingress found the cluster gone (its head stopped or lost), every Ray call waits
    on that head until Ray's own GCS timeout (a minute) ends the process, `ray.shutdown()`
    and Ray's exit hook included. So then the process ends at once instead, with one line
    saying why and exit status 1 (a supervisor restarts it against the new head)."""
    import ray

    problem = deployment.ingress.cluster_problem if deployment is not None else None
    if problem:
        print(f"persona deploy: stopped without the Ray cluster ({problem})", file=sys.stderr, flush=True)
        sys.stdout.flush()
        os._exit(1)
    ray.shutdown()
