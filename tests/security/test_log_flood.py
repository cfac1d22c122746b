"""A client cannot fill the disk through the log: repeats of one message are summarised."""

from __future__ import annotations

import asyncio
import logging

from comfyui_persona.headless.server.logs import RepeatFilter
from server_harness import serve_process


def test_repeats_are_capped_per_window_and_then_summarised():
    flood = RepeatFilter(limit=5, window_s=3600)
    records = [logging.LogRecord("x", logging.WARNING, __file__, 1, "refused %s", ("a",), None) for _ in range(1000)]
    passed = [r for r in records if flood.filter(r)]
    assert len(passed) == 5 and "suppressed" in passed[-1].msg and "suppressed" not in passed[-2].msg
    other = logging.LogRecord("x", logging.WARNING, __file__, 1, "another message", (), None)
    assert flood.filter(other)  # distinct messages are not affected
    flood.window_s = 0.0  # the window ends: the next one reports what was dropped
    again = logging.LogRecord("x", logging.WARNING, __file__, 1, "refused %s", ("b",), None)
    assert flood.filter(again) and "995 similar messages suppressed" in again.msg


async def test_a_storm_of_bad_requests_leaves_a_short_log(tmp_path):
    """2,000 malformed requests (each used to log a traceback from aiohttp) → a bounded log."""
    log_path = tmp_path / "server.log"
    with log_path.open("wb") as log:
        async with serve_process("--personas-dir", str(tmp_path / "p"), stderr=log) as server:
            async def bad(n: int) -> None:
                for _ in range(100):
                    try:
                        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
                    except OSError:
                        continue
                    # A malformed header: aiohttp logs each with its traceback.
                    writer.write(b"GET /persona/health HTTP/1.1\r\nHost: 127.0.0.1\r\nBad Header Line\r\n\r\n")
                    await writer.drain()
                    await reader.read()
                    writer.close()

            await asyncio.gather(*(bad(n) for n in range(20)))
    size = log_path.stat().st_size
    text = log_path.read_text(errors="replace")
    assert "suppressed" in text
    assert size < 400_000, f"{size} bytes of log for 2,000 bad requests"
