"""Bounds on what a client can make the server hold: sockets, message rates, failed tokens.

- `ConnectionGate` (headless server only: ComfyUI owns its sockets) sits between asyncio and
  aiohttp's protocol: it refuses a socket beyond `max_connections` in all or
  `max_connections_per_ip` from one address before aiohttp sees a byte, and closes a socket
  that has no request in progress for `idle_timeout_s` (slow headers, idle keep-alive). Why
  not aiohttp: it has no connection caps and no header timeout (`keepalive_timeout` starts
  after a first response). The gate wraps the protocol instead of subclassing aiohttp's
  server, so it uses only asyncio's public protocol API.
- `OpenSockets` counts the chat WebSockets a host holds, in all and per address (in both
  hosts, and at the cluster's ingress), for the same two caps where no gate stands in front.
- `RateWindow` counts one connection's messages and WebSocket control frames (pings are
  messages too: a ping flood is a flood) in a sliding second.
- `FailureLimiter` slows token guessing: an address with too many failed `hello`s in a
  minute is refused for a minute.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["ConnectionGate", "FailureLimiter", "OpenSockets", "RateWindow", "peer_address"]


def peer_address(transport: asyncio.BaseTransport | None) -> str:
    """The remote IP of a transport ('?' when unknown, e.g. a Unix socket)."""
    if transport is None:
        return "?"
    peer = transport.get_extra_info("peername")
    if isinstance(peer, (tuple, list)) and peer:
        return str(peer[0])
    return "?"


class OpenSockets:
    """The chat WebSockets open now, in all and per client address: what `max_connections`
    and `max_connections_per_ip` cap once a request asks for the socket (inside ComfyUI no
    `ConnectionGate` counts them first)."""

    def __init__(self) -> None:
        self.total = 0
        self._per_address: collections.Counter[str] = collections.Counter()

    def full(self, peer: str, max_total: int, max_per_address: int) -> bool:
        """Whether one more socket from `peer` would pass either cap."""
        return self.total >= max_total or self._per_address[peer] >= max_per_address

    def add(self, peer: str) -> None:
        """A socket from `peer` is open (pair with `remove` in a `finally`)."""
        self.total += 1
        self._per_address[peer] += 1

    def remove(self, peer: str) -> None:
        self.total -= 1
        self._per_address[peer] -= 1
        if self._per_address[peer] <= 0:
            del self._per_address[peer]  # no entry left behind per address ever seen


@dataclass
class GateStats:
    refused_total: int = 0  # sockets closed at once: over a cap
    idle_closed_total: int = 0  # sockets closed for sending no request in time


class ConnectionGate:
    """Per-address and total socket caps plus the idle timeout (see module docstring)."""

    def __init__(self, max_total: int, max_per_ip: int, idle_timeout_s: float) -> None:
        self.max_total = max_total
        self.max_per_ip = max_per_ip
        self.idle_timeout_s = idle_timeout_s
        self.per_ip: collections.Counter[str] = collections.Counter()
        self.total = 0
        self.stats = GateStats()
        self._admitted: set[asyncio.BaseTransport] = set()
        self._timers: dict[asyncio.BaseTransport, asyncio.TimerHandle] = {}
        self._in_flight: collections.Counter[asyncio.BaseTransport] = collections.Counter()

    def protocol_factory(self, inner: Callable[[], asyncio.Protocol]) -> Callable[[], asyncio.Protocol]:
        """What `loop.create_server` takes: each connection's protocol behind the gate."""
        return lambda: _GatedProtocol(self, inner)

    # -- admission --------------------------------------------------------------------------

    def admit(self, transport: asyncio.BaseTransport) -> bool:
        peer = peer_address(transport)
        if self.total >= self.max_total or self.per_ip[peer] >= self.max_per_ip:
            self.stats.refused_total += 1
            return False
        self.total += 1
        self.per_ip[peer] += 1
        self._admitted.add(transport)
        self._arm(transport)
        return True

    def release(self, transport: asyncio.BaseTransport) -> None:
        self._admitted.discard(transport)
        peer = peer_address(transport)
        self.total -= 1
        self.per_ip[peer] -= 1
        if self.per_ip[peer] <= 0:
            del self.per_ip[peer]
        timer = self._timers.pop(transport, None)
        if timer is not None:
            timer.cancel()
        self._in_flight.pop(transport, None)

    # -- idle timeout: armed while no request is in progress ----------------------------------

    def request_started(self, transport: asyncio.BaseTransport | None) -> None:
        if transport is None or transport not in self._admitted:
            return  # a socket this gate does not own (a test server, ComfyUI)
        self._in_flight[transport] += 1
        timer = self._timers.pop(transport, None)
        if timer is not None:
            timer.cancel()

    def request_finished(self, transport: asyncio.BaseTransport | None) -> None:
        if transport is None or transport not in self._in_flight:
            return
        self._in_flight[transport] -= 1
        if self._in_flight[transport] <= 0:
            del self._in_flight[transport]
            if not transport.is_closing():
                self._arm(transport)

    def _arm(self, transport: asyncio.BaseTransport) -> None:
        old = self._timers.pop(transport, None)
        if old is not None:
            old.cancel()
        loop = asyncio.get_running_loop()
        self._timers[transport] = loop.call_later(self.idle_timeout_s, self._expire, transport)

    def _expire(self, transport: asyncio.BaseTransport) -> None:
        self._timers.pop(transport, None)
        if transport not in self._in_flight and not transport.is_closing():
            self.stats.idle_closed_total += 1
            transport.abort()


class _GatedProtocol(asyncio.Protocol):
    """Forwards every protocol call to aiohttp's handler once the gate admitted the socket."""

    def __init__(self, gate: ConnectionGate, inner: Callable[[], asyncio.Protocol]) -> None:
        self._gate = gate
        self._make_inner = inner
        self._inner: asyncio.Protocol | None = None
        self._transport: asyncio.BaseTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if not self._gate.admit(transport):
            transport.abort()
            return
        self._transport = transport
        self._inner = self._make_inner()
        self._inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self._inner is not None:
            self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received() if self._inner is not None else None

    def pause_writing(self) -> None:
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._inner is not None:
            self._inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._inner is None:
            return
        self._gate.release(self._transport)
        self._inner.connection_lost(exc)


class RateWindow:
    """Events in the last second, for one connection (text messages and control frames).

    Events over the limit are refused; a connection that keeps sending `flood_factor` times
    the limit in a second is a flood (`flooding`), which the server answers by closing it:
    refusing each event still costs the loop a read per event."""

    def __init__(self, limit: int, flood_factor: int = 5) -> None:
        self.limit = limit
        self._times: collections.deque[float] = collections.deque()
        self._refused: collections.deque[float] = collections.deque(maxlen=limit * flood_factor)

    def hit(self, now: float) -> bool:
        """Count an event at `now`; False when it is over the limit (counted as refused)."""
        while self._times and now - self._times[0] >= 1.0:
            self._times.popleft()
        if len(self._times) >= self.limit:
            self._refused.append(now)
            return False
        self._times.append(now)
        return True

    def flooding(self, now: float) -> bool:
        """Whether the refused events of the last second filled the flood allowance."""
        refused = self._refused
        return len(refused) == refused.maxlen and now - refused[0] < 1.0


@dataclass
class FailureLimiter:
    """At most `limit` failed attempts per address in `window_s`; then refused for `window_s`."""

    limit: int = 10
    window_s: float = 60.0
    _failures: dict[str, collections.deque] = field(default_factory=dict)

    def blocked(self, peer: str, now: float) -> bool:
        times = self._failures.get(peer)
        if not times:
            return False
        while times and now - times[0] >= self.window_s:
            times.popleft()
        if not times:
            del self._failures[peer]
            return False
        return len(times) >= self.limit

    def failed(self, peer: str, now: float) -> None:
        self._failures.setdefault(peer, collections.deque()).append(now)
        if len(self._failures) > 10_000:  # bounded: forget the address idle longest
            self._failures.pop(next(iter(self._failures)))
