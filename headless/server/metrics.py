"""Server-wide counters and their Prometheus text exposition (`GET /metrics`).

Kept deliberately small: a few counters, gauges computed on scrape, and one latency
histogram, written in the text format by hand (no client library needed).
"""

from __future__ import annotations

import bisect
from collections import Counter

#: Directive-to-frame latency buckets, ms (upper bounds).
LATENCY_BUCKETS_MS = (25, 50, 75, 100, 150, 200, 300, 500, 1000, 2500, 5000)


class ServerMetrics:
    """Counters the handlers bump; all updated on the event loop thread."""

    def __init__(self) -> None:
        self.connections_total = 0
        self.sessions_started_total = 0
        self.sessions_resumed_total = 0
        self.frames_sent_total = 0
        self.frames_dropped_total = 0
        self.audio_packets_total = 0
        self.recordings_total = 0
        self.messages_total = 0
        self.errors_total: Counter[str] = Counter()
        # Connections and sessions refused or cut to protect the server (docs/security.md), by reason.
        self.refused_total: Counter[str] = Counter()
        self._latency_counts = [0] * (len(LATENCY_BUCKETS_MS) + 1)
        self._latency_sum = 0.0
        self._latency_count = 0

    def observe_latency(self, ms: float) -> None:
        self._latency_counts[bisect.bisect_left(LATENCY_BUCKETS_MS, ms)] += 1
        self._latency_sum += ms
        self._latency_count += 1

    def render(self, sessions: int, attached: int, fps_by_session: list[float], gate=None) -> str:
        """The exposition; `gate`: the headless server's ConnectionGate (socket counts)."""
        lines: list[str] = []

        def metric(name: str, kind: str, help_text: str, samples: list[tuple[str, float]]) -> None:
            lines.append(f"# HELP {name} {help_text}")
            lines.append(f"# TYPE {name} {kind}")
            for labels, value in samples:
                lines.append(f"{name}{labels} {value:g}")

        metric("persona_sessions", "gauge", "Sessions alive (connected or waiting to be resumed).", [("", sessions)])
        metric("persona_sessions_connected", "gauge", "Sessions with a viewer connected.", [("", attached)])
        mean_fps = sum(fps_by_session) / len(fps_by_session) if fps_by_session else 0.0
        metric("persona_stream_fps", "gauge", "Mean frames per second sent, over connected sessions.", [("", mean_fps)])
        metric("persona_stream_fps_min", "gauge", "Lowest per-session frames per second.",
               [("", min(fps_by_session) if fps_by_session else 0.0)])
        metric("persona_connections_total", "counter", "WebSocket connections accepted.", [("", self.connections_total)])
        metric("persona_sessions_started_total", "counter", "Sessions created.", [("", self.sessions_started_total)])
        metric("persona_sessions_resumed_total", "counter", "Sessions resumed by id.", [("", self.sessions_resumed_total)])
        metric("persona_messages_total", "counter", "Client messages received.", [("", self.messages_total)])
        metric("persona_frames_sent_total", "counter", "Video frames sent.", [("", self.frames_sent_total)])
        metric("persona_frames_dropped_total", "counter", "Stale video frames dropped.", [("", self.frames_dropped_total)])
        metric("persona_audio_packets_total", "counter", "Speech audio packets (kind 2) sent.", [("", self.audio_packets_total)])
        metric("persona_recordings_total", "counter", "Recordings started.", [("", self.recordings_total)])
        metric("persona_errors_total", "counter", "Protocol errors sent, by code.",
               [(f'{{code="{code}"}}', n) for code, n in sorted(self.errors_total.items())] or [('{code="internal"}', 0)])
        metric("persona_refused_total", "counter", "Connections, sessions and requests refused or closed by a limit, by reason.",
               [(f'{{reason="{reason}"}}', n) for reason, n in sorted(self.refused_total.items())]
               or [('{reason="connections"}', 0)])
        if gate is not None:
            metric("persona_sockets_open", "gauge", "TCP connections open (headless server).", [("", gate.total)])
            metric("persona_sockets_refused_total", "counter", "TCP connections closed at once: over a cap.",
                   [("", gate.stats.refused_total)])
            metric("persona_sockets_idle_closed_total", "counter", "TCP connections closed for sending no request in time.",
                   [("", gate.stats.idle_closed_total)])
        lines.append("# HELP persona_directive_latency_ms Directive received to first frame showing it sent.")
        lines.append("# TYPE persona_directive_latency_ms histogram")
        running = 0
        for bound, count in zip(LATENCY_BUCKETS_MS, self._latency_counts, strict=False):
            running += count
            lines.append(f'persona_directive_latency_ms_bucket{{le="{bound}"}} {running}')
        lines.append(f'persona_directive_latency_ms_bucket{{le="+Inf"}} {self._latency_count}')
        lines.append(f"persona_directive_latency_ms_sum {self._latency_sum:g}")
        lines.append(f"persona_directive_latency_ms_count {self._latency_count}")
        return "\n".join(lines) + "\n"
