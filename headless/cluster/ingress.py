"""The cluster's front door: the chat page, `/health`, `/metrics` and `/persona/ws`, proxied
to the replica that holds each session.

One aiohttp process (`persona deploy` runs it) in front of the Ray Serve replicas. Per
WebSocket it reads the client's `hello` (the rules before `hello` are the protocol's own:
`not_ready`, `bad_json`, `too_large`, the hello timeout, the token), then picks the replica:

- `hello.session` known to the session directory (the checkpoint store) and its replica
  alive: that replica (affinity: a session only ever streams from the replica holding its
  state; a reconnect to any ingress instance finds it there);
- else a new lease from Ray Serve (`PersonaReplica.lease`), which admits the session on a
  replica with a free slot or queues it (Serve's router); past `max_queued_sessions` waiting
  or `queue_timeout_s`: the client gets `busy` with `retry_after_s` and close code 1013.

Then bytes flow both ways unchanged, except that `ready` gains `replica` (which replica
serves the session, an optional field PROTOCOL.md allows). The replica's own close code is
passed on; a replica that dies closes the client with 1012 (service restart) and the page
reconnects with its session id, which a live replica restores from the checkpoint.

Why a session→replica table plus leases rather than Serve's model multiplexing: multiplexing
prefers the replica that has a model id loaded but may load it elsewhere under load, and a
video session cannot move mid-stream; a lease pins it for its whole life and doubles as the
admission and autoscaling signal.
"""

from __future__ import annotations

import asyncio
import collections
import hmac
import json
import logging
import re
import secrets
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import WSCloseCode, WSMsgType, web

from ...errors import PersonaError
from ..server.limits import ConnectionGate, FailureLimiter, OpenSockets, peer_address
from ..server.protocol import Hello, ProtocolError, error_message, frame_too_large, parse
from ..server.service import STATIC_DIR, add_routes, policy_for
from ..server.site import gated_app
from .checkpoint import Placement
from .settings import ClusterConfig

log = logging.getLogger("comfyui_persona.cluster")

#: Lost replicas remembered (`/health`'s `lost`, the routes that skip them): the newest.
MAX_LOST = 32

__all__ = ["ClusterIngress", "IngressMetrics", "create_ingress_app"]

_SESSION_ID = re.compile(r"^[A-Za-z0-9_-]{8,64}$")
#: Close codes a replica closes with on purpose (PROTOCOL.md): passed on to the client as they are.
_DELIBERATE = {1000, 1001, 1008, 1009, 1013, 4000, 4401}
#: Pause before asking Serve for another lease after the one given pointed at a dead replica.
_RETRY_PAUSE_S = 0.2
#: A gallery request a replica does not answer in time fails (no hanging proxy).
_GALLERY_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=10.0, sock_read=60.0)
#: Gallery answers (recordings: up to hundreds of MB) are passed on in pieces of this size,
#: so the ingress holds one piece per download, never a whole file.
GALLERY_CHUNK_BYTES = 256 * 1024


@dataclass
class IngressMetrics:
    """Counters of the ingress; all updated on its event loop."""

    connections_total: int = 0
    sessions_routed_total: int = 0  # sessions given a fresh lease
    sessions_reattached_total: int = 0  # resumed on the replica that holds them (affinity)
    failovers_total: int = 0  # resumed after their replica was lost (restored elsewhere)
    replicas_lost_total: int = 0  # upstream sockets that ended abnormally
    busy_total: collections.Counter[str] = field(default_factory=collections.Counter)
    queued: int = 0  # sessions waiting for a lease now
    lease_wait_ms: list[float] = field(default_factory=list)

    def render(self, by_replica: dict[str, int], leases: int, cluster_up: bool = True) -> str:
        lines: list[str] = []

        def metric(name: str, kind: str, help_text: str, samples: list[tuple[str, float]]) -> None:
            lines.extend([f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"])
            lines.extend(f"{name}{labels} {value:g}" for labels, value in samples)

        metric("persona_cluster_up", "gauge", "1 while the Ray cluster answers this ingress's checks, else 0.",
               [("", 1 if cluster_up else 0)])
        metric("persona_cluster_sessions", "gauge", "Sessions connected through this ingress, by replica.",
               [(f'{{replica="{r}"}}', n) for r, n in sorted(by_replica.items())] or [("", 0)])
        metric("persona_cluster_leases", "gauge", "Replica slots this ingress holds (sessions alive).", [("", leases)])
        metric("persona_cluster_queued", "gauge", "New sessions waiting for a replica slot.", [("", self.queued)])
        metric("persona_cluster_connections_total", "counter", "WebSocket connections accepted.",
               [("", self.connections_total)])
        metric("persona_cluster_sessions_routed_total", "counter", "Sessions admitted on a replica.",
               [("", self.sessions_routed_total)])
        metric("persona_cluster_sessions_reattached_total", "counter", "Sessions resumed on their own replica.",
               [("", self.sessions_reattached_total)])
        metric("persona_cluster_failovers_total", "counter", "Sessions resumed after their replica was lost.",
               [("", self.failovers_total)])
        metric("persona_cluster_replicas_lost_total", "counter", "Replica connections that ended abnormally.",
               [("", self.replicas_lost_total)])
        metric("persona_cluster_busy_total", "counter", "Sessions refused with busy, by reason.",
               [(f'{{reason="{k}"}}', n) for k, n in sorted(self.busy_total.items())] or [('{reason="full"}', 0)])
        return "\n".join(lines) + "\n"


@dataclass
class _Route:
    """Where one client connection goes: the replica, its socket, the lease (None: reattached)."""

    placement: Placement
    upstream: aiohttp.ClientWebSocketResponse
    lease_id: str | None
    restored_from: str | None = None  # the lost replica a failover came from


class ClusterIngress:
    """See module docstring. `replicas`: the Serve deployment handle; `store`: the checkpoint
    store actor (the session directory)."""

    def __init__(self, config: ClusterConfig, replicas: Any, store: Any) -> None:
        self.config = config
        self.replicas = replicas
        self.store = store
        self.metrics = IngressMetrics()
        # Socket caps and the idle timeout between requests, as `persona serve` has them.
        self.gate = ConnectionGate(config.max_connections, config.max_connections_per_ip, config.idle_timeout_s)
        self.http: aiohttp.ClientSession | None = None
        self.sockets = OpenSockets()
        self.token_failures = FailureLimiter()
        # replica names whose socket ended abnormally, oldest first (the newest MAX_LOST kept:
        # a dead replica's name is never leased again to clear it)
        self.lost: dict[str, None] = {}
        self.leases: dict[str, asyncio.Task] = {}
        # session id → the route of the connection that attached it last, while one is connected:
        # a tab whose session another took over (same replica, closed with 4000) must not
        # detach it on its way out
        self._attached: dict[str, _Route] = {}
        self.sessions_per_ip: collections.Counter[str] = collections.Counter()  # connected sessions
        self.known: dict[str, Placement] = {}  # replicas seen (for the gallery routes)
        self.closing = False
        # The Ray cluster as this ingress's checks last found it (`_watch_cluster`): None while
        # it answers, else why not. `cluster_lost` wakes sessions waiting for a lease.
        self.cluster_problem: str | None = None
        self.cluster_lost = asyncio.Event()
        self._watcher: asyncio.Task | None = None
        # Blocking Ray calls (the node table, actor lookups) run here, not on the loop's default
        # executor: with the head gone they never return, and `asyncio.run` joins the default
        # executor's threads on the way out (the process could not stop).
        self._ray_calls = ThreadPoolExecutor(max_workers=2, thread_name_prefix="persona-ray-check")

    @property
    def attached(self) -> dict[str, str]:
        """Session id → the replica holding it, for the sessions a client is connected to."""
        return {sid: route.placement.replica for sid, route in self._attached.items()}

    async def start(self) -> None:
        self.http = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=None, connect=self.config.upstream_timeout_s))
        self._watcher = asyncio.get_running_loop().create_task(self._watch_cluster())

    async def close(self) -> None:
        self.closing = True
        if self._watcher is not None:
            self._watcher.cancel()
        self._ray_calls.shutdown(wait=False, cancel_futures=True)
        for task in list(self.leases.values()):
            task.cancel()
        await asyncio.gather(*self.leases.values(), return_exceptions=True)
        if self.http is not None:
            await self.http.close()

    # -- the cluster's health ---------------------------------------------------------------

    async def _watch_cluster(self) -> None:
        """Check every `cluster_check_period_s` that the Ray cluster answers: its head (GCS: the
        node table) and the session directory (the store actor). Without this, a head that
        went away shows only as calls that never return: a new session would wait its whole
        queue time and then hear "every replica is full". With it, the ingress says what is
        wrong (`busy` naming the cluster, /health 503) within about one check."""
        import ray

        cfg = self.config
        probe: asyncio.Future | None = None  # a GCS call that hangs stays the one in flight
        while True:
            problem = None
            if probe is None or probe.done():
                probe = asyncio.get_running_loop().run_in_executor(self._ray_calls, ray.nodes)
            try:
                nodes = await asyncio.wait_for(asyncio.shield(probe), cfg.cluster_check_timeout_s)
                if not any(node.get("Alive") for node in nodes):
                    problem = "the Ray cluster has no live node"
                else:
                    await asyncio.wait_for(self.store.count.remote(), cfg.cluster_check_timeout_s)
            except asyncio.TimeoutError:
                problem = f"the Ray cluster did not answer within {cfg.cluster_check_timeout_s:g} s (its head is gone?)"
            except Exception as exc:  # noqa: BLE001 - any failure of the cluster's calls means it is unusable
                problem = f"the Ray cluster is unreachable ({type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''})"
            self._set_cluster_problem(problem)
            await asyncio.sleep(cfg.cluster_check_period_s)

    def _set_cluster_problem(self, problem: str | None) -> None:
        if problem and not self.cluster_problem:
            log.error("%s: refusing new sessions until it answers again", problem)
            self.cluster_lost.set()
        elif not problem and self.cluster_problem:
            log.warning("the Ray cluster answers again: taking new sessions")
            self.cluster_lost.clear()
        self.cluster_problem = problem

    def _refuse_if_cluster_down(self) -> None:
        if self.cluster_problem:
            self.metrics.busy_total["cluster_unavailable"] += 1
            raise _busy(f"{self.cluster_problem}; no new session can start", self.config)

    async def _replica_alive(self, placement: Placement) -> bool | None:
        """Whether Ray still has the replica's actor: False when it is gone, None when Ray
        cannot tell in time (the cluster itself in trouble). Asked before a replica that did
        not answer in time is given up for dead: a slow replica is not a lost one (taking it
        for lost would restore its session a second time elsewhere)."""
        if not placement.actor:
            return None
        import ray

        def lookup() -> bool:
            try:
                ray.get_actor(placement.actor, namespace="serve")
            except ValueError:  # "Failed to look up actor": dead or never there
                return False
            return True

        try:
            return await asyncio.wait_for(asyncio.get_running_loop().run_in_executor(self._ray_calls, lookup),
                                          self.config.cluster_check_timeout_s)
        except Exception:  # noqa: BLE001 - Ray unreachable: unknown
            return None

    async def _judge_unreachable(self, placement: Placement, exc: BaseException) -> bool:
        """After a failed upstream connect: True (and the replica marked lost) when it is gone.

        A refused or reset connection means nothing listens there any more; a timeout only
        that it did not answer in time (a loaded or briefly stalled replica), so Ray is asked."""
        if isinstance(exc, asyncio.TimeoutError) or isinstance(exc, aiohttp.ServerTimeoutError):
            gone = await self._replica_alive(placement) is False
        else:
            gone = isinstance(exc, (aiohttp.ClientConnectorError, aiohttp.ServerDisconnectedError, OSError))
        if gone:
            self._mark_lost(placement.replica)
        log.info("replica %s did not take the connection (%s): %s", placement.replica, type(exc).__name__,
                 "lost" if gone else "alive, not given up")
        return gone

    # -- routing -----------------------------------------------------------------------------

    async def _lease(self, hello: Hello) -> _Route:
        """A new slot from Ray Serve, and the socket to its replica; `_Busy` when full.

        A replica that dies between Serve choosing it and our socket reaching it (Serve's
        router learns of a death a moment after it happens) costs a retry, not the session."""
        from ray.exceptions import ActorUnavailableError, RayActorError

        cfg = self.config
        self._refuse_if_cluster_down()
        if self.metrics.queued >= cfg.max_queued_sessions:
            self.metrics.busy_total["queue_full"] += 1
            raise _busy(f"{self.metrics.queued} sessions are already waiting for a replica", cfg)
        loop = asyncio.get_running_loop()
        started = loop.time()
        deadline = started + cfg.queue_timeout_s
        self.metrics.queued += 1
        try:
            while True:
                lease_id = secrets.token_urlsafe(12)
                stream = self.replicas.options(stream=True).lease.remote(lease_id)
                try:
                    granted = await self._first_of(stream, max(0.01, deadline - loop.time()))
                except asyncio.TimeoutError:
                    stream.cancel()
                    self._refuse_if_cluster_down()  # the wait ended because the cluster went away
                    self.metrics.busy_total["queue_timeout"] += 1
                    raise _busy(f"every replica is full and no slot freed within {cfg.queue_timeout_s:g} s",
                                cfg) from None
                except (RayActorError, ActorUnavailableError) as exc:
                    stream.cancel()
                    log.info("lease on a replica that went away (%s); asking again", type(exc).__name__)
                    await self._pause_before_retry(deadline)
                    continue
                except Exception as exc:  # the cluster unreachable, the deployment gone, ...
                    stream.cancel()
                    self.metrics.busy_total["cluster_unavailable"] += 1
                    log.warning("no lease: %s: %s", type(exc).__name__, exc)
                    raise _busy(f"the cluster cannot take sessions now ({type(exc).__name__})", cfg) from None
                placement = Placement(granted["replica"], granted["url"], granted.get("actor", ""))
                task = loop.create_task(self._hold(lease_id, stream))
                self.leases[lease_id] = task
                try:
                    upstream = await self._connect(placement, lease_id)
                except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
                    task.cancel()  # the slot goes back; another lease may land elsewhere
                    await self._judge_unreachable(placement, exc)
                    await self._pause_before_retry(deadline)
                    continue
                break
        finally:
            self.metrics.queued -= 1
        self.metrics.lease_wait_ms.append((loop.time() - started) * 1000)
        del self.metrics.lease_wait_ms[:-1000]
        self.known[placement.replica] = placement
        self.lost.pop(placement.replica, None)
        self.metrics.sessions_routed_total += 1
        return _Route(placement, upstream, lease_id)

    async def _first_of(self, stream: Any, timeout: float) -> dict:
        """The lease's first item (the placement), or TimeoutError after `timeout` or as soon as
        the cluster checks find the cluster gone (a lease asked of a dead head never comes)."""
        first = asyncio.ensure_future(stream.__anext__())
        lost = asyncio.ensure_future(self.cluster_lost.wait())
        try:
            done, _ = await asyncio.wait({first, lost}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            lost.cancel()
        if first in done:
            return first.result()
        first.cancel()
        # The stream, cancelled by the caller, may still end this task with Serve's own error.
        first.add_done_callback(lambda task: task.cancelled() or task.exception())
        raise asyncio.TimeoutError

    async def _pause_before_retry(self, deadline: float) -> None:
        """A short wait before asking for another lease, or `busy` when the queue time is up."""
        loop = asyncio.get_running_loop()
        if loop.time() + _RETRY_PAUSE_S >= deadline:
            self.metrics.busy_total["replicas_lost"] += 1
            raise _busy("the replicas given went away and no other one answered in time", self.config)
        await asyncio.sleep(_RETRY_PAUSE_S)

    async def _hold(self, lease_id: str, stream: Any) -> None:
        """Drain the lease's response until the replica ends it (the session ended)."""
        try:
            async for _ in stream:
                pass
        except asyncio.CancelledError:
            stream.cancel()
            raise
        except Exception as exc:  # the replica died: its sessions fail over on reconnect
            log.info("lease %s ended: %s", lease_id[:8], type(exc).__name__)
        finally:
            self.leases.pop(lease_id, None)

    async def _connect(self, placement: Placement, lease_id: str | None) -> aiohttp.ClientWebSocketResponse:
        assert self.http is not None, "start() first"
        url = placement.url + (f"?lease={lease_id}" if lease_id else "")
        return await asyncio.wait_for(
            # heartbeat: a replica on a node that went silent (no close, no reset) is noticed
            # within 30 s (a ping every 20 s, 10 s for its pong) and its sessions fail over.
            self.http.ws_connect(url, max_msg_size=0, autoping=True, autoclose=False, heartbeat=20.0),
            self.config.upstream_timeout_s)

    async def _route(self, hello: Hello) -> _Route:
        self._refuse_if_cluster_down()
        lost_from = None
        if hello.session:
            try:
                placement = await asyncio.wait_for(self.store.where.remote(hello.session), self.config.upstream_timeout_s)
            except Exception as exc:
                log.warning("session directory unreachable: %s", exc)
                self._refuse_if_cluster_down()
                placement = None
            if placement is not None and placement.replica not in self.lost:
                try:
                    upstream = await self._connect(placement, None)
                except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
                    if not await self._judge_unreachable(placement, exc):
                        # Alive but slow: restoring the session elsewhere would run it twice.
                        self.metrics.busy_total["replica_slow"] += 1
                        raise _busy(f"the replica holding this session did not answer within "
                                    f"{self.config.upstream_timeout_s:g} s", self.config) from None
                else:
                    self.metrics.sessions_reattached_total += 1
                    return _Route(placement, upstream, None)
            if placement is not None:
                lost_from = placement.replica
        route = await self._lease(hello)
        route.restored_from = lost_from
        return route

    # -- the WebSocket -------------------------------------------------------------------------

    async def handle_ws(self, request: web.Request) -> web.StreamResponse:
        cfg = self.config
        peer = peer_address(request.transport)
        if self.closing or self.sockets.full(peer, cfg.max_connections, cfg.max_connections_per_ip):
            self.metrics.busy_total["sockets"] += 1
            return web.json_response({"code": "busy", "message": "too many connections; try again later"},
                                     status=503, headers={"Retry-After": str(cfg.retry_after_s)})
        ws = web.WebSocketResponse(max_msg_size=cfg.hard_frame_limit, heartbeat=30.0)
        await ws.prepare(request)
        self.sockets.add(peer)
        self.metrics.connections_total += 1
        try:
            raw = await self._await_hello(ws, peer)
            if raw is not None:
                await self._serve(ws, *raw, peer)
        finally:
            self.sockets.remove(peer)
            if not ws.closed:
                await ws.close()
        return ws

    async def _await_hello(self, ws: web.WebSocketResponse, peer: str) -> tuple[Hello, str] | None:
        """The protocol's rules until a valid `hello` (as the server has them): its raw text too."""
        cfg = self.config
        loop = asyncio.get_running_loop()
        hello_by = loop.time() + cfg.hello_timeout_s
        while True:
            try:
                msg = await ws.receive(timeout=max(0.0, hello_by - loop.time()))
            except asyncio.TimeoutError:
                await ws.send_json(error_message("not_ready", f"no hello within {cfg.hello_timeout_s:g} s; closing"))
                await ws.close(code=WSCloseCode.POLICY_VIOLATION, message=b"hello timeout")
                return None
            if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
                return None
            if msg.type is WSMsgType.BINARY:
                await ws.send_json(error_message("bad_json", "binary frames are not accepted from clients; send JSON text"))
                continue
            if msg.type is not WSMsgType.TEXT:
                continue
            if frame_too_large(msg.data):
                await ws.send_json(error_message("too_large", "message is over the 64 KiB frame limit"))
                continue
            try:
                message = parse(msg.data)
                if not isinstance(message, Hello):
                    raise ProtocolError("not_ready", "send hello first", getattr(message, "id", None))
                self._check_token(message, peer)
                if message.session is not None and not _SESSION_ID.match(message.session):
                    raise ProtocolError("invalid", "field 'session' is not a session id this server issues")
            except ProtocolError as exc:
                await ws.send_json(error_message(exc.code, exc.message, exc.reply_to))
                if exc.fatal:
                    await ws.close(code=4401 if exc.code == "unauthorized" else 1013, message=exc.code.encode())
                    return None
                continue
            return message, msg.data

    def _check_token(self, hello: Hello, peer: str) -> None:
        """The token is checked here, per real client address (replicas see only the ingress)."""
        expected = self.config.token
        if not expected:
            return
        now = time.monotonic()
        if self.token_failures.blocked(peer, now):
            raise ProtocolError("unauthorized", "too many wrong tokens from this address; wait a minute")
        if hello.token is None or not hmac.compare_digest(hello.token.encode(), expected.encode()):
            self.token_failures.failed(peer, now)
            raise ProtocolError("unauthorized", "token missing or wrong")

    async def _serve(self, ws: web.WebSocketResponse, hello: Hello, raw_hello: str, peer: str) -> None:
        cfg = self.config
        try:
            # Connected sessions per client address, counted here (replicas see only the
            # ingress), reserved before the routing, which can take seconds. At the cap, only
            # a session this ingress has attached may come back (a reload, a takeover): an id
            # it does not know could be any well-formed string.
            known = hello.session is not None and hello.session in self._attached
            if self.sessions_per_ip[peer] >= cfg.max_sessions_per_ip and not known:
                self.metrics.busy_total["sessions_per_ip"] += 1
                raise _busy(f"this address already holds {cfg.max_sessions_per_ip} sessions; close one", cfg)
            self.sessions_per_ip[peer] += 1
            try:
                route = await self._route(hello)
            except BaseException:
                self._release(peer)
                raise
        except _Busy as busy:
            await ws.send_json(busy.payload)
            await ws.close(code=WSCloseCode.TRY_AGAIN_LATER, message=b"busy")
            return
        upstream = route.upstream
        session_id: list[str] = []
        try:
            await upstream.send_str(raw_hello)
            down = asyncio.ensure_future(self._downstream(route, ws, session_id))
            up = asyncio.ensure_future(self._upstream(ws, upstream))
            done, _ = await asyncio.wait({down, up}, return_when=asyncio.FIRST_COMPLETED)
            if up in done:  # the client left: the replica detaches the session (its resume grace)
                down.cancel()
                await asyncio.gather(down, return_exceptions=True)
            else:
                up.cancel()
                code, reason = down.result()
                if not ws.closed:
                    await ws.close(code=code, message=reason)
        finally:
            self._release(peer)
            if not upstream.closed:
                await upstream.close()
            for sid in session_id:
                if self._attached.get(sid) is route:
                    del self._attached[sid]

    def _release(self, peer: str) -> None:
        self.sessions_per_ip[peer] -= 1
        if self.sessions_per_ip[peer] <= 0:
            del self.sessions_per_ip[peer]

    async def _upstream(self, ws: web.WebSocketResponse, upstream: aiohttp.ClientWebSocketResponse) -> None:
        async for msg in ws:
            if msg.type is WSMsgType.TEXT:
                await upstream.send_str(msg.data)
            elif msg.type is WSMsgType.BINARY:
                await upstream.send_bytes(msg.data)

    async def _downstream(self, route: _Route, ws: web.WebSocketResponse, session_id: list[str]) -> tuple[int, bytes]:
        """Replica → client; returns the close code and reason to pass on."""
        upstream = route.upstream
        while True:
            msg = await upstream.receive()
            if msg.type is WSMsgType.BINARY:
                await ws.send_bytes(msg.data)
            elif msg.type is WSMsgType.TEXT:
                data = msg.data
                if data.startswith('{"type":"ready"'):  # the replica writes compact JSON, type first
                    data = self._stamp_ready(route, data, session_id)
                await ws.send_str(data)
            elif msg.type is WSMsgType.CLOSE:
                code = msg.data if isinstance(msg.data, int) else 1000
                if code in _DELIBERATE:
                    return code, (msg.extra or "").encode()[:120]
                return self._lost(route)
            else:  # CLOSED / ERROR without a close frame: the replica process went away
                return self._lost(route)

    def _mark_lost(self, replica: str) -> None:
        self.lost.pop(replica, None)
        self.lost[replica] = None
        while len(self.lost) > MAX_LOST:
            oldest = next(iter(self.lost))
            del self.lost[oldest]
            self.known.pop(oldest, None)

    def _lost(self, route: _Route) -> tuple[int, bytes]:
        self._mark_lost(route.placement.replica)
        self.metrics.replicas_lost_total += 1
        log.warning("replica %s lost; its sessions resume elsewhere on reconnect", route.placement.replica)
        return WSCloseCode.SERVICE_RESTART, b"replica lost; reconnect with your session id to resume"

    def _stamp_ready(self, route: _Route, data: str, session_id: list[str]) -> str:
        message = json.loads(data)
        if message.get("type") != "ready":
            return data
        message["replica"] = route.placement.replica
        sid = message.get("session")
        if isinstance(sid, str):
            session_id.append(sid)
            self._attached[sid] = route
        if route.restored_from is not None and message.get("resumed"):
            self.metrics.failovers_total += 1
        return json.dumps(message, separators=(",", ":"))

    # -- HTTP ----------------------------------------------------------------------------------

    async def handle_page(self, request: web.Request) -> web.StreamResponse:
        return web.FileResponse(STATIC_DIR / "index.html")

    async def handle_health(self, request: web.Request) -> web.Response:
        """200 while the cluster answers; 503 (with `message`) while it does not, so a load
        balancer in front of several ingresses stops sending new clients here."""
        by_replica = collections.Counter(self.attached.values())
        problem = self.cluster_problem
        return web.json_response({
            "status": "unavailable" if problem else "ok", "ray": "down" if problem else "up",
            **({"message": f"{problem}; new sessions are refused"} if problem else {}), "cluster": True, "sessions": len(self.attached), "leases": len(self.leases),
            "queued": self.metrics.queued, "replicas": dict(by_replica), "lost": sorted(self.lost),
            "protocol": 1, "token_required": bool(self.config.token),
        }, status=503 if problem else 200, headers={"Retry-After": str(self.config.retry_after_s)} if problem else None)

    async def handle_metrics(self, request: web.Request) -> web.Response:
        text = self.metrics.render(dict(collections.Counter(self.attached.values())), len(self.leases),
                                   cluster_up=self.cluster_problem is None)
        return web.Response(text=text, content_type="text/plain", charset="utf-8")

    async def handle_gallery(self, request: web.Request) -> web.StreamResponse:
        """Persona list, portraits, card imports and recordings: answered by a live replica
        (one persona library per machine or shared volume, docs/scaling.md)."""
        assert self.http is not None
        candidates = [p for name, p in self.known.items() if name not in self.lost]
        if not candidates:
            placement = await self._any_replica()
            candidates = [placement] if placement is not None else []
        body = await request.read() if request.method == "POST" else None
        headers = {k: v for k, v in request.headers.items() if k.lower() in ("content-type", "authorization")}
        for placement in candidates:
            base = placement.url.rsplit("/persona/ws", 1)[0]
            try:
                async with self.http.request(request.method, base + request.rel_url.path_qs, data=body,
                                             headers=headers, timeout=_GALLERY_TIMEOUT) as answer:
                    if answer.status == 404 and "/recordings/" in request.path and len(candidates) > 1:
                        continue  # a recording lives on the replica that made it
                    return await self._pass_on(request, answer)
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                # Not marked lost: only a session socket's end says a replica died. A POST is
                # not sent twice (a card imported on two replicas).
                log.info("gallery request to %s failed: %s", placement.replica, type(exc).__name__)
                if request.method == "POST":
                    break
        return web.json_response({"code": "busy", "message": "no replica answers now"}, status=503,
                                 headers={"Retry-After": str(self.config.retry_after_s)})

    async def _pass_on(self, request: web.Request, answer: aiohttp.ClientResponse) -> web.StreamResponse:
        """A replica's answer, streamed to the client piece by piece (bounded memory whatever
        the file's size); a replica that fails mid-way cuts the download short (the client
        sees fewer bytes than Content-Length), it is not retried elsewhere."""
        response = web.StreamResponse(status=answer.status)
        for name in ("Content-Type", "Content-Length", "Content-Disposition", "Cache-Control", "ETag",
                     "Last-Modified", "Accept-Ranges"):
            if name in answer.headers:
                response.headers[name] = answer.headers[name]
        await response.prepare(request)
        try:
            async for piece in answer.content.iter_chunked(GALLERY_CHUNK_BYTES):
                await response.write(piece)
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            log.info("gallery answer cut short: %s", type(exc).__name__)
            if request.transport is not None:
                request.transport.close()
            return response
        await response.write_eof()
        return response

    async def _any_replica(self) -> Placement | None:
        try:
            sessions = await asyncio.wait_for(self.store.sessions.remote(), self.config.upstream_timeout_s)
        except Exception:
            return None
        return next(iter(sessions.values()), None)

    async def handle_workflows(self, request: web.Request) -> web.Response:
        return web.json_response({"code": "bad_workflow", "message": "uploaded workflows are not served on a "
                                  "cluster yet: deploy with --workflow FILE instead"}, status=400)

    # The service's handler names, so `add_routes` mounts the same routes here as on a
    # replica: every gallery route is passed on to a live replica.
    handle_personas = handle_portrait = handle_import_card = handle_recording = handle_gallery
    handle_upload_workflow = handle_workflows


class _Busy(PersonaError):  # noqa: N818 - the cluster is full: answered as the protocol's `busy`
    def __init__(self, payload: dict) -> None:
        super().__init__(payload["message"])
        self.payload = payload


def _busy(why: str, config: ClusterConfig) -> _Busy:
    payload = error_message("busy", f"{why}; try again in {config.retry_after_s} s")
    payload["retry_after_s"] = config.retry_after_s
    return _Busy(payload)


def create_ingress_app(ingress: ClusterIngress) -> web.Application:
    """The ingress's app, behind the same access policy as `persona serve` (guard.py); serve it
    with `site.start_server(app, host, port, ingress.gate)`."""

    app = gated_app(ingress.gate)
    add_routes(app.router, ingress, policy_for(ingress.config))

    async def on_startup(app: web.Application) -> None:
        await ingress.start()

    async def on_shutdown(app: web.Application) -> None:
        await ingress.close()

    app.on_startup.append(on_startup)
    app.on_shutdown.append(on_shutdown)
    return app
