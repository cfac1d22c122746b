"""Keep native libraries' one-off warnings off the terminal of rendering commands.

The preview renderer draws with skia-python, whose wheel carries its own (older) Fontconfig.
On systems whose /etc/fonts uses newer elements, that Fontconfig prints e.g.
`Fontconfig warning: ".../05-reset-dirs-sample.conf", line 6: unknown element "reset-dirs"`
straight to file descriptor 2 when the first typeface is made: in the middle of a progress
line, and no Python logging setting reaches it. Fontconfig has no switch for its config
warnings, and pointing FONTCONFIG_FILE at a config of our own would change which fonts a
user's system offers, so the CLI loads the font manager once, early, while it is still one
thread, with fd 2 pointed at a temporary file, and passes what was said on to the `logging`
record of this module (debug level: `--debug`-style runs can still see it). Fontconfig reads
its config once per process, so later typefaces are quiet.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile

_log = logging.getLogger(__name__)
_done = False


def quiet_fontconfig() -> str:
    """Initialise skia's font manager with native stderr captured; returns what it printed
    ('' when nothing, or when skia is not installed). Call it before any thread starts: fd 2
    is the whole process's stderr for that moment."""
    global _done
    if _done:
        return ""
    _done = True
    try:
        import skia
    except ImportError:
        return ""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            skia.Typeface("DejaVu Sans", skia.FontStyle.Bold())  # what the preview renderer asks for
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        captured.seek(0)
        text = captured.read().decode("utf-8", "replace").strip()
    for line in text.splitlines():
        _log.debug("font manager said: %s", line)
    return text
