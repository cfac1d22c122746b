"""An impaired link between a browser and the server, for transport.py: packet loss and added
delay, in user space.

`tc qdisc add dev lo root netem ...` is what one would use; in this container it fails ("Specified
qdisc kind is unknown": no sch_netem module), so both relays here stand in for netem on the
loopback device, where every packet crosses the link once in each direction:

- `UdpRelay`: WebRTC media. One local UDP port per server ICE candidate; the benchmark rewrites
  the candidates of the server's answer to point at it. Each datagram, either way, is dropped
  with probability `loss` or else delivered `delay_s` later. The server sees the relay's
  upstream port as the browser's (an ICE peer-reflexive candidate), the browser sees the port
  it was given.
- `TcpRelay`: the WebSocket (and the page's HTTP). Bytes are cut into `mss`-sized segments,
  each delivered `delay_s` later; a segment lost (probability `loss`) is delivered only after
  TCP's recovery, modelled as its best case, a fast retransmit one round trip (2 × `delay_s`)
  later, and every later segment waits behind it: TCP delivers in order (head-of-line
  blocking), which is what a lost packet does to JPEG frames over a WebSocket.

No library does this in-process (netem needs the kernel module; toxiproxy-style proxies model
TCP latency but not per-segment loss with in-order delivery), hence the few lines here.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field


@dataclass
class Impairment:
    loss: float = 0.0  # probability per packet (UDP datagram, TCP segment), each direction
    delay_s: float = 0.0  # added one-way delay, each direction
    seed: int = 1
    rng: random.Random = field(init=False)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    def lost(self) -> bool:
        return self.loss > 0 and self.rng.random() < self.loss


class _Datagrams(asyncio.DatagramProtocol):
    def __init__(self, on_packet) -> None:
        self.on_packet = on_packet
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr) -> None:
        self.on_packet(data, addr)


class UdpRelay:
    """Browser ⇄ relay (`port`) ⇄ server candidate (`target`), impaired both ways."""

    def __init__(self, target: tuple[str, int], impairment: Impairment) -> None:
        self.target = target
        self.impairment = impairment
        self.client_addr = None
        self.port = 0
        self.sent = {"down": 0, "up": 0}
        self.dropped = {"down": 0, "up": 0}

    async def start(self) -> UdpRelay:
        loop = asyncio.get_running_loop()
        self._down, _ = await loop.create_datagram_endpoint(lambda: _Datagrams(self._from_client),
                                                           local_addr=("127.0.0.1", 0))
        self._up, _ = await loop.create_datagram_endpoint(lambda: _Datagrams(self._from_server),
                                                         local_addr=("127.0.0.1", 0))
        self.port = self._down.get_extra_info("sockname")[1]
        return self

    def _forward(self, transport, data: bytes, addr, way: str) -> None:
        if self.impairment.lost():
            self.dropped[way] += 1
            return
        self.sent[way] += 1
        if self.impairment.delay_s:
            asyncio.get_running_loop().call_later(self.impairment.delay_s, self._send, transport, data, addr)
        else:
            self._send(transport, data, addr)

    @staticmethod
    def _send(transport, data: bytes, addr) -> None:
        if not transport.is_closing():  # a packet still in flight when the run ends is lost
            transport.sendto(data, addr)

    def _from_client(self, data: bytes, addr) -> None:
        self.client_addr = addr
        self._forward(self._up, data, self.target, "up")

    def _from_server(self, data: bytes, addr) -> None:
        if self.client_addr is not None:
            self._forward(self._down, data, self.client_addr, "down")

    def close(self) -> None:
        self._down.close()
        self._up.close()


def relay_answer(sdp: str, relays: dict[tuple[str, int], int]) -> str:
    """`sdp` with its UDP host candidates pointed at their relay ports (others removed)."""
    out = []
    for line in sdp.splitlines():
        if line.startswith("a=candidate:"):
            parts = line.split()
            key = (parts[4], int(parts[5]))
            if parts[2].lower() != "udp" or key not in relays:
                continue
            parts[4], parts[5] = "127.0.0.1", str(relays[key])
            line = " ".join(parts)
        out.append(line)
    return "\r\n".join(out) + "\r\n"


def udp_candidates(sdp: str) -> list[tuple[str, int]]:
    """The (address, port) of every UDP IPv4 host candidate in `sdp` (one per address)."""
    found = []
    for line in sdp.splitlines():
        if line.startswith("a=candidate:"):
            parts = line.split()
            if parts[2].lower() == "udp" and ":" not in parts[4] and (parts[4], int(parts[5])) not in found:
                found.append((parts[4], int(parts[5])))
    return found


class TcpRelay:
    """Listens on `port`; each connection is relayed to `target`, segments delayed and lost."""

    def __init__(self, target: tuple[str, int], impairment: Impairment, mss: int = 1400) -> None:
        self.target = target
        self.impairment = impairment
        self.mss = mss
        self.port = 0
        self.lost_segments = 0
        self._tasks: set[asyncio.Task] = set()

    async def start(self) -> TcpRelay:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def _serve(self, reader, writer) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        pipes = [asyncio.ensure_future(self._pipe(reader, up_writer)), asyncio.ensure_future(self._pipe(up_reader, writer))]
        self._tasks.update(pipes)
        await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
        for task in pipes:
            task.cancel()
        for w in (writer, up_writer):
            w.close()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Segments leave in order, each at max(its own due time, the previous one's)."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()

        async def deliver() -> None:
            while True:
                due, data = await queue.get()
                if data is None:
                    return
                wait = due - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                writer.write(data)
                await writer.drain()

        sender = asyncio.ensure_future(deliver())
        last_due = 0.0
        try:
            while data := await reader.read(65536):
                for i in range(0, len(data), self.mss):
                    due = loop.time() + self.impairment.delay_s
                    if self.impairment.lost():
                        self.lost_segments += 1
                        due += 2 * self.impairment.delay_s  # fast retransmit: one round trip later
                    last_due = max(last_due, due)  # in order: nothing overtakes a lost segment
                    await queue.put((last_due, data[i : i + self.mss]))
        finally:
            await queue.put((0.0, None))
            await sender

    async def close(self) -> None:
        self._server.close()
        for task in self._tasks:
            task.cancel()
