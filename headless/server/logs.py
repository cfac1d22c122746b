"""Log flood control: a client must not be able to fill the disk through the log.

Every connection a client opens can make the server log a line (a bad request, a refused
socket, a session that starts and ends); 20,000 of them made 80 MB of log in 40 s. The
`RepeatFilter` lets each message template (logger, level, format string) through at most
`limit` times per `window_s`; the first suppressed record says so, and the first record
after the window reports how many were dropped. Distinct messages are not affected. Why not
a library: the logging module's filters are the whole mechanism; this is its policy.

`persona serve` puts it on the root handlers (everything the process logs: ours, aiohttp's
request errors); inside ComfyUI, where the handlers are ComfyUI's, on the pack's own loggers.
"""

from __future__ import annotations

import logging
import threading
import time

__all__ = ["RepeatFilter", "install"]

#: The loggers the pack logs through (inside ComfyUI the filter goes on these).
PACK_LOGGERS = ("comfyui_persona", "comfyui_persona.serve", "comfyui_persona.comfyui")


class RepeatFilter(logging.Filter):
    """At most `limit` records of one template per `window_s` seconds (see module docstring)."""

    def __init__(self, limit: int = 20, window_s: float = 10.0, max_keys: int = 4096) -> None:
        super().__init__()
        self.limit = limit
        self.window_s = window_s
        self.max_keys = max_keys
        self._lock = threading.Lock()
        self._windows: dict[tuple, list] = {}  # key -> [window start, passed, dropped]

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, record.levelno, record.msg if isinstance(record.msg, str) else type(record.msg).__name__)
        now = time.monotonic()
        with self._lock:
            entry = self._windows.get(key)
            if entry is None or now - entry[0] >= self.window_s:
                dropped = entry[2] if entry is not None else 0
                if entry is None and len(self._windows) >= self.max_keys:
                    self._windows.pop(next(iter(self._windows)))
                self._windows[key] = [now, 1, 0]
                if dropped:
                    record.msg = f"{record.msg} [{dropped} similar messages suppressed in the last {self.window_s:g} s]"
                return True
            if entry[1] < self.limit:
                entry[1] += 1
                if entry[1] == self.limit:
                    record.msg = f"{record.msg} [repeated too often: further ones suppressed for up to {self.window_s:g} s]"
                return True
            entry[2] += 1
            return False


def install(limit: int, *, on_root_handlers: bool) -> RepeatFilter:
    """Put one `RepeatFilter` on the root logger's handlers (a process we own) or on the
    pack's loggers (inside a host that owns the handlers); idempotent."""
    flood = RepeatFilter(limit)
    targets = logging.getLogger().handlers if on_root_handlers else [logging.getLogger(n) for n in PACK_LOGGERS]
    for target in targets:
        for old in [f for f in target.filters if isinstance(f, RepeatFilter)]:
            target.removeFilter(old)
        target.addFilter(flood)
    return flood
